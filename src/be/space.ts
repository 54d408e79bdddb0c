/**
 * Space of boot environments: `beadm dedupe` (the skip-unchanged pass on
 * demand, between any two BEs, for BEs made before bootenv or by other tools)
 * and `beadm audit` (per BE: bytes referenced, exclusive, shared with its
 * origin, identical to its origin's but unshared, and what destroying it
 * would free; for prune, what destroying several BEs frees). Audit numbers come from every subvolume's tree as last
 * committed, read from the devices (btrfs/dump-tree.ts), counted as quota
 * groups count (dedupe/space.ts): they need no quotas; with quotas on, the
 * quota groups' numbers are given beside them and checked against them.
 */
import path from 'node:path';
import { filesystemGeometry, flushDeviceCache, qgroupUsage, subvolumeTreeIds, subvolumeTreeReferences, syncFilesystem } from '../btrfs/commands.js';
import type { TreeReferences } from '../btrfs/dump-tree.js';
import { mountAt, readMountTable } from '../sys/mountinfo.js';
import type { Subvolume } from '../btrfs/parse.js';
import { inlineLimit } from '../dedupe/plan.js';
import { countReferences, measureFreedTogether, measureSubvolumeSpace, QUOTA_TOLERANCE, relativeDifference } from '../dedupe/space.js';
import { BootenvError } from '../errors.js';
import { withScope } from '../sys/scope.js';
import { bootEnvironmentSubvolumes, findBootEnvironment, requireState, type Options, type Session } from './session.js';
import { openSession } from './transaction.js';
import { packagesOfRoots, shareUnchangedFiles, type PassProgress, type SkipUnchangedReport } from './skip-unchanged.js';
import { assertValidName } from './names.js';
import type { BootenvState } from './state.js';

/** The subvolume a BE was made from (a BE or the installed root), if it still exists. */
function originOf(session: Session, state: BootenvState, subvolume: Subvolume): Subvolume | undefined {
  const originUuid = state.environments[subvolume.uuid]?.originUuid ?? subvolume.parentUuid;
  return originUuid === null ? undefined : session.subvolumes.find((candidate) => candidate.uuid === originUuid);
}

function nameOf(session: Session, state: BootenvState, subvolume: Subvolume): string {
  if (subvolume.path === state.installedRoot) return '(installed root)';
  return bootEnvironmentSubvolumes(session).find((environment) => environment.subvolume.uuid === subvolume.uuid)?.name ?? subvolume.path;
}

async function topInlineLimit(session: Session): Promise<number> {
  return inlineLimit(mountAt(await readMountTable(), session.top)?.superOptions ?? '');
}

export interface DedupeOptions extends Options {
  /** BE to share with; default the BE `name` was made from. */
  against?: string;
  dryRun?: boolean;
  onProgress?: (progress: PassProgress) => void;
}

export interface DedupeResult {
  name: string;
  against: string;
  report: SkipUnchangedReport;
}

/**
 * Makes the files of BE `name` that are identical to files of its origin (or
 * of BE `against`) share their extents, package by package from dpkg's
 * md5sums (see skip-unchanged.ts). Changes no file's content or metadata.
 * Needs root; takes the lock. Throws NOT_FOUND (no such BE, or no origin to
 * share with), INVALID_NAME, BUSY during an apt transaction.
 */
export async function dedupeBootEnvironment(name: string, options: DedupeOptions = {}): Promise<DedupeResult> {
  assertValidName(name);
  if (options.against !== undefined) assertValidName(options.against);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const target = findBootEnvironment(session, name);
    const origin = options.against !== undefined ? findBootEnvironment(session, options.against) : originOf(session, state, target);
    if (origin === undefined) throw new BootenvError('NOT_FOUND', `the BE ${name} was made from no longer exists`, { hint: 'name one to share with: --against OTHER' });
    const originRoot = path.join(session.top, origin.path);
    const targetRoot = path.join(session.top, target.path);
    const report = await shareUnchangedFiles({
      originRoot,
      targetRoot,
      packages: await packagesOfRoots(originRoot, targetRoot),
      inlineLimit: await topInlineLimit(session),
      dryRun: options.dryRun ?? false,
      checkExtents: true,
      ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
    });
    return { name, against: nameOf(session, state, origin), report };
  });
}

