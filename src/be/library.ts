/**
 * The boot environment operations: init, list, create, activate, destroy,
 * pin, unpin, rename, mount, unmount, boot-complete, upgrade. Every safety
 * rule lives here, not in the CLI: the booted BE, the next-boot BE, a pinned
 * BE and the installed root are never destroyed (destroyRefusals is the one
 * list of what may not be, which prune uses too); only subvolumes directly
 * under @bootenv/ with a valid name are BEs, and nothing else is ever touched; a change to BEs and
 * the GRUB menu either completes or is undone. Each operation opens a session
 * (./transaction.ts: global lock, a private mount of the btrfs top level that
 * is gone when it returns, interrupted apt transactions cleaned up first).
 *
 * Layout (see README): BEs are subvolumes @bootenv/NAME beside the installed
 * root (e.g. @), which stays GRUB's home; state is @bootenv/.bootenv.json.
 */
import path from 'node:path';
import { listSubvolumes, qgroupUsage } from '../btrfs/commands.js';
import { mountAt, mountsOfSubvolume, readMountTable, type MountInfo } from '../sys/mountinfo.js';
import type { Subvolume } from '../btrfs/parse.js';
import { BootenvError } from '../errors.js';
import { GRUB_HOME, GRUB_SCRIPT } from '../grub/config.js';
import { cancelOneShot, forgetTriedOneShot, readOneShot, renameOneShot, scheduleOneShot } from '../grub/one-shot.js';
import { haveProgram, run } from '../sys/exec.js';
import {
  isBehindPrivateDirectory,
  isDirectory,
  makeDirectory,
  makePrivateDirectory,
  pathExists,
  readText,
  readTextIfExists,
  removeEmptyDirectory,
  renamePath,
  writeFileAtomic,
} from '../sys/fs.js';
import { detachMount, mountBtrfs, NOSUID_NODEV, RUNTIME_DIRECTORY, unmount } from '../sys/mount.js';
import { withScope, type Scope } from '../sys/scope.js';
import { carriesFrom, carryOfBoot, setCarry, type BootCarry } from './carry.js';
import { markCarryPending, startFollowCarry } from './carry-records.js';
import type { CarrySetting } from './config.js';
import { bootFilesOf, forgetBootEnvironment, makeBootEnvironment, refreshBootMenu, requireBootable } from './environments.js';
import { ESP_MOUNTPOINT } from './boot-loader.js';
import { fstabEntry, rewriteFstabForBootEnvironment } from './fstab.js';
import { assertValidName, sanitizeName } from './names.js';
import { checkShareable, shareDirectories, type SharedSubvolume } from './share.js';
import { readOsRelease } from './os-release.js';
import { bootEnvironmentSubvolumes, findBootEnvironment, installedRootPath, requireRoot, requireState, saveState, sourceFor, type Options, type Session } from './session.js';
import { CONTAINER, STATE_FILE, newState, type BootenvState, type CarryMode, type CarrySummary } from './state.js';
import { probeSystem, type SystemProbe } from './system.js';
import { clearPending, loadConfig, openSession, readPending } from './transaction.js';

export type { Options } from './session.js';

export interface BootEnvironment {
  name: string;
  /** Path from the btrfs top level, as `btrfs subvolume list` prints it. */
  subvolume: string;
  uuid: string;
  subvolumeId: number;
  /** Flags: N booted now, R default from the next boot on, T next boot only. */
  active: string;
  mountpoint: string | null;
  /** Exclusive bytes from quota groups; null when quotas are off. */
  exclusiveBytes: number | null;
  referencedBytes: number | null;
  /** ISO 8601; null for a BE whose metadata is missing. */
  created: string | null;
  description: string;
  /** Name of the BE it was created from, "(installed root)", or null if unknown. */
  origin: string | null;
  /** Kernel version GRUB boots in it; null when it holds no bootable kernel. */
  kernel: string | null;
  /** Whether a boot of it ever reached multi-user.target (recorded by `beadm boot-complete --good`). */
  bootedSuccessfully: boolean;
  /** Pinned with `beadm pin`: destroy refuses it, prune keeps it. */
  pinned: boolean;
  /** The carry of its origin's changes pending until it boots (beadm carry --dry-run NAME counts them), or null. */
  carry: { origin: string | null; mode: CarryMode; since: string } | null;
  /** What the last carry into it did, or null. */
  lastCarry: CarrySummary | null;
}

