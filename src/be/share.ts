/**
 * Shared subvolumes (`beadm share`, `beadm init --share`): a directory of the
 * running root, such as /var/lib/postgresql or /var/log, moves into a
 * top-level subvolume of its own beside @home (@var_lib_postgresql), which
 * every BE's fstab mounts at that path. It is then in no BE's snapshot: it
 * never rolls back and is never carried (the carry excludes it). BEs made
 * before keep their own old copy, hidden under the mount.
 *
 * A share, step by step (each a crashPoint; the progress is in the state from
 * the first step on, see ./share-records.ts for the recovery):
 *   1. a read-only snapshot of the running root (instant);
 *   2. the path copied from it into a new subvolume under a temporary name
 *      (extents shared, every attribute kept), the filesystem synced;
 *   3. a second snapshot: nothing below the path may have changed in the
 *      running root since the first (btrfs send --no-data between the two),
 *      else all is undone and the share refused;
 *   4. the copy renamed to its final name; the root's directory moved aside,
 *      an empty one with its owner, mode, xattrs and times made in its
 *      place, the subvolume mounted there;
 *   5. the line written to every BE's and the installed root's fstab, the
 *      running root's last: that write is the commit point;
 *   6. the old copy and the snapshots deleted, the path recorded as shared.
 * Before the commit an error undoes every step (Scope); after it, what is
 * left is finished by the next beadm.
 */
import path from 'node:path';
import { randomUuid } from './random-id.js';
import { createSubvolume, filesystemUuid, listSubvolumes, snapshotSubvolume, subvolumeChanges, syncFilesystem, deleteSubvolume } from '../btrfs/commands.js';
import { mountAt, readMountTable } from '../sys/mountinfo.js';
import { BootenvError } from '../errors.js';
import { applyCarryRecords } from '../sys/carry.js';
import { copyTreeReflinked, listDirectory, lstatIfExistsSync, makeDirectory, MOVED_ASIDE_MARK, pathExists, readText, readTextIfExists, realPathIfExists, removeEmptyDirectory, renamePath, writeFileAtomic } from '../sys/fs.js';
import { mountBtrfs } from '../sys/mount.js';
import { crashPoint, processesUsing } from '../sys/process.js';
import { withScope, type Scope } from '../sys/scope.js';
import { mountsInFstab, sharedMountLine, withSharedMount } from './fstab.js';
import { requireState, saveState, type Options, type Session } from './session.js';
import { finishShare, fstabSubvolumes, SHARE_DIRECTORY } from './share-records.js';
import { isSameOrBelow, listedPathsBelow, normalizeSharePath, packageOfListFile, sharedSubvolumeName, type PathAliases } from './share-paths.js';
import type { BootenvState, SharedSubvolume, ShareProgress } from './state.js';
import { openSession } from './transaction.js';

export type { SharedSubvolume } from './state.js';

/** Top-level names that merged /usr makes symlinks into /usr. */
const MERGED_USR_ALIASES = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'];
/** Package names listed in a refusal (all of them are counted). */
const PACKAGES_NAMED = 10;

/** The merged-/usr aliases of the root at `root` (e.g. [/bin, /usr/bin] when /bin is a symlink to usr/bin). */
export async function mergedUsrAliases(root: string): Promise<PathAliases> {
  const aliases: Array<readonly [string, string]> = [];
  for (const name of MERGED_USR_ALIASES) {
    const resolved = await realPathIfExists(path.join(root, name));
    if (resolved !== undefined && resolved !== path.join(root, name) && resolved.startsWith(`${root}/`)) aliases.push([`/${name}`, resolved.slice(root.length)]);
  }
  return aliases;
}

/** The packages with files (not directories) at or below `sharePath` in the root at `root`, from dpkg's file lists, with one such file each. */
async function packagesOwningFilesBelow(root: string, sharePath: string): Promise<Array<{ package: string; file: string }>> {
  const aliases = await mergedUsrAliases(root);
  const info = path.join(root, 'var/lib/dpkg/info');
  const owners: Array<{ package: string; file: string }> = [];
  for (const name of (await listDirectory(info)).sort()) {
    const owner = packageOfListFile(name);
    if (owner === undefined) continue;
    const file = listedPathsBelow(await readText(path.join(info, name)), sharePath, aliases).find((listed) => lstatIfExistsSync(path.join(root, listed))?.isDirectory() !== true);
    if (file !== undefined) owners.push({ package: owner, file });
  }
  return owners;
}

