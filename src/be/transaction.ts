/**
 * The apt transaction, whole: how one apt run's dpkg calls land in a new BE —
 * its forward path, its one abort, the recovery of a transaction that was
 * interrupted, and its records in /run/bootenv (which a reboot clears by
 * design):
 *   txn/       the transaction under way: txn.json, the new BE mounted at
 *              txn/root with its chroot filesystems, and pre-images of the
 *              files apt writes before dpkg runs (extended_states, debconf's
 *              databases), put back once the BE holds apt's version;
 *   pending/   the BE made by this boot's apt runs: pending.json, the BE
 *              mounted at pending/be/root (root's alone, nosuid,nodev), its
 *              /var/lib/dpkg and /var/lib/apt bound at pending/dpkg and
 *              pending/apt (nosuid,nodev,noexec: apt run by any user reads
 *              them), and apt.conf, which apt reads through
 *              /etc/apt/apt.conf.d/51bootenv-pending so that later apt runs
 *              plan against the pending BE's dpkg status.
 * Nothing here but pending/ is reachable by other users: txn/ and
 * pending/be/ are root's alone (0700), the records 0600.
 *
 * The steps run in the front end's separate processes (tukit's
 * keep/resume), tied together by txn.json, which names the front end — the
 * process holding dpkg's or apt's locks (findFrontEnd) — by pid and start time:
 *   prepare  (DPkg::Pre-Install-Pkgs, before apt writes extended_states and
 *            debconf preconfigures) saves pre-images of those files;
 *   enter    (every state-changing dpkg call, via the wrapper at /usr/bin/dpkg) makes
 *            the snapshot at the first one — of the pending BE if this boot has
 *            one (taking over its carry), else of the running BE (through the
 *            carry's base, ./carry-records.ts) — puts the pre-imaged files back, and
 *            mounts the BE with /proc, /sys, /dev, a fresh /run, the host's /tmp,
 *            apt's archives and the directories of the .debs, GRUB's home and
 *            the ESP (./boot-loader.ts), plus a policy-rc.d that forbids
 *            starting services; later calls reuse it;
 *   finish   (DPkg::Post-Invoke) finalizes — only if dpkg's own database in
 *            the BE shows nothing unfinished (dpkg --audit), whatever the hooks
 *            recorded: runs the grub-install calls the packages asked for
 *            (after checking the ESP's and GRUB's home's free space), unmounts, drops apt's caches and .debs from the BE,
 *            copies this run's apt logs into it, makes its files identical to
 *            the base's share extents (./skip-unchanged.ts), records the
 *            packages and command line, activates it, makes it this boot's
 *            pending BE (replacing the previous pending one), and says that a
 *            reboot is required (/run/reboot-required).
 * Abort is the default outcome and has one implementation, abortTransaction:
 * after a dpkg failure, a failed finalize, and for a transaction whose front end died
 * (recovery, which every session runs first). The BE is forgotten and deleted,
 * the pre-images restored; the pending BE and the running root stay as they
 * were before apt started. If no BE can be made, dpkg never runs on the real
 * root (unless divert = auto).
 */
import path from 'node:path';
import { auditDpkgDatabase } from '../apt/dpkg-audit.js';
import { classifyDpkgArguments } from '../apt/dpkg-args.js';
import { parsePreInstallPkgsInput, type PackageAction } from '../apt/hook-input.js';
import { isMountPoint, mountAt, readMountTable } from '../sys/mountinfo.js';
import { inlineLimit } from '../dedupe/plan.js';
import { BootenvError } from '../errors.js';
import {
  appendFromOffset,
  fileSize,
  isDirectory,
  listDirectory,
  makeDirectory,
  makePrivateDirectory,
  modificationTime,
  pathExists,
  readTextIfExists,
  fileStamp,
  realPath,
  realPathIfExists,
  removeEmptyDirectory,
  removeFile,
  removeTree,
  renamePath,
  restoreFileCopies,
  saveFileCopy,
  writeFileAtomic,
  writePrivateFileAtomic,
  type SavedFile,
} from '../sys/fs.js';
import { setModificationTimes } from '../sys/carry.js';
import { bindMount, detachMount, mountBtrfs, mountChrootFilesystems, NOSUID_NODEV, RUNTIME_DIRECTORY, unmount } from '../sys/mount.js';
import { lockedFiles, processCommandLine, processInfo, stopProcessesRootedIn } from '../sys/process.js';
import { withScope, type Scope } from '../sys/scope.js';
import { CONFIG_FILE, DEFAULT_CONFIG, nameFromTemplate, parseCarrySetting, parseConfig, type BootenvConfig, type CarrySetting } from './config.js';
import { recoverInterruptedCarries } from './carry-records.js';
import { recoverInterruptedRuns } from './run-records.js';
import { recoverInterruptedShare } from './share-records.js';
import { prepareBootLoader, runDeferredBootLoader, type BootLoaderReport } from './boot-loader.js';
import { forgetBootEnvironment, makeBootEnvironment, refreshBootMenu } from './environments.js';
import { assertValidName } from './names.js';
import { beginSession, bootEnvironmentSubvolumes, requireState, saveState, type Options, type Session } from './session.js';
import { packagesOfActions, passFailure, shareUnchangedFiles, type SkipUnchangedReport } from './skip-unchanged.js';
import { CONTAINER, type BootenvState } from './state.js';

const TRANSACTION_DIRECTORY = `${RUNTIME_DIRECTORY}/txn`;
const TRANSACTION_ROOT = `${TRANSACTION_DIRECTORY}/root`;
/**
 * The dpkg wrapper's shortcut (hooks/apt/apt-hook, shortcut_root): "PID
 * STARTTIME" of the process that runs dpkg for the apt run whose BE and
 * chroot are made. The wrapper's later calls from it that name no package file
 * (shortcutAllowed: --configure, --remove, ...) chroot into TRANSACTION_ROOT
 * without starting Node, 120 ms each (measured): enter would only have found
 * nothing to bind. Gone with the record, and once a dpkg call failed.
 */