/** For the CLI's signal handler: stop the running operation at its next step and unwind. */
export { interrupt as interruptOperation, abortOpenScopes as abortOperation } from '../sys/scope.js';

/** Where `beadm mount` mounts a BE when given no directory: root's alone (0700). */
const MOUNT_DIRECTORY = `${RUNTIME_DIRECTORY}/mnt`;
const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';

/** Unmounts `mounts` in order, removing the mount points `beadm mount` made in MOUNT_DIRECTORY; `force`: a mount still in use is detached (the kernel lets go of it when its last file is closed). */
async function unmountAll(mounts: readonly MountInfo[], force = false): Promise<void> {
  for (const mount of mounts) {
    try {
      await unmount(mount.mountPoint, true);
    } catch (error) {
      if (!force) throw error;
      await detachMount(mount.mountPoint);
    }
    if (path.dirname(mount.mountPoint) === MOUNT_DIRECTORY) await removeEmptyDirectory(mount.mountPoint);
  }
}

/** Mounts of a BE other than the booted `/`, deepest first. */
function extraMounts(probe: SystemProbe, mounts: readonly MountInfo[], subvolume: string): MountInfo[] {
  return mountsOfSubvolume(mounts, probe.deviceNumber, subvolume)
    .filter((mount) => mount.mountPoint !== '/')
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
}

/** Every BE (or only the one named `only`), as list shows it. */
async function describe(session: Session, state: BootenvState | undefined, only?: string): Promise<BootEnvironment[]> {
  const environments = bootEnvironmentSubvolumes(session);
  const usage = await qgroupUsage(session.top, session.probe.device);
  const usageById = new Map((usage ?? []).map((entry) => [entry.subvolumeId, entry]));
  const nameByUuid = new Map(environments.map(({ name, subvolume }) => [subvolume.uuid, name]));
  const installedRootUuid = session.subvolumes.find((subvolume) => subvolume.path === state?.installedRoot)?.uuid;
  const oneShot = state === undefined ? undefined : (await readOneShot(installedRootPath(session, state))).pending;
  const mounts = session.probe.mounts;
  const result: BootEnvironment[] = [];
  for (const { name, subvolume } of environments) {
    if (only !== undefined && name !== only) continue;
    const record = state?.environments[subvolume.uuid];
    const originUuid = record?.originUuid ?? subvolume.parentUuid;
    const flags =
      (subvolume.path === session.probe.bootedSubvolume ? 'N' : '') +
      (state?.defaultUuid === subvolume.uuid ? 'R' : '') +
      (oneShot === name ? 'T' : '');
    const mount = mountsOfSubvolume(mounts, session.probe.deviceNumber, subvolume.path).sort(
      (a, b) => a.mountPoint.length - b.mountPoint.length,
    )[0];
    const space = usageById.get(subvolume.id);
    result.push({
      name,
      subvolume: subvolume.path,
      uuid: subvolume.uuid,
      subvolumeId: subvolume.id,
      active: flags,
      mountpoint: mount?.mountPoint ?? null,
      exclusiveBytes: space?.exclusiveBytes ?? null,
      referencedBytes: space?.referencedBytes ?? null,
      created: record?.created ?? null,
      description: record?.description ?? '',
      origin:
        originUuid === null || originUuid === undefined
          ? null
          : (nameByUuid.get(originUuid) ?? (originUuid === installedRootUuid ? '(installed root)' : null)),
      kernel: (await bootFilesOf(session, subvolume.path))?.version ?? null,
      bootedSuccessfully: record?.lastGoodBoot !== undefined,
      pinned: record?.pinned === true,
      carry:
        record?.carry === undefined
          ? null
          : { origin: nameByUuid.get(record.carry.originUuid) ?? (record.carry.originUuid === installedRootUuid ? '(installed root)' : null), mode: record.carry.mode, since: record.carry.since },
      lastCarry: record?.lastCarry ?? null,
    });
  }
  return result;
}

async function describeOne(session: Session, name: string): Promise<BootEnvironment> {
  const found = (await describe(session, session.state, name))[0];
  if (found === undefined) throw new BootenvError('INTERNAL', `${name} vanished`);
  return found;
}

/** Exits quietly when this system can use BEs; throws the reason otherwise. Changes nothing. */
export async function checkSystem(): Promise<void> {
  await probeSystem();
}