export interface SpaceAudit {
  name: string;
  subvolume: string;
  /** The BE it was made from, "(installed root)", or null when gone. */
  origin: string | null;
  /** Data and metadata the BE refers to, each extent and tree block once (quota group "referenced"). */
  referencedBytes: number;
  /** Of those, what no other subvolume refers to (quota group "exclusive"). */
  exclusiveBytes: number;
  /** The tree blocks' part of referencedBytes. */
  metadataReferencedBytes: number;
  /** The tree blocks' part of exclusiveBytes. */
  metadataExclusiveBytes: number;
  /** Of referencedBytes, what its origin refers to as well; null without origin. */
  sharedWithOriginBytes: number | null;
  /** Bytes of dpkg-installed files identical to the origin's that do not share its extents (beadm dedupe would); null without origin. */
  identicalUnsharedBytes: number | null;
  /**
   * Exclusive bytes of the snapshots its pending carry keeps (the origin as
   * of the BE's making, under @bootenv/.carry: the old versions of what the
   * origin changed since); null when no carry is pending. Destroying the BE,
   * or its first boot, frees them.
   */
  carrySnapshotBytes: number | null;
  /** What destroying the BE would free: exclusiveBytes, and carrySnapshotBytes. */
  freedByDestroyBytes: number;
  /** The quota groups' numbers when quotas are on; `agrees`: both within 1 % of the counted ones. */
  quota: { referencedBytes: number; exclusiveBytes: number; agrees: boolean } | null;
}

/** How far an audit has got, for a progress bar: `done` of `total` steps, the current one named. */
export type AuditProgress = PassProgress;

export interface AuditOptions extends Options {
  onProgress?: (progress: AuditProgress) => void;
}

/**
 * Every subvolume tree's references as last committed: commits the
 * filesystem, drops the devices' page cache (so that the device shows what
 * btrfs wrote), then reads each tree with dump-tree. A tree rewritten by a
 * commit while it was read gives an error; the whole read is tried once more.
 */
async function readSubvolumeTrees(session: Session, devices: readonly string[], progress: (done: number, total: number, step: string) => void): Promise<Map<number, TreeReferences>> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await syncFilesystem(session.top);
      for (const device of devices) await flushDeviceCache(device);
      const ids = await subvolumeTreeIds(session.probe.device);
      const trees = new Map<number, TreeReferences>();
      for (const id of ids) {
        progress(trees.size, ids.length, `tree of subvolume ${id}`);
        trees.set(id, await subvolumeTreeReferences(session.probe.device, id));
      }
      return trees;
    } catch (error) {
      if (attempt > 1 || !(error instanceof BootenvError) || (error.code !== 'COMMAND_FAILED' && error.code !== 'PARSE')) throw error;
    }
  }
}

function treeOf(trees: ReadonlyMap<number, TreeReferences>, subvolume: Subvolume): TreeReferences {
  const tree = trees.get(subvolume.id);
  if (tree === undefined) throw new BootenvError('INTERNAL', `dump-tree listed no tree for subvolume ${subvolume.id} (${subvolume.path})`);
  return tree;
}

/** The read-only snapshots under @bootenv/.carry that the pending carry of BE `subvolume` keeps (none without a carry). */
function carrySnapshotsOf(session: Session, state: BootenvState, subvolume: Subvolume): Subvolume[] {
  const carry = state.environments[subvolume.uuid]?.carry;
  return carry === undefined ? [] : session.subvolumes.filter((candidate) => candidate.uuid === carry.baseUuid || candidate.uuid === carry.newBaseUuid);
}

export interface DestroyedSpace {
  /** Per BE, by subvolume UUID: what destroying it alone frees (the audit's freedByDestroyBytes). */
  freedByDestroyBytes: Map<string, number>;
  /** What destroying all of them frees: also what they (and their carries' snapshots) share only among themselves. */
  freedTogetherBytes: number;
}

/**
 * What destroying `targets` (BEs of `session`) would free, each alone and
 * all together, counted as the audit counts (no quotas needed). Reads only:
 * commits the filesystem, drops its devices' page cache and reads every
 * subvolume's tree. Throws COMMAND_FAILED or PARSE when a tree cannot be read.
 */
export async function measureDestroyedSpace(session: Session, state: BootenvState, targets: readonly Subvolume[]): Promise<DestroyedSpace> {
  const freedByDestroyBytes = new Map<string, number>();
  if (targets.length === 0) return { freedByDestroyBytes, freedTogetherBytes: 0 };
  const geometry = await filesystemGeometry(session.top, session.probe.device);
  const trees = await readSubvolumeTrees(session, geometry.devices, () => undefined);
  const counts = countReferences(trees.values());
  const exclusiveOf = (subvolume: Subvolume) => measureSubvolumeSpace(treeOf(trees, subvolume), counts, geometry.nodeSize, null).exclusiveBytes;
  const targetUuids = new Set(targets.map((target) => target.uuid));
  // A carry snapshot goes with the destroyed BEs unless a BE that stays still needs it.
  const keptCarries = new Set(
    Object.entries(state.environments).flatMap(([uuid, record]) => (targetUuids.has(uuid) || record.carry === undefined ? [] : [record.carry.baseUuid, record.carry.newBaseUuid])),
  );
  const together: Subvolume[] = [];
  for (const target of targets) {
    const snapshots = carrySnapshotsOf(session, state, target);
    freedByDestroyBytes.set(target.uuid, exclusiveOf(target) + snapshots.reduce((sum, snapshot) => sum + exclusiveOf(snapshot), 0));
    together.push(target, ...snapshots.filter((snapshot) => !keptCarries.has(snapshot.uuid) && !together.includes(snapshot)));
  }
  return { freedByDestroyBytes, freedTogetherBytes: measureFreedTogether(together.map((subvolume) => treeOf(trees, subvolume)), counts, geometry.nodeSize) };
}