const WRAPPER_SHORTCUT = `${TRANSACTION_DIRECTORY}/wrapper-shortcut`;
const TRANSACTION_FILE = `${TRANSACTION_DIRECTORY}/txn.json`;
const PREIMAGE_DIRECTORY = `${TRANSACTION_DIRECTORY}/preimage`;
const PENDING_DIRECTORY = `${RUNTIME_DIRECTORY}/pending`;
const PENDING_PRIVATE = `${PENDING_DIRECTORY}/be`;
const PENDING_ROOT = `${PENDING_PRIVATE}/root`;
/** What of the pending BE other users' apt reads: [public mount point, directory in the BE]. */
const PENDING_VIEWS: ReadonlyArray<[string, string]> = [
  [`${PENDING_DIRECTORY}/dpkg`, '/var/lib/dpkg'],
  [`${PENDING_DIRECTORY}/apt`, '/var/lib/apt'],
];
const PENDING_STATUS = `${PENDING_DIRECTORY}/dpkg/status`;
const PENDING_EXTENDED_STATES = `${PENDING_DIRECTORY}/apt/extended_states`;
const PENDING_APT_CONF = `${PENDING_DIRECTORY}/apt.conf`;
const PENDING_FILE = `${PENDING_DIRECTORY}/pending.json`;

/** Files in the running root that apt or debconf may write before the first dpkg call. */
const RUNNING_ROOT_PRE_DPKG_FILES = [
  '/var/cache/debconf/config.dat',
  '/var/cache/debconf/config.dat-old',
  '/var/cache/debconf/templates.dat',
  '/var/cache/debconf/templates.dat-old',
  '/var/cache/debconf/passwords.dat',
  '/var/cache/debconf/passwords.dat-old',
];
const EXTENDED_STATES = '/var/lib/apt/extended_states';
const APT_LOGS = ['/var/log/apt/history.log', '/var/log/apt/term.log'];
/** invoke-rc.d's policy (exit 101: no service starts), and where a BE's own one waits meanwhile; beadm run's clone has them too. */
export const POLICY_RC_D = '/usr/sbin/policy-rc.d';
export const POLICY_RC_D_SAVED = '/usr/sbin/policy-rc.d.bootenv-saved';
/** apt's downloads: the host's, bound into a BE being made (and into beadm run's clone). */
export const ARCHIVES = '/var/cache/apt/archives';
const DPKG_STATUS = '/var/lib/dpkg/status';
const REBOOT_REQUIRED = '/run/reboot-required';
/** bootenv's dpkg wrapper, which /usr/bin/dpkg is (the package diverts the real dpkg to /usr/bin/dpkg.distrib). */
const DPKG_WRAPPER = '/usr/lib/bootenv/apt-hook';
/**
 * The locks a program holds while it drives apt's package manager: dpkg's
 * frontend lock (in the admin directory it plans against: apt-get, apt,
 * python-apt, packagekitd), apt's archives lock (every libapt front end while
 * it fetches and installs), and aptitude's own, the one aptitude holds when it
 * runs dpkg --set-selections before its package manager run (measured with
 * aptitude 0.8.13: no dpkg lock then).
 */
const FRONT_END_LOCK = /(^|\/)lock-frontend$|\/archives\/lock$|\/lock\/aptitude$/;

interface PreImage {
  /** Absolute path of the file apt may write (in the running root or the pending BE). */
  path: string;
  saved: SavedFile | null;
}

interface PreImages {
  files: PreImage[];
  /** Modification times of the files' directories, which apt's renames change. */
  directories: Array<{ path: string; mtime: string }>;
}

/** The program that drives apt's package manager for this transaction (apt-get, apt, aptitude, unattended-upgrade, packagekitd). */
interface FrontEnd {
  pid: number;
  /** Field 22 of /proc/PID/stat: with the pid, names the process across pid reuse. */
  startTime: string;
  /** Its command line. */
  command: string[];
}

interface TransactionRecord {
  frontEnd: FrontEnd;
  started: string;
  /** dpkg runs in place (divert = auto on a system that cannot make a BE). */
  passthrough: boolean;
  actions: PackageAction[];
  preImages: PreImages;
  preImagesRestored: boolean;
  /** Byte sizes of apt's logs in the running root when the transaction began. */
  logOffsets: Record<string, number>;
  /** Set once the snapshot exists. */
  environment: { name: string; uuid: string; subvolume: string; baseUuid: string; basePending: boolean } | null;
  /** Mount points under TRANSACTION_ROOT, in the order they were made. */
  mounts: string[];
  /** Whether the BE had a policy-rc.d of its own, moved aside while dpkg runs. */
  policyRcdSaved: boolean;
  dpkgFailed: number | null;
  /** Size and mtime of the running root's dpkg status when the transaction began: it must not change without a BE. */
  runningStatus: string;
}

/** The BE made by this boot's apt runs, which later apt runs stack onto. */
export interface PendingRecord {
  name: string;
  uuid: string;
  subvolume: string;
}

// ---------------------------------------------------------------------------
// Sessions: every operation opens one here, so that what an interrupted
// transaction left is cleaned up before anything else looks at the BEs.

/**
 * How an operation meets an apt transaction under way: `refuse` (BUSY: it
 * would change BEs under apt), `allow` (reading, or the transaction's own steps).
 */
type DuringTransaction = 'refuse' | 'allow';

/**
 * Starts an operation (see beginSession: probe, global lock, private top-level
 * mount, state), after cleaning up interrupted apt transactions (their undo is
 * done and stays done whatever the operation does next), beadm run clones,
 * carries and shares (./run-records.ts, ./carry-records.ts, ./share-records.ts). Refuses (BUSY) while
 * an apt transaction is under way unless `during` is 'allow'. Needs root.
 */