export interface InitOptions extends Options {
  /** Name of the first BE; default from os-release, e.g. debian-12. */
  name?: string;
  description?: string;
  /** Paths to share once the first BE exists (./share.ts); checked before anything changes. */
  share?: readonly string[];
}

/**
 * Adopts the installed system: snapshots the booted root (which stays as
 * GRUB's home) into the first BE, writes its fstab, state and GRUB entries, and
 * makes it the default for the next boot; then shares `share` (as
 * `beadm share` does: the first BE keeps its own copy of those paths, hidden
 * under their mounts). Needs root. Throws ALREADY_INITIALIZED, UNSUPPORTED,
 * TOOL_MISSING, INVALID_NAME, LOCKED, and what shareDirectories throws —
 * before any change when a path cannot be shared.
 */
export async function initialize(options: InitOptions = {}): Promise<BootEnvironment & { shared?: SharedSubvolume[] }> {
  const environment = await initializeBootEnvironments(options);
  if (options.share === undefined || options.share.length === 0) return environment;
  const { shared } = await shareDirectories(options.share, options);
  return { ...environment, shared };
}

async function initializeBootEnvironments(options: InitOptions): Promise<BootEnvironment> {
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    if (session.state !== undefined) {
      throw new BootenvError('ALREADY_INITIALIZED', `bootenv is already set up (installed root ${session.state.installedRoot})`, {
        hint: 'see beadm list',
      });
    }
    const installedRoot = session.probe.bootedSubvolume;
    if (installedRoot === CONTAINER || installedRoot.startsWith(`${CONTAINER}/`)) {
      throw new BootenvError('UNSUPPORTED', `/ is ${installedRoot}, inside ${CONTAINER}/, but no bootenv state exists`, {
        hint: `boot the installed root, or restore ${CONTAINER}/${STATE_FILE}`,
      });
    }
    const rootSubvolume = session.subvolumes.find((subvolume) => subvolume.path === installedRoot);
    if (rootSubvolume === undefined) {
      throw new BootenvError('UNSUPPORTED', `/ is mounted from ${installedRoot}, which is not a subvolume`, {
        hint: 'boot the system from a subvolume (rootflags=subvol=…)',
      });
    }
    const rootPath = path.join(session.top, installedRoot);
    if (!(await isDirectory(path.join(rootPath, GRUB_HOME)))) {
      throw new BootenvError('UNSUPPORTED', `the installed root has no ${GRUB_HOME}`, { hint: 'install GRUB (grub-pc or grub-efi) first' });
    }
    if (!(await pathExists(path.join(rootPath, 'usr/sbin/grub-mkconfig')))) {
      throw new BootenvError('TOOL_MISSING', 'grub-mkconfig is not installed in the installed root', { hint: 'apt-get install grub2-common' });
    }
    if (!(await pathExists(path.join(rootPath, GRUB_SCRIPT)))) {
      throw new BootenvError('UNSUPPORTED', `bootenv's GRUB script ${GRUB_SCRIPT} is missing`, { hint: 'reinstall bootenv' });
    }
    const esp = mountAt(session.probe.mounts, ESP_MOUNTPOINT);
    if (esp !== undefined && fstabEntry((await readTextIfExists(path.join(rootPath, 'etc/fstab'))) ?? '', ESP_MOUNTPOINT) === undefined) {
      throw new BootenvError('UNSUPPORTED', `the EFI system partition is mounted at ${ESP_MOUNTPOINT} (${esp.source}), but /etc/fstab has no line for it: the boot environments would boot without it, and a GRUB upgrade in one could not reach it`, {
        hint: `add its line to /etc/fstab as the installer writes it (UUID=… ${ESP_MOUNTPOINT} vfat umask=0077 0 1), then run beadm init`,
      });
    }
    if (!haveProgram('grub-script-check')) {
      throw new BootenvError('TOOL_MISSING', 'grub-script-check is not installed', { hint: 'apt-get install grub-common' });
    }
    const name = options.name ?? (await defaultInitialName(rootPath));
    assertValidName(name);
    if (options.share !== undefined) await checkShareable(session, options.share);
    const state = newState(installedRoot);
    if (await makeDirectory(path.join(session.top, CONTAINER), 0o700)) {
      scope.onAbort(`remove ${CONTAINER}`, () => removeEmptyDirectory(path.join(session.top, CONTAINER)));
    }
    const created = await makeBootEnvironment(scope, session, state, name, rootSubvolume, options.description ?? 'created by beadm init', { mode: (await loadConfig()).carry });
    await requireBootable(session, name, created);
    state.defaultUuid = created.uuid;
    await saveState(scope, session, state);
    await refreshBootMenu(scope, session, state);
    return describeOne(session, name);
  });
}

