// Unit tests for src/deb: .debs built here with dpkg-deb in each compression (xz, zstd, gzip,
// none) read back entry by entry and hashed; hand-made hostile archives (truncated, corrupt
// compression, ../ and absolute names, symlinks out, entries below a symlink, enormous headers,
// wrong ar layout) refused with PARSE, with nothing written and no decompressor left running.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import { pack as tarPack } from 'tar-stream';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Compression } from '../../src/deb/ar.js';
import { hashDebPayload, xxh64OfFile } from '../../src/deb/payload.js';
import { readDeb, type DebEntry } from '../../src/deb/reader.js';
import { BootenvError } from '../../src/errors.js';
import { useTemporaryDirectory } from './helpers.js';

const directory = useTemporaryDirectory('bootenv-deb-unit.');
const at = (...parts: string[]) => path.join(directory(), ...parts);
const COMPRESSIONS: Compression[] = ['xz', 'zstd', 'gzip', 'none'];
const SUFFIX: Record<Compression, string> = { xz: '.xz', zstd: '.zst', gzip: '.gz', none: '' };
const big = randomBytes(300_000);

/** A package tree with the kinds of entries a .deb holds. */
function stagePackage(stage: string): void {
  mkdirSync(path.join(stage, 'DEBIAN'), { recursive: true });
  mkdirSync(path.join(stage, 'usr/share/t'), { recursive: true });
  mkdirSync(path.join(stage, 'usr/bin'), { recursive: true });
  mkdirSync(path.join(stage, 'etc'), { recursive: true });
  writeFileSync(path.join(stage, 'DEBIAN/control'), 'Package: bootenv-t-reader\nVersion: 1.2-3\nArchitecture: all\nMaintainer: t <t@t.invalid>\nDescription: reader test\n');
  writeFileSync(path.join(stage, 'DEBIAN/conffiles'), '/etc/t.conf\nremove-on-upgrade /etc/old.conf\n');
  writeFileSync(path.join(stage, 'usr/share/t/a.txt'), 'hello\n');
  writeFileSync(path.join(stage, 'usr/share/t/big.bin'), big);
  writeFileSync(path.join(stage, 'usr/bin/tool'), '#!/bin/sh\n');
  writeFileSync(path.join(stage, 'etc/t.conf'), 'setting = 1\n');
  chmodSync(path.join(stage, 'usr/bin/tool'), 0o4755);
  symlinkSync('a.txt', path.join(stage, 'usr/share/t/link'));
  symlinkSync('/etc/alternatives/tool', path.join(stage, 'usr/bin/alt'));
  linkSync(path.join(stage, 'usr/share/t/a.txt'), path.join(stage, 'usr/share/t/hard'));
  const md5 = ['usr/share/t/a.txt', 'usr/share/t/big.bin', 'usr/bin/tool'].map((file) => `${createHash('md5').update(readFileSync(path.join(stage, file))).digest('hex')}  ${file}`);
  writeFileSync(path.join(stage, 'DEBIAN/md5sums'), `${md5.join('\n')}\n`);
}

async function buildDeb(compression: Compression): Promise<string> {
  const stage = at(`stage-${compression}`);
  stagePackage(stage);
  const deb = at(`good-${compression}.deb`);
  await execa('dpkg-deb', [`-Z${compression}`, '--root-owner-group', '--build', stage, deb], { env: { SOURCE_DATE_EPOCH: '1704067200' } });
  return deb;
}

function arOf(members: Array<[string, Buffer]>): Buffer {
  const parts: Buffer[] = [Buffer.from('!<arch>\n', 'latin1')];
  for (const [name, data] of members) {
    const header = `${name.padEnd(16)}${'0'.padEnd(12)}${'0'.padEnd(6)}${'0'.padEnd(6)}${'100644'.padEnd(8)}${String(data.length).padEnd(10)}\`\n`;
    parts.push(Buffer.from(header, 'latin1'), data);
    if (data.length % 2 === 1) parts.push(Buffer.from('\n'));
  }
  return Buffer.concat(parts);
}

interface TarItem {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link';
  linkname?: string;
  content?: string;
}

async function tarOf(items: TarItem[]): Promise<Buffer> {
  const packer = tarPack();
  for (const item of items) {
    const { content, ...header } = item;
    packer.entry({ mode: 0o644, mtime: new Date(0), ...header }, content ?? '');
  }
  packer.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of packer) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const CONTROL_TAR = () => tarOf([{ name: './', type: 'directory' }, { name: './control', content: 'Package: x\nVersion: 1\n' }]);

/** A .deb with the given data.tar (uncompressed) and otherwise valid members. */
async function debWithData(name: string, data: Buffer, control?: Buffer): Promise<string> {
  const file = at(name);
  writeFileSync(file, arOf([['debian-binary', Buffer.from('2.0\n')], ['control.tar', control ?? (await CONTROL_TAR())], ['data.tar', data]]));
  return file;
}

