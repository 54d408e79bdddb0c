/**
 * The boot environment library: init, list, create, activate, destroy, rename,
 * mount, unmount. Every safety rule lives here, not in the CLI: the booted BE,
 * the next-boot BE and the installed root are never destroyed; only
 * subvolumes directly under @bootenv/ with a valid name are BEs, and nothing
 * else is ever touched; a change to BEs and the GRUB menu either completes or
 * is undone. Mutating operations take the global lock and work on a private
 * mount of the btrfs top level that is gone when they return.
 *
 * Layout (see README): BEs are subvolumes @bootenv/NAME beside the installed
 * root (e.g. @), which stays GRUB's home; state is @bootenv/.bootenv.json.
 */
import path from 'node:path';
import { deleteSubvolume, filesystemUuid, listSubvolumes, qgroupUsage, snapshotSubvolume } from '../btrfs/commands.js';
import { mountAt, mountsOfSubvolume, parseMountInfo, type MountInfo } from '../btrfs/mountinfo.js';
import type { Subvolume } from '../btrfs/parse.js';
import { BootenvError } from '../errors.js';
import { GRUB_HOME, GRUB_SCRIPT, readGrubenv, regenerateGrubConfig, setGrubenvVariable, writeMenuEntries } from '../grub/config.js';
import { chooseBootFiles, type BootFiles } from '../grub/kernels.js';
import { ENTRY_ID_PREFIX, generateBootMenu, menuEntryId } from '../grub/menu.js';
import { haveProgram, run } from '../sys/exec.js';
import {
  isDirectory,
  listDirectory,
  makeDirectory,
  makeTemporaryDirectory,
  pathExists,
  readText,
  readTextIfExists,
  removeEmptyDirectory,
  removeFile,
  renamePath,
  writeFileAtomic,
} from '../sys/fs.js';
import { acquireGlobalLock } from '../sys/lock.js';
import { mountBtrfs, mountBtrfsTemporarily, unmount } from '../sys/mount.js';
import { withScope, type Scope } from '../sys/scope.js';
import { INSTALLED_ROOT_MOUNTPOINT, rewriteFstabForBootEnvironment } from './fstab.js';
import { assertValidName, nameProblem, sanitizeName } from './names.js';
import { CONTAINER, STATE_FILE, newState, parseState, serializeState, type BootenvState } from './state.js';
import { clearPending, readPending, readTransaction, recoverInterruptedTransactions } from './runtime.js';
import { probeSystem, type SystemProbe } from './system.js';

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
}

export interface Options {
  /** Seconds to wait for another beadm to finish. */
  lockWaitSeconds?: number;
}

/** For the CLI's signal handler: stop the running operation at its next step and unwind. */
export { interrupt as interruptOperation, abortOpenScopes as abortOperation } from '../sys/scope.js';

const DEFAULT_LOCK_WAIT_SECONDS = 10;
const MOUNT_PREFIX = '/tmp/be_mount.';
const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';

export interface Session {
  probe: SystemProbe;
  /** Private mount of the btrfs top level. */
  top: string;
  subvolumes: Subvolume[];
  /** Undefined before `beadm init`. */
  state: BootenvState | undefined;
}

const notices: string[] = [];

/** What the last operations cleaned up or decided on the way; for the CLI to print. */
export function takeNotices(): string[] {
  return notices.splice(0, notices.length);
}

/** @internal Records a sentence for the user (printed by the CLI on stderr as a note). */
export function notify(sentence: string): void {
  notices.push(sentence);
}

/**
 * How an operation meets an apt transaction under way: `refuse` (BUSY: it
 * would change BEs under apt), `allow` (reading, or the transaction's own steps).
 */
type DuringTransaction = 'refuse' | 'allow';

/**
 * Starts an operation: probes the system, takes the global lock, mounts the top
 * level privately (noatime: what beadm reads there, such as every BE's dpkg
 * md5sums for audit and dedupe, must not rewrite inodes and so metadata of
 * the BEs), reads subvolumes and state, and first cleans up interrupted
 * apt transactions. Refuses (BUSY) while an apt transaction is under way unless
 * `during` is 'allow'.
 * @internal shared by the library and the apt transaction.
 */
