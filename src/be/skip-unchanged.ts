/**
 * The skip-unchanged pass: after dpkg has written a BE's new files, the files
 * whose content equals a file of the BE it was made from come to share that
 * file's extents again (docs/dedupe.md). It plans from dpkg's md5sums (or the
 * new .deb's payload) with dedupe/plan.ts, checks each pair on disk (regular
 * files, equal sizes above the inline limit, not in the same extents
 * already), and hands the pairs to the kernel's FIDEDUPERANGE (sys/dedupe.ts),
 * which compares the bytes and leaves every file's inode, mode, owner, times and xattrs as they
 * were. File content never changes; only which extents hold it. A dry run
 * compares with xxh64 of both files instead.
 */
import path from 'node:path';
import type { PackageAction } from '../apt/hook-input.js';
import { xxh64OfFile, hashDebPayload } from '../deb/payload.js';
import { count, decide, parseMd5sums, planCandidates, tally, type Candidate, type FileFacts, type PackageSums, type SkippedPackage, type Tally } from '../dedupe/plan.js';
import { BootenvError } from '../errors.js';
import { sameExtents } from '../dedupe/space.js';
import { dedupeFiles, fileExtents } from '../sys/dedupe.js';
import { listDirectory, lstatIfExistsSync, pathExists, readTextIfExists } from '../sys/fs.js';
import { throwIfInterrupted } from '../sys/scope.js';

const DPKG_INFO = 'var/lib/dpkg/info';

/** A package as the pass sees it. */
export interface PassPackage {
  package: string;
  architecture: string;
  /** Installed in the origin BE (upgraded or removed by the transaction). */
  upgraded: boolean;
  /** Installed in the new BE. */
  installed: boolean;
  /** The .deb dpkg unpacked, when known and still there. */
  deb: string | null;
}

export interface SkipUnchangedReport {
  dryRun: boolean;
  inlineLimit: number;
  packages: number;
  candidates: number;
  /** Now sharing extents with the origin (dry run: would be). */
  shared: Tally;
  /** Carried over unchanged by the snapshot, or deduped before: shared already. */
  alreadyShared: Tally;
  /** At most inlineLimit bytes: stored in metadata, nothing to share. */
  inline: Tally;
  /** Content (or size, or kind) turned out to differ on disk. */
  differs: Tally;
  /** Files of the new versions with new content. */
  changedFiles: number;
  errors: Array<{ path: string; message: string }>;
  skippedPackages: SkippedPackage[];
  seconds: number;
  /** Where the time went: reading md5sums and planning, lstat, FIEMAP (checkExtents), hashing, FIDEDUPERANGE. */
  phaseSeconds: { plan: number; stat: number; extents: number; hash: number; share: number };
}

/** The packages of an apt transaction: one entry per package, from its actions. */
export function packagesOfActions(actions: readonly PackageAction[]): PassPackage[] {
  const byName = new Map<string, PassPackage>();
  for (const action of actions) {
    const entry = byName.get(action.package) ?? { package: action.package, architecture: action.architecture, upgraded: false, installed: false, deb: null };
    if (action.oldVersion !== null) entry.upgraded = true;
    if (action.newVersion !== null) entry.installed = true;
    if (action.deb !== null && action.deb !== undefined) entry.deb = action.deb;
    byName.set(action.package, entry);
  }
  return [...byName.values()];
}

/** Every package with md5sums in either BE: for a pass between two BEs with no transaction record. */
export async function packagesOfRoots(originRoot: string, targetRoot: string): Promise<PassPackage[]> {
  const names = (root: string) => listDirectory(path.join(root, DPKG_INFO)).then((entries) => new Set(entries.filter((name) => name.endsWith('.md5sums')).map((name) => name.slice(0, -'.md5sums'.length))));
  const [origin, target] = await Promise.all([names(originRoot), names(targetRoot)]);
  return [...new Set([...origin, ...target])].sort().map((infoName) => {
    const [name, architecture = ''] = infoName.split(':');
    return { package: name as string, architecture, upgraded: origin.has(infoName), installed: target.has(infoName), deb: null };
  });
}

