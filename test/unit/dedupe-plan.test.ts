// Unit tests for src/dedupe/plan.ts: md5sums parsing, candidate pairs (same path, moved to another
// path or package, .deb payload fallback, skipped packages), the per-file decision and the inline limit.
import { describe, expect, it } from 'vitest';
import { decide, inlineLimit, parseMd5sums, planCandidates, type FileFacts, type PackageSums } from '../../src/dedupe/plan.js';
import { bootenvErrorFrom } from './helpers.js';

const A = 'a'.repeat(32);
const B = 'b'.repeat(32);
const C = 'c'.repeat(32);
const D = 'd'.repeat(32);

function sums(entries: Record<string, string>): Map<string, string> {
  return new Map(Object.entries(entries));
}

function pkg(name: string, old: Record<string, string> | null, next: Record<string, string> | null, extra: Partial<PackageSums> = {}): PackageSums {
  return { package: name, infoName: name, oldMd5sums: old && sums(old), newMd5sums: next && sums(next), newPayload: null, upgraded: old !== null, ...extra };
}

describe('parseMd5sums', () => {
  it('reads "<md5>  <path>" lines, with or without ./ or /, and the binary marker', () => {
    expect(parseMd5sums(`${A}  usr/bin/x\n${B} *./usr/share/with space\n${C}  /etc/abs\n`, 'x.md5sums')).toEqual(
      sums({ 'usr/bin/x': A, 'usr/share/with space': B, 'etc/abs': C }),
    );
  });

  it.each([
    ['a short digest', 'abc  usr/bin/x'],
    ['no separator', `${A}usr/bin/x`],
    ['an upper-case digest', `${A.toUpperCase()}  usr/bin/x`],
    ['a path climbing out', `${A}  usr/../../etc/shadow`],
  ])('refuses %s', (_, line) => {
    expect(bootenvErrorFrom(() => parseMd5sums(`${line}\n`, 'x.md5sums')).code).toBe('PARSE');
  });
});

describe('planCandidates', () => {
  it('pairs same-path identical files first, then content moved to another path or package', () => {
    const plan = planCandidates([
      pkg('libfoo', { 'usr/lib/libfoo.so.1': A, 'usr/share/doc/libfoo/old-name': B, 'usr/share/foo/changed': C }, { 'usr/lib/libfoo.so.1': A, 'usr/share/doc/libfoo/new-name': B, 'usr/share/foo/changed': D }),
      pkg('foo-data', null, { 'usr/share/foo-data/moved-in': C }),
    ]);
    expect(plan.candidates).toEqual([
      { path: 'usr/lib/libfoo.so.1', originPath: 'usr/lib/libfoo.so.1', reason: 'same-path', digest: `md5:${A}`, package: 'libfoo' },
      { path: 'usr/share/doc/libfoo/new-name', originPath: 'usr/share/doc/libfoo/old-name', reason: 'moved', digest: `md5:${B}`, package: 'libfoo' },
      { path: 'usr/share/foo-data/moved-in', originPath: 'usr/share/foo/changed', reason: 'moved', digest: `md5:${C}`, package: 'foo-data' },
    ]);
    expect(plan.changedFiles).toBe(1);
    expect(plan.skippedPackages).toEqual([]);
  });

  it('uses the .deb payload when the new version has no md5sums, and skips packages with neither', () => {
    const plan = planCandidates([
      pkg('nosums', null, null, { newPayload: sums({ 'usr/share/x': '0123456789abcdef' }), upgraded: true }),
      pkg('fresh', null, null, { newPayload: sums({ 'usr/share/y': 'fedcba9876543210' }), upgraded: false }),
      pkg('blind', null, null, { upgraded: true }),
    ]);
    expect(plan.candidates).toEqual([{ path: 'usr/share/x', originPath: 'usr/share/x', reason: 'same-path', digest: 'xxh64:0123456789abcdef', package: 'nosums' }]);
    expect(plan.changedFiles).toBe(1);
    expect(plan.skippedPackages).toEqual([{ package: 'blind', reason: 'no md5sums and no .deb to read its files from' }]);
  });

  it('an old version without md5sums: every new file is a same-path candidate, verified later on disk', () => {
    const plan = planCandidates([pkg('ancient', null, { 'usr/bin/a': A }, { upgraded: true })]);
    expect(plan.candidates).toEqual([{ path: 'usr/bin/a', originPath: 'usr/bin/a', reason: 'same-path', digest: `md5:${A}`, package: 'ancient' }]);
  });

  it('a removed package lends its old files to the index but has nothing new', () => {
    const plan = planCandidates([pkg('gone', { 'usr/share/gone/file': A }, null, { upgraded: true }), pkg('heir', null, { 'usr/share/heir/file': A })]);
    expect(plan.candidates.map((candidate) => [candidate.path, candidate.originPath, candidate.reason])).toEqual([['usr/share/heir/file', 'usr/share/gone/file', 'moved']]);
    expect(plan.skippedPackages).toEqual([{ package: 'gone', reason: 'no md5sums and no .deb to read its files from' }]);
  });
});

describe('decide', () => {
  const file = (size: number, ino = 1000, ctimeNs = 5n): FileFacts => ({ type: 'file', size, ino, ctimeNs });
  it.each([
    ['both files, equal sizes above the limit', file(8192, 2000), file(8192), 'verify'],
    ['2048 bytes: inline', file(2048, 2000), file(2048), 'inline'],
    ['2049 bytes: one block, shareable', file(2049, 2000), file(2049), 'verify'],
    ['sizes differ', file(8192, 2000), file(8193), 'size-differs'],
    ['the inode the snapshot carried over', file(8192, 1000, 5n), file(8192, 1000, 5n), 'already-shared'],
    ['same inode number, rewritten in place', file(8192, 1000, 6n), file(8192, 1000, 5n), 'verify'],
    ['a symlink', { type: 'other', size: 10, ino: 1, ctimeNs: 0n } as FileFacts, file(10), 'not-a-file'],
    ['missing in the origin', file(8192), { type: 'missing', size: 0, ino: 0, ctimeNs: 0n } as FileFacts, 'not-a-file'],
  ])('%s', (_, candidate, origin, expected) => {
    expect(decide(candidate, origin, 2048)).toBe(expected);
  });
});

describe('inlineLimit', () => {
  it.each([
    ['rw,relatime,ssd,discard=async,space_cache=v2,subvolid=5,subvol=/', 2048],
    ['rw,max_inline=0', 0],
    ['rw,max_inline=1024', 1024],
    ['rw,max_inline=100000', 4095],
    ['rw,compress=zstd:3', 4095],
    ['rw,compress-force=zstd,max_inline=0', 0],
  ])('%s → %d', (options, expected) => {
    expect(inlineLimit(options)).toBe(expected);
  });
});