export async function openSession(scope: Scope, options: Options, during: DuringTransaction = 'refuse'): Promise<Session> {
  const probe = await probeSystem();
  await acquireGlobalLock(scope, options.lockWaitSeconds ?? DEFAULT_LOCK_WAIT_SECONDS);
  const top = await mountBtrfsTemporarily(scope, probe.device, 'subvolid=5,noatime', 'top');
  const stateText = await readTextIfExists(path.join(top, CONTAINER, STATE_FILE));
  const state = stateText === undefined ? undefined : parseState(stateText);
  notices.push(...(await recoverInterruptedTransactions(top, state)));
  const live = await readTransaction();
  if (during === 'refuse' && live !== undefined) {
    throw new BootenvError('BUSY', `apt (pid ${live.aptPid}) is installing into a new boot environment`, {
      hint: 'wait for apt to finish and try again',
    });
  }
  return { probe, top, subvolumes: await listSubvolumes(top), state };
}

/** @internal */
export function requireState(session: Session): BootenvState {
  if (session.state === undefined) {
    throw new BootenvError('NOT_INITIALIZED', 'this system has no boot environments yet', { hint: 'run beadm init' });
  }
  return session.state;
}

/** The BE subvolumes: directly under @bootenv/, with a valid name. Nothing else is a BE. */
/** @internal */
export function bootEnvironmentSubvolumes(session: Session): Array<{ name: string; subvolume: Subvolume }> {
  return session.subvolumes
    .filter((subvolume) => path.dirname(subvolume.path) === CONTAINER)
    .map((subvolume) => ({ name: path.basename(subvolume.path), subvolume }))
    .filter(({ name }) => nameProblem(name) === undefined)
    .sort((a, b) => a.subvolume.id - b.subvolume.id);
}

/** @internal */
export function findBootEnvironment(session: Session, name: string): Subvolume {
  assertValidName(name);
  const found = bootEnvironmentSubvolumes(session).find((environment) => environment.name === name);
  if (found === undefined) throw new BootenvError('NOT_FOUND', `no boot environment named ${name}`, { hint: 'see beadm list' });
  return found.subvolume;
}

async function bootFilesOf(session: Session, subvolume: string): Promise<BootFiles | undefined> {
  const root = path.join(session.top, subvolume);
  return chooseBootFiles(await listDirectory(path.join(root, 'boot')), await listDirectory(path.join(root, 'lib/modules')));
}

async function osNameOf(session: Session, subvolume: string): Promise<string> {
  const text =
    (await readTextIfExists(path.join(session.top, subvolume, 'etc/os-release'))) ??
    (await readTextIfExists(path.join(session.top, subvolume, 'usr/lib/os-release'))) ??
    '';
  const match = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(text);
  return match?.[1] ?? 'Linux';
}

function installedRootPath(session: Session, state: BootenvState): string {
  return path.join(session.top, state.installedRoot);
}

/**
 * grubenv variable of a one-shot taken by the initramfs (bootenv-one-shot, run
 * from initramfs-tools' local-bottom): next_entry renamed, so that a trial BE
 * that fails later in its boot is not booted again. The booted system reads
 * and clears it.
 */
const TRIED_ONE_SHOT = 'bootenv_tried';

/** The BEs a one-shot names in grubenv (one read): still pending for GRUB (next_entry), or taken by the initramfs (bootenv_tried). */
async function oneShotEntries(session: Session, state: BootenvState): Promise<{ pending: string | undefined; tried: string | undefined }> {
  const grubenv = await readGrubenv(installedRootPath(session, state));
  const entryName = (key: string) => {
    const id = grubenv.get(key);
    return id?.startsWith(ENTRY_ID_PREFIX) ? id.slice(ENTRY_ID_PREFIX.length) : undefined;
  };
  return { pending: entryName('next_entry'), tried: entryName(TRIED_ONE_SHOT) };
}

async function oneShotName(session: Session, state: BootenvState): Promise<string | undefined> {
  return (await oneShotEntries(session, state)).pending;
}