async function readMd5sums(root: string, sums: PassPackage): Promise<{ infoName: string; sums: Map<string, string> } | null> {
  for (const infoName of [`${sums.package}:${sums.architecture}`, sums.package]) {
    const file = path.join(root, DPKG_INFO, `${infoName}.md5sums`);
    const text = await readTextIfExists(file);
    if (text !== undefined) return { infoName, sums: parseMd5sums(text, file) };
  }
  return null;
}

async function packageSums(originRoot: string, targetRoot: string, passPackage: PassPackage): Promise<PackageSums> {
  const old = passPackage.upgraded ? await readMd5sums(originRoot, passPackage) : null;
  const next = passPackage.installed ? await readMd5sums(targetRoot, passPackage) : null;
  let newPayload: Map<string, string> | null = null;
  if (passPackage.installed && next === null && passPackage.deb !== null && (await pathExists(passPackage.deb))) {
    const payload = await hashDebPayload(passPackage.deb);
    const conffiles = new Set(payload.conffiles.map((file) => file.replace(/^\/+/, '')));
    newPayload = new Map(payload.files.filter((file) => !conffiles.has(file.path)).map((file) => [file.path, file.xxh64]));
  }
  return {
    package: passPackage.package,
    infoName: next?.infoName ?? old?.infoName ?? passPackage.package,
    oldMd5sums: old?.sums ?? null,
    newMd5sums: next?.sums ?? null,
    newPayload,
    upgraded: passPackage.upgraded,
  };
}

function factsOf(stats: ReturnType<typeof lstatIfExistsSync>): FileFacts {
  if (stats === undefined) return { type: 'missing', size: 0, ino: 0, ctimeNs: 0n };
  return { type: stats.isFile() ? 'file' : 'other', size: Number(stats.size), ino: Number(stats.ino), ctimeNs: stats.ctimeNs };
}

export interface PassRequest {
  /** Root of the BE the new one was made from (read-only use). */
  originRoot: string;
  /** Root of the BE whose files come to share extents. */
  targetRoot: string;
  packages: readonly PassPackage[];
  inlineLimit: number;
  /** Plan and verify, but share nothing. */
  dryRun?: boolean;
  /** The bootenv-dedupe program (tests); default: the installed one. */
  helper?: string;
  /**
   * Skip pairs already in the same extents (FIEMAP) before hashing: for runs
   * over BEs deduped before. Not worth it right after dpkg wrote the files.
   */
  checkExtents?: boolean;
  /** Told how far the pass has got: files of the current step (`lstat`, `hash`, `share`) done of all. */
  onProgress?: (progress: PassProgress) => void;
}

export interface PassProgress {
  done: number;
  total: number;
  step: string;
}

/** Files between two progress reports. */
const PROGRESS_EVERY = 256;

/**
 * Runs the pass from `originRoot` to `targetRoot` (both mounted, both on the
 * same btrfs). Changes no file's content or metadata; only extents become
 * shared. Needs root. Reads the md5sums and, for packages without, their
 * .debs. Throws PARSE for a malformed md5sums file or .deb, TOOL_MISSING
 * without bootenv-dedupe; a single pair that fails is reported, not thrown.
 */