export async function openSession(scope: Scope, options: Options, during: DuringTransaction = 'refuse'): Promise<Session> {
  const session = await beginSession(scope, options);
  await withScope((recovery) => recoverInterruptedTransactions(recovery, session));
  await recoverInterruptedRuns(session);
  await withScope((recovery) => recoverInterruptedCarries(recovery, session));
  await withScope((recovery) => recoverInterruptedShare(recovery, session));
  const live = await readTransaction();
  if (during === 'refuse' && live !== undefined) {
    throw new BootenvError('BUSY', `${frontEndName(live.frontEnd)} (pid ${live.frontEnd.pid}) is installing into a new boot environment`, {
      hint: 'wait for apt to finish and try again',
    });
  }
  return session;
}

// ---------------------------------------------------------------------------
// The forward path.

/** /etc/bootenv/bootenv.conf, or the defaults when there is none. Throws PARSE. */
export async function loadConfig(): Promise<BootenvConfig> {
  const text = await readTextIfExists(CONFIG_FILE);
  return text === undefined ? DEFAULT_CONFIG : parseConfig(text);
}

/**
 * Why this apt run's dpkg runs in place, or undefined when it goes into a new
 * BE: divert = never; a system that cannot hold BEs or was never set up with beadm init has
 * not adopted them; with divert = auto, also a system not booted into a BE or
 * missing a tool. On a set-up system, divert = always fails closed instead:
 * the error is thrown and dpkg does not run.
 */
async function reasonToRunInPlace(config: BootenvConfig, options: Options): Promise<string | undefined> {
  // The shell wrapper honours divert = never before it starts beadm; this is for a file it leaves to beadm to read.
  if (config.divert === 'never') return 'divert = never in bootenv.conf';
  return withScope(async (scope) => {
    const opened = await openSessionUnlessInPlace(scope, config, options);
    return 'reason' in opened ? opened.reason : undefined;
  });
}

/**
 * Opens the session of an apt run's step in `scope`, or says why dpkg runs in
 * place instead (as reasonToRunInPlace; divert = never is the caller's):
 * one session for both, so that the step takes the lock and mounts the top
 * level once.
 */
async function openSessionUnlessInPlace(scope: Scope, config: BootenvConfig, options: Options): Promise<{ session: Session } | { reason: string }> {
  let session: Session;
  try {
    session = await openSession(scope, options, 'allow');
    requireState(session);
  } catch (error) {
    if (!(error instanceof BootenvError)) throw error;
    if (error.code === 'NOT_INITIALIZED' || error.code === 'UNSUPPORTED') return { reason: error.message };
    if (config.divert === 'auto' && error.code === 'TOOL_MISSING') return { reason: `${error.message} (divert = auto)` };
    throw error;
  }
  const booted = session.probe.bootedSubvolume.startsWith(`${CONTAINER}/`);
  if (config.divert === 'auto' && !booted && (await readPending()) === undefined) {
    return { reason: `/ is ${session.probe.bootedSubvolume}, not a boot environment (divert = auto)` };
  }
  return { session };
}

async function startInPlace(frontEnd: FrontEnd, reason: string, options: Options): Promise<void> {
  options.onNotice?.(`${reason}: dpkg runs in place, without a boot environment`);
  await writeTransaction(await newRecord(frontEnd, true));
}

async function newRecord(frontEnd: FrontEnd, passthrough: boolean): Promise<TransactionRecord> {
  const logOffsets: Record<string, number> = {};
  for (const log of APT_LOGS) logOffsets[log] = await fileSize(log);
  return {
    frontEnd,
    started: new Date().toISOString(),
    passthrough,
    actions: [],
    preImages: { files: [], directories: [] },
    preImagesRestored: false,
    logOffsets,
    environment: null,
    mounts: [],
    policyRcdSaved: false,
    dpkgFailed: null,
    runningStatus: await fileStamp(DPKG_STATUS),
  };
}

function requireOwnTransaction(record: TransactionRecord | undefined, frontEnd: FrontEnd): TransactionRecord | undefined {
  if (record !== undefined && !isSameProcess(record.frontEnd, frontEnd)) {
    throw new BootenvError('BUSY', `${frontEndName(record.frontEnd)} (pid ${record.frontEnd.pid}) has a bootenv transaction under way`);
  }
  return record;
}

/**
 * Refuses, before apt runs any dpkg call, a front end that would run dpkg
 * past bootenv: its Dir::Bin::dpkg (from the hook's configuration dump) must
 * lead to bootenv's wrapper, as apt's configured one and the diverted
 * /usr/bin/dpkg do. python-apt's apt.Cache(rootdir=…), which
 * unattended-upgrade uses, sets it to /usr/bin/dpkg whatever the
 * configuration says.
 */
async function requireDpkgThroughBootenv(frontEnd: FrontEnd, config: ReadonlyMap<string, string>): Promise<void> {
  const configured = [...config].find(([key]) => key.toLowerCase() === 'dir::bin::dpkg')?.[1] ?? '/usr/bin/dpkg';
  const wrapper = await realPathIfExists(DPKG_WRAPPER);
  if (wrapper !== undefined && (await realPathIfExists(configured)) === wrapper) return;
  throw new BootenvError('UNSUPPORTED', `${frontEndName(frontEnd)} runs dpkg as ${configured}, which is not bootenv's wrapper: dpkg would change the running system, so nothing is done`, {
    hint: `/usr/bin/dpkg should be bootenv's wrapper ${DPKG_WRAPPER}, the real dpkg diverted to /usr/bin/dpkg.distrib (dpkg-divert --list /usr/bin/dpkg); reinstall bootenv, or run it with BOOTENV=off to change the running system in place`,
  });
}

