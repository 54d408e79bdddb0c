// Unit tests for src/dedupe/space.ts: data space from FIEMAP extents — each physical byte once,
// inline extents left out, exclusive by the SHARED flag, bytes shared with the origin.
import { describe, expect, it } from 'vitest';
import { intersectionLength, measureDataSpace, mergeRanges, sameExtents } from '../../src/dedupe/space.js';

const SHARED = 0x2000;
const INLINE = 0x200;

describe('mergeRanges and intersectionLength', () => {
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

  it('measures what two range lists have in common', () => {
    expect(intersectionLength([[0, 10], [20, 30]], [[5, 25]])).toBe(10);
    expect(intersectionLength([[0, 10]], [[10, 20]])).toBe(0);
    expect(intersectionLength([], [[0, 10]])).toBe(0);
  });
});

describe('measureDataSpace', () => {
  it('counts a byte referenced by two files once; exclusive are unshared extents; shared with origin by physical overlap', () => {
    const shared = { physical: 0, length: 8192, flags: SHARED };
    const own = { physical: 100_000, length: 4096, flags: 0 };
    const space = measureDataSpace([[shared, own], [shared]], [[{ physical: 0, length: 8192, flags: SHARED }], [{ physical: 200_000, length: 4096, flags: 0 }]]);
    expect(space).toEqual({ referencedBytes: 12288, exclusiveBytes: 4096, sharedWithOriginBytes: 8192 });
    expect(measureDataSpace([[own]], null).sharedWithOriginBytes).toBeNull();
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
