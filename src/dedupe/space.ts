/**
 * Space accounting, pure. Per subvolume, from what its tree refers to (its
 * tree blocks and data extents, read by `btrfs inspect-internal dump-tree`):
 * referenced bytes, exclusive bytes (referred to by no other subvolume) and
 * bytes shared with its origin, counted the way btrfs quota groups count them
 * — each tree block one node size, each data extent its whole size on disk,
 * each once however many files or offsets use it — so that, quotas on or off,
 * the numbers are the quota groups' own; and what deleting several
 * subvolumes together frees. Also: whether two files' FIEMAP
 * extents lie in the very same places (already shared).
 */
/** FIEMAP_EXTENT_DATA_INLINE from linux/fiemap.h. */
const FIEMAP_EXTENT_DATA_INLINE = 0x200;

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

/** What one subvolume's tree refers to (see btrfs/dump-tree.ts). */
export interface SubvolumeReferences {
  /** Logical addresses of its tree blocks. */
  blocks: ReadonlySet<number>;
  /** Its data extents: logical address → bytes on disk. */
  dataExtents: ReadonlyMap<number, number>;
}

/** How many subvolumes refer to each tree block and data extent (by logical address). */
export function countReferences(subvolumes: Iterable<SubvolumeReferences>): Map<number, number> {
  const counts = new Map<number, number>();
  for (const { blocks, dataExtents } of subvolumes) {
    for (const block of blocks) counts.set(block, (counts.get(block) ?? 0) + 1);
    for (const extent of dataExtents.keys()) counts.set(extent, (counts.get(extent) ?? 0) + 1);
  }
  return counts;
}

export interface SubvolumeSpace {
  /** Data and metadata the subvolume refers to (quota group "referenced"). */
  referencedBytes: number;
  /** Of those, what no other subvolume refers to: what deleting it frees (quota group "exclusive"). */
  exclusiveBytes: number;
  /** The tree blocks' part of referencedBytes. */
  metadataReferencedBytes: number;
  /** The tree blocks' part of exclusiveBytes. */
  metadataExclusiveBytes: number;
  /** Of referencedBytes, what the origin refers to as well; null without origin. */
  sharedWithOriginBytes: number | null;
}

/**
 * The space of `subvolume`, given how many subvolumes of the filesystem refer
 * to each thing (`counts`, from countReferences over all of them, this one
 * included), the filesystem's node size, and its origin's references (null
 * when it has none).
 */
export function measureSubvolumeSpace(subvolume: SubvolumeReferences, counts: ReadonlyMap<number, number>, nodeSize: number, origin: SubvolumeReferences | null): SubvolumeSpace {
  const exclusive = (address: number) => (counts.get(address) ?? 0) <= 1;
  let metadataExclusive = 0;
  let metadataShared = 0;
  for (const block of subvolume.blocks) {
    if (exclusive(block)) metadataExclusive += nodeSize;
    if (origin?.blocks.has(block)) metadataShared += nodeSize;
  }
  let data = 0;
  let dataExclusive = 0;
  let dataShared = 0;
  for (const [extent, bytes] of subvolume.dataExtents) {
    data += bytes;
    if (exclusive(extent)) dataExclusive += bytes;
    if (origin?.dataExtents.has(extent)) dataShared += bytes;
  }
  const metadata = subvolume.blocks.size * nodeSize;
  return {
    referencedBytes: metadata + data,
    exclusiveBytes: metadataExclusive + dataExclusive,
    metadataReferencedBytes: metadata,
    metadataExclusiveBytes: metadataExclusive,
    sharedWithOriginBytes: origin === null ? null : metadataShared + dataShared,
  };
}

/**
 * What deleting all of `subvolumes` together frees: the tree blocks and data
 * extents that only they refer to (`counts` from countReferences over every
 * subvolume of the filesystem), each once. At least the sum of their
 * exclusive bytes: it also holds what they share only among themselves.
 */
export function measureFreedTogether(subvolumes: readonly SubvolumeReferences[], counts: ReadonlyMap<number, number>, nodeSize: number): number {
  const within = countReferences(subvolumes);
  const onlyHere = (address: number) => within.get(address) === counts.get(address);
  const blocks = new Set<number>();
  const extents = new Map<number, number>();
  for (const subvolume of subvolumes) {
    for (const block of subvolume.blocks) if (onlyHere(block)) blocks.add(block);
    for (const [extent, bytes] of subvolume.dataExtents) if (onlyHere(extent)) extents.set(extent, bytes);
  }
  return blocks.size * nodeSize + [...extents.values()].reduce((sum, bytes) => sum + bytes, 0);
}

/** Largest relative difference between bytes counted and quota groups' figures, beyond which the audit says they disagree. */
export const QUOTA_TOLERANCE = 0.01;

/** |counted − quota| ÷ quota (0 when both are 0). */
export function relativeDifference(counted: number, quota: number): number {
  if (quota === 0) return counted === 0 ? 0 : Infinity;
  return Math.abs(counted - quota) / quota;
}

/** Whether two files' data lie in the very same physical places (they share all their extents). */
export function sameExtents(a: readonly Extent[], b: readonly Extent[]): boolean {
  const ra = mergeRanges(a);
  const rb = mergeRanges(b);
  return ra.length > 0 && ra.length === rb.length && ra.every(([start, end], index) => rb[index]?.[0] === start && rb[index]?.[1] === end);
}
