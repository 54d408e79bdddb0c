/**
 * The carry (issue #13): what the origin BE changed after a BE was made from
 * it — by apt or beadm create, while the system stayed in production — goes
 * into that BE before it is used, so that nothing written between the
 * snapshot and the reboot is lost. It runs where nothing writes any more:
 * from the initramfs of the BE's first boot (hooks/initramfs-tools,
 * src/native/bootenv-boot-carry.c), chrooted in the BE mounted read-only
 * before it becomes the root, as `beadm carry --boot NAME`; and on demand as
 * `beadm carry NAME` against a BE that is not in use.
 *
 * A carry reads, without reading file data: the origin's changes since the
 * base (`btrfs send --no-data` of read-only snapshots, ../btrfs/send-changes.ts)
 * and the BE's own changes since it was made; plans (./carry-plan.ts); applies
 * the plan to a writable snapshot of the BE (../sys/carry.ts: reflinked data,
 * every metadata); records the result (./carry-records.ts); and swaps the
 * snapshot in with one atomic rename. A power cut leaves the BE without the
 * carry or with all of it; the next session finishes the bookkeeping, the
 * next boot carries again. The origin is only read.
 *
 * From the initramfs (final) the carry completes: the marker goes, the record
 * and snapshots are deleted. On demand it does not: the base moves to what
 * was carried, and the boot carries what the origin changes after that.
 */
import path from 'node:path';
import { deleteSubvolume, inodePaths, listSubvolumes, snapshotSubvolume, subvolumeChanges, syncFilesystem } from '../btrfs/commands.js';
import { mountsOfSubvolume } from '../sys/mountinfo.js';
import type { Subvolume } from '../btrfs/parse.js';
import { BootenvError } from '../errors.js';
import { applyCarryRecords, exchangePaths, type HelperRecord } from '../sys/carry.js';
import { listDirectoryBytesSync, lstatBytesSync, readBytesSync } from '../sys/fs.js';
import { crashPoint } from '../sys/process.js';
import { withScope, type Scope } from '../sys/scope.js';
import { originCandidates, planCarry, type CarryConflict, type CarryOperation, type CarryPlan, type EntryFacts, type TreeView } from './carry-plan.js';
import { carryPath, completeExchange, markCarryPending, readTouched, recoverInterruptedCarries, sweepCarrySnapshots, writeTouched } from './carry-records.js';
import { rewriteFstabForBootEnvironment } from './fstab.js';
import { assertValidName } from './names.js';
import { bootEnvironmentSubvolumes, findBootEnvironment, requireState, saveState, type Options, type Session } from './session.js';
import type { BootenvState, CarryMode, CarryRecord, CarrySummary } from './state.js';
import { loadConfig, openSession } from './transaction.js';

/** Operations per run of the helper (it syncs the filesystem after each run). */
const BATCH = 2048;
/** Conflicts a BE's record keeps in its summary (all of them are in the command's report). */
const CONFLICTS_KEPT = 200;

export interface CarryOptions extends Options {
  /** Plan and report, change nothing (the temporary snapshots it reads from are deleted again). */
  dryRun?: boolean;
  /** From the initramfs: the BE is mounted as / and not yet in use; the carry completes it. */
  boot?: boolean;
}

export interface CarryReport {
  name: string;
  /** False when no carry was pending for the BE (nothing else is set then). */
  pending: boolean;
  origin: string | null;
  mode: CarryMode | null;
  /** A rollback's carry: the origin is the BE it was activated from (CarryRecord.follow). */
  follow: boolean;
  /** Since when the origin's changes are carried (ISO 8601). */
  since: string | null;
  dryRun: boolean;
  /** The carry completed the BE's: nothing stays pending. */
  final: boolean;
  changes: CarryPlan['changes'];
  /** Bytes of the files carried (their data shared, not written). */
  carriedBytes: number;
  /** Bytes written as data where the kernel would not share extents. */
  copiedBytes: number;
  /** Paths both BEs changed, as absolute paths; the origin's version saved beside where there was one. */
  conflicts: CarryConflict[];
  accounts: CarryPlan['accounts'];
  skipped: CarryPlan['skipped'];
  warnings: string[];
  /** Operations that failed: those changes are not in the BE, and still in the origin. */
  failed: Array<{ path: string; message: string }>;
  seconds: number;
  phaseSeconds: { snapshots: number; changes: number; plan: number; apply: number; swap: number };
}

/** A byte path of the planner as people read it: absolute, UTF-8. */
export function displayPath(relative: string): string {
  return `/${Buffer.from(relative, 'latin1').toString('utf8')}`;
}

