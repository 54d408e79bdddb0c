/**
 * File access for the layers above. Reads are plain; every write is either an
 * atomic replace (write a temporary file beside the target, fsync it, rename it
 * over the target, fsync the directory) so that a crash leaves the old or the
 * new content and never a torn file, or a single directory operation.
 *
 * The small reads (readTextIfExists, pathExists, isDirectory, listDirectory)
 * are synchronous system calls behind async signatures: beadm does one thing
 * at a time, and the thread-pool round trip of each asynchronous call (0.1 to
 * 0.2 ms) made up most of a `beadm list` with 100 BEs, which reads a few
 * files of each (measured with Debian 12's nodejs).
 */
import { closeSync, constants, lstatSync, openSync, promises as fs, readdirSync, readFileSync, readlinkSync, readSync, statSync, type BigIntStats } from 'node:fs';
import path from 'node:path';
import { BootenvError } from '../errors.js';
import { setModificationTimes } from './carry.js';
import { run } from './exec.js';
import { throwIfInterrupted } from './scope.js';

/**
 * Reads a text file; undefined when it does not exist. Read to its end by a
 * loop of reads rather than readFile: on Node 18 (Debian 12's nodejs 18.20.4,
 * measured) fs.promises.readFile returns only the first page of a /proc file
 * whose size stat reports as 0, so a mount table longer than 4 KiB — a UEFI
 * system's during an apt run, any host with many mounts — lost its last lines.
 */
export async function readTextIfExists(file: string): Promise<string | undefined> {
  let descriptor: number | undefined;
  try {
    descriptor = openSync(file, 'r');
    const chunks: Buffer[] = [];
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024);
      const bytesRead = readSync(descriptor, chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
    }
    return Buffer.concat(chunks).toString('utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new BootenvError('INTERNAL', `cannot read ${file}: ${(error as Error).message}`, { cause: error });
  } finally {
    if (descriptor !== undefined) closeSync(descriptor);
  }
}

/** Reads a text file that must exist. */
export async function readText(file: string): Promise<string> {
  const text = await readTextIfExists(file);
  if (text === undefined) throw new BootenvError('NOT_FOUND', `${file} does not exist`);
  return text;
}

export async function pathExists(file: string): Promise<boolean> {
  try {
    lstatSync(file);
    return true;
  } catch {
    return false;
  }
}

export async function isDirectory(file: string): Promise<boolean> {
  try {
    return statSync(file).isDirectory();
  } catch {
    return false;
  }
}