/**
 * Audits the named BEs (all when `names` is empty). Reads only (commits the
 * filesystem and drops its devices' page cache first); mounts the top level
 * privately. Needs root. Tells the user (session.notify) each BE whose quota groups disagree
 * with the counted numbers by more than 1 %. Throws NOT_FOUND, INVALID_NAME,
 * COMMAND_FAILED or PARSE when a tree cannot be read.
 */
export async function auditBootEnvironments(names: readonly string[], options: AuditOptions = {}): Promise<SpaceAudit[]> {
  for (const name of names) assertValidName(name);
  return withScope(async (scope) => {
    const session = await openSession(scope, options, 'allow');
    const state = requireState(session);
    const targets = names.length > 0 ? names.map((name) => ({ name, subvolume: findBootEnvironment(session, name) })) : bootEnvironmentSubvolumes(session);
    const geometry = await filesystemGeometry(session.top, session.probe.device);
    const passes = targets.filter(({ subvolume }) => originOf(session, state, subvolume) !== undefined).length;
    let treeCount = 0;
    const trees = await readSubvolumeTrees(session, geometry.devices, (done, total, step) => {
      treeCount = total;
      options.onProgress?.({ done, total: total + passes, step });
    });
    const quotas = await qgroupUsage(session.top, session.probe.device);
    const limit = await topInlineLimit(session);
    const counts = countReferences(trees.values());
    const audits: SpaceAudit[] = [];
    let passesDone = 0;
    for (const { name, subvolume } of targets) {
      const root = path.join(session.top, subvolume.path);
      const origin = originOf(session, state, subvolume);
      const space = measureSubvolumeSpace(treeOf(trees, subvolume), counts, geometry.nodeSize, origin === undefined ? null : treeOf(trees, origin));
      let identical: number | null = null;
      if (origin !== undefined) {
        options.onProgress?.({ done: treeCount + passesDone, total: treeCount + passes, step: `identical files of ${name}` });
        const originRoot = path.join(session.top, origin.path);
        identical = (await shareUnchangedFiles({ originRoot, targetRoot: root, packages: await packagesOfRoots(originRoot, root), inlineLimit: limit, dryRun: true, checkExtents: true })).shared.bytes;
        passesDone += 1;
      }
      const usage = quotas?.find((candidate) => candidate.subvolumeId === subvolume.id);
      const quota =
        usage === undefined
          ? null
          : {
              referencedBytes: usage.referencedBytes,
              exclusiveBytes: usage.exclusiveBytes,
              agrees: relativeDifference(space.referencedBytes, usage.referencedBytes) <= QUOTA_TOLERANCE && relativeDifference(space.exclusiveBytes, usage.exclusiveBytes) <= QUOTA_TOLERANCE,
            };
      if (quota !== null && !quota.agrees) {
        session.notify(
          `${name}: the quota groups say referenced ${quota.referencedBytes} and exclusive ${quota.exclusiveBytes} bytes, its tree ${space.referencedBytes} and ${space.exclusiveBytes}; ` +
            'quota groups are out of date after some operations: run btrfs quota rescan -w and audit again',
        );
      }
      const carrySnapshotBytes =
        state.environments[subvolume.uuid]?.carry === undefined
          ? null
          : carrySnapshotsOf(session, state, subvolume).reduce((sum, snapshot) => sum + measureSubvolumeSpace(treeOf(trees, snapshot), counts, geometry.nodeSize, null).exclusiveBytes, 0);
      audits.push({
        name,
        subvolume: subvolume.path,
        origin: origin === undefined ? null : nameOf(session, state, origin),
        ...space,
        identicalUnsharedBytes: identical,
        carrySnapshotBytes,
        freedByDestroyBytes: space.exclusiveBytes + (carrySnapshotBytes ?? 0),
        quota,
      });
    }
    options.onProgress?.({ done: treeCount + passes, total: treeCount + passes, step: 'done' });
    return audits;
  });
}
