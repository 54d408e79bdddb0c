/**
 * What the benchmarks share: timing, walking a tree, rewriting files the way
 * dpkg does, dropping caches. Scratch filesystems and exclusive bytes come
 * from test/harness/btrfs-image.ts and extents.ts.
 */
import { closeSync, fsyncSync, lstatSync, openSync, readdirSync, readFileSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import type { Sandbox } from '../test/harness/sandbox.js';

/** Seconds since `start` (from process.hrtime.bigint()). */
export function secondsSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export interface FileEntry {
  /** Relative to the walked root, without a leading slash. */
  relative: string;
  size: number;
}

/** Regular files below `root` (not following symlinks, not leaving the subvolume), in path order. */
export function regularFiles(root: string): FileEntry[] {
  const files: FileEntry[] = [];
  const rootDevice = lstatSync(root).dev;
  const visit = (relative: string): void => {
    for (const name of readdirSync(path.join(root, relative)).sort()) {
      const child = relative === '' ? name : `${relative}/${name}`;
      const stats = lstatSync(path.join(root, child));
      if (stats.dev !== rootDevice) continue;
      if (stats.isDirectory()) visit(child);
      else if (stats.isFile()) files.push({ relative: child, size: stats.size });
    }
  };
  visit('');
  return files;
}

/**
 * Writes a fresh copy of `file` and renames it over the original, as dpkg
 * installs a file: new extents, no sharing (copyFile could reflink on btrfs).
 */
export function rewriteFile(file: string): void {
  const content = readFileSync(file);
  const mode = lstatSync(file).mode & 0o7777;
  const temporary = `${file}.bench-new`;
  const descriptor = openSync(temporary, 'w', mode);
  try {
    for (let offset = 0; offset < content.length; ) offset += writeSync(descriptor, content, offset);
    fsyncSync(descriptor);
  } finally {
    closeSync(descriptor);
  }
  renameSync(temporary, file);
}

/** Drops the page cache (the whole machine's), for cold-cache timings. */
export async function dropCaches(): Promise<void> {
  await execa('sync');
  await execa('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches']);
}

/** The median of `values` (the upper one of an even count); NaN for none. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** Prints `rows` (the first is the header) as left-aligned columns two spaces apart. */
export function printTable(rows: readonly (readonly string[])[]): void {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  for (const row of rows) console.log(row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd());
}

/** A shell script run by bash in the booted BE `booted` of a sandbox, returning its stdout; throws with its output when it fails. */
export type Step = (booted: string, script: string) => Promise<string>;

/** Steps in `sandbox`, each script after `prefix` (e.g. export DEBIAN_FRONTEND=noninteractive; ). */
export function stepsIn(sandbox: Sandbox, prefix: string): Step {
  return async (booted, script) => {
    const result = await sandbox.boot(booted, ['bash', '-c', `${prefix}${script}`]);
    if (result.exitCode !== 0) throw new Error(`${script}\n${result.stdout}\n${result.stderr}`);
    return result.stdout;
  };
}

/** Debian 12 with its point-release and security updates, as a sources.list. */
export const BOOKWORM_SOURCES = [
  'deb http://deb.debian.org/debian bookworm main',
  'deb http://deb.debian.org/debian bookworm-updates main',
  'deb http://deb.debian.org/debian-security bookworm-security main',
  '',
].join('\n');

/** Runs a benchmark's main: a failure is printed and sets a non-zero exit status. */
export function runBenchmark(main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