async function defaultInitialName(rootPath: string): Promise<string> {
  const { id, versionId } = await readOsRelease(rootPath);
  return sanitizeName([id, versionId].filter(Boolean).join('-')) ?? 'initial';
}

/** Lists the BEs. Takes the lock and mounts the top level privately for the duration; changes nothing. */
export async function listBootEnvironments(options: Options = {}): Promise<BootEnvironment[]> {
  return withScope(async (scope) => {
    const session = await openSession(scope, options, 'allow');
    return describe(session, requireState(session));
  });
}

export interface CreateOptions extends Options {
  name: string;
  /** BE to clone; default the booted BE, else the next-boot default. */
  source?: string;
  description?: string;
  activate?: boolean;
  /** Whether and how the source's later changes are carried into it when it boots (default: bootenv.conf's carry). */
  carry?: CarrySetting;
}

/**
 * Creates BE `name` as a writable snapshot of its source, with the carry of
 * the source's later changes (./carry.ts) unless `carry` or bootenv.conf say
 * none; optionally activates it.
 */
export async function createBootEnvironment(options: CreateOptions): Promise<BootEnvironment> {
  assertValidName(options.name);
  if (options.source !== undefined) assertValidName(options.source);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const source = sourceFor(session, state, options.source);
    const carry = { mode: options.carry ?? (await loadConfig()).carry };
    const created = await makeBootEnvironment(scope, session, state, options.name, source, options.description ?? '', carry);
    if (options.activate) {
      await requireBootable(session, options.name, created);
      state.defaultUuid = created.uuid;
      await cancelOneShot(scope, installedRootPath(session, state));
    }
    await saveState(scope, session, state);
    await refreshBootMenu(scope, session, state);
    return describeOne(session, options.name);
  });
}


export interface ActivateOptions extends Options {
  /** Boot it on the next boot only (GRUB next_entry). */
  temporary?: boolean;
  /** For this BE's pending carry: its mode, or none to drop it. */
  carry?: CarrySetting;
}

/**
 * Makes `name` the default BE from the next boot on (rewrites the GRUB menu and
 * clears a pending one-shot), or with `temporary` the BE of the next boot
 * only. Throws NOT_BOOTABLE when the BE has no kernel with initramfs.
 */
export async function activateBootEnvironment(name: string, options: ActivateOptions = {}): Promise<BootEnvironment> {
  assertValidName(name);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const subvolume = findBootEnvironment(session, name);
    await requireBootable(session, name, subvolume);
    await followTheMachine(scope, session, state, name, subvolume, options);
    if (options.temporary) {
      await scheduleOneShot(scope, installedRootPath(session, state), name);
    } else {
      const pending = await readPending();
      // Choosing another BE drops this boot's pending apt changes from apt's view (the BE stays).
      if (pending !== undefined && pending.uuid !== subvolume.uuid) await clearPending(scope, session, pending);
      state.defaultUuid = subvolume.uuid;
      await cancelOneShot(scope, installedRootPath(session, state));
      await saveState(scope, session, state);
      await refreshBootMenu(scope, session, state);
    }
    return describeOne(session, name);
  });
}

/**
 * Data follows the machine, the system rolls back: a BE activated from
 * another one and with no carry pending (an older BE, or one that booted
 * before) gets a carry from the running system (CarryRecord.follow), of
 * bootenv.conf's rollback-carry mode (data: files no package owns, outside
 * /etc, /usr and /boot) unless --carry says otherwise; its boot takes what the
 * running system wrote until its shutdown. A BE with a carry pending keeps it
 * (--carry sets its mode, or none drops it). Rollback carries of other BEs,
 * which are not to boot any more, are dropped. Saves the state through `scope`.
 */