function factsOf(stats: ReturnType<typeof lstatBytesSync>): EntryFacts | undefined {
  if (stats === undefined) return undefined;
  const kind = stats.isFile() ? 'file' : stats.isDirectory() ? 'directory' : stats.isSymbolicLink() ? 'symlink' : 'other';
  return { kind, mode: Number(stats.mode), uid: Number(stats.uid), gid: Number(stats.gid), size: Number(stats.size), ino: stats.ino, nlink: Number(stats.nlink), rdev: Number(stats.rdev), mtimeNs: stats.mtimeNs, ctimeNs: stats.ctimeNs };
}

/** A read-only view of the tree at `root` (lstat remembered: the planner asks again and again). */
function treeView(root: string): TreeView {
  const known = new Map<string, EntryFacts | undefined>();
  const full = (relative: string) => (relative === '' ? root : `${root}/${relative}`);
  return {
    lstat(relative) {
      if (!known.has(relative)) known.set(relative, factsOf(lstatBytesSync(full(relative))));
      return known.get(relative);
    },
    list: (relative) => listDirectoryBytesSync(full(relative)),
    read: (relative) => readBytesSync(full(relative)),
  };
}

/**
 * The paths dpkg installed in a tree, as the planner's byte paths: every
 * line of var/lib/dpkg/info/*.list, and the targets of var/lib/dpkg/diversions.
 */
function packagePaths(tree: TreeView, into: Set<string>): void {
  const info = 'var/lib/dpkg/info';
  if (tree.lstat(info)?.kind !== 'directory') return;
  const add = (line: string) => {
    if (line.startsWith('/') && line.length > 1) into.add(line.slice(1).replace(/\/+$/, ''));
  };
  for (const name of tree.list(info)) {
    if (name.endsWith('.list') && tree.lstat(`${info}/${name}`)?.kind === 'file') for (const line of tree.read(`${info}/${name}`).toString('latin1').split('\n')) add(line);
  }
  const diversions = 'var/lib/dpkg/diversions';
  if (tree.lstat(diversions)?.kind === 'file') {
    tree
      .read(diversions)
      .toString('latin1')
      .split('\n')
      .forEach((line, index) => index % 3 === 1 && add(line));
  }
}

function helperRecord(operation: CarryOperation): HelperRecord {
  switch (operation.op) {
    case 'link':
      return { op: 'link', first: operation.existing, second: operation.target };
    case 'remove':
      return { op: 'remove', first: '', second: operation.target };
    case 'write':
      return { op: 'write', first: operation.content, second: operation.target };
    default:
      return { op: operation.op, first: operation.source, second: operation.target };
  }
}

function nameOf(session: Session, state: BootenvState, uuid: string): string {
  const subvolume = session.subvolumes.find((candidate) => candidate.uuid === uuid);
  if (subvolume?.path === state.installedRoot) return '(installed root)';
  return bootEnvironmentSubvolumes(session).find((environment) => environment.subvolume.uuid === uuid)?.name ?? subvolume?.path ?? uuid;
}

function emptyReport(name: string, options: CarryOptions): CarryReport {
  return {
    name,
    pending: false,
    origin: null,
    mode: null,
    follow: false,
    since: null,
    dryRun: options.dryRun === true,
    final: false,
    changes: { created: 0, modified: 0, removed: 0 },
    carriedBytes: 0,
    copiedBytes: 0,
    conflicts: [],
    accounts: { added: [], changed: [], removed: [], clashes: [] },
    skipped: { packageState: 0, excluded: 0 },
    warnings: [],
    failed: [],
    seconds: 0,
    phaseSeconds: { snapshots: 0, changes: 0, plan: 0, apply: 0, swap: 0 },
  };
}

function summaryOf(report: CarryReport, at: string): CarrySummary {
  return {
    at,
    origin: report.origin ?? '',
    final: report.final,
    changes: report.changes,
    carriedBytes: report.carriedBytes,
    conflicts: report.conflicts.slice(0, CONFLICTS_KEPT),
    conflictCount: report.conflicts.length,
    accountClashes: report.accounts.clashes.map((clash) => ({ ...clash })),
    failed: report.failed.slice(0, CONFLICTS_KEPT),
    warnings: report.warnings,
    reported: false,
  };
}