/**
 * What prepareTransaction runs in its session, before a transaction that will
 * make a BE starts, with the run's package actions: the free-space guard
 * (./space-guard.ts). Throwing stops the apt run before dpkg.
 */
export type BeforeTransaction = (session: Session, state: BootenvState, actions: readonly PackageAction[], config: BootenvConfig) => Promise<void>;

/**
 * DPkg::Pre-Install-Pkgs: reads apt's v3 hook input from `input`, cleans up an
 * interrupted transaction, runs `beforeTransaction` when this run is to make a
 * BE, and starts this apt run's transaction by saving pre-images of the files
 * apt writes before dpkg. Needs root.
 */
export async function prepareTransaction(input: string, options: Options = {}, beforeTransaction?: BeforeTransaction): Promise<void> {
  const { actions, config: aptConfig } = parsePreInstallPkgsInput(input);
  const frontEnd = await requireFrontEnd(process.ppid);
  const config = await loadConfig();
  if (config.divert === 'never') return startInPlace(frontEnd, 'divert = never in bootenv.conf', options);
  const reason = await withScope(async (scope) => {
    const opened = await openSessionUnlessInPlace(scope, config, options);
    if ('reason' in opened) return opened.reason;
    const { session } = opened;
    await requireDpkgThroughBootenv(frontEnd, aptConfig);
    const state = requireState(session);
    const existing = requireOwnTransaction(await readTransaction(), frontEnd);
    if ((existing === undefined || existing.environment === null) && beforeTransaction !== undefined) await beforeTransaction(session, state, actions, config);
    const record = existing ?? (await newRecord(frontEnd, false));
    if (record.preImages.files.length === 0 && record.environment === null) {
      const pending = await readPending();
      const extendedStates = pending === undefined ? EXTENDED_STATES : `${PENDING_ROOT}${EXTENDED_STATES}`;
      record.preImages = await savePreImages([extendedStates, ...RUNNING_ROOT_PRE_DPKG_FILES]);
    }
    record.actions = actions;
    await writeTransaction(record);
    return undefined;
  });
  if (reason !== undefined) await startInPlace(frontEnd, reason, options);
}

/**
 * The dpkg wrapper's call: makes (at the first call) or resumes this apt run's
 * BE and returns the directory to chroot into for `dpkgArgs`, or '' when dpkg
 * is to run in place (see reasonToRunInPlace). Throws — and dpkg then does
 * not run — when no BE can be made; what this call made is undone then.
 */
export async function enterTransaction(dpkgParentPid: number, dpkgArgs: readonly string[], options: Options = {}): Promise<string> {
  const frontEnd = await findFrontEnd(dpkgParentPid);
  if (frontEnd === undefined) {
    options.onNotice?.(
      'dpkg was not started by apt or a program using its package manager: it changes the running system in place, as without bootenv (beadm upgrade -- install ./PACKAGE.deb puts a package into a new boot environment)',
    );
    return '';
  }
  const existing = await readTransaction();
  if (existing?.passthrough && isSameProcess(existing.frontEnd, frontEnd)) return '';
  const config = await loadConfig();
  const reason = existing === undefined ? await reasonToRunInPlace(config, options) : undefined;
  if (reason !== undefined) {
    await startInPlace(frontEnd, reason, options);
    return '';
  }
  return withScope(async (scope) => {
    const session = await openSession(scope, options, 'allow');
    const state = requireState(session);
    const record = requireOwnTransaction(await readTransaction(), frontEnd) ?? (await newRecord(frontEnd, false));
    if (record.environment === null) await openBootEnvironment(scope, session, state, record, config);
    await bindDebDirectories(scope, record, dpkgArgs);
    await writeTransaction(record);
    if (record.dpkgFailed === null) await writeWrapperShortcut(dpkgParentPid);
    return TRANSACTION_ROOT;
  });
}

/** Lets the wrapper's later calls from `pid` into the open BE without Node (WRAPPER_SHORTCUT). */
async function writeWrapperShortcut(pid: number): Promise<void> {
  const info = await processInfo(pid);
  if (info !== undefined && /^\d+$/.test(info.startTime)) await writePrivateFileAtomic(WRAPPER_SHORTCUT, `${pid} ${info.startTime}\n`);
}

