/**
 * A streaming .deb reader. The ar container is checked first (./ar.ts), then
 * streamed with ar-async; control.tar and data.tar are decompressed on the
 * fly and parsed with tar-stream. Memory stays bounded: a data.tar entry is
 * handed to the caller as a stream, and only control.tar's files (control,
 * md5sums, conffiles, scripts) are kept, up to fixed sizes.
 *
 * Decompression: gzip with Node's zlib; xz and zstd through the `xz` and
 * `zstd` programs (sys/exec pipeThrough). The maintained decoders of those
 * formats are liblzma and libzstd themselves; the JavaScript ones on npm are
 * a WebAssembly port at version 0.2 (xz-decompress), a pure-JS decoder at
 * 0.1 (fzstd) and native addons (lzma-native, @napi-rs/lzma) that cannot be
 * bundled into one file. xz-utils is Priority: required in Debian; zstd (for
 * Ubuntu's .debs) is asked for only when a member needs it (TOOL_MISSING).
 *
 * Hostile archives — truncated, bad compression, `..` or absolute names,
 * symlinks out of the root, entries below a symlink, enormous headers — end
 * in a PARSE error. The reader only reads: it writes nothing anywhere.
 */
import { closeSync, promises as fs } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Header as TarHeader } from 'tar-stream';
import { BootenvError } from '../errors.js';
import { pipeThrough, type StreamFilter } from '../sys/exec.js';
import {
  AR_HEADER_SIZE,
  AR_MAGIC,
  checkDebianBinary,
  malformed,
  nextMemberOffset,
  parseArMemberHeader,
  planDebLayout,
  type ArMember,
  type Compression,
  type DebLayout,
} from './ar.js';
import { ArchivePaths, normalizeMemberPath, symlinkTargetInRoot } from './paths.js';

/**
 * The archive libraries (ar-async, tar-stream, zlib), loaded when a .deb is
 * first read: most beadm commands never read one, and loading them costs
 * every start a few milliseconds.
 */
async function archiveLibraries() {
  const [ar, tar, zlib] = await Promise.all([import('ar-async'), import('tar-stream'), import('node:zlib')]);
  return { ArReader: ar.ArReader, tarExtract: tar.extract, createGunzip: zlib.createGunzip };
}
type ArchiveLibraries = Awaited<ReturnType<typeof archiveLibraries>>;

/** control.tar holds a few small files; md5sums of the largest packages stay far below this. */
const MAX_CONTROL_FILE_SIZE = 16 * 1024 * 1024;
const MAX_CONTROL_TOTAL_SIZE = 64 * 1024 * 1024;
/** Memory limit for the xz decoder (dpkg-deb's own xz settings need far less). */
const XZ_MEMORY_LIMIT = '256MiB';

export type DebEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'character-device' | 'block-device' | 'fifo';

export interface DebEntry {
  /** Relative to the package root, without "./": "usr/bin/x". */
  path: string;
  type: DebEntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Symlink target as in the archive; hard link target normalized like `path`; null otherwise. */
  linkTarget: string | null;
}

export interface DebReadHandlers {
  /**
   * Called for each data.tar entry but the root, in archive order. A file's
   * `content` streams its bytes; what the handler leaves unread is skipped.
   */
  onDataEntry?: (entry: DebEntry, content: AsyncIterable<Buffer>) => Promise<void>;
}

export interface DebContents {
  /** control.tar's files by name: "control", "md5sums", "conffiles", "postinst", … */
  controlFiles: Map<string, Buffer>;
  controlCompression: Compression;
  dataCompression: Compression;
  dataEntries: number;
}

/** An entry of tar-stream's extract: its header and its content (tar-stream's types say unknown; it yields Buffers). */
interface TarEntry {
  header: TarHeader;
  [Symbol.asyncIterator](): AsyncIterator<unknown>;
}

async function* bytesOf(entry: TarEntry): AsyncIterable<Buffer> {
  for await (const chunk of entry) yield chunk as Buffer;
}

const TAR_TYPES: Record<string, DebEntryType> = {
  file: 'file',
  'contiguous-file': 'file',
  directory: 'directory',
  symlink: 'symlink',
  link: 'hardlink',
  'character-device': 'character-device',
  'block-device': 'block-device',
  fifo: 'fifo',
};

