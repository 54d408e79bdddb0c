/**
 * The btrfs send stream, decoded here rather than through `btrfs receive
 * --dump`: the dump prints xattr data raw (a newline in a value splits its
 * line), times to the second, and link targets in another form than the
 * other paths, while the stream is exact and binary-safe. The format
 * (btrfs-progs kernel-shared/send.h): the magic "btrfs-stream\0" and a
 * little-endian u32 version (1 to 3), then commands, each a header
 * { u32 length, u16 command, u32 crc32c } and `length` bytes of attributes
 * { u16 type, u16 length, data } (from version 2 on, DATA has no length and
 * runs to the end of its command). The parser is strict: a bad magic, an
 * unknown version, command or attribute, a missing or wrongly sized
 * attribute, a checksum mismatch, or bytes after END are PARSE errors, never
 * skipped. Paths are byte strings (one character per byte, 'latin1'): Linux
 * file names are bytes, not necessarily UTF-8. Pure.
 */
import { BootenvError } from '../errors.js';

const MAGIC = Buffer.from('btrfs-stream\0', 'latin1');
const STREAM_HEADER_BYTES = MAGIC.length + 4;
const COMMAND_HEADER_BYTES = 10;

export interface SendTime {
  seconds: bigint;
  nanoseconds: number;
}

/** One command of a send stream; `type` is the command's name in btrfs-progs (receive --dump prints the same). */
export type SendCommand =
  | { type: 'subvol'; path: string; uuid: string; ctransid: bigint }
  | { type: 'snapshot'; path: string; uuid: string; ctransid: bigint; parentUuid: string; parentCtransid: bigint }
  | { type: 'mkfile' | 'mkdir' | 'mkfifo' | 'mksock'; path: string; inode: bigint }
  | { type: 'mknod'; path: string; inode: bigint; mode: number; rdev: bigint }
  | { type: 'symlink'; path: string; inode: bigint; target: string }
  | { type: 'rename'; path: string; to: string }
  /** `path` is a new name of the inode already named `target`. */
  | { type: 'link'; path: string; target: string }
  | { type: 'unlink' | 'rmdir'; path: string }
  | { type: 'set_xattr'; path: string; name: string; dataLength: number }
  | { type: 'remove_xattr'; path: string; name: string }
  | { type: 'write' | 'update_extent' | 'encoded_write'; path: string; offset: bigint; length: bigint }
  | { type: 'clone'; path: string; offset: bigint; length: bigint; clonePath: string }
  | { type: 'truncate'; path: string; size: bigint }
  | { type: 'fallocate'; path: string; offset: bigint; length: bigint }
  | { type: 'chmod'; path: string; mode: number }
  | { type: 'chown'; path: string; uid: number; gid: number }
  | { type: 'utimes'; path: string; atime: SendTime; mtime: SendTime; ctime: SendTime }
  | { type: 'fileattr'; path: string; flags: bigint }
  | { type: 'enable_verity'; path: string }
  | { type: 'end' };

/** Attribute numbers (BTRFS_SEND_A_*). */
const A = {
  UUID: 1, CTRANSID: 2, INO: 3, SIZE: 4, MODE: 5, UID: 6, GID: 7, RDEV: 8, CTIME: 9, MTIME: 10, ATIME: 11, OTIME: 12,
  XATTR_NAME: 13, XATTR_DATA: 14, PATH: 15, PATH_TO: 16, PATH_LINK: 17, FILE_OFFSET: 18, DATA: 19,
  CLONE_UUID: 20, CLONE_CTRANSID: 21, CLONE_PATH: 22, CLONE_OFFSET: 23, CLONE_LEN: 24,
  FALLOCATE_MODE: 25, FILEATTR: 26, UNENCODED_FILE_LEN: 27, UNENCODED_LEN: 28, UNENCODED_OFFSET: 29, COMPRESSION: 30, ENCRYPTION: 31,
  VERITY_ALGORITHM: 32, VERITY_BLOCK_SIZE: 33, VERITY_SALT_DATA: 34, VERITY_SIG_DATA: 35,
} as const;
const HIGHEST_ATTRIBUTE: Record<number, number> = { 1: 24, 2: 31, 3: 35 };
const HIGHEST_COMMAND: Record<number, number> = { 1: 22, 2: 25, 3: 26 };

type Attributes = Map<number, Buffer>;

class Reader {
  constructor(private readonly attributes: Attributes, private readonly command: string) {}

  private get(type: number, size?: number): Buffer {
    const value = this.attributes.get(type);
    if (value === undefined) throw new BootenvError('PARSE', `send stream: ${this.command} without attribute ${type}`);
    if (size !== undefined && value.length !== size) throw new BootenvError('PARSE', `send stream: ${this.command} attribute ${type} has ${value.length} bytes, not ${size}`);
    return value;
  }