async function openBootEnvironment(
  scope: Scope,
  session: Session,
  state: BootenvState,
  record: TransactionRecord,
  config: BootenvConfig,
): Promise<void> {
  const environments = bootEnvironmentSubvolumes(session);
  const pending = await readPending();
  const base = pending !== undefined
    ? environments.find(({ subvolume }) => subvolume.uuid === pending.uuid)
    : environments.find(({ subvolume }) => subvolume.path === session.probe.bootedSubvolume);
  if (base === undefined) {
    throw new BootenvError('UNSUPPORTED', 'the running system is not a boot environment, so apt cannot install into a new one', {
      hint: 'boot the BE that beadm init made (it is the default), or run BOOTENV=off apt-get … to change this root in place',
    });
  }
  const name = process.env.BOOTENV_BE_NAME ?? nameFromTemplate(config.nameTemplate, new Date(), new Set(environments.map((e) => e.name)));
  assertValidName(name);
  const subvolume = `${CONTAINER}/${name}`;

  const description = [frontEndName(record.frontEnd), ...commandArguments(record.frontEnd.command)].join(' ').slice(0, 200);
  // The carry base is the running BE as of this boot's first apt run: a stacked run's BE takes over the pending BE's carry.
  const carry = pending !== undefined ? { inherit: state.environments[pending.uuid]?.carry } : { mode: carrySettingOf(config) };
  const created = await makeBootEnvironment(scope, session, state, name, base.subvolume, description, carry);
  const entry = state.environments[created.uuid] as NonNullable<BootenvState['environments'][string]>;
  // A stacked run's BE keeps the record of the runs in the pending BE it replaces (beadm show).
  const stacked = pending !== undefined ? state.environments[pending.uuid]?.transaction : undefined;
  const earlier = stacked === undefined ? undefined : [...(stacked.earlier ?? []), { command: stacked.command, packages: stacked.packages, finished: stacked.finished }];
  entry.transaction = { open: true, subvolume, command: record.frontEnd.command, packages: record.actions, finished: null, ...(earlier === undefined ? {} : { earlier }) };
  await saveState(scope, session, state);
  record.environment = { name, uuid: created.uuid, subvolume, baseUuid: base.subvolume.uuid, basePending: pending !== undefined };

  // The BE now holds what apt wrote before dpkg; the base goes back to how it was.
  await restorePreImages(record.preImages);
  record.preImagesRestored = true;

  await makePrivateDirectory(TRANSACTION_DIRECTORY);
  await makeDirectory(TRANSACTION_ROOT, 0o755);
  // Setuid bits and devices honoured (maintainer scripts may need them), behind txn/, which is root's alone.
  await mountBtrfs(scope, session.probe.device, TRANSACTION_ROOT, `subvol=/${subvolume}`, 'kept');
  record.mounts.push(TRANSACTION_ROOT);
  record.mounts.push(...(await mountChrootFilesystems(scope, TRANSACTION_ROOT, { hostTmp: true, binds: [ARCHIVES], lifetime: 'kept' })));
  // GRUB's home and the ESP, where a boot-loader package's grub-install must write (./boot-loader.ts).
  record.mounts.push(...(await prepareBootLoader(scope, session, state, TRANSACTION_ROOT)));

  const policy = `${TRANSACTION_ROOT}${POLICY_RC_D}`;
  if (await pathExists(policy)) {
    await renamePath(policy, `${TRANSACTION_ROOT}${POLICY_RC_D_SAVED}`);
    record.policyRcdSaved = true;
  }
  await writeFileAtomic(policy, '#!/bin/sh\n# bootenv: no service starts inside a boot environment being made.\nexit 101\n', 0o755);
}

/** bootenv.conf's carry, unless this apt run says otherwise (BOOTENV_CARRY=all|data|none). Throws PARSE on another value. */
function carrySettingOf(config: BootenvConfig): CarrySetting {
  const override = process.env.BOOTENV_CARRY;
  if (override === undefined || override === '') return config.carry;
  const setting = parseCarrySetting(override);
  if (setting === undefined) throw new BootenvError('PARSE', `BOOTENV_CARRY is all, data or none, not ${JSON.stringify(override)}`);
  return setting;
}

/** Makes the directories of the .debs dpkg will read visible at the same paths inside the BE. */
async function bindDebDirectories(scope: Scope, record: TransactionRecord, dpkgArgs: readonly string[]): Promise<void> {
  const invocation = classifyDpkgArguments(dpkgArgs);
  const debs = [...invocation.debs];
  for (const directory of invocation.recursiveDirectories) {
    for (const entry of await listDirectory(directory)) {
      if (entry.endsWith('.deb')) debs.push(await realPath(path.join(directory, entry)));
    }
  }
  const directories = new Set(debs.map((deb) => path.dirname(deb)));
  for (const directory of directories) {
    if (directory === ARCHIVES || directory.startsWith('/tmp/') || directory === '/tmp') continue;
    const target = `${TRANSACTION_ROOT}${directory}`;
    if (record.mounts.includes(target) || !(await isDirectory(directory))) continue;
    await makeDirectory(target);
    await bindMount(scope, directory, target, 'kept');
    record.mounts.push(target);
  }
}

/** The dpkg wrapper reports a failed dpkg call: the transaction will be aborted. */
export async function recordDpkgFailure(dpkgParentPid: number, status: number): Promise<void> {
  const frontEnd = await findFrontEnd(dpkgParentPid);
  const record = await readTransaction();
  if (frontEnd === undefined || record === undefined || !isSameProcess(record.frontEnd, frontEnd)) return;
  await removeFile(WRAPPER_SHORTCUT);
  record.dpkgFailed = status;
  await writeTransaction(record);
}

export type TransactionOutcome =
  | { outcome: 'none' }
  | { outcome: 'in-place' }
  | { outcome: 'aborted'; name: string | null; dpkgStatus: number | null }
  | {
      outcome: 'finished';
      name: string;
      subvolume: string;
      replaced: string | null;
      /** The skip-unchanged pass: its report, why it failed (the BE is kept all the same), or null when turned off. */
      skipUnchanged: SkipUnchangedReport | { error: string } | null;
      /** What the boot-loader packages asked for, done at commit (./boot-loader.ts). */
      bootLoader: BootLoaderReport;
    };

/**
 * DPkg::Post-Invoke: finalizes this apt run's transaction (see the file
 * comment), or aborts it after a dpkg failure. When finalizing fails (dpkg
 * left the BE unfinished, or a step failed), the transaction is aborted and
 * the error thrown, so that apt reports the run as failed.
 */
