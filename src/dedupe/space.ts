/**
 * Space accounting from file extents, pure: given the FIEMAP extents of the
 * files of a BE (and of its origin), how many data bytes the BE references,
 * how many no other file references (exclusive), and how many it shares with
 * its origin. Each physical byte counts once, however many files or offsets
 * refer to it (as btrfs quota groups count). Inline files live in metadata
 * and are not counted; compressed extents count by their uncompressed length.
 */

/** FIEMAP_EXTENT_DATA_INLINE and FIEMAP_EXTENT_SHARED from linux/fiemap.h. */
const FIEMAP_EXTENT_DATA_INLINE = 0x200;
const FIEMAP_EXTENT_SHARED = 0x2000;

export interface Extent {
  physical: number;
  length: number;
  flags: number;
}

/** Sorted, disjoint [start, end) ranges covering the given extents. */
export function mergeRanges(extents: Iterable<Extent>): Array<[number, number]> {
  const ranges = [...extents].filter((extent) => (extent.flags & FIEMAP_EXTENT_DATA_INLINE) === 0 && extent.length > 0).map((extent): [number, number] => [extent.physical, extent.physical + extent.length]);
  ranges.sort((a, b) => a[0] - b[0]);
  const merged: Array<[number, number]> = [];
  for (const [start, end] of ranges) {
    const last = merged[merged.length - 1];
    if (last !== undefined && start <= last[1]) last[1] = Math.max(last[1], end);
    else merged.push([start, end]);
  }
  return merged;
}

export function rangesLength(ranges: ReadonlyArray<[number, number]>): number {
  return ranges.reduce((sum, [start, end]) => sum + (end - start), 0);
}

/** Bytes covered by both sorted, disjoint range lists. */
export function intersectionLength(a: ReadonlyArray<[number, number]>, b: ReadonlyArray<[number, number]>): number {
  let total = 0;
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const [aStart, aEnd] = a[i] as [number, number];
    const [bStart, bEnd] = b[j] as [number, number];
    total += Math.max(0, Math.min(aEnd, bEnd) - Math.max(aStart, bStart));
    if (aEnd < bEnd) i += 1;
    else j += 1;
  }
  return total;
}

export interface DataSpace {
  referencedBytes: number;
  exclusiveBytes: number;
  sharedWithOriginBytes: number | null;
}

/**
 * The data space of a BE from its files' extents (one list per inode), and
 * what it shares with its origin's (null when there is no origin).
 */
export function measureDataSpace(files: ReadonlyArray<readonly Extent[]>, originFiles: ReadonlyArray<readonly Extent[]> | null): DataSpace {
  const all = files.flat();
  const referenced = mergeRanges(all);
  const exclusive = mergeRanges(all.filter((extent) => (extent.flags & FIEMAP_EXTENT_SHARED) === 0));
  return {
    referencedBytes: rangesLength(referenced),
    exclusiveBytes: rangesLength(exclusive),
    sharedWithOriginBytes: originFiles === null ? null : intersectionLength(referenced, mergeRanges(originFiles.flat())),
  };
}

/** Whether two files' data lie in the very same physical places (they share all their extents). */
export function sameExtents(a: readonly Extent[], b: readonly Extent[]): boolean {
  const ra = mergeRanges(a);
  const rb = mergeRanges(b);
  return ra.length > 0 && ra.length === rb.length && ra.every(([start, end], index) => rb[index]?.[0] === start && rb[index]?.[1] === end);
}