  string(type: number): string {
    return this.get(type).toString('latin1');
  }

  u64(type: number): bigint {
    return this.get(type, 8).readBigUInt64LE(0);
  }

  small(type: number): number {
    const value = this.u64(type);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new BootenvError('PARSE', `send stream: ${this.command} attribute ${type} is too large: ${value}`);
    return Number(value);
  }

  uuid(type: number): string {
    const hex = this.get(type, 16).toString('hex');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  time(type: number): SendTime {
    const value = this.get(type, 12);
    return { seconds: value.readBigInt64LE(0), nanoseconds: value.readUInt32LE(8) };
  }

  length(type: number): number {
    return this.get(type).length;
  }
}

function decode(code: number, attributes: Attributes): SendCommand {
  const names: Record<number, string> = {
    1: 'subvol', 2: 'snapshot', 3: 'mkfile', 4: 'mkdir', 5: 'mknod', 6: 'mkfifo', 7: 'mksock', 8: 'symlink', 9: 'rename', 10: 'link',
    11: 'unlink', 12: 'rmdir', 13: 'set_xattr', 14: 'remove_xattr', 15: 'write', 16: 'clone', 17: 'truncate', 18: 'chmod', 19: 'chown',
    20: 'utimes', 21: 'end', 22: 'update_extent', 23: 'fallocate', 24: 'fileattr', 25: 'encoded_write', 26: 'enable_verity',
  };
  const type = names[code];
  if (type === undefined) throw new BootenvError('PARSE', `send stream: unknown command ${code}`);
  const read = new Reader(attributes, type);
  switch (type) {
    case 'subvol':
      return { type, path: read.string(A.PATH), uuid: read.uuid(A.UUID), ctransid: read.u64(A.CTRANSID) };
    case 'snapshot':
      return { type, path: read.string(A.PATH), uuid: read.uuid(A.UUID), ctransid: read.u64(A.CTRANSID), parentUuid: read.uuid(A.CLONE_UUID), parentCtransid: read.u64(A.CLONE_CTRANSID) };
    case 'mkfile':
    case 'mkdir':
    case 'mkfifo':
    case 'mksock':
      return { type, path: read.string(A.PATH), inode: read.u64(A.INO) };
    case 'mknod':
      return { type, path: read.string(A.PATH), inode: read.u64(A.INO), mode: read.small(A.MODE), rdev: read.u64(A.RDEV) };
    case 'symlink':
      return { type, path: read.string(A.PATH), inode: read.u64(A.INO), target: read.string(A.PATH_LINK) };
    case 'rename':
      return { type, path: read.string(A.PATH), to: read.string(A.PATH_TO) };
    case 'link':
      return { type, path: read.string(A.PATH), target: read.string(A.PATH_LINK) };
    case 'unlink':
    case 'rmdir':
      return { type, path: read.string(A.PATH) };
    case 'set_xattr':
      return { type, path: read.string(A.PATH), name: read.string(A.XATTR_NAME), dataLength: read.length(A.XATTR_DATA) };
    case 'remove_xattr':
      return { type, path: read.string(A.PATH), name: read.string(A.XATTR_NAME) };
    case 'write':
      return { type, path: read.string(A.PATH), offset: read.u64(A.FILE_OFFSET), length: BigInt(read.length(A.DATA)) };
    case 'encoded_write':
      return { type, path: read.string(A.PATH), offset: read.u64(A.FILE_OFFSET), length: read.u64(A.UNENCODED_LEN) };
    case 'update_extent':
      return { type, path: read.string(A.PATH), offset: read.u64(A.FILE_OFFSET), length: read.u64(A.SIZE) };
    case 'clone':
      return { type, path: read.string(A.PATH), offset: read.u64(A.FILE_OFFSET), length: read.u64(A.CLONE_LEN), clonePath: read.string(A.CLONE_PATH) };
    case 'truncate':
      return { type, path: read.string(A.PATH), size: read.u64(A.SIZE) };
    case 'fallocate':
      return { type, path: read.string(A.PATH), offset: read.u64(A.FILE_OFFSET), length: read.u64(A.SIZE) };
    case 'chmod':
      return { type, path: read.string(A.PATH), mode: read.small(A.MODE) };
    case 'chown':
      return { type, path: read.string(A.PATH), uid: read.small(A.UID), gid: read.small(A.GID) };
    case 'utimes':
      return { type, path: read.string(A.PATH), atime: read.time(A.ATIME), mtime: read.time(A.MTIME), ctime: read.time(A.CTIME) };
    case 'fileattr':
      return { type, path: read.string(A.PATH), flags: read.u64(A.FILEATTR) };
    case 'enable_verity':
      return { type, path: read.string(A.PATH) };
    default:
      return { type: 'end' };
  }
}

const CRC32C_TABLE = (() => {
  const table = new Int32Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
    table[byte] = crc;
  }
  return table;
})();