export async function finishTransaction(options: Options = {}): Promise<TransactionOutcome> {
  const frontEnd = await requireFrontEnd(process.ppid);
  let finalizeError: unknown;
  const outcome = await withScope(async (scope): Promise<TransactionOutcome> => {
    const initial = await readTransaction();
    if (initial === undefined || !isSameProcess(initial.frontEnd, frontEnd)) return { outcome: 'none' };
    if (initial.passthrough) {
      await removeTransactionRecord();
      return { outcome: 'in-place' };
    }
    const session = await openSession(scope, options, 'allow');
    const state = requireState(session);
    const record = requireOwnTransaction(await readTransaction(), frontEnd) as TransactionRecord;
    if (record.environment === null && record.dpkgFailed === null) {
      // No dpkg call reached bootenv. Either none changed anything, or one ran past bootenv: the running root's dpkg status tells.
      await abortTransaction(scope, session, record);
      if ((await fileStamp(DPKG_STATUS)) === record.runningStatus) return { outcome: 'none' };
      finalizeError = new BootenvError('COMMAND_FAILED', `dpkg changed the running system's ${DPKG_STATUS} without bootenv: ${frontEndName(frontEnd)} ran dpkg past bootenv's wrapper, and no boot environment holds its changes`, {
        hint: '/usr/bin/dpkg should be diverted to bootenv (dpkg-divert --list /usr/bin/dpkg); reinstall bootenv',
      });
      return { outcome: 'none' };
    }
    if (record.environment === null || record.dpkgFailed !== null) {
      await abortTransaction(scope, session, record);
      return { outcome: 'aborted', name: record.environment?.name ?? null, dpkgStatus: record.dpkgFailed };
    }
    try {
      // Its own scope: a failing finalize undoes its own steps, then the abort below is kept.
      return await withScope((finalizing) => finalize(finalizing, session, state, record));
    } catch (error) {
      finalizeError = error;
      await abortTransaction(scope, session, record);
      return { outcome: 'aborted', name: record.environment.name, dpkgStatus: null };
    }
  });
  if (finalizeError !== undefined) throw finalizeError;
  return outcome;
}

async function finalize(
  scope: Scope,
  session: Session,
  state: BootenvState,
  record: TransactionRecord,
): Promise<TransactionOutcome> {
  const environment = record.environment as NonNullable<TransactionRecord['environment']>;
  const root = path.join(session.top, environment.subvolume);
  const unfinished = await auditDpkgDatabase(`${root}/var/lib/dpkg`);
  if (unfinished !== '') {
    throw new BootenvError('COMMAND_FAILED', `dpkg left packages unfinished in boot environment ${environment.name}, so it was discarded and nothing else changed; dpkg --audit says: ${unfinished}`, {
      hint: 'see the dpkg errors above; fix the package and run apt again',
    });
  }
  // The boot loader is written once dpkg has succeeded; a refusal or a failure aborts the transaction.
  const bootLoader = await runDeferredBootLoader(TRANSACTION_ROOT, environment.name, session.notify);
  await unmountTransaction(record);
  record.mounts = [];
  await writeTransaction(record);

  await removeFile(`${root}${POLICY_RC_D}`);
  if (record.policyRcdSaved) await renamePath(`${root}${POLICY_RC_D_SAVED}`, `${root}${POLICY_RC_D}`);
  for (const name of await listDirectory(`${root}/var/cache/apt`)) {
    if (name.endsWith('.bin')) await removeFile(`${root}/var/cache/apt/${name}`);
  }
  for (const directory of [`${root}${ARCHIVES}`, `${root}${ARCHIVES}/partial`]) {
    for (const name of await listDirectory(directory)) {
      if (name.endsWith('.deb')) await removeFile(`${directory}/${name}`);
    }
  }
  for (const log of APT_LOGS) await appendFromOffset(log, record.logOffsets[log] ?? 0, `${root}${log}`);
  const skipUnchanged = (await loadConfig()).skipUnchanged ? await skipUnchangedFromBase(session, record) : null;

  const entry = state.environments[environment.uuid];
  if (entry?.transaction === undefined) throw new BootenvError('INTERNAL', `no state record for ${environment.subvolume}`);
  entry.transaction = { ...entry.transaction, open: false, packages: record.actions, finished: new Date().toISOString() };
  state.defaultUuid = environment.uuid;

  let replaced: string | null = null;
  const pending = await readPending();
  if (pending !== undefined) await clearPending(scope, session, pending);
  if (environment.basePending && pending !== undefined && pending.uuid === environment.baseUuid) {
    // The replaced BE was never booted: the new one descends from what it descended from, and
    // holds everything it held, so a pin (beadm pin) moves to it rather than going with it.
    entry.originUuid = state.environments[pending.uuid]?.originUuid ?? entry.originUuid;
    if (state.environments[pending.uuid]?.pinned === true) entry.pinned = true;
    await forgetBootEnvironment(scope, session, pending, true);
    replaced = pending.name;
  } else {
    await saveState(scope, session, state);
    await refreshBootMenu(scope, session, state);
  }
  const made = { name: environment.name, uuid: environment.uuid, subvolume: environment.subvolume };
  await mountPending(scope, session, made);
  await writePending(made);
  await announceReboot(record.actions);
  await removeTransactionRecord();
  return { outcome: 'finished', name: environment.name, subvolume: environment.subvolume, replaced, skipUnchanged, bootLoader };
}

/**
 * Says that a reboot is needed the way Debian and Ubuntu say it
 * (/run/reboot-required and the packages in /run/reboot-required.pkgs), which
 * the motd, needrestart and unattended-upgrades' Automatic-Reboot read: the
 * new BE only takes effect when it boots.
 */
async function announceReboot(actions: readonly PackageAction[]): Promise<void> {
  await writeFileAtomic(REBOOT_REQUIRED, '*** System restart required ***\n');
  const listed = ((await readTextIfExists(`${REBOOT_REQUIRED}.pkgs`)) ?? '').split('\n').filter(Boolean);
  const packages = new Set([...listed, ...actions.map((action) => action.package)]);
  await writeFileAtomic(`${REBOOT_REQUIRED}.pkgs`, [...packages].map((name) => `${name}\n`).join(''));
}

/**
 * The skip-unchanged pass from the BE this transaction snapshotted (the
 * pending BE when stacking) into the new one, which is unmounted by now. A
 * failure of the pass costs space, not correctness: it is reported, and the
 * BE is kept.
 */
