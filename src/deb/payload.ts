/**
 * What a .deb installs, as the skip-unchanged planner needs it: each regular
 * file of data.tar with its size, mode and the xxh64 of its content (hashed
 * while streaming, never written anywhere), and the package's own md5sums
 * and conffiles from control.tar. Also xxh64 of files on disk, the same hash,
 * for checking two files before asking the kernel to share their extents.
 */
import { closeSync, constants, openSync, readSync } from 'node:fs';
import type { XXHashAPI } from 'xxhash-wasm';
import { readDeb } from './reader.js';

let api: Promise<XXHashAPI> | undefined;

/** The xxhash-wasm instance (loaded and compiled once per process, when first needed). */
function hasher(): Promise<XXHashAPI> {
  api ??= import('xxhash-wasm').then((module) => module.default());
  return api;
}

/** xxh64 of a stream of bytes, as 16 hex digits. */
export async function xxh64OfStream(chunks: AsyncIterable<Buffer>): Promise<string> {
  const hash = (await hasher()).create64();
  for await (const chunk of chunks) hash.update(chunk);
  return hash.digest().toString(16).padStart(16, '0');
}

const READ_BUFFER = Buffer.allocUnsafe(1024 * 1024);

/** Opens for reading without updating the file's atime (an inode change a snapshot would own alone); EPERM when not owner nor root: then as usual. */
function openWithoutAtime(file: string): number {
  try {
    return openSync(file, constants.O_RDONLY | constants.O_NOATIME);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') throw error;
    return openSync(file, constants.O_RDONLY);
  }
}

/**
 * xxh64 of a file's content. Reads only, leaving even the atime alone;
 * synchronously through one buffer: for many small files, streams cost far
 * more than the reading.
 */
export async function xxh64OfFile(file: string): Promise<string> {
  const hash = (await hasher()).create64();
  const descriptor = openWithoutAtime(file);
  try {
    for (let read = readSync(descriptor, READ_BUFFER); read > 0; read = readSync(descriptor, READ_BUFFER)) hash.update(READ_BUFFER.subarray(0, read));
  } finally {
    closeSync(descriptor);
  }
  return hash.digest().toString(16).padStart(16, '0');
}

export interface PayloadFile {
  /** Relative to the root: "usr/bin/x". */
  path: string;
  size: number;
  mode: number;
  xxh64: string;
}

export interface DebPayload {
  package: string;
  version: string;
  architecture: string;
  files: PayloadFile[];
  /** control.tar's md5sums file as dpkg writes it to /var/lib/dpkg/info; null when the package has none. */
  md5sums: string | null;
  conffiles: string[];
}

function controlField(control: string, name: string): string {
  const match = new RegExp(`^${name}:[ \\t]*(\\S+)[ \\t]*$`, 'm').exec(control);
  return match?.[1] ?? '';
}

/** Reads the .deb at `file` and hashes its regular files; see readDeb for what it throws. Reads only. */
export async function hashDebPayload(file: string): Promise<DebPayload> {
  const files: PayloadFile[] = [];
  const contents = await readDeb(file, {
    onDataEntry: async (entry, content) => {
      if (entry.type !== 'file') return;
      files.push({ path: entry.path, size: entry.size, mode: entry.mode, xxh64: await xxh64OfStream(content) });
    },
  });
  const control = contents.controlFiles.get('control')?.toString('utf8') ?? '';
  return {
    package: controlField(control, 'Package'),
    version: controlField(control, 'Version'),
    architecture: controlField(control, 'Architecture'),
    files,
    md5sums: contents.controlFiles.get('md5sums')?.toString('utf8') ?? null,
    // A line is a path, possibly after flags such as "remove-on-upgrade".
    conffiles: (contents.controlFiles.get('conffiles')?.toString('utf8') ?? '')
      .split('\n')
      .filter((line) => line.includes('/'))
      .map((line) => line.slice(line.indexOf('/')).trimEnd()),
  };
}