/** CRC-32C as the send stream computes it: seed 0, no final inversion. */
export function crc32c(data: Uint8Array): number {
  return crc32cOver(0, data, 0, data.length) >>> 0;
}

function crc32cOver(seed: number, data: Uint8Array, from: number, to: number): number {
  let crc = seed;
  for (let index = from; index < to; index++) crc = (CRC32C_TABLE[(crc ^ (data[index] as number)) & 0xff] as number) ^ (crc >>> 8);
  return crc;
}

/** The CRC-32C of a command with its own crc field (bytes 6–9) read as zeros, without copying it. */
function commandChecksum(bytes: Uint8Array): number {
  let crc = crc32cOver(0, bytes, 0, 6);
  for (let index = 0; index < 4; index++) crc = (CRC32C_TABLE[crc & 0xff] as number) ^ (crc >>> 8);
  return crc32cOver(crc, bytes, 10, bytes.length) >>> 0;
}

/**
 * Decodes a send stream fed in chunks of any size: push() returns the
 * commands completed by each chunk, end() checks that the stream ended with
 * END and nothing after it. Throws PARSE (see the file comment).
 */
export class SendStreamParser {
  private buffered: Buffer = Buffer.alloc(0);
  private version: number | undefined;
  private ended = false;

  push(chunk: Buffer): SendCommand[] {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const commands: SendCommand[] = [];
    let offset = 0;
    if (this.version === undefined) {
      if (this.buffered.length < STREAM_HEADER_BYTES) return commands;
      if (!this.buffered.subarray(0, MAGIC.length).equals(MAGIC)) throw new BootenvError('PARSE', 'not a btrfs send stream (bad magic)');
      const version = this.buffered.readUInt32LE(MAGIC.length);
      if (HIGHEST_COMMAND[version] === undefined) throw new BootenvError('PARSE', `btrfs send stream version ${version} is not known`);
      this.version = version;
      offset = STREAM_HEADER_BYTES;
    }
    while (this.buffered.length - offset >= COMMAND_HEADER_BYTES) {
      const length = this.buffered.readUInt32LE(offset);
      if (this.buffered.length - offset < COMMAND_HEADER_BYTES + length) break;
      if (this.ended) throw new BootenvError('PARSE', 'send stream: data after the END command');
      commands.push(this.command(this.buffered.subarray(offset, offset + COMMAND_HEADER_BYTES + length)));
      offset += COMMAND_HEADER_BYTES + length;
    }
    this.buffered = this.buffered.subarray(offset);
    return commands;
  }

  end(): void {
    if (this.buffered.length > 0) throw new BootenvError('PARSE', `send stream: ${this.buffered.length} bytes of a truncated command at the end`);
    if (!this.ended) throw new BootenvError('PARSE', 'send stream: no END command (truncated stream)');
  }

  private command(bytes: Buffer): SendCommand {
    const code = bytes.readUInt16LE(4);
    const expected = bytes.readUInt32LE(6);
    if (commandChecksum(bytes) !== expected) throw new BootenvError('PARSE', `send stream: checksum mismatch in command ${code}`);
    const version = this.version as number;
    if (code === 0 || code > (HIGHEST_COMMAND[version] as number)) throw new BootenvError('PARSE', `send stream: command ${code} is not in version ${version}`);
    const attributes: Attributes = new Map();
    let offset = COMMAND_HEADER_BYTES;
    while (offset < bytes.length) {
      if (bytes.length - offset < 2) throw new BootenvError('PARSE', 'send stream: truncated attribute');
      const type = bytes.readUInt16LE(offset);
      offset += 2;
      if (type === 0 || type > (HIGHEST_ATTRIBUTE[version] as number)) throw new BootenvError('PARSE', `send stream: attribute ${type} is not in version ${version}`);
      let length: number;
      if (version >= 2 && type === A.DATA) {
        length = bytes.length - offset;
      } else {
        if (bytes.length - offset < 2) throw new BootenvError('PARSE', 'send stream: truncated attribute');
        length = bytes.readUInt16LE(offset);
        offset += 2;
      }
      if (bytes.length - offset < length) throw new BootenvError('PARSE', `send stream: attribute ${type} runs past its command`);
      attributes.set(type, bytes.subarray(offset, offset + length));
      offset += length;
    }
    const command = decode(code, attributes);
    if (command.type === 'end') this.ended = true;
    return command;
  }
}
