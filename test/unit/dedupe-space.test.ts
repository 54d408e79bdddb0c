// Unit tests for src/dedupe/space.ts and src/btrfs/dump-tree.ts: space per subvolume counted as quota
// groups count it, from what each subvolume tree refers to; checked against the quota groups of the
// very filesystem the dump-tree output was captured from.
//
// The captured filesystem (btrfs-progs 6.2, kernel 6.18, mkfs.btrfs defaults: 16 KiB nodes, DUP
// metadata, no-holes): subvolume @ (256) with 150 files of 1000·i random bytes, 60 inline ones, an
// xattr with a newline in its value, two zstd-compressed files (one with an uncompressed tail) and a
// preallocated one; snapshot `snap` (257) of it in which 40 files were rewritten, one partly
// overwritten (bookend extent), one deleted and one reflinked from @. Then quota enable,
// quota rescan -w, `btrfs qgroup show --raw`, `dump-tree -r` and `dump-tree --hide-names -t ID`.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseQgroupShow } from '../../src/btrfs/parse.js';
import { parseSubvolumeTreeIds, TreeDumpParser, type TreeReferences } from '../../src/btrfs/dump-tree.js';
import { countReferences, measureFreedTogether, measureSubvolumeSpace, mergeRanges, relativeDifference, sameExtents } from '../../src/dedupe/space.js';

const SHARED = 0x2000;
const INLINE = 0x200;
const CAPTURED = path.join(__dirname, '../fixtures-captured');
const captured = (name: string) => readFileSync(path.join(CAPTURED, name), 'utf8');

function parseTree(output: string): TreeReferences {
  const parser = new TreeDumpParser();
  for (const line of output.split('\n')) parser.line(line);
  return parser.finish();
}

describe('parseSubvolumeTreeIds', () => {
  it('lists the top level and every subvolume tree, nothing else', () => {
    expect(parseSubvolumeTreeIds(captured('dump-tree-roots.btrfs-progs-6.2.txt'))).toEqual([5, 256, 257]);
  });

  it('rejects a line of unknown shape', () => {
    expect(() => parseSubvolumeTreeIds('btrfs-progs v6.2\nsomething new 12\n')).toThrow(/unexpected line/);
  });
});

describe('TreeDumpParser', () => {
  it('collects tree blocks and data extents (whole extents, holes left out)', () => {
    const tree = parseTree(captured('dump-tree-256.btrfs-progs-6.2.txt'));
    expect(tree.blocks.size).toBeGreaterThan(1);
    expect([...tree.dataExtents.values()].every((bytes) => bytes > 0 && bytes % 4096 === 0)).toBe(true);
  });

  it('rejects an unknown line, an empty output and a block pointed to but not printed', () => {
    const parser = new TreeDumpParser();
    expect(() => parser.line('checksum verify failed on 30965760 wanted 0x1 found 0x2')).toThrow(/unexpected line/);
    expect(() => new TreeDumpParser().finish()).toThrow(/no tree/);
    const lines = captured('dump-tree-256.btrfs-progs-6.2.txt').split('\n');
    const firstLeaf = lines.findIndex((line) => line.startsWith('leaf '));
    const truncated = new TreeDumpParser();
    for (const line of lines.slice(0, firstLeaf)) truncated.line(line);
    expect(() => truncated.finish()).toThrow(/pointed to but was not printed/);
  });
});