/**
 * Every check of a share of `sharePath` (normalized) in the running root,
 * changing nothing. Throws USAGE (a path the rules refuse, one that is no
 * directory), EXISTS (already shared, the subvolume name taken, an fstab line
 * for it), BUSY (a mount point, on or holding another mount, processes using
 * it), UNSUPPORTED (package files below it, subvolumes below it).
 */
async function checkShare(session: Session, state: BootenvState | undefined, sharePath: string): Promise<void> {
  const root = path.join(session.top, session.probe.bootedSubvolume);
  if ((state?.shared ?? []).some((shared) => shared.path === sharePath)) throw new BootenvError('EXISTS', `${sharePath} is already shared`, { hint: 'see beadm share' });
  const stats = lstatIfExistsSync(path.join(root, sharePath));
  if (stats === undefined) throw new BootenvError('USAGE', `${sharePath} does not exist in the running system`);
  if (!stats.isDirectory()) throw new BootenvError('USAGE', `${sharePath} is not a directory${stats.isSymbolicLink() ? ' (it is a symlink)' : ''}`);
  const mounts = session.probe.mounts;
  const mounted = mountAt(mounts, sharePath);
  if (mounted !== undefined) throw new BootenvError('BUSY', `${sharePath} is a mount point already (of ${mounted.source} ${mounted.root})`);
  const holder = mounts.filter((mount) => isSameOrBelow(sharePath, mount.mountPoint)).sort((a, b) => b.mountPoint.length - a.mountPoint.length)[0];
  if (holder?.mountPoint !== '/') throw new BootenvError('BUSY', `${sharePath} is not in the root filesystem but on the mount at ${holder?.mountPoint}`);
  const below = mounts.filter((mount) => mount.mountPoint !== sharePath && isSameOrBelow(mount.mountPoint, sharePath));
  if (below.length > 0) throw new BootenvError('BUSY', `something is mounted below ${sharePath}: ${below.map((mount) => mount.mountPoint).join(', ')}`, { hint: 'unmount it first' });
  const name = sharedSubvolumeName(sharePath);
  if (await pathExists(path.join(session.top, name))) throw new BootenvError('EXISTS', `the subvolume ${name} for ${sharePath} exists already at the top level`);
  const nested = session.subvolumes.filter((subvolume) => isSameOrBelow(`/${subvolume.path}`, `/${session.probe.bootedSubvolume}${sharePath}`));
  if (nested.length > 0) throw new BootenvError('UNSUPPORTED', `${sharePath} holds subvolumes of its own (${nested.map((subvolume) => subvolume.path).join(', ')}), which a snapshot does not copy`);
  const fstab = await readTextIfExists(path.join(root, 'etc/fstab'));
  if (fstab !== undefined && mountsInFstab(fstab, sharePath)) throw new BootenvError('EXISTS', `/etc/fstab mounts something at ${sharePath} already`);
  const owners = await packagesOwningFilesBelow(root, sharePath);
  if (owners.length > 0) {
    const named = owners.slice(0, PACKAGES_NAMED).map((owner) => `${owner.package} (${owner.file})`);
    throw new BootenvError('UNSUPPORTED', `${sharePath} holds files of ${owners.length === 1 ? 'a package' : `${owners.length} packages`}: ${named.join(', ')}${owners.length > PACKAGES_NAMED ? ', …' : ''}; they must roll back with their package`, {
      hint: `dpkg -S ${sharePath} lists them; share a directory of data only`,
    });
  }
  await refuseIfInUse(sharePath);
}

/** Throws BUSY naming the processes (pid, command) that use `sharePath`; never signals them. */
async function refuseIfInUse(sharePath: string): Promise<void> {
  const users = await processesUsing(sharePath);
  if (users.length === 0) return;
  throw new BootenvError('BUSY', `${sharePath} is in use: ${users.map((user) => `pid ${user.pid} (${user.command}: ${user.how} ${user.file})`).join(', ')}`, {
    hint: 'stop those processes (e.g. the service whose data it is), then share it',
  });
}

