// Unit tests for beadm audit's output (src/cli/render.ts): the table, with the quota groups' columns
// when quotas are on, and the progress bar audit and dedupe draw on a terminal.
import { describe, expect, it } from 'vitest';
import type { SpaceAudit } from '../../src/be/space.js';
import { clearProgress, progressFrameDue, renderAudit, renderProgress } from '../../src/cli/render.js';

const AUDIT: SpaceAudit = {
  name: 'upgraded',
  subvolume: '@bootenv/upgraded',
  origin: 'base',
  referencedBytes: 756_367_360,
  exclusiveBytes: 7_790_592,
  metadataReferencedBytes: 11_000_000,
  metadataExclusiveBytes: 7_389_184,
  sharedWithOriginBytes: 748_576_768,
  identicalUnsharedBytes: 0,
  carrySnapshotBytes: null,
  freedByDestroyBytes: 7_790_592,
  quota: null,
};

describe('renderAudit', () => {
  it('aligns one BE per row; no quota columns without quotas', () => {
    expect(renderAudit([AUDIT, { ...AUDIT, name: 'debian-12', origin: null, sharedWithOriginBytes: null, identicalUnsharedBytes: null }])).toBe(
      [
        'BE         Origin  Referenced  Exclusive  Shared-origin  Identical-unshared  Freed-by-destroy',
        'upgraded   base    721M        7.4M       714M           0B                  7.4M',
        'debian-12  -       721M        7.4M       -              -                   7.4M',
        '',
      ].join('\n'),
    );
  });

  it('shows what the snapshots of a pending carry hold, when a BE has one', () => {
    const text = renderAudit([{ ...AUDIT, carrySnapshotBytes: 1_048_576, freedByDestroyBytes: 8_839_168 }, { ...AUDIT, name: 'debian-12' }]);
    expect(text.split('\n')).toEqual([
      'BE         Origin  Referenced  Exclusive  Shared-origin  Identical-unshared  Carry-snapshots  Freed-by-destroy',
      'upgraded   base    721M        7.4M       714M           0B                  1.0M             8.4M',
      'debian-12  base    721M        7.4M       714M           0B                  -                7.4M',
      '',
    ]);
  });

  it('shows the quota groups beside the counted numbers and whether they agree', () => {
    const text = renderAudit([
      { ...AUDIT, quota: { referencedBytes: 756_367_360, exclusiveBytes: 7_790_592, agrees: true } },
      { ...AUDIT, name: 'stale', quota: { referencedBytes: 756_367_360, exclusiveBytes: 16_384, agrees: false } },
    ]);
    expect(text.split('\n')[0]).toMatch(/Freed-by-destroy  Quota-referenced  Quota-exclusive  Quota-agrees$/);
    expect(text.split('\n')[1]).toMatch(/721M +7\.4M +yes$/);
    expect(text.split('\n')[2]).toMatch(/721M +16K +NO$/);
  });
});

describe('renderProgress', () => {
  it.each([
    [{ done: 0, total: 4, step: 'tree of subvolume 5' }, 60, '\r[....................] 0/4 tree of subvolume 5'.padEnd(60)],
    [{ done: 2, total: 4, step: 'tree of subvolume 257' }, 60, '\r[##########..........] 2/4 tree of subvolume 257'.padEnd(60)],
    [{ done: 4, total: 4, step: 'done' }, 40, '\r[####################] 4/4 done'.padEnd(40)],
    // Out of range counts are clamped; a zero total draws an empty bar.
    [{ done: 9, total: 3, step: 'x' }, 40, '\r[####################] 3/3 x'.padEnd(40)],
    [{ done: 0, total: 0, step: 'x' }, 40, '\r[....................] 0/1 x'.padEnd(40)],
  ])('%j on %d columns', (progress, columns, expected) => {
    expect(renderProgress(progress, columns)).toBe(expected);
  });

  it('never fills the last column, so the terminal does not wrap', () => {
    const frame = renderProgress({ done: 1, total: 3, step: 'identical files of a-very-long-boot-environment-name' }, 30);
    expect(frame).toBe('\r[#######.............] 1/3 id');
    expect(frame.length - 1).toBe(29);
  });

  it('is erased by spaces over the same width', () => {
    expect(clearProgress(10)).toBe(`\r${' '.repeat(9)}\r`);
  });
});

describe('progressFrameDue', () => {
  it.each([
    [undefined, 'lstat', 0, true],
    [{ step: 'lstat', at: 1000 }, 'lstat', 1050, false],
    [{ step: 'lstat', at: 1000 }, 'lstat', 1100, true],
    [{ step: 'lstat', at: 1000 }, 'hash', 1001, true],
  ])('last frame %j, step %s at %d ms: %s', (last, step, now, due) => {
    expect(progressFrameDue(last, step, now)).toBe(due);
  });
});