/** Reads and checks the ar headers of `file`; returns the layout of its members. */
async function readLayout(file: string): Promise<DebLayout> {
  const handle = await fs.open(file, 'r');
  try {
    const { size: fileSize } = await handle.stat();
    const magic = Buffer.alloc(AR_MAGIC.length);
    await handle.read(magic, 0, magic.length, 0);
    if (magic.toString('latin1') !== AR_MAGIC) throw malformed(file, 'no ar archive signature');
    const members: ArMember[] = [];
    let offset = AR_MAGIC.length;
    while (offset < fileSize && members.length <= 16) {
      const header = Buffer.alloc(AR_HEADER_SIZE);
      const { bytesRead } = await handle.read(header, 0, AR_HEADER_SIZE, offset);
      if (bytesRead !== AR_HEADER_SIZE) throw malformed(file, `truncated ar member header at byte ${offset}`);
      const { name, size } = parseArMemberHeader(header, file);
      const member = { name, offset: offset + AR_HEADER_SIZE, size };
      members.push(member);
      offset = Math.min(nextMemberOffset(member), Math.max(fileSize, member.offset + member.size));
    }
    const layout = planDebLayout(members, fileSize, file);
    const debianBinary = Buffer.alloc(layout.debianBinary.size);
    await handle.read(debianBinary, 0, debianBinary.length, layout.debianBinary.offset);
    checkDebianBinary(debianBinary, file);
    return layout;
  } finally {
    await handle.close();
  }
}

/**
 * Streams the members named in `visit` with ar-async, one after the other.
 * ar-async closes its file only at the archive's end; on failure the file is
 * closed here: destroying a member's stream closes the descriptor it shares
 * with the reader (Node closes a stream's fd on destroy, autoClose or not).
 */
async function streamMembers(file: string, visit: Map<string, (stream: Readable) => Promise<void>>): Promise<void> {
  const { ArReader } = await archiveLibraries();
  return new Promise((resolve, reject) => {
    const reader = new ArReader(file);
    let failed = false;
    const fail = (error: unknown, stream?: Readable) => {
      if (failed) return;
      failed = true;
      if (stream !== undefined) stream.destroy();
      else if (reader.fd !== undefined) closeSync(reader.fd);
      reader.fd = undefined;
      reject(error);
    };
    reader.on('entry', (entry, next) => {
      if (failed) return;
      const visitor = visit.get(entry.fileName());
      if (visitor === undefined) {
        next();
        return;
      }
      const stream = entry.fileData();
      visitor(stream).then(next, (error: unknown) => fail(error, stream));
    });
    reader.on('error', (error) => fail(error));
    reader.on('close', () => {
      if (!failed) resolve();
    });
  });
}

function decompress(compression: Compression, raw: Readable, { createGunzip }: ArchiveLibraries): StreamFilter {
  switch (compression) {
    case 'none':
      return { output: raw, finished: Promise.resolve(), stop: () => raw.destroy() };
    case 'gzip': {
      const gunzip = createGunzip();
      raw.on('error', (error) => gunzip.destroy(error));
      raw.pipe(gunzip);
      return { output: gunzip, finished: Promise.resolve(), stop: () => (raw.destroy(), gunzip.destroy()) };
    }
    case 'xz':
      return pipeThrough(['xz', '--decompress', '--stdout', '--quiet', '--single-stream', `--memlimit-decompress=${XZ_MEMORY_LIMIT}`], raw);
    case 'zstd':
      return pipeThrough(['zstd', '--decompress', '--stdout', '--quiet'], raw);
  }
}

/**
 * Decompresses `raw` and hands each tar entry to `onEntry`, which must
 * consume or leave its content (the rest is drained). Turns every failure
 * into PARSE, preferring the decompressor's account of it to the tar
 * parser's "Unexpected end of data".
 */
async function readTar(file: string, member: string, compression: Compression, raw: Readable, onEntry: (entry: TarEntry) => Promise<void>): Promise<void> {
  const libraries = await archiveLibraries();
  const filter = decompress(compression, raw, libraries);
  const extract = libraries.tarExtract();
  filter.output.on('error', (error: Error) => extract.destroy(error));
  filter.output.pipe(extract);
  try {
    for await (const entry of extract) {
      await onEntry(entry);
      for await (const chunk of entry) void chunk;
    }
  } catch (error) {
    filter.stop();
    const decompressorError = await filter.finished.then(
      () => undefined,
      (failure: unknown) => failure,
    );
    if (error instanceof BootenvError) throw error;
    if (decompressorError instanceof BootenvError && decompressorError.code !== 'COMMAND_FAILED') throw decompressorError;
    const detail = decompressorError instanceof Error ? decompressorError.message : error instanceof Error ? error.message : String(error);
    throw malformed(file, `${member}: ${detail}`);
  }
  try {
    await filter.finished;
  } catch (error) {
    if (error instanceof BootenvError && error.code === 'COMMAND_FAILED') throw malformed(file, `${member}: ${error.message}`);
    throw error;
  }
}