export async function shareUnchangedFiles(request: PassRequest): Promise<SkipUnchangedReport> {
  const started = process.hrtime.bigint();
  let phaseStarted = started;
  const phaseEnd = (): number => {
    const now = process.hrtime.bigint();
    const seconds = Number(now - phaseStarted) / 1e9;
    phaseStarted = now;
    return seconds;
  };
  const sums: PackageSums[] = [];
  for (const passPackage of request.packages) sums.push(await packageSums(request.originRoot, request.targetRoot, passPackage));
  const plan = planCandidates(sums);
  const report: SkipUnchangedReport = {
    dryRun: request.dryRun ?? false,
    inlineLimit: request.inlineLimit,
    packages: request.packages.length,
    candidates: plan.candidates.length,
    shared: tally(),
    alreadyShared: tally(),
    inline: tally(),
    differs: tally(),
    changedFiles: plan.changedFiles,
    errors: [],
    skippedPackages: plan.skippedPackages,
    seconds: 0,
    phaseSeconds: { plan: phaseEnd(), stat: 0, extents: 0, hash: 0, share: 0 },
  };
  const progress = (done: number, total: number, step: string) => {
    if (done % PROGRESS_EVERY === 0) request.onProgress?.({ done, total, step });
  };
  const toVerify: Array<{ candidate: Candidate; size: number }> = [];
  const seenInodes = new Set<number>();
  for (const [index, candidate] of plan.candidates.entries()) {
    throwIfInterrupted();
    progress(index, plan.candidates.length, 'lstat');
    const targetFacts = factsOf(lstatIfExistsSync(path.join(request.targetRoot, candidate.path)));
    // A file within the inline limit has nothing to share, whatever the origin holds: no need to stat that.
    if (targetFacts.type === 'file' && targetFacts.size <= request.inlineLimit) {
      count(report.inline, targetFacts.size);
      continue;
    }
    const originFacts = factsOf(lstatIfExistsSync(path.join(request.originRoot, candidate.originPath)));
    const decision = decide(targetFacts, originFacts, request.inlineLimit);
    if (decision === 'inline') count(report.inline, targetFacts.size);
    else if (decision === 'already-shared') count(report.alreadyShared, targetFacts.size);
    else if (decision !== 'verify') count(report.differs, targetFacts.size);
    // Hard links: one inode, shared once.
    else if (!seenInodes.has(targetFacts.ino)) {
      seenInodes.add(targetFacts.ino);
      toVerify.push({ candidate, size: targetFacts.size });
    }
  }
  toVerify.sort((a, b) => (a.candidate.path < b.candidate.path ? -1 : 1));
  report.phaseSeconds.stat = phaseEnd();
  // Files that already lie in the same extents (deduped before) need neither hashing nor sharing.
  const extents = request.checkExtents
    ? await fileExtents(
        toVerify.flatMap(({ candidate }) => [path.join(request.targetRoot, candidate.path), path.join(request.originRoot, candidate.originPath)]),
        request.helper,
      )
    : [];
  const unshared = toVerify.filter(({ size }, index) => {
    const [target, origin] = [extents[2 * index], extents[2 * index + 1]];
    if (Array.isArray(target) && Array.isArray(origin) && sameExtents(target, origin)) {
      count(report.alreadyShared, size);
      return false;
    }
    return true;
  });
  report.phaseSeconds.extents = phaseEnd();
  // Sharing needs no hashes: FIDEDUPERANGE compares the bytes itself and answers "differs".
  // Only a dry run (audit, beadm dedupe --dry-run), which asks the kernel nothing, hashes both
  // files. Dropping the hashes saves reading both files once more; it did not shorten the pass of
  // a kernel upgrade under qemu TCG (4371 files, 439 MB: 405.7 s with them, 405.4 s without).
  let toShare: Array<{ candidate: Candidate; size: number }> = unshared;
  if (report.dryRun) {
    toShare = [];
    for (const [index, pair] of unshared.entries()) {
      throwIfInterrupted();
      progress(index, unshared.length, 'hash');
      const targetHash = await xxh64OfFile(path.join(request.targetRoot, pair.candidate.path));
      const originHash = await xxh64OfFile(path.join(request.originRoot, pair.candidate.originPath));
      const expected = pair.candidate.digest.startsWith('xxh64:') ? pair.candidate.digest.slice('xxh64:'.length) : targetHash;
      if (targetHash !== originHash || targetHash !== expected) count(report.differs, pair.size);
      else toShare.push(pair);
    }
  }
  report.phaseSeconds.hash = phaseEnd();
  if (report.dryRun) {
    for (const { size } of toShare) count(report.shared, size);
  } else {
    throwIfInterrupted();
    progress(0, toShare.length, 'share');
    const outcomes = await dedupeFiles(
      toShare.map(({ candidate }) => ({ source: path.join(request.originRoot, candidate.originPath), destination: path.join(request.targetRoot, candidate.path) })),
      request.helper,
    );
    outcomes.forEach((outcome, index) => {
      const { candidate, size } = toShare[index] as { candidate: Candidate; size: number };
      if (outcome.status === 'same') count(report.shared, size);
      else if (outcome.status === 'differs') count(report.differs, size);
      else report.errors.push({ path: `/${candidate.path}`, message: `${outcome.errno} ${outcome.message}` });
    });
  }
  report.phaseSeconds.share = phaseEnd();
  report.seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return report;
}

/** For callers that must not fail because of the pass: the error as a sentence. */
export function passFailure(error: unknown): string {
  if (error instanceof BootenvError && error.code === 'INTERRUPTED') throw error;
  return error instanceof Error ? error.message : String(error);
}