/** @internal */
export async function saveState(scope: Scope, session: Session, state: BootenvState): Promise<void> {
  const file = path.join(session.top, CONTAINER, STATE_FILE);
  const previous = await readTextIfExists(file);
  await writeFileAtomic(file, serializeState(state));
  scope.onAbort(`restore ${CONTAINER}/${STATE_FILE}`, () =>
    previous === undefined ? removeFile(file) : writeFileAtomic(file, previous),
  );
  session.state = state;
}

/**
 * Rewrites the BE entries in GRUB's home and regenerates grub.cfg from the
 * installed root. On abort the previous entries come back and grub.cfg is
 * regenerated from them.
 */
/** @internal */
export async function refreshBootMenu(scope: Scope, session: Session, state: BootenvState): Promise<void> {
  const uuidToName = new Map(bootEnvironmentSubvolumes(session).map(({ name, subvolume }) => [subvolume.uuid, name]));
  const environments = [];
  for (const { name, subvolume } of bootEnvironmentSubvolumes(session)) {
    environments.push({
      name,
      subvolume: subvolume.path,
      osName: await osNameOf(session, subvolume.path),
      bootFiles: await bootFilesOf(session, subvolume.path),
    });
  }
  const text = generateBootMenu({
    filesystemUuid: await filesystemUuid(session.top),
    environments,
    defaultName: state.defaultUuid === null ? undefined : uuidToName.get(state.defaultUuid),
  });
  const grubHome = await mountBtrfsTemporarily(scope, session.probe.device, `subvol=/${state.installedRoot}`, 'grubhome');
  scope.onAbort('regenerate grub.cfg from the previous entries', () => regenerateGrubConfig(grubHome));
  await writeMenuEntries(scope, grubHome, text);
  await regenerateGrubConfig(grubHome);
}

/** @internal */
export async function requireBootable(session: Session, name: string, subvolume: Subvolume): Promise<void> {
  if ((await bootFilesOf(session, subvolume.path)) === undefined) {
    throw new BootenvError('NOT_BOOTABLE', `${name} holds no kernel with a matching initramfs and /lib/modules directory in its /boot`, {
      hint: `install a kernel in it (beadm mount ${name}, then apt-get in a chroot) before activating it`,
    });
  }
}

/** Mounts of a BE other than the booted `/`, deepest first. */
function extraMounts(probe: SystemProbe, mounts: readonly MountInfo[], subvolume: string): MountInfo[] {
  return mountsOfSubvolume(mounts, probe.deviceNumber, subvolume)
    .filter((mount) => mount.mountPoint !== '/')
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
}

async function currentMounts(): Promise<MountInfo[]> {
  return parseMountInfo(await readText('/proc/self/mountinfo'));
}

async function describe(session: Session, state: BootenvState | undefined): Promise<BootEnvironment[]> {
  const environments = bootEnvironmentSubvolumes(session);
  const usage = await qgroupUsage(session.top);
  const usageById = new Map((usage ?? []).map((entry) => [entry.subvolumeId, entry]));
  const nameByUuid = new Map(environments.map(({ name, subvolume }) => [subvolume.uuid, name]));
  const installedRootUuid = session.subvolumes.find((subvolume) => subvolume.path === state?.installedRoot)?.uuid;
  const oneShot = state === undefined ? undefined : await oneShotName(session, state);
  const mounts = session.probe.mounts;
  const result: BootEnvironment[] = [];
  for (const { name, subvolume } of environments) {
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
    });
  }
  return result;
}

/** @internal */
export async function describeOne(session: Session, name: string): Promise<BootEnvironment> {
  const found = (await describe(session, session.state)).find((environment) => environment.name === name);
  if (found === undefined) throw new BootenvError('INTERNAL', `${name} vanished`);
  return found;
}

/**
 * Snapshots `source` (a subvolume path) to @bootenv/NAME and points the new
 * BE's /etc/fstab at it. Deleted again if `scope` aborts.
 */
