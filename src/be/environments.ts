/**
 * Making and forgetting one BE, and the boot menu of all of them: the steps
 * that the operations (./library.ts) and the apt transaction
 * (./transaction.ts) share. A BE is made as a writable snapshot whose own
 * fstab mounts it as `/`, recorded in the state, with the carry of its
 * source's later changes prepared (./carry-records.ts); it is forgotten in
 * one way: its state record goes, the menu follows if it had an entry, and
 * its subvolume is deleted last (then the carry snapshots no record needs
 * any more), so that a failure before that leaves everything as it was once
 * the scope aborts.
 */
import path from 'node:path';
import { deleteSubvolume, filesystemUuid, listSubvolumes, snapshotSubvolume } from '../btrfs/commands.js';
import type { Subvolume } from '../btrfs/parse.js';
import { BootenvError } from '../errors.js';
import { grubConfigSourcesEntries, regenerateGrubConfig, replaceMenuEntries } from '../grub/config.js';
import { chooseBootFiles, type BootFiles } from '../grub/kernels.js';
import { generateBootMenu } from '../grub/menu.js';
import { listDirectory, makeDirectory, pathExists, readText, writeFileAtomic } from '../sys/fs.js';
import { mountBtrfsTemporarily, NOSUID_NODEV } from '../sys/mount.js';
import type { Scope } from '../sys/scope.js';
import { INSTALLED_ROOT_MOUNTPOINT, rewriteFstabForBootEnvironment } from './fstab.js';
import { rememberAncestry } from './ancestry.js';
import { carryBaseUuid, markCarryPending, prepareCarry, sweepCarrySnapshots, type CarryChoice } from './carry-records.js';
import { readOsRelease } from './os-release.js';
import { bootEnvironmentSubvolumes, installedRootPath, saveState, type Session } from './session.js';
import { CONTAINER, type BootenvState } from './state.js';

/** The kernel GRUB would boot in the subvolume at `subvolume` (from the top level); undefined when it has none. */
export async function bootFilesOf(session: Session, subvolume: string): Promise<BootFiles | undefined> {
  const root = path.join(session.top, subvolume);
  return chooseBootFiles(await listDirectory(path.join(root, 'boot')), await listDirectory(path.join(root, 'lib/modules')));
}

/** Throws NOT_BOOTABLE unless BE `name` holds a kernel with a matching initramfs and /lib/modules directory. */
export async function requireBootable(session: Session, name: string, subvolume: Subvolume): Promise<void> {
  if ((await bootFilesOf(session, subvolume.path)) === undefined) {
    throw new BootenvError('NOT_BOOTABLE', `${name} holds no kernel with a matching initramfs and /lib/modules directory in its /boot`, {
      hint: `install a kernel in it (beadm mount ${name}, then apt-get in a chroot) before activating it`,
    });
  }
}

/**
 * Snapshots `source` to @bootenv/NAME, points the new BE's /etc/fstab at it,
 * and records it in `state` (in memory: the caller saves), with the carry of
 * `source`'s later changes that `carry` asks for: a new carry snapshots
 * `source` read-only first (the carry's base) and the BE from that. The
 * snapshots are deleted again if `scope` aborts. Throws EXISTS.
 */