/** Names in a directory; empty when it does not exist. */
export async function listDirectory(dir: string): Promise<string[]> {
  try {
    return readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new BootenvError('INTERNAL', `cannot list ${dir}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * Replaces `file` with `content` atomically and durably. Keeps the mode of an
 * existing file (else `mode`). Changes only `file` (and a temporary sibling
 * that is gone afterwards).
 */
export async function writeFileAtomic(file: string, content: string, mode = 0o644): Promise<void> {
  let finalMode = mode;
  try {
    finalMode = (await fs.stat(file)).mode & 0o7777;
  } catch {
    // a new file gets `mode`
  }
  await replaceFile(file, content, finalMode);
}

/** As writeFileAtomic, but the file is root's alone (0600) whatever mode it had before. */
export async function writePrivateFileAtomic(file: string, content: string): Promise<void> {
  await replaceFile(file, content, 0o600);
}

async function replaceFile(file: string, content: string, finalMode: number): Promise<void> {
  const dir = path.dirname(file);
  const temporary = path.join(dir, `.${path.basename(file)}.bootenv-${process.pid}`);
  try {
    await writeCandidateFile(temporary, content, finalMode);
  } catch (error) {
    await fs.rm(temporary, { force: true });
    throw error;
  }
  try {
    await fs.rename(temporary, file);
  } catch (error) {
    await fs.rm(temporary, { force: true });
    throw new BootenvError('INTERNAL', `cannot replace ${file}: ${(error as Error).message}`, { cause: error });
  }
  await syncDirectory(dir);
}

/**
 * Writes `file` (created, or truncated) with `mode` whatever the umask, and
 * flushes its data, without the directory sync of writeFileAtomic: for a
 * candidate that renamePath then moves into place, whose directory sync
 * covers both.
 */
export async function writeCandidateFile(file: string, content: string, mode = 0o644): Promise<void> {
  throwIfInterrupted();
  const handle = await fs.open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, mode);
  try {
    await handle.writeFile(content, 'utf8');
    await handle.chmod(mode);
    await handle.sync();
  } catch (error) {
    throw new BootenvError('INTERNAL', `cannot write ${file}: ${(error as Error).message}`, { cause: error });
  } finally {
    await handle.close();
  }
}

/** Renames atomically and makes the rename durable. */
export async function renamePath(from: string, to: string): Promise<void> {
  throwIfInterrupted();
  await fs.rename(from, to);
  await syncDirectory(path.dirname(to));
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Creates a directory (and parents); returns true when it did not exist before. */
export async function makeDirectory(dir: string, mode = 0o755): Promise<boolean> {
  throwIfInterrupted();
  const existed = await isDirectory(dir);
  await fs.mkdir(dir, { recursive: true, mode });
  return !existed;
}

/**
 * Creates `dir` (and parents, 0755) if missing and makes it root's alone
 * (0700, owner root) even if it existed: what is below it is out of every
 * other user's reach, mounts included.
 */
export async function makePrivateDirectory(dir: string): Promise<void> {
  throwIfInterrupted();
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  await fs.chown(dir, 0, 0);
  await fs.chmod(dir, 0o700);
}

/**
 * Whether some directory above `file` is root's and closed to everyone else
 * (no search permission for group and others): then no other user reaches
 * `file`, whatever its own mode or what is mounted on it.
 */
export async function isBehindPrivateDirectory(file: string): Promise<boolean> {
  for (let dir = path.dirname(path.resolve(file)); ; dir = path.dirname(dir)) {
    try {
      const stat = await fs.stat(dir);
      if (stat.uid === 0 && (stat.mode & 0o011) === 0) return true;
    } catch {
      // a missing ancestor is created later with our modes; keep looking above it
    }
    if (dir === path.dirname(dir)) return false;
  }
}

/** Creates a fresh directory named `prefix` + random suffix; returns its path. */
export async function makeTemporaryDirectory(prefix: string): Promise<string> {
  throwIfInterrupted();
  await fs.mkdir(path.dirname(prefix), { recursive: true, mode: 0o700 });
  return fs.mkdtemp(prefix);
}

/** Removes an empty directory; a missing one is not an error. */
export async function removeEmptyDirectory(dir: string): Promise<void> {
  try {
    await fs.rmdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/** Removes a file; a missing one is not an error. */
export async function removeFile(file: string): Promise<void> {
  await fs.rm(file, { force: true });
}

/** Flushes a file's data to disk (before renaming it into place). */
export async function syncFile(file: string): Promise<void> {
  const handle = await fs.open(file, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Removes a directory tree that bootenv itself made under /run/bootenv; missing is fine. */
export async function removeTree(dir: string): Promise<void> {
  if (!dir.startsWith('/run/bootenv/')) throw new BootenvError('INTERNAL', `refusing to remove ${dir}: not bootenv's runtime state`);
  await fs.rm(dir, { recursive: true, force: true });
}

/**
 * Copies the directory tree `source` onto the directory `target` (which
 * exists, e.g. a fresh subvolume, and takes `source`'s owner, mode, xattrs
 * and times too): every file's extents shared, not written (reflink; fails
 * where the kernel cannot share them), with owner, mode, times, xattrs (POSIX
 * ACLs and file capabilities included), hard links, symlinks, sparse files,
 * fifos, sockets and device nodes kept (`cp -dR --preserve=all
 * --reflink=always`). Changes only `target`. Throws COMMAND_FAILED.
 */
export async function copyTreeReflinked(source: string, target: string): Promise<void> {
  await run(['cp', '-dR', '--preserve=all', '--reflink=always', '--no-target-directory', '--', source, target]);
}

/** Marks the names of directories a share moved aside, the only trees removeMovedAsideTree deletes. */
export const MOVED_ASIDE_MARK = '.bootenv-share-old-';

/**
 * Deletes the directory tree `dir`, which a share moved aside (its name holds
 * MOVED_ASIDE_MARK), without crossing into other filesystems or subvolumes.
 * A missing `dir` is fine. Throws INTERNAL for any other path, COMMAND_FAILED.
 */
export async function removeMovedAsideTree(dir: string): Promise<void> {
  if (!path.basename(dir).includes(MOVED_ASIDE_MARK)) throw new BootenvError('INTERNAL', `refusing to remove ${dir}: not a directory a share moved aside`);
  if (!(await pathExists(dir))) return;
  await run(['rm', '-rf', '--one-file-system', '--', dir]);
}

/** A copy of a file with what restoring it needs. */
export interface SavedFile {
  copy: string;
  mode: number;
  uid: number;
  gid: number;
  /** Modification time, "SECONDS.NANOSECONDS". */
  mtime: string;
}

function exactTime(seconds: bigint, nanoseconds: bigint): string {
  return `${seconds}.${String(nanoseconds).padStart(9, '0')}`;
}

/** The exact modification time of `file`, "SECONDS.NANOSECONDS" (Node's numbers lose the nanoseconds). */
export async function modificationTime(file: string): Promise<string> {
  const stat = await fs.lstat(file, { bigint: true });
  return exactTime(stat.mtimeNs / 1_000_000_000n, stat.mtimeNs % 1_000_000_000n);
}

/** Copies `file` to `copy` with its metadata; null when `file` does not exist. */
export async function saveFileCopy(file: string, copy: string): Promise<SavedFile | null> {
  let stat;
  try {
    stat = await fs.lstat(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  if (!stat.isFile()) throw new BootenvError('INTERNAL', `${file} is not a regular file`);
  await fs.copyFile(file, copy);
  return { copy, mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid, mtime: await modificationTime(file) };
}

/**
 * Puts each saved file back at its path, atomically, with the content, mode,
 * owner and modification time it had when saved (one after the other: a
 * failure leaves the ones before it restored).
 */
export async function restoreFileCopies(restores: ReadonlyArray<{ saved: SavedFile; file: string }>): Promise<void> {
  const temporaries: string[] = [];
  try {
    for (const { saved, file } of restores) {
      const temporary = path.join(path.dirname(file), `.${path.basename(file)}.bootenv-restore-${process.pid}`);
      await fs.copyFile(saved.copy, temporary);
      temporaries.push(temporary);
      await fs.chown(temporary, saved.uid, saved.gid);
      await fs.chmod(temporary, saved.mode);
    }
    await setModificationTimes(restores.map(({ saved }, index) => ({ path: temporaries[index] as string, mtime: saved.mtime })));
    for (const [index, { file }] of restores.entries()) {
      const temporary = temporaries[index] as string;
      await syncFile(temporary);
      await fs.rename(temporary, file);
      temporaries[index] = '';
      await syncDirectory(path.dirname(file));
    }
  } catch (error) {
    for (const temporary of temporaries) if (temporary !== '') await fs.rm(temporary, { force: true });
    throw error;
  }
}

/**
 * lstat with nanosecond times; undefined when the path does not exist (or a
 * parent is not a directory). Synchronous: for thousands of files in a row,
 * the thread pool's round trips of fs/promises cost more than the calls
 * (measured in the skip-unchanged pass, 2560 calls: 0.69 s, then 0.21 s).
 */
export function lstatIfExistsSync(file: string): BigIntStats | undefined {
  try {
    return lstatSync(file, { bigint: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new BootenvError('INTERNAL', `cannot stat ${file}: ${(error as Error).message}`, { cause: error });
  }
}

/** Size of a file in bytes; 0 when it does not exist. */
export async function fileSize(file: string): Promise<number> {
  try {
    return (await fs.stat(file)).size;
  } catch {
    return 0;
  }
}

/** The size of the filesystem holding `file` and what an unprivileged writer may still write on it, in bytes (statfs). */
export async function filesystemSpace(file: string): Promise<{ sizeBytes: number; freeBytes: number }> {
  const stats = await fs.statfs(file);
  return { sizeBytes: stats.blocks * stats.bsize, freeBytes: stats.bavail * stats.bsize };
}

/** Sum of the sizes of the regular files under `dir` (symlinks not followed); 0 when it does not exist. */
export async function treeBytes(dir: string): Promise<number> {
  let entries: Array<import('node:fs').Dirent>;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  let bytes = 0;
  for (const entry of entries) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) bytes += await treeBytes(file);
    else if (entry.isFile()) bytes += (await fs.lstat(file)).size;
  }
  return bytes;
}

/** Resolves symlinks in `file`. */
/** The canonical path of `file` (symlinks resolved); undefined when it or a link on the way does not exist. */
export async function realPathIfExists(file: string): Promise<string | undefined> {
  try {
    return await fs.realpath(file);
  } catch {
    return undefined;
  }
}

/** Size and modification time (nanoseconds) of `file` as one comparable string; 'absent' when it does not exist. */
export async function fileStamp(file: string): Promise<string> {
  try {
    const stat = await fs.stat(file, { bigint: true });
    return `${stat.size}:${stat.mtimeNs}`;
  } catch {
    return 'absent';
  }
}

export async function realPath(file: string): Promise<string> {
  return fs.realpath(file);
}

/** Appends the bytes of `source` from `offset` on to `target` (created if missing). */
export async function appendFromOffset(source: string, offset: number, target: string): Promise<void> {
  let data: Buffer;
  try {
    data = await fs.readFile(source);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (data.length <= offset) return;
  await fs.mkdir(path.dirname(target), { recursive: true });
  await fs.appendFile(target, data.subarray(offset));
}

/*
 * Byte paths: a carry handles file names as bytes (one character per byte,
 * 'latin1'), since a Linux file name need not be UTF-8. These take such
 * strings. Synchronous, as lstatIfExistsSync, for the thousands of calls of a
 * carry's planning.
 */
const bytes = (file: string) => Buffer.from(file, 'latin1');

/** lstat (nanosecond times) of a byte path; undefined when it does not exist. */
export function lstatBytesSync(file: string): BigIntStats | undefined {
  try {
    // No exception for a missing entry: a carry asks about thousands of paths the new BE does not have.
    return lstatSync(bytes(file), { bigint: true, throwIfNoEntry: false });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new BootenvError('INTERNAL', `cannot stat ${Buffer.from(file, 'latin1').toString()}: ${(error as Error).message}`, { cause: error });
  }
}

/** The names in a directory given as a byte path, as byte strings. */
export function listDirectoryBytesSync(dir: string): string[] {
  return readdirSync(bytes(dir), { encoding: 'buffer' }).map((name) => name.toString('latin1'));
}

/** A regular file's bytes, or a symlink's target, at a byte path. */
export function readBytesSync(file: string): Buffer {
  const stats = lstatSync(bytes(file));
  return stats.isSymbolicLink() ? readlinkSync(bytes(file), { encoding: 'buffer' }) : readFileSync(bytes(file));
}

/** sameBytesSync's two read buffers, allocated once: a diff compares thousands of files. */
const compareBlocks = { a: Buffer.alloc(0), b: Buffer.alloc(0) };

/**
 * Whether two regular files at byte paths hold the same bytes, read side by
 * side in 1 MiB blocks (stopping at the first difference); their sizes are the
 * caller's first test. Reads only.
 */
export function sameBytesSync(a: string, b: string): boolean {
  const left = openSync(bytes(a), 'r');
  try {
    const right = openSync(bytes(b), 'r');
    try {
      if (compareBlocks.a.length === 0) {
        compareBlocks.a = Buffer.allocUnsafe(1 << 20);
        compareBlocks.b = Buffer.allocUnsafe(1 << 20);
      }
      const { a: blockA, b: blockB } = compareBlocks;
      for (;;) {
        const readA = readSync(left, blockA, 0, blockA.length, null);
        let readB = 0;
        while (readB < readA) {
          const got = readSync(right, blockB, readB, readA - readB, null);
          if (got === 0) break;
          readB += got;
        }
        if (readA !== readB || !blockA.subarray(0, readA).equals(blockB.subarray(0, readB))) return false;
        if (readA === 0) return readSync(right, blockB, 0, 1, null) === 0;
      }
    } finally {
      closeSync(right);
    }
  } finally {
    closeSync(left);
  }
}
