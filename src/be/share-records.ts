/**
 * The end of a share (./share.ts) and its recovery. A share records its
 * progress in the state (ShareProgress) before its first step; its commit
 * point is the line for the path in the running root's own /etc/fstab. Every
 * session first looks for a share under way (a process killed, a power cut):
 *   line there      finish it: every BE's and the installed root's fstab gets
 *                   the line, the path is mounted if this is still the boot
 *                   it was shared in, the root's old copy and the snapshots
 *                   are deleted, and the path is recorded as shared;
 *   line not there  roll it back: the copy's subvolume is unmounted and
 *                   deleted, the root's own directory moved back to the path,
 *                   the line removed wherever it was written: the data is
 *                   where it was, as it was.
 * finishShare is also the forward path's last part, after its commit.
 */
import path from 'node:path';
import { deleteSubvolume, filesystemUuid, listSubvolumes } from '../btrfs/commands.js';
import { mountAt, readMountTable, subvolumePathOf } from '../sys/mountinfo.js';
import { BootenvError } from '../errors.js';
import { pathExists, readTextIfExists, removeEmptyDirectory, removeMovedAsideTree, renamePath, writeFileAtomic } from '../sys/fs.js';
import { mountBtrfs, unmount } from '../sys/mount.js';
import { crashPoint } from '../sys/process.js';
import type { Scope } from '../sys/scope.js';
import { hasSharedMount, sharedMountLine, withoutSharedMount, withSharedMount } from './fstab.js';
import { bootEnvironmentSubvolumes, saveState, type Session } from './session.js';
import { CONTAINER, type BootenvState, type ShareProgress } from './state.js';

/** Where a share's temporary subvolumes live (never BEs: the name starts with a dot). */
export const SHARE_DIRECTORY = `${CONTAINER}/.share`;

/** The subvolumes whose /etc/fstab mounts every shared path: the installed root and every BE, `last` (the commit point) at the end. */
export function fstabSubvolumes(session: Session, state: BootenvState, last: string): string[] {
  const all = [state.installedRoot, ...bootEnvironmentSubvolumes(session).map(({ subvolume }) => subvolume.path)];
  return [...new Set(all)].filter((subvolume) => subvolume !== last).concat(all.includes(last) ? [last] : []);
}

/** Whether the share's commit point is passed: the running root's fstab has its line. */
async function committed(session: Session, progress: ShareProgress): Promise<boolean> {
  const fstab = await readTextIfExists(path.join(session.top, progress.root, 'etc/fstab'));
  return fstab !== undefined && hasSharedMount(fstab, progress.path, progress.subvolume);
}

/** Whether this process runs in the root the share moved its path in (then the path's mount is this system's business). */
function inSharedRoot(session: Session, progress: ShareProgress): boolean {
  return session.probe.bootedSubvolume === progress.root;
}

async function deleteIfThere(session: Session, subvolume: string): Promise<void> {
  if (await pathExists(path.join(session.top, subvolume))) await deleteSubvolume(path.join(session.top, subvolume));
}

/**
 * Completes a share past its commit point (idempotent): adds the line to
 * every fstab that lacks it, mounts the subvolume at the path if this boot
 * runs the root it was shared in and nothing is mounted there, deletes the
 * root's old copy and the snapshots, records the path as shared and the
 * share as done (state saved through `scope`). Throws COMMAND_FAILED.
 */
