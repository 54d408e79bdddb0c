/**
 * The skip-unchanged planner, pure: which files a BE made by an upgrade could
 * share with the BE it was made from, decided from what is cheap — dpkg's
 * md5sums of the old and new versions, or the xxh64 of the new .deb's
 * payload — before anything is read from disk. Same path first; then content
 * that moved to another path or package, through an index by hash of the old
 * versions' files. Also the per-file decision once both files are stat'ed
 * (inline-sized, already the same inode, sizes differ), the inline limit of a
 * mount, and the report's arithmetic. Nothing here touches the disk.
 */
import { BootenvError } from '../errors.js';

/** What one package of the transaction contributes to the plan. */
export interface PackageSums {
  package: string;
  /** "name" or "name:arch": how dpkg names its info files (md5sums, list). */
  infoName: string;
  /** md5sums of the version in the origin BE (path → md5), null when the package was not installed there or has none. */
  oldMd5sums: Map<string, string> | null;
  /** md5sums of the version dpkg installed in the new BE, null when the package has none (or was removed). */
  newMd5sums: Map<string, string> | null;
  /** The new version's regular files from its .deb (path → xxh64), when it has no md5sums and its .deb was read. */
  newPayload: Map<string, string> | null;
  /** Whether the package was installed in the origin (upgraded or removed) or is new in this transaction. */
  upgraded: boolean;
}

export interface Candidate {
  /** Root-relative path in the new BE ("usr/bin/x"). */
  path: string;
  /** Root-relative path in the origin BE holding the same content. */
  originPath: string;
  reason: 'same-path' | 'moved';
  /** The expected content hash, when the plan knows it: 'md5:…' or 'xxh64:…'. */
  digest: string;
  package: string;
}

export interface SkippedPackage {
  package: string;
  reason: string;
}

export interface Plan {
  candidates: Candidate[];
  /** Files of the new versions whose content is new (nothing to share). */
  changedFiles: number;
  skippedPackages: SkippedPackage[];
}

const MD5SUMS_LINE = /^([0-9a-f]{32}) [ *](.+)$/;

/**
 * Parses a dpkg md5sums file ("<md5>  <path>" per line, path relative to the
 * root, in dpkg's info directory as `<package>[:<arch>].md5sums`). Strict: any
 * other line is a PARSE error. Paths are returned without a leading "./" or "/".
 */
export function parseMd5sums(text: string, source: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const match = MD5SUMS_LINE.exec(line);
    if (match === null) throw new BootenvError('PARSE', `unexpected line in ${source}: ${JSON.stringify(line)}`);
    const [, md5, rawPath] = match as unknown as [string, string, string];
    const normalized = rawPath.replace(/^\.?\/+/, '');
    if (normalized === '' || normalized.split('/').includes('..')) throw new BootenvError('PARSE', `${source} lists an unsafe path: ${JSON.stringify(rawPath)}`);
    sums.set(normalized, md5);
  }
  return sums;
}

/**
 * The candidate pairs for a transaction's packages. For each package with a
 * new version: a file whose md5 equals the old version's at the same path (or
 * any file, when the old version has no md5sums) is a same-path candidate; otherwise one whose md5 some old version of a
 * package of this transaction had at another path is a moved candidate
 * (first such path in package, then path order). A package known only by its
 * .deb payload (no md5sums) gives same-path candidates with unknown old
 * content, to be verified on disk. Packages with neither are skipped.
 */
export function planCandidates(packages: readonly PackageSums[]): Plan {
  const oldByDigest = new Map<string, string>();
  for (const sums of [...packages].sort((a, b) => (a.package < b.package ? -1 : a.package > b.package ? 1 : 0))) {
    if (sums.oldMd5sums === null) continue;
    for (const [file, md5] of [...sums.oldMd5sums].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (!oldByDigest.has(md5)) oldByDigest.set(md5, file);
    }
  }
  const candidates: Candidate[] = [];
  const skippedPackages: SkippedPackage[] = [];
  let changedFiles = 0;
  for (const sums of packages) {
    if (sums.newMd5sums !== null) {
      for (const [file, md5] of sums.newMd5sums) {
        // An old version without md5sums (installed by an old dpkg): same path, to be verified on disk.
        if (sums.oldMd5sums?.get(file) === md5 || (sums.upgraded && sums.oldMd5sums === null)) {
          candidates.push({ path: file, originPath: file, reason: 'same-path', digest: `md5:${md5}`, package: sums.package });
          continue;
        }
        const moved = oldByDigest.get(md5);
        if (moved !== undefined) candidates.push({ path: file, originPath: moved, reason: 'moved', digest: `md5:${md5}`, package: sums.package });
        else changedFiles += 1;
      }
    } else if (sums.newPayload !== null) {
      for (const [file, xxh64] of sums.newPayload) {
        if (sums.upgraded) candidates.push({ path: file, originPath: file, reason: 'same-path', digest: `xxh64:${xxh64}`, package: sums.package });
        else changedFiles += 1;
      }
    } else {
      skippedPackages.push({ package: sums.package, reason: 'no md5sums and no .deb to read its files from' });
    }
  }
  return { candidates, changedFiles, skippedPackages };
}

/** What lstat says of the two files of a candidate, as far as deciding needs. */
export interface FileFacts {
  type: 'file' | 'other' | 'missing';
  size: number;
  ino: number;
  ctimeNs: bigint;
}

export type Decision = 'verify' | 'inline' | 'already-shared' | 'not-a-file' | 'size-differs';

/**
 * Whether a candidate is worth verifying: both regular files of equal size
 * above the inline limit, and not the very inode the snapshot carried over
 * unchanged (same inode number and ctime: dpkg did not rewrite it).
 */
export function decide(candidate: FileFacts, origin: FileFacts, inlineLimit: number): Decision {
  if (candidate.type !== 'file' || origin.type !== 'file') return 'not-a-file';
  if (candidate.size !== origin.size) return 'size-differs';
  if (candidate.size <= inlineLimit) return 'inline';
  if (candidate.ino === origin.ino && candidate.ctimeNs === origin.ctimeNs) return 'already-shared';
  return 'verify';
}

const SECTOR_SIZE = 4096;
const DEFAULT_MAX_INLINE = 2048;

/**
 * The largest file size btrfs may store inline, from a mount's super options
 * (measured on kernel 6.18: up to max_inline bytes, default 2048; with
 * compression, files below one sector may be inline too).
 */
export function inlineLimit(superOptions: string): number {
  const options = superOptions.split(',');
  const maxInline = options.find((option) => option.startsWith('max_inline='));
  const limit = maxInline === undefined ? DEFAULT_MAX_INLINE : Math.min(Number(maxInline.slice('max_inline='.length)) || 0, SECTOR_SIZE - 1);
  const compressed = options.some((option) => option.startsWith('compress'));
  return compressed && limit > 0 ? SECTOR_SIZE - 1 : limit;
}

/** A count of files and their bytes. */
export interface Tally {
  files: number;
  bytes: number;
}

export function tally(): Tally {
  return { files: 0, bytes: 0 };
}

export function count(into: Tally, bytes: number): void {
  into.files += 1;
  into.bytes += bytes;
}