async function skipUnchangedFromBase(session: Session, record: TransactionRecord): Promise<SkipUnchangedReport | { error: string }> {
  const environment = record.environment as NonNullable<TransactionRecord['environment']>;
  const base = session.subvolumes.find((subvolume) => subvolume.uuid === environment.baseUuid);
  if (base === undefined) return { error: 'the BE it was made from is gone' };
  try {
    const topMount = mountAt(await readMountTable(), session.top);
    return await shareUnchangedFiles({
      originRoot: path.join(session.top, base.path),
      targetRoot: path.join(session.top, environment.subvolume),
      packages: packagesOfActions(record.actions),
      inlineLimit: inlineLimit(topMount?.superOptions ?? ''),
    });
  } catch (error) {
    return { error: passFailure(error) };
  }
}

// ---------------------------------------------------------------------------
// Abort and recovery.

/**
 * The one way a transaction ends without a BE: stops what still runs in its
 * chroot, unmounts it, forgets and deletes its half-made BE (if it got that
 * far), restores the pre-images, forgets the runtime record. Leaves the
 * pending BE and the running root as they were before apt started. Its state
 * change goes through `scope`, whose caller commits it: an abort stays done.
 */
async function abortTransaction(scope: Scope, session: Session, record: TransactionRecord): Promise<void> {
  await stopProcessesRootedIn(TRANSACTION_ROOT);
  await unmountTransaction(record);
  if (record.environment !== null) await forgetBootEnvironment(scope, session, record.environment, false);
  if (!record.preImagesRestored) await restorePreImages(record.preImages);
  await removeTransactionRecord();
}

/**
 * Cleans what an interrupted transaction left: a runtime record whose apt is
 * gone (apt killed, Post-Invoke never ran) is aborted; a BE that the state
 * still marks as being made, with no live transaction for it (the machine went
 * down mid-transaction), is forgotten and deleted. Tells the user each thing
 * it cleaned.
 */
async function recoverInterruptedTransactions(scope: Scope, session: Session): Promise<void> {
  const record = await readTransaction();
  let live: TransactionRecord | undefined;
  if (record !== undefined) {
    if (await isAlive(record)) live = record;
    else if (record.passthrough) {
      // dpkg ran in place and there is nothing to undo; a front end that had not loaded bootenv's hooks (bootenv being installed) never runs Post-Invoke.
      await removeTransactionRecord();
    } else {
      await abortTransaction(scope, session, record);
      session.notify(`aborted the transaction of ${frontEndName(record.frontEnd)} (pid ${record.frontEnd.pid}), which ended without finishing it`);
    }
  }
  for (const [uuid, entry] of Object.entries(session.state?.environments ?? {})) {
    if (entry.transaction?.open !== true || live?.environment?.uuid === uuid) continue;
    await forgetBootEnvironment(scope, session, { uuid, subvolume: entry.transaction.subvolume }, false);
    session.notify(`deleted ${entry.transaction.subvolume}, left half-made by an interrupted apt run`);
  }
}

// ---------------------------------------------------------------------------
// Which front end a step belongs to.

/**
 * The front end a hook or dpkg call belongs to: the nearest process from
 * `startPid` up that holds one of FRONT_END_LOCK. Every program that drives
 * apt's package manager (apt-get, apt, aptitude, python-apt's
 * unattended-upgrade, packagekitd) takes such a lock before it runs hooks and
 * dpkg, and keeps it until done; a child it forks does not hold it (measured:
 * apt runs Post-Invoke from a child of itself, python-apt runs the package
 * manager in a forked child, hooks run through sh -c). Undefined when no such
 * process is above `startPid` (dpkg started by hand).
 */
async function findFrontEnd(startPid: number): Promise<FrontEnd | undefined> {
  let pid = startPid;
  for (let depth = 0; depth < 32 && pid > 0; depth += 1) {
    const info = await processInfo(pid);
    if (info === undefined) return undefined;
    if ((await lockedFiles(pid)).some((file) => FRONT_END_LOCK.test(file))) {
      return { pid, startTime: info.startTime, command: await processCommandLine(pid) };
    }
    pid = info.parentPid;
  }
  return undefined;
}

/** findFrontEnd for the hooks, which apt always runs holding the lock; throws UNSUPPORTED otherwise. */
async function requireFrontEnd(startPid: number): Promise<FrontEnd> {
  const frontEnd = await findFrontEnd(startPid);
  if (frontEnd === undefined) {
    throw new BootenvError('UNSUPPORTED', `no process above pid ${startPid} holds dpkg's or apt's locks: bootenv's APT hooks run only from apt or a program using its package manager`);
  }
  return frontEnd;
}

function isSameProcess(a: { pid: number; startTime: string }, b: { pid: number; startTime: string }): boolean {
  return a.pid === b.pid && a.startTime === b.startTime;
}

async function isAlive(record: TransactionRecord): Promise<boolean> {
  const now = await processInfo(record.frontEnd.pid);
  return now !== undefined && isSameProcess(record.frontEnd, { pid: now.pid, startTime: now.startTime });
}

/** Interpreters whose first argument is the program that runs (python3 /usr/bin/unattended-upgrade). */
const INTERPRETERS = /^(python[0-9.]*|perl|sh|bash|dash)$/;

/** Where the program itself stands in a command line: 1 behind an interpreter (python3 PROGRAM …), else 0. */
function programIndex(command: readonly string[]): number {
  return INTERPRETERS.test(path.basename(command[0] ?? '')) && command.length > 1 ? 1 : 0;
}

/** The program's own arguments of a command line, without an interpreter in front. */
function commandArguments(command: readonly string[]): string[] {
  return command.slice(programIndex(command) + 1);
}

/** The front end's name for messages: apt-get, aptitude, unattended-upgrade, packagekitd. */
function frontEndName(frontEnd: FrontEnd): string {
  const program = frontEnd.command[programIndex(frontEnd.command)];
  return program === undefined ? 'apt' : path.basename(program);
}