/**
 * Carries into BE `name` what its origin changed since the base (see the file
 * comment). Changes the BE (swapped for its carried snapshot, a new subvolume
 * UUID under the same name), its state record and the snapshots under
 * @bootenv/.carry; never the origin. Needs root; takes the lock. Returns the
 * report; operations that failed are in it (the rest is carried). Throws
 * NOT_FOUND (no such BE, or its origin or base is gone), BUSY (the BE runs or
 * is mounted, or apt is installing), USAGE (--boot from anywhere but the
 * initramfs), COMMAND_FAILED, PARSE.
 */
export async function carryBootEnvironment(name: string, options: CarryOptions = {}): Promise<CarryReport> {
  assertValidName(name);
  const started = process.hrtime.bigint();
  const report = await withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const target = findBootEnvironment(session, name);
    const booted = target.path === session.probe.bootedSubvolume;
    if (options.boot && !booted) throw new BootenvError('USAGE', `carry --boot is the initramfs's: ${name} must be mounted as / and not yet in use`, { hint: `run beadm carry ${name} instead` });
    if (!options.boot && !options.dryRun) {
      if (booted) {
        throw new BootenvError('BUSY', `${name} is the running BE: a carry goes into a BE before it is used`, { hint: 'its carry ran (or failed) when it booted; beadm list --json shows lastCarry' });
      }
      const mounts = mountsOfSubvolume(session.probe.mounts, session.probe.deviceNumber, target.path);
      if (mounts.length > 0) throw new BootenvError('BUSY', `${name} is mounted at ${mounts.map((mount) => mount.mountPoint).join(', ')}`, { hint: `beadm unmount ${name} first (this boot's pending BE is carried when it boots)` });
    }
    const carry = state.environments[target.uuid]?.carry;
    if (carry === undefined) {
      if (options.boot) await markCarryPending(session, target.uuid, undefined);
      return emptyReport(name, options);
    }
    return carryInto(scope, session, state, target, carry, options);
  });
  report.seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return report;
}

