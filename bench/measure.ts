/**
 * What the benchmarks share: timing, walking a tree, rewriting files the way
 * dpkg does, dropping caches. Scratch filesystems and exclusive bytes come
 * from test/harness/btrfs-image.ts and extents.ts.
 */
import { closeSync, fsyncSync, lstatSync, openSync, readdirSync, readFileSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';

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