async function followTheMachine(scope: Scope, session: Session, state: BootenvState, name: string, subvolume: Subvolume, options: ActivateOptions): Promise<void> {
  let changed = false;
  for (const { subvolume: other } of bootEnvironmentSubvolumes(session)) {
    const record = state.environments[other.uuid];
    if (other.uuid === subvolume.uuid || other.uuid === (options.temporary ? state.defaultUuid : undefined) || record?.carry?.follow !== true || record.carry.exchange !== undefined) continue;
    delete record.carry;
    await markCarryPending(session, other.uuid, undefined);
    changed = true;
  }
  const record = state.environments[subvolume.uuid];
  const running = session.subvolumes.find((candidate) => candidate.path === session.probe.bootedSubvolume);
  if (record !== undefined && record.carry === undefined && options.carry !== 'none' && running !== undefined && running.uuid !== subvolume.uuid) {
    const mode = options.carry ?? (await loadConfig()).rollbackCarry;
    if (mode !== 'none') {
      await startFollowCarry(scope, session, state, subvolume, running, mode);
      changed = true;
    }
  } else if (options.carry !== undefined) {
    await setCarry(session, state, name, subvolume, options.carry);
    changed = true;
  }
  warnOfOtherOrigin(session, state, name, subvolume, running, options);
  if (changed) await saveState(scope, session, state);
}

/**
 * A BE activated with a carry pending from a BE that is not the running one
 * (apt made it from a system since left, and it never booted) takes that
 * origin's changes at its boot, and nothing the running system writes: said,
 * so that no write is lost unannounced, with the two steps that make the
 * running system's data follow instead.
 */
function warnOfOtherOrigin(session: Session, state: BootenvState, name: string, subvolume: Subvolume, running: Subvolume | undefined, options: ActivateOptions): void {
  const carry = state.environments[subvolume.uuid]?.carry;
  if (carry === undefined || carry.exchange !== undefined || running === undefined || running.uuid === subvolume.uuid || carry.originUuid === running.uuid) return;
  const named = (uuid: string) => bootEnvironmentSubvolumes(session).find((environment) => environment.subvolume.uuid === uuid)?.name;
  const origin = named(carry.originUuid) ?? 'a BE since destroyed';
  const runningName = named(running.uuid) ?? running.path;
  session.notify(
    `${name} has a carry pending from ${origin}, not from the running ${runningName}: at its boot it takes what ${origin} changed, and nothing ${runningName} writes is carried into it. ` +
      `To carry ${runningName}'s data instead: beadm activate${options.temporary ? ' -t' : ''} --carry none ${name} && beadm activate${options.temporary ? ' -t' : ''} ${name}`,
  );
}

export interface BootCompletion {
  /** The one-shot BE whose activation was cleared, or null. */
  cleared: string | null;
  /** Whether this boot was that one-shot BE (false: it did not come up, another BE did); null when nothing was cleared. */
  oneShotBooted: boolean | null;
  /** The running BE when this boot was recorded as good, or null. */
  markedGood: string | null;
  /** A trial BE came up: the default BE, which the next boot returns to, takes this BE's data then (rollback-carry). */
  returnCarry?: { name: string; mode: CarryMode };
  /** Only when there is something to say: the carry into the running BE (reported once), or one that should have run at its boot and did not. */
  carry?: BootCarry & { name: string };
}

export interface CompleteBootOptions extends Options {
  /** Also record this boot of the running BE as good: the system is up (bootenv-boot-good.service). */
  good?: boolean;
}

/**
 * Runs in the booted system. Clears a one-shot activation once a BE has
 * booted: GRUB cannot clear next_entry on btrfs, so the booted system does
 * (bootenv-boot-complete.service runs this early). Booting a BE other than the
 * one-shot one clears it too: its boot failed and someone chose another entry.
 * With `good`, also records this boot (boot id and time) as the running BE's
 * last good boot in the state file (bootenv-boot-good.service, after
 * multi-user.target). Changes grubenv and the state file only; needs root.
 * Returns what it cleared and marked.
 */