async function carryInto(scope: Scope, session: Session, state: BootenvState, target: Subvolume, carry: CarryRecord, options: CarryOptions): Promise<CarryReport> {
  const report: CarryReport = { ...emptyReport(path.basename(target.path), options), pending: true, mode: carry.mode, follow: carry.follow === true, since: carry.since, final: options.boot === true };
  const origin = session.subvolumes.find((subvolume) => subvolume.uuid === carry.originUuid);
  const base = session.subvolumes.find((subvolume) => subvolume.uuid === carry.baseUuid);
  const newBase = carry.newBaseUuid === null ? base : session.subvolumes.find((subvolume) => subvolume.uuid === carry.newBaseUuid);
  if (origin === undefined || base === undefined || newBase === undefined) {
    const missing = origin === undefined ? 'the BE it was made from is gone' : 'its carry base is gone';
    if (options.boot) {
      // Nothing can ever be carried now: the record goes, loudly.
      delete state.environments[target.uuid]?.carry;
      await saveState(scope, session, state);
      await markCarryPending(session, target.uuid, undefined);
    }
    throw new BootenvError('NOT_FOUND', `cannot carry into ${report.name}: ${missing}, so the changes made there since ${carry.since} are not in ${report.name}`, {
      hint: options.boot ? 'they were in the origin BE; if it still exists, beadm mount it to copy what is needed' : `beadm activate --carry none ${report.name} drops the carry`,
    });
  }
  report.origin = nameOf(session, state, origin.uuid);
  const top = session.top;
  const at = new Date().toISOString();
  const clock = () => process.hrtime.bigint();
  const since = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;

  let phase = clock();
  const originSnapshot = carryPath(carry.id, 'origin');
  const newSnapshot = carryPath(carry.id, 'new');
  const temporary = (relative: string) => scope.onAbort(`delete ${relative}`, () => deleteIfThere(session, relative));
  await snapshotSubvolume(path.join(top, origin.path), path.join(top, originSnapshot), 'read-only');
  temporary(originSnapshot);
  await snapshotSubvolume(path.join(top, target.path), path.join(top, newSnapshot), 'read-only');
  temporary(newSnapshot);
  report.phaseSeconds.snapshots = since(phase);
  crashPoint('carry-snapshots');

  phase = clock();
  const [originDelta, newDelta] = await Promise.all([
    subvolumeChanges(path.join(top, base.path), path.join(top, originSnapshot)),
    subvolumeChanges(path.join(top, newBase.path), path.join(top, newSnapshot)),
  ]);
  report.phaseSeconds.changes = since(phase);

  phase = clock();
  const config = await loadConfig();
  const views = { base: treeView(path.join(top, base.path)), newBase: treeView(path.join(top, newBase.path)), origin: treeView(path.join(top, originSnapshot)), target: treeView(path.join(top, newSnapshot)) };
  const names = new Map<bigint, string[]>();
  for (const candidate of originCandidates({ originDelta, ...views })) {
    const facts = views.origin.lstat(candidate);
    if (facts?.kind !== 'file' || facts.nlink < 2 || names.has(facts.ino)) continue;
    const resolved = await inodePaths(facts.ino, path.join(top, originSnapshot));
    if (resolved.some((other) => views.origin.lstat(other)?.ino !== facts.ino)) throw new BootenvError('PARSE', `btrfs inspect-internal inode-resolve gave names of inode ${facts.ino} that are not it`);
    names.set(facts.ino, resolved);
  }
  let owned: Set<string> | undefined;
  if (carry.mode === 'data') {
    owned = new Set();
    packagePaths(views.origin, owned);
    packagePaths(views.target, owned);
  }
  const plan = planCarry({
    mode: carry.mode,
    // The settings' carry-exclude and the shared paths (./share.ts): those live in subvolumes of their own, which every BE mounts.
    exclude: [...config.carryExclude, ...(state.shared ?? []).map((shared) => shared.path)].map((excluded) => Buffer.from(excluded.slice(1), 'utf8').toString('latin1')),
    originDelta,
    newDelta,
    touchedBefore: await readTouched(session, carry),
    ...views,
    namesOfInode: (ino) => names.get(ino) ?? [],
    rewriteFstab: (text) => rewriteFstabForBootEnvironment(text, target.path, state.installedRoot),
    packageOwned: (relative) => owned?.has(relative) === true,
    follow: carry.follow === true,
  });
  report.phaseSeconds.plan = since(phase);
  Object.assign(report, {
    changes: plan.changes,
    carriedBytes: plan.carriedBytes,
    conflicts: plan.conflicts.map((conflict) => ({ ...conflict, path: displayPath(conflict.path), savedAs: conflict.savedAs === null ? null : displayPath(conflict.savedAs) })),
    accounts: plan.accounts,
    skipped: plan.skipped,
    warnings: plan.warnings,
  });
  if (options.dryRun || plan.operations.length === 0) {
    // Nothing to swap in: the snapshots read from go now.
    await deleteIfThere(session, newSnapshot);
    await deleteIfThere(session, originSnapshot);
    if (!options.dryRun && report.final) {
      // The BE stays as it is (the same subvolume); its carry is done. The record goes first: a marker
      // without a record is only dropped by the next boot, a record without a marker would say the carry never ran.
      const record = state.environments[target.uuid] as NonNullable<BootenvState['environments'][string]>;
      delete record.carry;
      record.lastCarry = summaryOf(report, at);
      await saveState(scope, session, state);
      await markCarryPending(session, target.uuid, undefined);
      await sweepCarrySnapshots(session);
    }
    return report;
  }

  phase = clock();
  const work = carryPath(carry.id, 'work');
  await snapshotSubvolume(path.join(top, newSnapshot), path.join(top, work));
  temporary(work);
  for (let start = 0; start < plan.operations.length; start += BATCH) {
    const batch = plan.operations.slice(start, start + BATCH);
    const outcomes = await applyCarryRecords(path.join(top, originSnapshot), path.join(top, work), batch.map(helperRecord));
    outcomes.forEach((outcome, index) => {
      const operation = batch[index] as CarryOperation;
      if (outcome.status === 'copied') report.copiedBytes += outcome.bytes;
      if (outcome.status === 'error') report.failed.push({ path: displayPath(operation.target), message: `${operation.op}: ${outcome.message}` });
    });
    if (start === 0 && plan.operations.length > BATCH) crashPoint('carry-apply');
  }
  let newBaseSnapshot: string | null = null;
  let touchedFile: string | null = null;
  if (!report.final) {
    newBaseSnapshot = carryPath(carry.id, 'new-base');
    await snapshotSubvolume(path.join(top, work), path.join(top, newBaseSnapshot), 'read-only');
    temporary(newBaseSnapshot);
    touchedFile = await writeTouched(session, carry.id, plan.touched);
    // The helper synced what it wrote; this commits the touched file too, before the swap is recorded.
    await syncFilesystem(top);
  }
  report.phaseSeconds.apply = since(phase);

  phase = clock();
  session.subvolumes = await listSubvolumes(top);
  const uuidOf = (relative: string) => {
    const found = session.subvolumes.find((subvolume) => subvolume.path === relative);
    if (found === undefined) throw new BootenvError('INTERNAL', `snapshot ${relative} is not listed by btrfs`);
    return found.uuid;
  };
  const record = state.environments[target.uuid] as NonNullable<BootenvState['environments'][string]>;
  // Still pending after an on-demand carry: the carried subvolume is marked before it is swapped in.
  if (!report.final) await markCarryPending(session, uuidOf(work), carry.id);
  record.carry = {
    ...carry,
    exchange: {
      workUuid: uuidOf(work),
      subvolume: target.path,
      final: report.final,
      originSnapshotUuid: uuidOf(originSnapshot),
      newBaseSnapshotUuid: newBaseSnapshot === null ? null : uuidOf(newBaseSnapshot),
      touchedFile,
      summary: summaryOf(report, at),
    },
  };
  await saveState(scope, session, state);
  crashPoint('carry-before-swap');
  // From here on the swap is recorded: whatever happens, the next session finishes or discards it.
  scope.commit();
  try {
    await exchangePaths(path.join(top, work), path.join(top, target.path));
    await syncFilesystem(top);
  } catch (error) {
    await withScope((recovery) => recoverInterruptedCarries(recovery, session));
    throw error;
  }
  crashPoint('carry-after-swap');
  await withScope((finishing) => completeExchange(finishing, session, state, target.uuid));
  crashPoint('carry-after-bookkeeping');
  await sweepCarrySnapshots(session);
  report.phaseSeconds.swap = since(phase);
  return report;
}

