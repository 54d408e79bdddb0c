// Unit tests for src/sys/dedupe.ts: the parser of bootenv-dedupe's line protocol, and the
// helper's protocol itself (dist/bootenv-dedupe, built by npm run build) on files where no
// extent can be shared — what it says for missing files, symlinks, directories and sizes.
// Sharing on real btrfs is tested in test/integration/dedupe-helper.test.ts.
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { dedupeFiles, fileExtents, parseDedupeOutput, parseExtentsOutput } from '../../src/sys/dedupe.js';
import { bootenvErrorFrom, useTemporaryDirectory } from './helpers.js';

const HELPER = path.resolve('dist/bootenv-dedupe');

describe('parseDedupeOutput', () => {
  it('reads one outcome per pair, in order', () => {
    expect(parseDedupeOutput('same 131072\ndiffers 0\nerror 4096 EOPNOTSUPP FIDEDUPERANGE: Operation not supported\n', 3)).toEqual([
      { status: 'same', bytes: 131072 },
      { status: 'differs', bytes: 0 },
      { status: 'error', bytes: 4096, errno: 'EOPNOTSUPP', message: 'FIDEDUPERANGE: Operation not supported' },
    ]);
    expect(parseDedupeOutput('', 0)).toEqual([]);
  });

  it.each([
    ['a count that disagrees', 'same 1\n', 2],
    ['an unknown status', 'shared 1\n', 1],
    ['a missing byte count', 'same\n', 1],
    ['an error without errno', 'error 0 oops\n', 1],
    ['trailing garbage', 'same 1 extra\n', 1],
  ])('rejects %s', (_, output, count) => {
    expect(bootenvErrorFrom(() => parseDedupeOutput(output, count)).code).toBe('PARSE');
  });
});

describe('bootenv-dedupe protocol (on a filesystem without sharing)', () => {
  const directory = useTemporaryDirectory('bootenv-dedupe-unit.');

  it('reports each pair: missing, symlink, directory, size mismatch, empty files, no support', async () => {
    const at = (name: string) => path.join(directory(), name);
    writeFileSync(at('a'), 'x'.repeat(8192));
    writeFileSync(at('b'), 'x'.repeat(8192));
    writeFileSync(at('short'), 'x'.repeat(100));
    writeFileSync(at('empty1'), '');
    writeFileSync(at('empty2'), '');
    symlinkSync(at('b'), at('link'));
    mkdirSync(at('dir'));
    const outcomes = await dedupeFiles(
      [
        { source: at('missing'), destination: at('b') },
        { source: at('a'), destination: at('link') },
        { source: at('dir'), destination: at('b') },
        { source: at('a'), destination: at('short') },
        { source: at('empty1'), destination: at('empty2') },
        { source: at('a'), destination: at('b') },
      ],
      HELPER,
    );
    expect(outcomes.slice(0, 5)).toEqual([
      { status: 'error', bytes: 0, errno: 'ENOENT', message: 'source: No such file or directory' },
      { status: 'error', bytes: 0, errno: 'ELOOP', message: 'destination: Too many levels of symbolic links' },
      { status: 'error', bytes: 0, errno: 'EINVAL', message: 'source: not a regular file' },
      { status: 'differs', bytes: 0 },
      { status: 'same', bytes: 0 },
    ]);
    // Whatever this filesystem is (ext4, tmpfs, btrfs), the outcome is one of the protocol's.
    expect(['same', 'error']).toContain(outcomes[5]?.status);
  });

  it('refuses relative paths before running anything', async () => {
    await expect(dedupeFiles([{ source: 'a', destination: '/b' }], HELPER)).rejects.toMatchObject({ code: 'INTERNAL' });
  });
});

describe('parseExtentsOutput', () => {
  it('reads physical:length:flags triples, empty files and errors', () => {
    expect(parseExtentsOutput('extents 8380416:4096:1\nextents\nextents 4096:8192:2000 12288:4096:2001\nerror 0 ENOENT file: No such file or directory\n', 4)).toEqual([
      [{ physical: 8380416, length: 4096, flags: 1 }],
      [],
      [
        { physical: 4096, length: 8192, flags: 0x2000 },
        { physical: 12288, length: 4096, flags: 0x2001 },
      ],
      { error: 'ENOENT file: No such file or directory' },
    ]);
  });

  it.each([['extents 1:2\n'], ['extents 1:2:zz\n'], ['extent 1:2:3\n']])('rejects %j', (output) => {
    expect(bootenvErrorFrom(() => parseExtentsOutput(output, 1)).code).toBe('PARSE');
  });
});

describe('bootenv-dedupe --extents', () => {
  const directory = useTemporaryDirectory('bootenv-extents-unit.');

  it('maps a file written here, an empty file, and refuses what is not a regular file', async () => {
    writeFileSync(path.join(directory(), 'data'), Buffer.alloc(20000, 7));
    writeFileSync(path.join(directory(), 'empty'), '');
    const [data, empty, missing] = await fileExtents(['data', 'empty', 'missing'].map((name) => path.join(directory(), name)), HELPER);
    expect(Array.isArray(data) && data.reduce((sum, extent) => sum + extent.length, 0)).toBeGreaterThanOrEqual(20000);
    expect(empty).toEqual([]);
    expect(missing).toEqual({ error: 'ENOENT file: No such file or directory' });
  });
});