export async function completeBoot(options: CompleteBootOptions = {}): Promise<BootCompletion> {
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const { pending: oneShot, tried } = await readOneShot(installedRootPath(session, state));
    const booted = bootEnvironmentSubvolumes(session).find(({ subvolume }) => subvolume.path === session.probe.bootedSubvolume);
    let cleared: string | null = null;
    // A BE booted while a one-shot is pending: either the one-shot BE itself (done), or another one
    // because its boot failed and a person chose this one in GRUB's menu. Either way the one-shot is
    // spent: later boots go back to the default. Usually the initramfs took it already (tried): this
    // boot is either that BE's, or a later one's because that BE failed after its initramfs.
    if (oneShot !== undefined && booted !== undefined) {
      await cancelOneShot(scope, installedRootPath(session, state));
      cleared = oneShot;
    }
    if (tried !== undefined && booted !== undefined) {
      await forgetTriedOneShot(scope, installedRootPath(session, state));
      cleared ??= tried;
    }
    const carry = booted === undefined ? undefined : carryOfBoot(session, state, booted.subvolume);
    if (carry?.unreported === true) await saveState(scope, session, state);
    const result: BootCompletion = { cleared, oneShotBooted: cleared === null ? null : cleared === booted?.name, markedGood: null };
    // A trial BE that came up: the next boot returns to the default BE, and the data the trial
    // writes follows the machine there, as on a rollback.
    const defaultBe = bootEnvironmentSubvolumes(session).find(({ subvolume }) => subvolume.uuid === state.defaultUuid);
    if (result.oneShotBooted === true && booted !== undefined && defaultBe !== undefined && defaultBe.subvolume.uuid !== booted.subvolume.uuid) {
      const mode = (await loadConfig()).rollbackCarry;
      const target = state.environments[defaultBe.subvolume.uuid];
      if (mode !== 'none' && target !== undefined && target.carry === undefined) {
        await startFollowCarry(scope, session, state, defaultBe.subvolume, booted.subvolume, mode);
        await saveState(scope, session, state);
        result.returnCarry = { name: defaultBe.name, mode };
      }
    }
    if (booted !== undefined && carry !== undefined && (carry.carried !== null || carry.missed !== null)) result.carry = { name: booted.name, carried: carry.carried, missed: carry.missed };
    const record = booted === undefined ? undefined : state.environments[booted.subvolume.uuid];
    if (!options.good || booted === undefined || record === undefined) return result;
    record.lastGoodBoot = { bootId: (await readText(BOOT_ID_FILE)).trim(), at: new Date().toISOString() };
    await saveState(scope, session, state);
    result.markedGood = booted.name;
    return result;
  });
}

export interface DestroyOptions extends Options {
  /** Unmount it first if it is mounted (never the booted BE). */
  force?: boolean;
}

/** Why BE `name` may not be destroyed: each reason with the error destroy throws for it. */
export interface DestroyRefusal {
  reason: 'running' | 'default' | 'one-shot' | 'pinned' | 'carry-origin' | 'mounted';
  error: BootenvError;
}

/**
 * Every reason BE `name` (`subvolume`) may not be destroyed, in the order
 * destroy reports them: the running BE, the default BE, the one-shot BE
 * (BUSY), a pinned BE (PINNED), the origin another BE's pending carry reads
 * from (BUSY), a mounted BE (BUSY; destroy -F unmounts it instead). Empty
 * when it may be. Reads grubenv; changes nothing.
 */
export async function destroyRefusals(session: Session, state: BootenvState, name: string, subvolume: Subvolume): Promise<DestroyRefusal[]> {
  const refusals: DestroyRefusal[] = [];
  if (subvolume.path === session.probe.bootedSubvolume) {
    refusals.push({ reason: 'running', error: new BootenvError('BUSY', `${name} is the running BE`, { hint: 'boot another BE first' }) });
  }
  if (subvolume.uuid === state.defaultUuid) {
    refusals.push({ reason: 'default', error: new BootenvError('BUSY', `${name} is the default BE for the next boot`, { hint: 'activate another BE first' }) });
  }
  if ((await readOneShot(installedRootPath(session, state))).pending === name) {
    refusals.push({ reason: 'one-shot', error: new BootenvError('BUSY', `${name} is activated for the next boot (one-shot)`, { hint: 'activate another BE first' }) });
  }
  if (state.environments[subvolume.uuid]?.pinned === true) {
    refusals.push({ reason: 'pinned', error: new BootenvError('PINNED', `${name} is pinned`, { hint: `beadm unpin ${name} first` }) });
  }
  const carrying = carriesFrom(session, state, subvolume);
  if (carrying.length > 0) {
    refusals.push({
      reason: 'carry-origin',
      error: new BootenvError('BUSY', `${carrying.join(', ')} ${carrying.length === 1 ? 'is' : 'are'} to carry what changed in ${name} since ${carrying.length === 1 ? 'it was' : 'they were'} made: destroying ${name} would lose it`, {
        hint: `boot ${carrying[0]} first (or run beadm carry ${carrying[0]}), or drop that carry: beadm activate --carry none ${carrying[0]}`,
      }),
    });
  }
  const mounts = extraMounts(session.probe, session.probe.mounts, subvolume.path);
  if (mounts.length > 0) {
    refusals.push({ reason: 'mounted', error: new BootenvError('BUSY', `${name} is mounted at ${mounts.map((m) => m.mountPoint).join(', ')}`, { hint: `beadm unmount ${name}, or destroy -F` }) });
  }
  return refusals;
}