/** Deletes a snapshot the carry made, uncommitted: should the deletion be lost, the next sweep deletes it. */
async function deleteIfThere(session: Session, relative: string): Promise<void> {
  if (lstatBytesSync(path.join(session.top, relative)) !== undefined) await deleteSubvolume(path.join(session.top, relative), false);
}

/** What a boot of a BE has to say about carries: the last one into it, once; and one that should have run and did not. */
export interface BootCarry {
  /** The carry done into this BE (at this boot, or on demand before), not reported before. */
  carried: CarrySummary | null;
  /** This BE still has a carry pending: its initramfs did not carry (not installed, or it failed). */
  missed: { origin: string; since: string } | null;
}

/**
 * For the booted BE's record (in memory; the caller saves the state when
 * `unreported`): marks the last carry's summary reported if no boot reported
 * it yet, and gives it when it carried or met anything (a carry of nothing is
 * no news); says whether a carry is still pending, which means none ran.
 */
export function carryOfBoot(session: Session, state: BootenvState, booted: Subvolume): BootCarry & { unreported: boolean } {
  const record = state.environments[booted.uuid];
  const result = { carried: null as CarrySummary | null, missed: null as BootCarry['missed'], unreported: false };
  const last = record?.lastCarry;
  if (last !== undefined && !last.reported) {
    last.reported = true;
    result.unreported = true;
    const news = last.changes.created + last.changes.modified + last.changes.removed + last.conflictCount + last.accountClashes.length + last.failed.length + last.warnings.length;
    if (news > 0) result.carried = last;
  }
  if (record?.carry !== undefined) result.missed = { origin: nameOf(session, state, record.carry.originUuid), since: record.carry.since };
  return result;
}

/**
 * `beadm activate --carry SETTING` (and create's): sets the carry mode of BE
 * `subvolume`'s pending carry, or with `none` drops it (its marker goes now,
 * its snapshots with the next session's sweep). Changes the state in memory
 * (the caller saves) and the BE's marker. Throws USAGE when the BE has no
 * carry pending to set.
 */
export async function setCarry(session: Session, state: BootenvState, name: string, subvolume: Subvolume, setting: 'all' | 'data' | 'none'): Promise<void> {
  const record = state.environments[subvolume.uuid];
  if (record?.carry === undefined) {
    if (setting === 'none') return;
    throw new BootenvError('USAGE', `${name} has no carry pending (it was made with carry = none, or it booted since)`, { hint: 'a carry is set up when a BE is made: beadm create --carry MODE' });
  }
  if (setting === 'none') {
    delete record.carry;
    await markCarryPending(session, subvolume.uuid, undefined);
  } else {
    record.carry.mode = setting;
  }
}

/** The BEs whose pending carry reads from `origin`: destroying it would lose what they are to carry. */
export function carriesFrom(session: Session, state: BootenvState, origin: Subvolume): string[] {
  return bootEnvironmentSubvolumes(session)
    .filter(({ subvolume }) => state.environments[subvolume.uuid]?.carry?.originUuid === origin.uuid)
    .map(({ name }) => name);
}