async function collectControlFile(file: string, entry: TarEntry, controlFiles: Map<string, Buffer>, total: { bytes: number }): Promise<void> {
  const name = normalizeMemberPath(entry.header.name, file);
  const type = entry.header.type;
  if (name === '' && type === 'directory') return;
  if (type !== 'file' || name.includes('/')) throw malformed(file, `control.tar holds ${type} ${JSON.stringify(entry.header.name)}; only plain files are allowed there`);
  const size = entry.header.size;
  total.bytes += size;
  if (size > MAX_CONTROL_FILE_SIZE || total.bytes > MAX_CONTROL_TOTAL_SIZE) throw malformed(file, `control.tar member ${name} is too large (${size} bytes)`);
  const chunks: Buffer[] = [];
  for await (const chunk of bytesOf(entry)) chunks.push(chunk);
  controlFiles.set(name, Buffer.concat(chunks));
}

function dataEntry(file: string, entry: TarEntry, paths: ArchivePaths): DebEntry | undefined {
  const header = entry.header;
  const entryPath = normalizeMemberPath(header.name, file);
  const type = TAR_TYPES[header.type];
  if (type === undefined) throw malformed(file, `data.tar entry ${JSON.stringify(header.name)} has unsupported type ${header.type}`);
  if (entryPath === '') {
    if (type !== 'directory') throw malformed(file, `data.tar's root entry is a ${type}`);
    return undefined;
  }
  paths.checkParents(entryPath);
  let linkTarget: string | null = null;
  if (type === 'symlink') {
    linkTarget = header.linkname ?? '';
    symlinkTargetInRoot(entryPath, linkTarget, file);
    paths.addSymlink(entryPath);
  } else if (type === 'hardlink') {
    linkTarget = paths.checkHardLink(entryPath, header.linkname ?? '');
  } else if (type === 'file') {
    paths.addFile(entryPath);
  }
  return {
    path: entryPath,
    type,
    mode: header.mode & 0o7777,
    uid: header.uid,
    gid: header.gid,
    size: type === 'file' ? header.size : 0,
    mtime: Math.floor(header.mtime.getTime() / 1000),
    linkTarget,
  };
}

/**
 * Reads the .deb at `file` from start to end: checks its ar layout, keeps
 * control.tar's files and streams data.tar's entries to
 * `handlers.onDataEntry`. Reads only; changes nothing on disk. Throws PARSE
 * for anything malformed or hostile, TOOL_MISSING when a member needs `xz`
 * or `zstd` and it is not installed.
 */
export async function readDeb(file: string, handlers: DebReadHandlers = {}): Promise<DebContents> {
  const layout = await readLayout(file);
  const controlFiles = new Map<string, Buffer>();
  const controlTotal = { bytes: 0 };
  let dataEntries = 0;
  let dataSeen = false;
  const paths = new ArchivePaths(file);
  await streamMembers(
    file,
    new Map([
      [layout.control.name, (stream: Readable) => readTar(file, layout.control.name, layout.control.compression, stream, (entry) => collectControlFile(file, entry, controlFiles, controlTotal))],
      [
        layout.data.name,
        async (stream: Readable) => {
          dataSeen = true;
          await readTar(file, layout.data.name, layout.data.compression, stream, async (entry) => {
            const described = dataEntry(file, entry, paths);
            if (described === undefined) return;
            dataEntries += 1;
            if (handlers.onDataEntry !== undefined) await handlers.onDataEntry(described, bytesOf(entry));
          });
        },
      ],
    ]),
  );
  if (!controlFiles.has('control')) throw malformed(file, 'control.tar has no control file');
  if (!dataSeen) throw malformed(file, `${layout.data.name} was not read`);
  return { controlFiles, controlCompression: layout.control.compression, dataCompression: layout.data.compression, dataEntries };
}

/**
 * Reads only control.tar's `control` file of the .deb at `file` (data.tar is
 * skipped, not decompressed). Reads only. Throws PARSE for a malformed
 * archive, TOOL_MISSING when control.tar needs `xz` or `zstd` and it is not
 * installed.
 */
export async function readDebControl(file: string): Promise<string> {
  const layout = await readLayout(file);
  const controlFiles = new Map<string, Buffer>();
  const controlTotal = { bytes: 0 };
  await streamMembers(
    file,
    new Map([[layout.control.name, (stream: Readable) => readTar(file, layout.control.name, layout.control.compression, stream, (entry) => collectControlFile(file, entry, controlFiles, controlTotal))]]),
  );
  const control = controlFiles.get('control');
  if (control === undefined) throw malformed(file, 'control.tar has no control file');
  return control.toString('utf8');
}

/** A control file's Installed-Size (dpkg counts KiB) in bytes; null when it has none or it is not a number. Pure. */
export function installedSizeBytes(control: string): number | null {
  const match = /^Installed-Size:[ \t]*([0-9]+)[ \t]*$/im.exec(control);
  return match === null ? null : Number(match[1]) * 1024;
}
