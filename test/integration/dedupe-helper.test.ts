// bootenv-dedupe (through src/sys/dedupe.ts) on a real loop-mounted btrfs: files rewritten
// with fresh extents, as dpkg writes them, come to share the origin's extents (FIEMAP physical
// offsets via filefrag -v, exclusive bytes via btrfs filesystem du) while keeping their inode,
// mode (setuid), mtime, hard links and file capabilities; ranges over 16 MiB go in pieces;
// differing content, sparse sources and inline-sized files behave as docs/dedupe.md says.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, linkSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { dedupeFiles } from '../../src/sys/dedupe.js';
import { withScratchBtrfs } from '../harness/btrfs-image.js';
import { exclusiveBytes, extentsOf } from '../harness/extents.js';

const HELPER = path.resolve('dist/bootenv-dedupe');

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** Writes `content` as a new file at `file` (new inode, new extents), replacing what is there. */
function writeFresh(file: string, content: Buffer): void {
  writeFileSync(`${file}.new`, content);
  renameSync(`${file}.new`, file);
}

describe('bootenv-dedupe on btrfs', () => {
  it('shares extents and keeps inode, setuid mode, mtime, hard links and capabilities', async () => {
    await withScratchBtrfs(1, async ({ top }) => {
      const origin = path.join(top, 'origin');
      const next = path.join(top, 'next');
      await execa('btrfs', ['subvolume', 'create', origin]);
      const files = { 'same.bin': randomBytes(128 * 1024), 'big.bin': randomBytes(17 * 1024 * 1024 + 123), 'ping': randomBytes(70_000) };
      for (const [name, content] of Object.entries(files)) writeFileSync(path.join(origin, name), content);
      await execa('btrfs', ['subvolume', 'snapshot', origin, next]);
      for (const [name, content] of Object.entries(files)) writeFresh(path.join(next, name), content);
      chmodSync(path.join(next, 'ping'), 0o4755);
      await execa('setcap', ['cap_net_raw+ep', path.join(next, 'ping')]);
      linkSync(path.join(next, 'same.bin'), path.join(next, 'same-link.bin'));
      utimesSync(path.join(next, 'big.bin'), 1704067200, 1704067200);
      const before = Object.fromEntries(Object.keys(files).map((name) => [name, statSync(path.join(next, name), { bigint: true })]));
      expect(await exclusiveBytes(next)).toBeGreaterThan(17 * 1024 * 1024);

      const outcomes = await dedupeFiles(
        Object.keys(files).map((name) => ({ source: path.join(origin, name), destination: path.join(next, name) })),
        HELPER,
      );

      expect(outcomes).toEqual(Object.values(files).map((content) => ({ status: 'same', bytes: content.length })));
      for (const [name, content] of Object.entries(files)) {
        const destination = path.join(next, name);
        const after = statSync(destination, { bigint: true });
        expect({ ino: after.ino, mode: after.mode, mtime: after.mtimeNs, uid: after.uid, size: after.size }).toEqual({
          ino: before[name]?.ino,
          mode: before[name]?.mode,
          mtime: before[name]?.mtimeNs,
          uid: before[name]?.uid,
          size: before[name]?.size,
        });
        expect(sha256(destination)).toBe(createHash('sha256').update(content).digest('hex'));
        const sourceExtents = await extentsOf(path.join(origin, name));
        const destinationExtents = await extentsOf(destination);
        expect(destinationExtents.map(({ logical, physical }) => [logical, physical])).toEqual(sourceExtents.map(({ logical, physical }) => [logical, physical]));
        expect(destinationExtents.every((extent) => extent.flags.includes('shared'))).toBe(true);
      }
      expect(statSync(path.join(next, 'ping')).mode & 0o7777).toBe(0o4755);
      expect((await execa('getcap', [path.join(next, 'ping')])).stdout).toMatch(/cap_net_raw[=+]ep/);
      expect(statSync(path.join(next, 'same-link.bin')).ino).toBe(statSync(path.join(next, 'same.bin')).ino);
      expect(statSync(path.join(next, 'same.bin')).nlink).toBe(2);
      expect(await exclusiveBytes(next)).toBe(0);
    });
  });

  it('shares nothing of differing content past the first differing 16 MiB piece; a sparse source; inline-sized files', async () => {
    await withScratchBtrfs(1, async ({ top }) => {
      const origin = path.join(top, 'origin');
      const next = path.join(top, 'next');
      await execa('btrfs', ['subvolume', 'create', origin]);
      const common = randomBytes(17 * 1024 * 1024);
      writeFileSync(path.join(origin, 'tail-differs'), Buffer.concat([common, randomBytes(1024 * 1024)]));
      // A sparse source: 8 MiB of hole, then data.
      await execa('truncate', ['-s', String(8 * 1024 * 1024), path.join(origin, 'sparse')]);
      writeFileSync(path.join(origin, 'sparse'), randomBytes(65536), { flag: 'a' });
      writeFileSync(path.join(origin, 'tiny'), randomBytes(2048));
      await execa('btrfs', ['subvolume', 'snapshot', origin, next]);
      writeFresh(path.join(next, 'tail-differs'), Buffer.concat([common, randomBytes(1024 * 1024)]));
      writeFresh(path.join(next, 'sparse'), readFileSync(path.join(origin, 'sparse')));
      writeFresh(path.join(next, 'tiny'), readFileSync(path.join(origin, 'tiny')));
      const sparseHash = sha256(path.join(next, 'sparse'));

      const outcomes = await dedupeFiles(
        ['tail-differs', 'sparse', 'tiny'].map((name) => ({ source: path.join(origin, name), destination: path.join(next, name) })),
        HELPER,
      );

      // The first 16 MiB piece was equal and is shared; the second differs and stays apart.
      expect(outcomes[0]).toEqual({ status: 'differs', bytes: 16 * 1024 * 1024 });
      expect(outcomes[1]).toEqual({ status: 'same', bytes: 8 * 1024 * 1024 + 65536 });
      expect(sha256(path.join(next, 'sparse'))).toBe(sparseHash);
      expect(await exclusiveBytes(path.join(next, 'sparse'))).toBe(0);
      // A file of up to 2048 bytes lives inline in the metadata: the kernel says "same" but there is no extent to share.
      expect(outcomes[2]).toEqual({ status: 'same', bytes: 2048 });
      expect((await extentsOf(path.join(next, 'tiny')))[0]?.flags).toContain('inline');
    });
  });
});
