// The send-stream decoder (src/btrfs/send-stream.ts) on a real stream: `btrfs send --no-data -p`
// of every kind of change (test/fixtures-captured/send-stream-scenario.sh, btrfs-progs 6.2, Linux
// 6.18), checked command by command against what btrfs-progs' own decoder, `btrfs receive --dump`,
// printed for the same stream; then its strictness on damaged streams.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { crc32c, SendStreamParser, type SendCommand, type SendTime } from '../../src/btrfs/send-stream.js';

const captured = (suffix: string) => readFileSync(new URL(`../fixtures-captured/send-no-data.btrfs-progs-6.2.${suffix}`, import.meta.url));
const stream = captured('stream');
const dump = captured('dump.txt').toString('latin1').trimEnd().split('\n');

function parseAll(bytes: Buffer, chunk = bytes.length): SendCommand[] {
  const parser = new SendStreamParser();
  const commands: SendCommand[] = [];
  for (let offset = 0; offset < bytes.length; offset += chunk) commands.push(...parser.push(bytes.subarray(offset, offset + chunk)));
  parser.end();
  return commands;
}

/** receive-dump.c's print_path_escaped. */
function escaped(path: string): string {
  const named: Record<string, string> = { '\x07': '\\a', '\b': '\\b', '\x1b': '\\e', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\v': '\\v', ' ': '\\ ', '\\': '\\\\' };
  return [...path].map((c) => named[c] ?? (c.charCodeAt(0) < 0x20 || c.charCodeAt(0) > 0x7e ? `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}` : c)).join('');
}

/** receive-dump.c's time format, %FT%T%z (the capture ran in UTC). */
function time(value: SendTime): string {
  return `${new Date(Number(value.seconds) * 1000).toISOString().slice(0, 19)}+0000`;
}

/** One command as `btrfs receive --dump` prints it, for the subvolume `subvolume`. */
function dumpLine(command: SendCommand, subvolume: string): string {
  const full = (path: string) => `./${subvolume}${path === '' ? '/' : `/${path}`}`;
  const line = (title: string, path: string, rest?: string) => {
    const head = `${title.padEnd(16)}${escaped(path)}`;
    return rest === undefined ? head : `${head}${' '.repeat(Math.max(1, 32 - escaped(path).length))}${rest}`;
  };
  switch (command.type) {
    case 'snapshot':
      return line('snapshot', `./${command.path}`, `uuid=${command.uuid} transid=${command.ctransid} parent_uuid=${command.parentUuid} parent_transid=${command.parentCtransid}`);
    case 'mkfile':
    case 'mkdir':
    case 'mkfifo':
    case 'mksock':
    case 'unlink':
    case 'rmdir':
      return line(command.type, full(command.path));
    case 'mknod':
      return line('mknod', full(command.path), `mode=${command.mode.toString(8)} dev=0x${command.rdev.toString(16)}`);
    case 'symlink':
      return line('symlink', full(command.path), `dest=${escaped(command.target)}`);
    case 'rename':
      return line('rename', full(command.path), `dest=${escaped(full(command.to))}`);
    case 'link':
      return line('link', full(command.path), `dest=${escaped(command.target)}`);
    case 'set_xattr':
      return line('set_xattr', full(command.path), `name=${command.name} data=`);
    case 'remove_xattr':
      return line('remove_xattr', full(command.path), `name=${command.name}`);
    case 'update_extent':
      return line('update_extent', full(command.path), `offset=${command.offset} len=${command.length}`);
    case 'truncate':
      return line('truncate', full(command.path), `size=${command.size}`);
    case 'chmod':
      return line('chmod', full(command.path), `mode=${command.mode.toString(8)}`);
    case 'chown':
      return line('chown', full(command.path), `gid=${command.gid} uid=${command.uid}`);
    case 'utimes':
      return line('utimes', full(command.path), `atime=${time(command.atime)} mtime=${time(command.mtime)} ctime=${time(command.ctime)}`);
    default:
      throw new Error(`the capture has no ${command.type}`);
  }
}

describe('SendStreamParser on a real --no-data stream', () => {
  const commands = parseAll(stream);

  it('decodes every command as btrfs receive --dump does, and ends with END', () => {
    expect(commands.at(-1)).toEqual({ type: 'end' });
    const lines = commands.slice(0, -1).map((command) => dumpLine(command, 'current'));
    // set_xattr: the dump prints the value raw up to its first NUL, then its length.
    const comparable = dump.map((text) => text.replace(/^(set_xattr .* data=).*$/, '$1'));
    expect(lines).toEqual(comparable);
    const xattrs = commands.filter((command) => command.type === 'set_xattr');
    expect(xattrs.map((command) => [command.path, command.name, command.dataLength])).toEqual([
      ['etc/xattr-me', 'user.note', 8],
      ['etc/capped', 'security.capability', 20],
    ]);
  });

  it('keeps times to the nanosecond and names as bytes (a newline stays a newline)', () => {
    const touched = commands.find((command) => command.type === 'utimes' && command.path === 'etc/touch-me');
    expect(touched?.type === 'utimes' && touched.mtime.nanoseconds).toBeGreaterThan(0);
    expect(commands.some((command) => command.type === 'rename' && command.to === 'srv/new\nline')).toBe(true);
  });

  it('gives the same commands whatever the chunks the stream arrives in', () => {
    expect(parseAll(stream, 7)).toEqual(commands);
    expect(parseAll(stream, 4096)).toEqual(commands);
  });
});

describe('SendStreamParser is strict', () => {
  it('refuses a bad magic and an unknown version', () => {
    const wrongMagic = Buffer.from(stream);
    wrongMagic[0] = 0x42;
    expect(() => parseAll(wrongMagic)).toThrow(/bad magic/);
    const wrongVersion = Buffer.from(stream);
    wrongVersion.writeUInt32LE(9, 13);
    expect(() => parseAll(wrongVersion)).toThrow(/version 9 is not known/);
  });

  it('refuses a flipped bit (checksum), a truncated stream and bytes after END', () => {
    const flipped = Buffer.from(stream);
    flipped[40] = (flipped[40] as number) ^ 1;
    expect(() => parseAll(flipped)).toThrow(/checksum mismatch/);
    expect(() => parseAll(stream.subarray(0, stream.length - 3))).toThrow(/truncated command/);
    expect(() => parseAll(stream.subarray(0, stream.length - 10))).toThrow(/no END command/);
    const endCommand = stream.subarray(stream.length - 10);
    expect(() => parseAll(Buffer.concat([stream, endCommand]))).toThrow(/after the END command/);
  });

  it('refuses an unknown command, with a valid checksum', () => {
    const header = stream.subarray(0, 17);
    const command = Buffer.alloc(10);
    command.writeUInt32LE(0, 0);
    command.writeUInt16LE(99, 4);
    command.writeUInt32LE(crc32c(command), 6);
    expect(() => parseAll(Buffer.concat([header, command]))).toThrow(/command 99 is not in version 1/);
  });
});