// ---------------------------------------------------------------------------
// The runtime records.

async function readTransaction(): Promise<TransactionRecord | undefined> {
  const text = await readTextIfExists(TRANSACTION_FILE);
  return text === undefined ? undefined : (JSON.parse(text) as TransactionRecord);
}

async function writeTransaction(record: TransactionRecord): Promise<void> {
  await makePrivateDirectory(TRANSACTION_DIRECTORY);
  await writePrivateFileAtomic(TRANSACTION_FILE, `${JSON.stringify(record, null, 2)}\n`);
}

/** Forgets the transaction: its record, pre-images and (empty, unmounted) root directory. */
async function removeTransactionRecord(): Promise<void> {
  await removeFile(WRAPPER_SHORTCUT);
  await removeTree(PREIMAGE_DIRECTORY);
  await removeFile(TRANSACTION_FILE);
  await removeEmptyDirectory(TRANSACTION_ROOT);
  await removeEmptyDirectory(TRANSACTION_DIRECTORY);
}

/**
 * Unmounts the transaction's mounts; a mount already gone is fine. They are
 * all at or below its root (TransactionRecord.mounts): one `umount
 * --recursive` of the root takes them, deepest first, and whatever a
 * maintainer script mounted inside; the root itself may be gone already.
 */
async function unmountTransaction(record: TransactionRecord): Promise<void> {
  if (record.mounts.includes(TRANSACTION_ROOT) && (await isMountPoint(TRANSACTION_ROOT))) {
    await unmount(TRANSACTION_ROOT, true);
    return;
  }
  for (const target of [...record.mounts].reverse()) {
    if (await isMountPoint(target)) await unmount(target, true);
  }
}

/** Copies each file (or notes its absence), and its directory's mtime, before apt writes it. */
async function savePreImages(paths: readonly string[]): Promise<PreImages> {
  await makePrivateDirectory(TRANSACTION_DIRECTORY);
  await makePrivateDirectory(PREIMAGE_DIRECTORY);
  const files: PreImage[] = [];
  for (const [index, file] of paths.entries()) {
    files.push({ path: file, saved: await saveFileCopy(file, path.join(PREIMAGE_DIRECTORY, String(index))) });
  }
  const directories = [];
  for (const directory of new Set(paths.map((file) => path.dirname(file)))) {
    if (await pathExists(directory)) directories.push({ path: directory, mtime: await modificationTime(directory) });
  }
  return { files, directories };
}

/**
 * Puts every pre-imaged file back as it was (content, mode, owner, mtime), or
 * removes it if it did not exist, then the directories' mtimes.
 */
async function restorePreImages(preImages: PreImages): Promise<void> {
  for (const preImage of preImages.files) if (preImage.saved === null) await removeFile(preImage.path);
  await restoreFileCopies(preImages.files.flatMap(({ path: file, saved }) => (saved === null ? [] : [{ saved, file }])));
  await setModificationTimes(preImages.directories);
}

/** This boot's pending BE, if apt made one. */
export async function readPending(): Promise<PendingRecord | undefined> {
  const text = await readTextIfExists(PENDING_FILE);
  return text === undefined ? undefined : (JSON.parse(text) as PendingRecord);
}

/** Makes `record` (mounted at PENDING_ROOT) the pending BE of this boot and points apt at it. */
async function writePending(record: PendingRecord): Promise<void> {
  await makeDirectory(PENDING_DIRECTORY, 0o755);
  await writeFileAtomic(PENDING_FILE, `${JSON.stringify(record, null, 2)}\n`);
  await writeFileAtomic(
    PENDING_APT_CONF,
    [
      `// Written by bootenv: BE ${record.name} holds apt's changes since this boot; apt plans against it.`,
      `Dir::State::status "${PENDING_STATUS}";`,
      `Dir::State::extended_states "${PENDING_EXTENDED_STATES}";`,
      '',
    ].join('\n'),
  );
}

/**
 * Forgets `pending` as this boot's pending BE (the BE itself stays) and
 * detaches PENDING_ROOT — detached, not unmounted: the apt run that replaces
 * the pending BE holds its dpkg lock files. apt.conf stays as an empty file,
 * as bootenv's tmpfiles.d entry creates it at boot (apt prints a notice for a
 * dangling conf symlink). If `scope` aborts, `pending` is pending again,
 * mounted where it was.
 */
export async function clearPending(scope: Scope, session: Session, pending: PendingRecord): Promise<void> {
  await writeFileAtomic(PENDING_APT_CONF, '// No boot environment is pending (bootenv).\n');
  await removeFile(PENDING_FILE);
  for (const target of [...PENDING_VIEWS.map(([view]) => view), PENDING_ROOT]) {
    if (await isMountPoint(target)) await detachMount(target);
  }
  scope.onAbort(`make ${pending.name} pending again`, async () => {
    await withScope((remount) => mountPending(remount, session, pending));
    await writePending(pending);
  });
}

/** Mounts `pending` at PENDING_ROOT (root's alone, nosuid,nodev) and its dpkg and apt state at PENDING_VIEWS; unmounted if `scope` aborts. */
async function mountPending(scope: Scope, session: Session, pending: PendingRecord): Promise<void> {
  await makePrivateDirectory(PENDING_PRIVATE);
  await makeDirectory(PENDING_ROOT);
  if (!(await isMountPoint(PENDING_ROOT))) {
    await mountBtrfs(scope, session.probe.device, PENDING_ROOT, `subvol=/${pending.subvolume},${NOSUID_NODEV}`, 'kept');
  }
  for (const [view, inside] of PENDING_VIEWS) {
    await makeDirectory(view);
    if (!(await isMountPoint(view))) await bindMount(scope, `${PENDING_ROOT}${inside}`, view, 'kept', { options: `${NOSUID_NODEV},noexec` });
  }
}