/** Names, sizes and mtimes of everything in the temporary directory: what "no change on disk" compares. */
function listing(): string[] {
  return readdirSync(directory(), { recursive: true, withFileTypes: true }).map((entry) => {
    const full = path.join(entry.parentPath ?? entry.path, entry.name);
    const stats = statSync(full, { throwIfNoEntry: false });
    return `${full} ${stats?.size} ${stats?.mtimeMs}`;
  }).sort();
}

/** Children of this process that are decompressors: none may outlive a read. */
function decompressorChildren(): string[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .flatMap((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        return parent === process.pid && ['xz', 'zstd'].includes(comm) ? [`${pid} ${comm}`] : [];
      } catch {
        return [];
      }
    });
}

async function expectRefused(file: string, pattern: RegExp): Promise<void> {
  const before = listing();
  const error = await readDeb(file, { onDataEntry: async (_, content) => { for await (const chunk of content) void chunk; } }).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(BootenvError);
  expect((error as BootenvError).code).toBe('PARSE');
  expect((error as BootenvError).message).toMatch(pattern);
  expect(listing()).toEqual(before);
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(decompressorChildren()).toEqual([]);
}

describe('readDeb on packages built by dpkg-deb', () => {
  const debs = new Map<Compression, string>();
  beforeAll(async () => {
    for (const compression of COMPRESSIONS) debs.set(compression, await buildDeb(compression));
  });

  it.each(COMPRESSIONS)('%s: every entry, control files and payload hashes', async (compression) => {
    const deb = debs.get(compression) as string;
    const entries: DebEntry[] = [];
    const contents = await readDeb(deb, {
      onDataEntry: async (entry) => {
        entries.push(entry);
      },
    });
    expect(contents.dataCompression).toBe(compression);
    expect(contents.controlCompression).toBe(compression === 'none' ? 'none' : compression === 'zstd' ? 'zstd' : compression);
    const { stdout } = await execa('dpkg-deb', ['-c', deb]);
    const listed = stdout.split('\n').map((line) => line.replace(/^.{10} .*? \d{4}-\d\d-\d\d \d\d:\d\d \.\//, '').replace(/ (->|link to) .*$/, '').replace(/\/$/, '')).filter(Boolean);
    expect(entries.map((entry) => entry.path)).toEqual(listed);
    const byPath = new Map(entries.map((entry) => [entry.path, entry]));
    expect(byPath.get('usr/bin/tool')).toMatchObject({ type: 'file', mode: 0o4755, uid: 0, gid: 0, mtime: 1704067200 });
    expect(byPath.get('usr/share/t/link')).toMatchObject({ type: 'symlink', linkTarget: 'a.txt' });
    expect(byPath.get('usr/bin/alt')).toMatchObject({ type: 'symlink', linkTarget: '/etc/alternatives/tool' });
    expect(byPath.get('usr/share/t/hard')).toMatchObject({ type: 'hardlink', linkTarget: 'usr/share/t/a.txt' });
    expect(byPath.get('usr/share/t')).toMatchObject({ type: 'directory' });

    const payload = await hashDebPayload(deb);
    expect(payload).toMatchObject({ package: 'bootenv-t-reader', version: '1.2-3', architecture: 'all', conffiles: ['/etc/t.conf', '/etc/old.conf'] });
    expect(payload.md5sums).toContain('  usr/share/t/big.bin');
    const stage = at(`stage-${compression}`);
    const expected = [];
    for (const file of ['etc/t.conf', 'usr/bin/tool', 'usr/share/t/a.txt', 'usr/share/t/big.bin']) {
      expected.push({ path: file, size: statSync(path.join(stage, file)).size, mode: statSync(path.join(stage, file)).mode & 0o7777, xxh64: await xxh64OfFile(path.join(stage, file)) });
    }
    expect([...payload.files].sort((a, b) => a.path.localeCompare(b.path))).toEqual(expected);
  });

  it.each(COMPRESSIONS)('%s: truncated anywhere, refused', async (compression) => {
    const good = readFileSync(debs.get(compression) as string);
    for (const length of [4, 8, 70, Math.floor(good.length / 2), good.length - 3]) {
      const file = at(`truncated-${compression}-${length}.deb`);
      writeFileSync(file, good.subarray(0, length));
      await expectRefused(file, /not a valid \.deb: (no ar archive signature|the ar archive has no members|truncated ar member header|ar member .* is truncated)/);
    }
  });

  it.each(['xz', 'zstd', 'gzip'] as const)('%s: corrupt compressed data, refused with the decompressor\'s reason', async (compression) => {
    const good = readFileSync(debs.get(compression) as string);
    const dataHeader = good.indexOf(`data.tar${SUFFIX[compression]}`);
    const dataStart = dataHeader + 60;
    const corrupt = Buffer.from(good);
    for (let offset = dataStart + 40; offset < dataStart + 240; offset++) corrupt[offset] = (corrupt[offset] as number) ^ 0x5a;
    const file = at(`corrupt-${compression}.deb`);
    writeFileSync(file, corrupt);
    await expectRefused(file, /data\.tar\.(xz|zst|gz): /);
  });
});

describe('readDeb refuses hostile archives', () => {
  it.each([
    ['a ../ name', [{ name: './usr/../../etc/passwd', content: 'x' }], /climbs out with \.\./],
    ['an absolute name', [{ name: '/etc/passwd', content: 'x' }], /absolute member name/],
    ['a symlink out of the root', [{ name: './usr/', type: 'directory' }, { name: './usr/escape', type: 'symlink', linkname: '../../etc' }], /points out of the package root/],
    ['an entry below a symlink', [{ name: './usr', type: 'symlink', linkname: '/etc' }, { name: './usr/passwd', content: 'x' }], /lies below the symlink usr/],
    ['a hard link to nothing in the package', [{ name: './etc-passwd', type: 'link', linkname: '/etc/passwd' }], /absolute member name|names no earlier file/],
  ] as Array<[string, TarItem[], RegExp]>)('%s', async (label, items, pattern) => {
    await expectRefused(await debWithData(`hostile-${label.replace(/\W+/g, '-')}.deb`, await tarOf([{ name: './', type: 'directory' }, ...items])), pattern);
  });

  it('an enormous pax header', async () => {
    const header = Buffer.alloc(512);
    header.write('./PaxHeaders/x', 0, 'latin1');
    header.write('0000644\0', 100, 'latin1');
    header.write('0000000\0', 108, 'latin1');
    header.write('0000000\0', 116, 'latin1');
    header.write('7777777777\0', 124, 'latin1');
    header.write('00000000000\0', 136, 'latin1');
    header.write('x', 156, 'latin1');
    header.write('ustar\x0000', 257, 'latin1');
    header.fill(' ', 148, 156);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    await expectRefused(await debWithData('hostile-pax.deb', Buffer.concat([header, Buffer.alloc(1024)])), /Header exceeds max size/);
  });

  it('an ar member that claims more bytes than the file has', async () => {
    const file = at('hostile-ar-size.deb');
    const good = arOf([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await CONTROL_TAR()], ['data.tar', await tarOf([])]]);
    const claimed = Buffer.from(good);
    const dataHeader = claimed.indexOf('data.tar');
    claimed.write('9999999999', dataHeader + 48, 'latin1');
    writeFileSync(file, claimed);
    await expectRefused(file, /ar member data\.tar is truncated/);
  });

  it.each([
    ['no signature', () => Buffer.from('not an archive at all'), /no ar archive signature/],
    ['debian-binary not first', async () => arOf([['control.tar', await CONTROL_TAR()], ['debian-binary', Buffer.from('2.0\n')]]), /first ar member is not debian-binary/],
    ['format 3', async () => arOf([['debian-binary', Buffer.from('3.0\n')], ['control.tar', await CONTROL_TAR()], ['data.tar', await tarOf([])]]), /not format 2\.x/],
    ['bzip2 members', async () => arOf([['debian-binary', Buffer.from('2.0\n')], ['control.tar.bz2', Buffer.from('BZh9')], ['data.tar', await tarOf([])]]), /unsupported member/],
    ['no data member', async () => arOf([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await CONTROL_TAR()]]), /no data\.tar member/],
    ['a bad member header trailer', async () => {
      const archive = arOf([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await CONTROL_TAR()], ['data.tar', await tarOf([])]]);
      archive.write('xx', archive.indexOf('data.tar') + 58, 'latin1');
      return archive;
    }, /without its/],
    ['trailing garbage after the members', async () => Buffer.concat([arOf([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await CONTROL_TAR()], ['data.tar', await tarOf([])]]), Buffer.alloc(70, 0x41)]), /ar member/],
    ['a control.tar without control', async () => arOf([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await tarOf([{ name: './postinst', content: '#!/bin/sh' }])], ['data.tar', await tarOf([])]]), /no control file/],
    ['a symlink in control.tar', async () => arOf([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await tarOf([{ name: './control', type: 'symlink', linkname: '/etc/shadow' }])], ['data.tar', await tarOf([])]]), /only plain files/],
    ['a gzip member that is not gzip', async () => arOf([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await CONTROL_TAR()], ['data.tar.gz', Buffer.from('plainly not gzip')]]), /data\.tar\.gz: /],
    ['an xz member that is not xz', async () => arOf([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await CONTROL_TAR()], ['data.tar.xz', gzipSync(Buffer.from('gzip, not xz'))]]), /data\.tar\.xz: /],
  ] as Array<[string, () => Buffer | Promise<Buffer>, RegExp]>)('%s', async (label, make, pattern) => {
    const file = at(`hostile-${label.replace(/\W+/g, '-')}.deb`);
    writeFileSync(file, await make());
    await expectRefused(file, pattern);
  });
});