/** @internal */
export async function makeBootEnvironment(scope: Scope, session: Session, state: BootenvState, name: string, source: Subvolume, description: string): Promise<Subvolume> {
  const target = path.join(session.top, CONTAINER, name);
  if (await pathExists(target)) {
    throw new BootenvError('EXISTS', `${CONTAINER}/${name} already exists`, { hint: 'choose another name' });
  }
  await snapshotSubvolume(path.join(session.top, source.path), target);
  scope.onAbort(`delete half-made ${CONTAINER}/${name}`, () => deleteSubvolume(target));
  const fstab = path.join(target, 'etc/fstab');
  await writeFileAtomic(fstab, rewriteFstabForBootEnvironment(await readText(fstab), `${CONTAINER}/${name}`, state.installedRoot));
  await makeDirectory(path.join(target, INSTALLED_ROOT_MOUNTPOINT));
  session.subvolumes = await listSubvolumes(session.top);
  const created = session.subvolumes.find((subvolume) => subvolume.path === `${CONTAINER}/${name}`);
  if (created === undefined) throw new BootenvError('INTERNAL', `snapshot ${CONTAINER}/${name} is not listed by btrfs`);
  state.environments[created.uuid] = { originUuid: source.uuid, created: new Date().toISOString(), description };
  return created;
}

/** Exits quietly when this system can use BEs; throws the reason otherwise. Changes nothing. */
export async function checkSystem(): Promise<void> {
  await probeSystem();
}

export interface InitOptions extends Options {
  /** Name of the first BE; default from os-release, e.g. debian-12. */
  name?: string;
  description?: string;
}

/**
 * Adopts the installed system: snapshots the booted root (which stays as
 * GRUB's home) into the first BE, writes its fstab, state and GRUB entries, and
 * makes it the default for the next boot. Needs root. Throws
 * ALREADY_INITIALIZED, UNSUPPORTED, TOOL_MISSING, INVALID_NAME, LOCKED.
 */
export async function initialize(options: InitOptions = {}): Promise<BootEnvironment> {
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
    if (!haveProgram('grub-script-check')) {
      throw new BootenvError('TOOL_MISSING', 'grub-script-check is not installed', { hint: 'apt-get install grub-common' });
    }
    const name = options.name ?? (await defaultInitialName(rootPath));
    assertValidName(name);
    const state = newState(installedRoot);
    if (await makeDirectory(path.join(session.top, CONTAINER), 0o700)) {
      scope.onAbort(`remove ${CONTAINER}`, () => removeEmptyDirectory(path.join(session.top, CONTAINER)));
    }
    const created = await makeBootEnvironment(scope, session, state, name, rootSubvolume, options.description ?? 'created by beadm init');
    await requireBootable(session, name, created);
    state.defaultUuid = created.uuid;
    await saveState(scope, session, state);
    await refreshBootMenu(scope, session, state);
    return describeOne(session, name);
  });
}

async function defaultInitialName(rootPath: string): Promise<string> {
  const text = (await readTextIfExists(path.join(rootPath, 'etc/os-release'))) ?? (await readTextIfExists(path.join(rootPath, 'usr/lib/os-release'))) ?? '';
  const field = (key: string) => new RegExp(`^${key}="?([^"\\n]*)"?$`, 'm').exec(text)?.[1];
  return sanitizeName([field('ID'), field('VERSION_ID')].filter(Boolean).join('-')) ?? 'initial';
}

/** Lists the BEs (no lock; mounts the top level privately for the duration). */
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
}

/** Creates BE `name` as a writable snapshot of its source; optionally activates it. */
export async function createBootEnvironment(options: CreateOptions): Promise<BootEnvironment> {
  assertValidName(options.name);
  if (options.source !== undefined) assertValidName(options.source);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const source = sourceFor(session, state, options.source);
    const created = await makeBootEnvironment(scope, session, state, options.name, source, options.description ?? '');
    if (options.activate) {
      await requireBootable(session, options.name, created);
      state.defaultUuid = created.uuid;
      await clearOneShot(scope, session, state);
    }
    await saveState(scope, session, state);
    await refreshBootMenu(scope, session, state);
    return describeOne(session, options.name);
  });
}