export async function finishShare(scope: Scope, session: Session, state: BootenvState, progress: ShareProgress): Promise<void> {
  const line = sharedMountLine(await filesystemUuid(session.top, session.probe.device), progress.path, progress.subvolume);
  session.subvolumes = await listSubvolumes(session.top);
  const shared = session.subvolumes.find((subvolume) => subvolume.path === progress.subvolume);
  if (shared === undefined) throw new BootenvError('INTERNAL', `the shared subvolume ${progress.subvolume} of ${progress.path} is gone`);
  for (const subvolume of fstabSubvolumes(session, state, progress.root)) {
    const file = path.join(session.top, subvolume, 'etc/fstab');
    const text = await readTextIfExists(file);
    if (text !== undefined && !hasSharedMount(text, progress.path, progress.subvolume)) await writeFileAtomic(file, withSharedMount(text, line));
  }
  if (inSharedRoot(session, progress) && mountAt(await readMountTable(), progress.path) === undefined) {
    await mountBtrfs(scope, session.probe.device, progress.path, `subvol=${progress.subvolume}`, 'kept');
  }
  await removeMovedAsideTree(path.join(session.top, progress.root, progress.aside));
  crashPoint('share-old-deleted');
  for (const snapshot of progress.snapshots) await deleteIfThere(session, snapshot);
  await removeEmptyDirectory(path.join(session.top, SHARE_DIRECTORY));
  session.subvolumes = await listSubvolumes(session.top);
  const record = { path: progress.path, subvolume: progress.subvolume, uuid: shared.uuid, since: progress.started };
  state.shared = [...(state.shared ?? []).filter((entry) => entry.path !== progress.path), record];
  delete state.share;
  await saveState(scope, session, state);
}

/**
 * Undoes a share that stopped before its commit point: unmounts the copy from
 * the path (in the boot it was made in), puts the root's own directory back
 * at the path, removes the line from every fstab, deletes the copy and the
 * snapshots, forgets the share (state saved through `scope`).
 */
async function rollBackShare(scope: Scope, session: Session, state: BootenvState, progress: ShareProgress): Promise<void> {
  if (inSharedRoot(session, progress)) {
    const mount = mountAt(await readMountTable(), progress.path);
    if (mount !== undefined && mount.device === session.probe.deviceNumber && [progress.subvolume, progress.temporary].includes(subvolumePathOf(mount))) await unmount(progress.path);
  }
  const live = path.join(session.top, progress.root, progress.path);
  const aside = path.join(session.top, progress.root, progress.aside);
  if (await pathExists(aside)) {
    // The empty mount point made in its place; removeEmptyDirectory refuses anything else.
    await removeEmptyDirectory(live);
    await renamePath(aside, live);
  }
  for (const subvolume of fstabSubvolumes(session, state, progress.root)) {
    const file = path.join(session.top, subvolume, 'etc/fstab');
    const text = await readTextIfExists(file);
    if (text !== undefined && hasSharedMount(text, progress.path, progress.subvolume)) await writeFileAtomic(file, withoutSharedMount(text, progress.path, progress.subvolume));
  }
  session.subvolumes = await listSubvolumes(session.top);
  const final = session.subvolumes.find((subvolume) => subvolume.path === progress.subvolume);
  if (final !== undefined && progress.uuid !== null && final.uuid === progress.uuid) await deleteSubvolume(path.join(session.top, progress.subvolume));
  await deleteIfThere(session, progress.temporary);
  for (const snapshot of progress.snapshots) await deleteIfThere(session, snapshot);
  await removeEmptyDirectory(path.join(session.top, SHARE_DIRECTORY));
  session.subvolumes = await listSubvolumes(session.top);
  delete state.share;
  await saveState(scope, session, state);
}

/**
 * What every session does first (after the apt transaction's and the carry's
 * recovery): finishes or rolls back a share that was interrupted, and says so.
 */
export async function recoverInterruptedShare(scope: Scope, session: Session): Promise<void> {
  const state = session.state;
  const progress = state?.share;
  if (state === undefined || progress === undefined) return;
  if (await committed(session, progress)) {
    await finishShare(scope, session, state, progress);
    session.notify(`finished sharing ${progress.path} (subvolume ${progress.subvolume}), which was interrupted after its commit`);
  } else {
    await rollBackShare(scope, session, state, progress);
    session.notify(`rolled back the sharing of ${progress.path}, which was interrupted before its commit; ${progress.path} is as it was`);
  }
}