/** Paths below `sharePath` (relative to the root, as the send stream names them) that changed between the two snapshots. */
async function changesBelow(session: Session, before: string, after: string, sharePath: string): Promise<string[]> {
  const delta = await subvolumeChanges(path.join(session.top, before), path.join(session.top, after));
  const relative = Buffer.from(sharePath.slice(1), 'utf8').toString('latin1');
  const under = (entry: string) => entry === relative || entry.startsWith(`${relative}/`);
  const changed = [...delta.changed].filter(([entry, change]) => under(entry) && (change.arrived || change.content || change.metadata || change.movedFrom !== null)).map(([entry]) => entry);
  const vacated = [...delta.vacated].filter(under);
  return [...changed, ...vacated].map((entry) => `/${Buffer.from(entry, 'latin1').toString('utf8')}`);
}

/** The share of one path, up to and including its commit point; returns the progress record. */
async function shareUpToCommit(scope: Scope, session: Session, state: BootenvState, sharePath: string): Promise<ShareProgress> {
  const top = session.top;
  const rootSubvolume = session.probe.bootedSubvolume;
  const root = path.join(top, rootSubvolume);
  const suffix = randomUuid().slice(0, 8);
  const progress: ShareProgress = {
    path: sharePath,
    root: rootSubvolume,
    subvolume: sharedSubvolumeName(sharePath),
    temporary: `${SHARE_DIRECTORY}/new-${suffix}`,
    snapshots: [`${SHARE_DIRECTORY}/root-${suffix}`, `${SHARE_DIRECTORY}/check-${suffix}`],
    uuid: null,
    aside: `${path.dirname(sharePath)}/.${path.basename(sharePath)}${MOVED_ASIDE_MARK}${suffix}`,
    started: new Date().toISOString(),
  };
  const [snapshot, check] = progress.snapshots as [string, string];
  state.share = progress;
  await saveState(scope, session, state);
  crashPoint('share-recorded');

  if (await makeDirectory(path.join(top, SHARE_DIRECTORY), 0o700)) scope.onAbort(`remove ${SHARE_DIRECTORY}`, () => removeEmptyDirectory(path.join(top, SHARE_DIRECTORY)));
  await snapshotSubvolume(root, path.join(top, snapshot), 'read-only');
  scope.onAbort(`delete ${snapshot}`, () => deleteSubvolume(path.join(top, snapshot)));
  crashPoint('share-snapshot');

  await createSubvolume(path.join(top, progress.temporary));
  scope.onAbort(`delete ${progress.temporary}`, async () => {
    if (await pathExists(path.join(top, progress.temporary))) await deleteSubvolume(path.join(top, progress.temporary));
  });
  await copyTreeReflinked(path.join(top, snapshot, sharePath), path.join(top, progress.temporary));
  await syncFilesystem(top);
  session.subvolumes = await listSubvolumes(top);
  progress.uuid = session.subvolumes.find((subvolume) => subvolume.path === progress.temporary)?.uuid ?? null;
  if (progress.uuid === null) throw new BootenvError('INTERNAL', `subvolume ${progress.temporary} is not listed by btrfs`);
  await saveState(scope, session, state);
  crashPoint('share-copied');

  await snapshotSubvolume(root, path.join(top, check), 'read-only');
  scope.onAbort(`delete ${check}`, () => deleteSubvolume(path.join(top, check)));
  const changed = await changesBelow(session, snapshot, check, sharePath);
  if (changed.length > 0) {
    throw new BootenvError('BUSY', `${sharePath} changed while it was copied (${changed.slice(0, 5).join(', ')}${changed.length > 5 ? ', …' : ''}); nothing was changed`, {
      hint: 'stop what writes there, then share it',
    });
  }
  await refuseIfInUse(sharePath);

  await renamePath(path.join(top, progress.temporary), path.join(top, progress.subvolume));
  scope.onAbort(`rename ${progress.subvolume} back to ${progress.temporary}`, () => renamePath(path.join(top, progress.subvolume), path.join(top, progress.temporary)));
  crashPoint('share-renamed');

  await renamePath(path.join(root, sharePath), path.join(root, progress.aside));
  scope.onAbort(`move ${progress.aside} back to ${sharePath}`, () => renamePath(path.join(root, progress.aside), path.join(root, sharePath)));
  crashPoint('share-aside');
  // The empty mount point takes the directory's owner, mode, xattrs and times (the carry helper copies them exactly).
  const made = await applyCarryRecords(path.join(top, snapshot), root, [
    { op: 'mkdir', first: sharePath.slice(1), second: sharePath.slice(1) },
    { op: 'times', first: sharePath.slice(1), second: sharePath.slice(1) },
  ]);
  scope.onAbort(`remove the mount point ${sharePath}`, () => removeEmptyDirectory(path.join(root, sharePath)));
  const failed = made.find((outcome) => outcome.status === 'error');
  if (failed?.status === 'error') throw new BootenvError('COMMAND_FAILED', `cannot make the mount point ${sharePath}: ${failed.message}`);
  await mountBtrfs(scope, session.probe.device, sharePath, `subvol=${progress.subvolume}`, 'kept');
  crashPoint('share-mounted');

  const line = sharedMountLine(await filesystemUuid(top, session.probe.device), sharePath, progress.subvolume);
  for (const subvolume of fstabSubvolumes(session, state, rootSubvolume)) {
    const file = path.join(top, subvolume, 'etc/fstab');
    const previous = await readTextIfExists(file);
    if (previous === undefined) continue;
    if (subvolume === rootSubvolume) crashPoint('share-fstabs');
    await writeFileAtomic(file, withSharedMount(previous, line));
    scope.onAbort(`restore ${subvolume}/etc/fstab`, () => writeFileAtomic(file, previous));
  }
  crashPoint('share-committed');
  return progress;
}