/**
 * Destroys BE `name` within an open session (destroy, and prune for each BE
 * it removes): throws the first of destroyRefusals (a mounted BE is
 * unmounted instead when `force`), else unmounts it if needed and forgets it
 * (./environments.ts: state record, menu, subvolume last). Needs root.
 */
export async function destroyInSession(scope: Scope, session: Session, state: BootenvState, name: string, options: { force?: boolean } = {}): Promise<{ name: string; subvolume: string }> {
  const subvolume = findBootEnvironment(session, name);
  const refusal = (await destroyRefusals(session, state, name, subvolume)).find(({ reason }) => !(reason === 'mounted' && options.force));
  if (refusal !== undefined) throw refusal.error;
  await unmountAll(extraMounts(session.probe, session.probe.mounts, subvolume.path));
  await forgetBootEnvironment(scope, session, { uuid: subvolume.uuid, subvolume: subvolume.path }, true);
  return { name, subvolume: subvolume.path };
}

/**
 * Deletes BE `name`: its subvolume, metadata and GRUB entry. Refuses (BUSY)
 * the booted BE, the default and the one-shot BE, the origin of another BE's
 * pending carry, and a mounted BE unless `force`; a pinned BE (PINNED).
 * Touches no subvolume that is not a BE.
 */
export async function destroyBootEnvironment(name: string, options: DestroyOptions = {}): Promise<{ name: string; subvolume: string }> {
  assertValidName(name);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    return destroyInSession(scope, session, requireState(session), name, options);
  });
}

/**
 * Pins BE `name` (`pinned`: destroy refuses it, prune keeps it) or unpins it:
 * sets or drops the flag in its state record, written atomically. Pinning a
 * pinned BE, or unpinning one that is not, changes nothing. Needs root.
 * Throws INVALID_NAME, and NOT_FOUND for no such BE or one bootenv has no
 * record of (made by another tool: there is nowhere to keep the flag).
 */
export async function pinBootEnvironment(name: string, pinned: boolean, options: Options = {}): Promise<BootEnvironment> {
  assertValidName(name);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const subvolume = findBootEnvironment(session, name);
    const record = state.environments[subvolume.uuid];
    if (record === undefined) {
      throw new BootenvError('NOT_FOUND', `bootenv has no record of ${name} (made by another tool?), so it cannot be ${pinned ? 'pinned' : 'unpinned'}`);
    }
    if ((record.pinned === true) !== pinned) {
      if (pinned) record.pinned = true;
      else delete record.pinned;
      await saveState(scope, session, state);
    }
    return describeOne(session, name);
  });
}

/**
 * Renames BE `from` to `to`: the subvolume, its fstab and its GRUB entry.
 * Refuses a mounted BE (the booted one included): its mounts name the old path.
 */
export async function renameBootEnvironment(from: string, to: string, options: Options = {}): Promise<BootEnvironment> {
  assertValidName(from);
  assertValidName(to);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const subvolume = findBootEnvironment(session, from);
    if (mountsOfSubvolume(session.probe.mounts, session.probe.deviceNumber, subvolume.path).length > 0) {
      throw new BootenvError('BUSY', `${from} is mounted (or running) and cannot be renamed`, { hint: `beadm unmount ${from} first` });
    }
    const oldPath = path.join(session.top, subvolume.path);
    const newPath = path.join(session.top, CONTAINER, to);
    if (await pathExists(newPath)) throw new BootenvError('EXISTS', `${CONTAINER}/${to} already exists`);
    const wasOneShot = (await readOneShot(installedRootPath(session, state))).pending === from;
    await renamePath(oldPath, newPath);
    scope.onAbort(`rename ${to} back to ${from}`, () => renamePath(newPath, oldPath));
    const fstab = path.join(newPath, 'etc/fstab');
    const previousFstab = await readText(fstab);
    await writeFileAtomic(fstab, rewriteFstabForBootEnvironment(previousFstab, `${CONTAINER}/${to}`, state.installedRoot));
    scope.onAbort(`restore ${from}'s fstab`, () => writeFileAtomic(fstab, previousFstab));
    session.subvolumes = await listSubvolumes(session.top);
    if (wasOneShot) await renameOneShot(scope, installedRootPath(session, state), to);
    await refreshBootMenu(scope, session, state);
    return describeOne(session, to);
  });
}