describe('measureSubvolumeSpace', () => {
  it('gives exactly the quota groups\' referenced and exclusive bytes of the captured filesystem', () => {
    const trees = new Map([5, 256, 257].map((id) => [id, parseTree(captured(`dump-tree-${id}.btrfs-progs-6.2.txt`))]));
    const counts = countReferences(trees.values());
    const quotas = parseQgroupShow(captured('dump-tree-qgroup-show-raw.btrfs-progs-6.2.txt'));
    for (const [id, tree] of trees) {
      const space = measureSubvolumeSpace(tree, counts, 16384, null);
      const quota = quotas.find((usage) => usage.subvolumeId === id);
      expect({ id, referenced: space.referencedBytes, exclusive: space.exclusiveBytes }).toEqual({ id, referenced: quota?.referencedBytes, exclusive: quota?.exclusiveBytes });
    }
    const snapshot = measureSubvolumeSpace(trees.get(257) as TreeReferences, counts, 16384, trees.get(256) as TreeReferences);
    // What the snapshot shares with its origin is all it refers to but its own; nothing else shares with it.
    expect(snapshot.sharedWithOriginBytes).toBe(snapshot.referencedBytes - snapshot.exclusiveBytes);
    expect(snapshot.metadataExclusiveBytes).toBeGreaterThan(0);
  });

  it('counts a block or extent once per subvolume, exclusive only when no other subvolume refers to it', () => {
    const a = { blocks: new Set([1000, 2000]), dataExtents: new Map([[10_000, 8192], [20_000, 4096]]) };
    const b = { blocks: new Set([1000, 3000]), dataExtents: new Map([[10_000, 8192]]) };
    const counts = countReferences([a, b]);
    expect(measureSubvolumeSpace(a, counts, 16384, b)).toEqual({
      referencedBytes: 2 * 16384 + 12288,
      exclusiveBytes: 16384 + 4096,
      metadataReferencedBytes: 2 * 16384,
      metadataExclusiveBytes: 16384,
      sharedWithOriginBytes: 16384 + 8192,
    });
    expect(measureSubvolumeSpace(a, counts, 16384, null).sharedWithOriginBytes).toBeNull();
  });
});

describe('measureFreedTogether', () => {
  const a = { blocks: new Set([1000, 2000]), dataExtents: new Map([[10_000, 8192], [20_000, 4096]]) };
  const b = { blocks: new Set([1000, 3000]), dataExtents: new Map([[10_000, 8192], [30_000, 512]]) };
  const c = { blocks: new Set([3000, 4000]), dataExtents: new Map([[30_000, 512]]) };
  const counts = countReferences([a, b, c]);

  it.each<[string, Array<typeof a>, number]>([
    ['nothing', [], 0],
    ['one subvolume: its exclusive bytes', [a], 16384 + 4096],
    ['two that share a block and an extent: those too, once; not what a third shares', [a, b], 2 * 16384 + 8192 + 4096],
    ['what a third still refers to is not freed', [b], 0],
    ['all of them: everything, each once', [a, b, c], 4 * 16384 + 8192 + 4096 + 512],
  ])('%s', (_, subvolumes, bytes) => {
    expect(measureFreedTogether(subvolumes, counts, 16384)).toBe(bytes);
  });

  it('is the sum of exclusive bytes where the subvolumes share nothing among themselves, on the captured filesystem', () => {
    const trees = new Map([5, 256, 257].map((id) => [id, parseTree(captured(`dump-tree-${id}.btrfs-progs-6.2.txt`))]));
    const all = countReferences(trees.values());
    const one = trees.get(257) as TreeReferences;
    expect(measureFreedTogether([one], all, 16384)).toBe(measureSubvolumeSpace(one, all, 16384, null).exclusiveBytes);
    const snapshotAndOrigin = [trees.get(256), trees.get(257)] as TreeReferences[];
    const exclusiveSum = snapshotAndOrigin.reduce((sum, tree) => sum + measureSubvolumeSpace(tree, all, 16384, null).exclusiveBytes, 0);
    expect(measureFreedTogether(snapshotAndOrigin, all, 16384)).toBeGreaterThan(exclusiveSum);
  });
});

describe('relativeDifference', () => {
  it.each([
    [101, 100, 0.01],
    [99, 100, 0.01],
    [0, 0, 0],
    [1, 0, Infinity],
  ])('|%d − %d| ÷ quota = %d', (counted, quota, expected) => {
    expect(relativeDifference(counted, quota)).toBeCloseTo(expected);
  });
});

describe('mergeRanges', () => {
  it('merges overlapping and touching extents and drops inline ones', () => {
    expect(
      mergeRanges([
        { physical: 8192, length: 4096, flags: 0 },
        { physical: 0, length: 4096, flags: 0 },
        { physical: 4096, length: 4096, flags: 1 },
        { physical: 10000, length: 4096, flags: 0 },
        { physical: 50000, length: 100, flags: INLINE },
      ]),
    ).toEqual([[0, 14096]]);
  });
});

describe('sameExtents', () => {
  it('is true only for data in the very same places', () => {
    const a = [{ physical: 0, length: 4096, flags: SHARED }, { physical: 4096, length: 4096, flags: SHARED | 1 }];
    expect(sameExtents(a, [{ physical: 0, length: 8192, flags: SHARED | 1 }])).toBe(true);
    expect(sameExtents(a, [{ physical: 8192, length: 8192, flags: 1 }])).toBe(false);
    expect(sameExtents([], [])).toBe(false);
  });
});