function sourceFor(session: Session, state: BootenvState, name: string | undefined): Subvolume {
  if (name !== undefined) return findBootEnvironment(session, name);
  const environments = bootEnvironmentSubvolumes(session);
  const booted = environments.find(({ subvolume }) => subvolume.path === session.probe.bootedSubvolume);
  const fallback = environments.find(({ subvolume }) => subvolume.uuid === state.defaultUuid);
  const source = booted ?? fallback;
  if (source === undefined) {
    throw new BootenvError('NOT_FOUND', 'not booted into a BE and no default BE is set', { hint: 'name a source with -e' });
  }
  return source.subvolume;
}

/** @internal */
export async function clearOneShot(scope: Scope, session: Session, state: BootenvState): Promise<void> {
  if ((await oneShotName(session, state)) !== undefined) {
    await setGrubenvVariable(scope, installedRootPath(session, state), 'next_entry', undefined);
  }
}

export interface ActivateOptions extends Options {
  /** Boot it on the next boot only (GRUB next_entry). */
  temporary?: boolean;
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
    if (options.temporary) {
      if ((await oneShotEntries(session, state)).tried !== undefined) {
        await setGrubenvVariable(scope, installedRootPath(session, state), TRIED_ONE_SHOT, undefined);
      }
      await setGrubenvVariable(scope, installedRootPath(session, state), 'next_entry', menuEntryId(name));
    } else {
      const pending = await readPending();
      // Choosing another BE drops this boot's pending apt changes from apt's view (the BE stays).
      if (pending !== undefined && pending.uuid !== subvolume.uuid) await clearPending();
      state.defaultUuid = subvolume.uuid;
      await clearOneShot(scope, session, state);
      await saveState(scope, session, state);
      await refreshBootMenu(scope, session, state);
    }
    return describeOne(session, name);
  });
}

export interface BootCompletion {
  /** The one-shot BE whose activation was cleared, or null. */
  cleared: string | null;
  /** Whether this boot was that one-shot BE (false: it did not come up, another BE did); null when nothing was cleared. */
  oneShotBooted: boolean | null;
  /** The running BE when this boot was recorded as good, or null. */
  markedGood: string | null;
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
    const { pending: oneShot, tried } = await oneShotEntries(session, state);
    const booted = bootEnvironmentSubvolumes(session).find(({ subvolume }) => subvolume.path === session.probe.bootedSubvolume);
    let cleared: string | null = null;
    // A BE booted while a one-shot is pending: either the one-shot BE itself (done), or another one
    // because its boot failed and a person chose this one in GRUB's menu. Either way the one-shot is
    // spent: later boots go back to the default. Usually the initramfs took it already (tried): this
    // boot is either that BE's, or a later one's because that BE failed after its initramfs.
    if (oneShot !== undefined && booted !== undefined) {
      await setGrubenvVariable(scope, installedRootPath(session, state), 'next_entry', undefined);
      cleared = oneShot;
    }
    if (tried !== undefined && booted !== undefined) {
      await setGrubenvVariable(scope, installedRootPath(session, state), TRIED_ONE_SHOT, undefined);
      cleared ??= tried;
    }
    const result: BootCompletion = { cleared, oneShotBooted: cleared === null ? null : cleared === booted?.name, markedGood: null };
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

/**
 * Deletes BE `name`: its subvolume, metadata and GRUB entry. Refuses (BUSY)
 * the booted BE, the default and the one-shot BE, and a mounted BE unless
 * `force`. Touches no subvolume that is not a BE.
 */
export async function destroyBootEnvironment(name: string, options: DestroyOptions = {}): Promise<{ name: string; subvolume: string }> {
  assertValidName(name);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const subvolume = findBootEnvironment(session, name);
    if (subvolume.path === session.probe.bootedSubvolume) {
      throw new BootenvError('BUSY', `${name} is the running BE`, { hint: 'boot another BE first' });
    }
    if (subvolume.uuid === state.defaultUuid) {
      throw new BootenvError('BUSY', `${name} is the default BE for the next boot`, { hint: 'activate another BE first' });
    }
    if ((await oneShotName(session, state)) === name) {
      throw new BootenvError('BUSY', `${name} is activated for the next boot (one-shot)`, { hint: 'activate another BE first' });
    }
    const mounts = extraMounts(session.probe, session.probe.mounts, subvolume.path);
    if (mounts.length > 0 && !options.force) {
      throw new BootenvError('BUSY', `${name} is mounted at ${mounts.map((m) => m.mountPoint).join(', ')}`, {
        hint: `beadm unmount ${name}, or destroy -F`,
      });
    }
    for (const mount of mounts) await unmount(mount.mountPoint, true);
    delete state.environments[subvolume.uuid];
    session.subvolumes = session.subvolumes.filter((candidate) => candidate.uuid !== subvolume.uuid);
    await saveState(scope, session, state);
    await refreshBootMenu(scope, session, state);
    await deleteSubvolume(path.join(session.top, subvolume.path));
    return { name, subvolume: subvolume.path };
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
    const wasOneShot = (await oneShotName(session, state)) === from;
    await renamePath(oldPath, newPath);
    scope.onAbort(`rename ${to} back to ${from}`, () => renamePath(newPath, oldPath));
    const fstab = path.join(newPath, 'etc/fstab');
    const previousFstab = await readText(fstab);
    await writeFileAtomic(fstab, rewriteFstabForBootEnvironment(previousFstab, `${CONTAINER}/${to}`, state.installedRoot));
    scope.onAbort(`restore ${from}'s fstab`, () => writeFileAtomic(fstab, previousFstab));
    session.subvolumes = await listSubvolumes(session.top);
    if (wasOneShot) await setGrubenvVariable(scope, installedRootPath(session, state), 'next_entry', menuEntryId(to));
    await refreshBootMenu(scope, session, state);
    return describeOne(session, to);
  });
}