export interface MountOptions extends Options {
  /** Mount it read-write (default read-only). */
  writable?: boolean;
  /** Honour its setuid bits and device nodes (default: neither). */
  suid?: boolean;
}

/**
 * Mounts BE `name` at `directory` (created if missing; default
 * /run/bootenv/mnt/NAME, under a directory only root can enter): read-only,
 * with setuid bits and device nodes ignored (nosuid,nodev), unless
 * `writable` or `suid`; those two only behind a directory only root can
 * enter, so that no other user reaches a writable BE or its setuid programs.
 * The mount stays until `beadm unmount`. Refuses (BUSY) a BE that is already
 * mounted and a directory something is mounted on; USAGE for `writable` or
 * `suid` at a directory other users can reach.
 */
export async function mountBootEnvironment(name: string, directory: string | undefined, options: MountOptions = {}): Promise<BootEnvironment> {
  assertValidName(name);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    requireState(session);
    const subvolume = findBootEnvironment(session, name);
    const existing = mountsOfSubvolume(session.probe.mounts, session.probe.deviceNumber, subvolume.path);
    if (existing.length > 0) {
      throw new BootenvError('BUSY', `${name} is already mounted at ${existing.map((m) => m.mountPoint).join(', ')}`);
    }
    const target = path.resolve(directory ?? path.join(MOUNT_DIRECTORY, name));
    if (mountAt(session.probe.mounts, target) !== undefined) {
      throw new BootenvError('BUSY', `something is already mounted at ${target}`);
    }
    if ((options.writable || options.suid) && directory !== undefined && !(await isBehindPrivateDirectory(target))) {
      throw new BootenvError('USAGE', `${target} can be reached by users other than root: a ${options.suid ? 'setuid-honouring' : 'writable'} mount of a BE is only made behind a directory only root can enter`, {
        hint: `leave DIR out (${MOUNT_DIRECTORY}/${name}), or choose one below a directory of mode 0700 owned by root`,
      });
    }
    if (directory === undefined) await makePrivateDirectory(MOUNT_DIRECTORY);
    if (await makeDirectory(target)) scope.onAbort(`remove ${target}`, () => removeEmptyDirectory(target));
    const access = `${options.writable ? 'rw' : 'ro'},${options.suid ? 'suid,dev' : NOSUID_NODEV}`;
    await mountBtrfs(scope, session.probe.device, target, `subvol=/${subvolume.path},${access}`, 'kept');
    session.probe.mounts = await readMountTable();
    return describeOne(session, name);
  });
}

/** Unmounts every mount of BE `name` (not the booted `/`). Throws NOT_FOUND when it is not mounted. */
export async function unmountBootEnvironment(name: string, options: Options & { force?: boolean } = {}): Promise<BootEnvironment> {
  assertValidName(name);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    requireState(session);
    const subvolume = findBootEnvironment(session, name);
    if (subvolume.path === session.probe.bootedSubvolume) {
      throw new BootenvError('BUSY', `${name} is the running BE; it cannot be unmounted`);
    }
    const mounts = extraMounts(session.probe, session.probe.mounts, subvolume.path);
    if (mounts.length === 0) throw new BootenvError('NOT_FOUND', `${name} is not mounted`);
    await unmountAll(mounts, options.force === true);
    session.probe.mounts = await readMountTable();
    return describeOne(session, name);
  });
}

export interface UpgradeOptions {
  /** Name of the BE apt's changes go into (else the name template). */
  beName?: string;
  /** apt-get arguments; default dist-upgrade. */
  aptArguments?: readonly string[];
}

/**
 * `beadm upgrade`: runs apt-get (dist-upgrade by default) on the terminal,
 * with bootenv's hooks diverting it into a new BE. Returns apt-get's exit status.
 */
export async function upgradeIntoBootEnvironment(options: UpgradeOptions = {}): Promise<number> {
  requireRoot();
  if (options.beName !== undefined) assertValidName(options.beName);
  const args = options.aptArguments !== undefined && options.aptArguments.length > 0 ? options.aptArguments : ['dist-upgrade'];
  const result = await run(['apt-get', ...args], {
    inheritStdio: true,
    anyExitCode: true,
    env: options.beName === undefined ? {} : { BOOTENV_BE_NAME: options.beName },
  });
  return result.exitCode;
}