export async function makeBootEnvironment(
  scope: Scope,
  session: Session,
  state: BootenvState,
  name: string,
  source: Subvolume,
  description: string,
  carry: CarryChoice = { mode: 'none' },
): Promise<Subvolume> {
  const target = path.join(session.top, CONTAINER, name);
  if (await pathExists(target)) {
    throw new BootenvError('EXISTS', `${CONTAINER}/${name} already exists`, { hint: 'choose another name' });
  }
  const { snapshotFrom, record, basePath } = await prepareCarry(scope, session, source, carry);
  await snapshotSubvolume(path.join(session.top, snapshotFrom), target);
  scope.onAbort(`delete half-made ${CONTAINER}/${name}`, () => deleteSubvolume(target));
  const fstab = path.join(target, 'etc/fstab');
  await writeFileAtomic(fstab, rewriteFstabForBootEnvironment(await readText(fstab), `${CONTAINER}/${name}`, state.installedRoot));
  await makeDirectory(path.join(target, INSTALLED_ROOT_MOUNTPOINT));
  session.subvolumes = await listSubvolumes(session.top);
  const created = session.subvolumes.find((subvolume) => subvolume.path === `${CONTAINER}/${name}`);
  if (created === undefined) throw new BootenvError('INTERNAL', `snapshot ${CONTAINER}/${name} is not listed by btrfs`);
  if (record !== undefined && basePath !== undefined) record.baseUuid = carryBaseUuid(session, basePath);
  if (record !== undefined) {
    await markCarryPending(session, created.uuid, record.id);
    scope.onAbort(`unmark the carry of ${CONTAINER}/${name}`, () => markCarryPending(session, created.uuid, undefined));
  }
  state.environments[created.uuid] = { originUuid: source.uuid, created: new Date().toISOString(), description, ...(record === undefined ? {} : { carry: record }) };
  return created;
}

/**
 * Forgets a BE and deletes it: drops its state record (and saves the state,
 * with any other change the caller made to it), regenerates the boot menu
 * when `refreshMenu` (a BE that had an entry), and deletes the subvolume at
 * `subvolume` (from the top level) last, if it exists. Before the deletion
 * everything is undone if `scope` aborts; the deletion itself is final. The
 * BE must not be mounted.
 */
export async function forgetBootEnvironment(
  scope: Scope,
  session: Session,
  environment: { uuid: string; subvolume: string },
  refreshMenu: boolean,
): Promise<void> {
  const state = session.state;
  if (state !== undefined) {
    delete state.environments[environment.uuid];
    rememberAncestry(state, session.subvolumes, session.subvolumes.filter((subvolume) => subvolume.uuid === environment.uuid));
    session.subvolumes = session.subvolumes.filter((subvolume) => subvolume.uuid !== environment.uuid);
    await saveState(scope, session, state);
    if (refreshMenu) await refreshBootMenu(scope, session, state);
  }
  const target = path.join(session.top, environment.subvolume);
  if (await pathExists(target)) await deleteSubvolume(target);
  session.subvolumes = session.subvolumes.filter((subvolume) => subvolume.path !== environment.subvolume);
  await sweepCarrySnapshots(session);
}

/**
 * Rewrites the BE entries in GRUB's home. When grub.cfg sources them that is
 * all; otherwise (beadm init; a grub.cfg that an older 09_bootenv wrote, which
 * copies the entries in, the installed root's or a BE's update-grub) grub.cfg
 * is regenerated from the installed root. On abort the previous entries come
 * back, and a regenerated grub.cfg is regenerated from them.
 */
export async function refreshBootMenu(scope: Scope, session: Session, state: BootenvState): Promise<void> {
  const environments = [];
  let defaultName: string | undefined;
  for (const { name, subvolume } of bootEnvironmentSubvolumes(session)) {
    if (subvolume.uuid === state.defaultUuid) defaultName = name;
    environments.push({
      name,
      subvolume: subvolume.path,
      osName: (await readOsRelease(path.join(session.top, subvolume.path))).prettyName ?? 'Linux',
      bootFiles: await bootFilesOf(session, subvolume.path),
    });
  }
  const text = generateBootMenu({ filesystemUuid: await filesystemUuid(session.top, session.probe.device), environments, defaultName });
  if (await grubConfigSourcesEntries(installedRootPath(session, state))) {
    await replaceMenuEntries(scope, installedRootPath(session, state), text);
    return;
  }
  const grubHome = await mountBtrfsTemporarily(scope, session.probe.device, `subvol=/${state.installedRoot},${NOSUID_NODEV}`, 'grubhome');
  scope.onAbort('regenerate grub.cfg from the previous entries', () => regenerateGrubConfig(grubHome));
  await replaceMenuEntries(scope, grubHome, text);
  await regenerateGrubConfig(grubHome);
}