/** The paths normalized (normalizeSharePath); USAGE when one is given twice or inside another one given. */
function normalizeSharePaths(paths: readonly string[]): string[] {
  const normalized = paths.map(normalizeSharePath);
  const repeated = normalized.find((sharePath, index) => normalized.some((other, before) => before < index && (isSameOrBelow(sharePath, other) || isSameOrBelow(other, sharePath))));
  if (repeated !== undefined) throw new BootenvError('USAGE', `${repeated} is given twice, or inside another path given`);
  return normalized;
}

export interface ShareResult {
  /** What is shared now, the paths just shared included. */
  shared: SharedSubvolume[];
  /** The paths this call shared. */
  added: string[];
}

/**
 * Shares `paths` of the running root, one after the other (see the top of
 * this file): each one's checks first, changing nothing when one refuses.
 * With no paths, only lists what is shared. Needs root; mounts each shared
 * subvolume at its path in the running system and writes every BE's and the
 * installed root's fstab. Throws as checkShare, NOT_INITIALIZED, and
 * COMMAND_FAILED; a path shared before another one failed stays shared.
 */
export async function shareDirectories(paths: readonly string[], options: Options = {}): Promise<ShareResult> {
  const normalized = normalizeSharePaths(paths);
  const added: string[] = [];
  const shared = await withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    for (const sharePath of normalized) await checkShare(session, state, sharePath);
    for (const sharePath of normalized) {
      if (added.length > 0) await checkShare(session, state, sharePath);
      const progress = await withScope((inner) => shareUpToCommit(inner, session, state, sharePath));
      await withScope((after) => finishShare(after, session, state, progress));
      added.push(sharePath);
      session.probe.mounts = await readMountTable();
    }
    return state.shared ?? [];
  });
  return { shared, added };
}

/**
 * Checks that `paths` can be shared in the running root (what `init --share`
 * does before init changes anything). Changes nothing; throws as
 * shareDirectories.
 */
export async function checkShareable(session: Session, paths: readonly string[]): Promise<void> {
  for (const sharePath of normalizeSharePaths(paths)) await checkShare(session, session.state, sharePath);
}

/** The shared subvolumes, each with whether it is mounted at its path now. Reads only. */
export async function sharedPathsOf(session: Session): Promise<Array<SharedSubvolume & { mounted: boolean }>> {
  const state = requireState(session);
  const mounts = await readMountTable();
  return (state.shared ?? []).map((shared) => ({ ...shared, mounted: mountAt(mounts, shared.path) !== undefined }));
}

/** `beadm share` without paths: the shared subvolumes. Takes the lock; changes nothing (but what recovery finishes). */
export async function listShared(options: Options = {}): Promise<Array<SharedSubvolume & { mounted: boolean }>> {
  return withScope(async (scope) => {
    const session = await openSession(scope, options, 'allow');
    return sharedPathsOf(session);
  });
}