/**
 * Mounts BE `name` read-write at `directory` (created if missing; default a new
 * /tmp/be_mount.XXXXXX). The mount stays until `beadm unmount`. Refuses a BE
 * that is already mounted.
 */
export async function mountBootEnvironment(name: string, directory: string | undefined, options: Options = {}): Promise<BootEnvironment> {
  assertValidName(name);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    requireState(session);
    const subvolume = findBootEnvironment(session, name);
    const existing = mountsOfSubvolume(session.probe.mounts, session.probe.deviceNumber, subvolume.path);
    if (existing.length > 0) {
      throw new BootenvError('BUSY', `${name} is already mounted at ${existing.map((m) => m.mountPoint).join(', ')}`);
    }
    let target: string;
    if (directory === undefined) {
      target = await makeTemporaryDirectory(MOUNT_PREFIX);
      scope.onAbort(`remove ${target}`, () => removeEmptyDirectory(target));
    } else {
      target = path.resolve(directory);
      if (mountAt(session.probe.mounts, target) !== undefined) {
        throw new BootenvError('BUSY', `something is already mounted at ${target}`);
      }
      if (await makeDirectory(target)) scope.onAbort(`remove ${target}`, () => removeEmptyDirectory(target));
    }
    await mountBtrfs(session.probe.device, target, `subvol=/${subvolume.path}`);
    session.probe.mounts = await currentMounts();
    return describeOne(session, name);
  });
}

/** Unmounts every mount of BE `name` (not the booted `/`). Throws NOT_FOUND when it is not mounted. */
export async function unmountBootEnvironment(name: string, options: Options = {}): Promise<BootEnvironment> {
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
    for (const mount of mounts) {
      await unmount(mount.mountPoint, true);
      if (mount.mountPoint.startsWith(MOUNT_PREFIX)) await removeEmptyDirectory(mount.mountPoint);
    }
    session.probe.mounts = await currentMounts();
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
  if (options.beName !== undefined) assertValidName(options.beName);
  const args = options.aptArguments !== undefined && options.aptArguments.length > 0 ? options.aptArguments : ['dist-upgrade'];
  const result = await run(['apt-get', ...args], {
    inheritStdio: true,
    anyExitCode: true,
    env: options.beName === undefined ? {} : { BOOTENV_BE_NAME: options.beName },
  });
  return result.exitCode;
}
