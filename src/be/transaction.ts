/**
 * The apt transaction: how one apt run's dpkg calls land in a new BE. Its
 * steps run in apt's separate processes (tukit's keep/resume), tied together
 * by the runtime record in /run/bootenv/txn:
 *   prepare  (DPkg::Pre-Install-Pkgs, before apt writes extended_states and
 *            debconf preconfigures) saves pre-images of those files;
 *   enter    (every state-changing dpkg call, via /usr/lib/bootenv/dpkg) makes
 *            the snapshot at the first one — of the pending BE if this boot has
 *            one, else of the running BE — puts the pre-imaged files back, and
 *            mounts the BE with /proc, /sys, /dev, a fresh /run, the host's /tmp,
 *            apt's archives and the directories of the .debs, plus a
 *            policy-rc.d that forbids starting services; later calls reuse it;
 *   finish   (DPkg::Post-Invoke) finalizes: unmounts, drops apt's caches and
 *            .debs from the BE, copies this run's apt logs into it, makes its
 *            files identical to the base's share extents with it
 *            (skip-unchanged, ./skip-unchanged.ts), records the
 *            packages and command line, activates it, and makes it this boot's
 *            pending BE (replacing the previous pending one) — or, after a
 *            dpkg failure, aborts: the BE is deleted and nothing else changed.
 * Abort is the default: a transaction whose apt dies is aborted by the next
 * bootenv invocation. If no BE can be made, dpkg never runs on the real root
 * (unless divert = auto).
 */
import path from 'node:path';
import { deleteSubvolume } from '../btrfs/commands.js';
import { classifyDpkgArguments } from '../apt/dpkg-args.js';
import { mountAt, parseMountInfo } from '../btrfs/mountinfo.js';
import { inlineLimit } from '../dedupe/plan.js';
import { parsePreInstallPkgsInput } from '../apt/hook-input.js';
import { BootenvError } from '../errors.js';
import {
  appendFromOffset,
  fileSize,
  isDirectory,
  listDirectory,
  pathExists,
  readText,
  readTextIfExists,
  realPath,
  removeFile,
  renamePath,
  writeFileAtomic,
  makeDirectory,
} from '../sys/fs.js';
import { bindMount, mountBtrfs, mountChrootFilesystems, unmount } from '../sys/mount.js';
import { withScope, type Scope } from '../sys/scope.js';
import { CONFIG_FILE, DEFAULT_CONFIG, nameFromTemplate, parseConfig, type BootenvConfig } from './config.js';
import {
  bootEnvironmentSubvolumes,
  makeBootEnvironment,
  notify,
  openSession,
  refreshBootMenu,
  requireState,
  saveState,
  type Options,
  type Session,
} from './library.js';
import { assertValidName } from './names.js';
import { packagesOfActions, passFailure, shareUnchangedFiles, type SkipUnchangedReport } from './skip-unchanged.js';
import {
  PENDING_ROOT,
  TRANSACTION_ROOT,
  abortTransaction,
  clearPending,
  findAptProcess,
  isMountPoint,
  processStartTime,
  readPending,
  readTransaction,
  removeTransactionRecord,
  restorePreImages,
  savePreImages,
  unmountTransaction,
  writePending,
  writeTransaction,
  type TransactionRecord,
} from './runtime.js';
import { CONTAINER, type BootenvState } from './state.js';

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
const POLICY_RC_D = '/usr/sbin/policy-rc.d';
const POLICY_RC_D_SAVED = '/usr/sbin/policy-rc.d.bootenv-saved';
const ARCHIVES = '/var/cache/apt/archives';

export async function loadConfig(): Promise<BootenvConfig> {
  const text = await readTextIfExists(CONFIG_FILE);
  return text === undefined ? DEFAULT_CONFIG : parseConfig(text);
}

async function aptCommandLine(pid: number): Promise<string[]> {
  const text = (await readTextIfExists(`/proc/${pid}/cmdline`)) ?? '';
  return text.split('\0').filter((word) => word !== '');
}

/**
 * Why this apt run's dpkg runs in place, or undefined when it goes into a new
 * BE: a system that cannot hold BEs or was never set up with beadm init has
 * not adopted them; with divert = auto, also a system not booted into a BE or
 * missing a tool. On a set-up system, divert = always fails closed instead:
 * the error is thrown and dpkg does not run.
 */
async function reasonToRunInPlace(config: BootenvConfig, options: Options): Promise<string | undefined> {
  try {
    return await withScope(async (scope) => {
      const session = await openSession(scope, options, 'allow');
      requireState(session);
      const booted = session.probe.bootedSubvolume.startsWith(`${CONTAINER}/`);
      if (config.divert === 'auto' && !booted && (await readPending()) === undefined) {
        return `/ is ${session.probe.bootedSubvolume}, not a boot environment (divert = auto)`;
      }
      return undefined;
    });
  } catch (error) {
    if (!(error instanceof BootenvError)) throw error;
    if (error.code === 'NOT_INITIALIZED' || error.code === 'UNSUPPORTED') return error.message;
    if (config.divert === 'auto' && error.code === 'TOOL_MISSING') return `${error.message} (divert = auto)`;
    throw error;
  }
}

async function startInPlace(aptPid: number, reason: string): Promise<void> {
  notify(`${reason}: dpkg runs in place, without a boot environment`);
  await writeTransaction(await newRecord(aptPid, true));
}

async function newRecord(aptPid: number, passthrough: boolean): Promise<TransactionRecord> {
  const startTime = await processStartTime(aptPid);
  if (startTime === undefined) throw new BootenvError('INTERNAL', `apt process ${aptPid} is gone`);
  const logOffsets: Record<string, number> = {};
  for (const log of APT_LOGS) logOffsets[log] = await fileSize(log);
  return {
    aptPid,
    aptStartTime: startTime,
    started: new Date().toISOString(),
    passthrough,
    command: await aptCommandLine(aptPid),
    actions: [],
    preImages: { files: [], directories: [] },
    preImagesRestored: false,
    logOffsets,
    environment: null,
    mounts: [],
    policyRcdSaved: false,
    dpkgFailed: null,
  };
}

function requireOwnTransaction(record: TransactionRecord | undefined, aptPid: number): TransactionRecord | undefined {
  if (record !== undefined && record.aptPid !== aptPid) {
    throw new BootenvError('BUSY', `another apt (pid ${record.aptPid}) has a bootenv transaction under way`);
  }
  return record;
}

/**
 * DPkg::Pre-Install-Pkgs: reads apt's v3 hook input from `input`, cleans up an
 * interrupted transaction, and starts this apt run's transaction by saving
 * pre-images of the files apt writes before dpkg. Needs root.
 */
export async function prepareTransaction(input: string, options: Options = {}): Promise<void> {
  const { actions } = parsePreInstallPkgsInput(input);
  const aptPid = await findAptProcess(process.ppid);
  const config = await loadConfig();
  const reason = await reasonToRunInPlace(config, options);
  if (reason !== undefined) return startInPlace(aptPid, reason);
  await withScope(async (scope) => {
    const session = await openSession(scope, options, 'allow');
    requireState(session);
    const existing = requireOwnTransaction(await readTransaction(), aptPid);
    const record = existing ?? (await newRecord(aptPid, false));
    if (record.preImages.files.length === 0 && record.environment === null) {
      const pending = await readPending();
      const extendedStates = pending === undefined ? EXTENDED_STATES : `${PENDING_ROOT}${EXTENDED_STATES}`;
      record.preImages = await savePreImages([extendedStates, ...RUNNING_ROOT_PRE_DPKG_FILES]);
    }
    record.actions = actions;
    await writeTransaction(record);
  });
}

/**
 * The dpkg wrapper's call: makes (at the first call) or resumes this apt run's
 * BE and returns the directory to chroot into for `dpkgArgs`, or '' when dpkg
 * is to run in place (see reasonToRunInPlace). Throws — and dpkg then does
 * not run — when no BE can be made.
 */
export async function enterTransaction(dpkgParentPid: number, dpkgArgs: readonly string[], options: Options = {}): Promise<string> {
  const aptPid = await findAptProcess(dpkgParentPid);
  const existing = await readTransaction();
  if (existing?.passthrough && existing.aptPid === aptPid) return '';
  const config = await loadConfig();
  const reason = existing === undefined ? await reasonToRunInPlace(config, options) : undefined;
  if (reason !== undefined) {
    await startInPlace(aptPid, reason);
    return '';
  }
  return withScope(async (scope) => {
    const session = await openSession(scope, options, 'allow');
    const state = requireState(session);
    const record = requireOwnTransaction(await readTransaction(), aptPid) ?? (await newRecord(aptPid, false));
    if (record.environment === null) await openBootEnvironment(scope, session, state, record, config);
    await bindDebDirectories(record, dpkgArgs);
    await writeTransaction(record);
    return TRANSACTION_ROOT;
  });
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

  const description = `apt: ${record.command.slice(1).join(' ')}`.slice(0, 200);
  const created = await makeBootEnvironment(scope, session, state, name, base.subvolume, description);
  const entry = state.environments[created.uuid] as NonNullable<BootenvState['environments'][string]>;
  entry.transaction = { open: true, subvolume, command: record.command, packages: record.actions, finished: null };
  await saveState(scope, session, state);
  record.environment = { name, uuid: created.uuid, subvolume, baseUuid: base.subvolume.uuid, basePending: pending !== undefined };

  // The BE now holds what apt wrote before dpkg; the base goes back to how it was.
  await restorePreImages(record.preImages);
  record.preImagesRestored = true;

  await makeDirectory(TRANSACTION_ROOT, 0o755);
  await mountBtrfs(session.probe.device, TRANSACTION_ROOT, `subvol=/${subvolume}`);
  scope.onAbort(`unmount ${TRANSACTION_ROOT}`, () => unmount(TRANSACTION_ROOT, true));
  record.mounts.push(TRANSACTION_ROOT);
  record.mounts.push(...(await mountChrootFilesystems(scope, TRANSACTION_ROOT, { hostTmp: true, binds: [ARCHIVES], persist: true })));

  const policy = `${TRANSACTION_ROOT}${POLICY_RC_D}`;
  if (await pathExists(policy)) {
    await renamePath(policy, `${TRANSACTION_ROOT}${POLICY_RC_D_SAVED}`);
    record.policyRcdSaved = true;
  }
  await writeFileAtomic(policy, '#!/bin/sh\n# bootenv: no service starts inside a boot environment being made.\nexit 101\n', 0o755);
}

/** Makes the directories of the .debs dpkg will read visible at the same paths inside the BE. */
async function bindDebDirectories(record: TransactionRecord, dpkgArgs: readonly string[]): Promise<void> {
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
    await bindMount(directory, target);
    record.mounts.push(target);
  }
}

/** The dpkg wrapper reports a failed dpkg call: the transaction will be aborted. */
export async function recordDpkgFailure(dpkgParentPid: number, status: number): Promise<void> {
  const aptPid = await findAptProcess(dpkgParentPid);
  const record = await readTransaction();
  if (record === undefined || record.aptPid !== aptPid) return;
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
    };

/**
 * DPkg::Post-Invoke: finalizes this apt run's transaction (see the file
 * comment) or aborts it after a dpkg failure.
 */
export async function finishTransaction(options: Options = {}): Promise<TransactionOutcome> {
  const aptPid = await findAptProcess(process.ppid);
  return withScope(async (scope) => {
    const initial = await readTransaction();
    if (initial === undefined || initial.aptPid !== aptPid) return { outcome: 'none' } as const;
    if (initial.passthrough) {
      await removeTransactionRecord();
      return { outcome: 'in-place' } as const;
    }
    const session = await openSession(scope, options, 'allow');
    const state = requireState(session);
    const record = requireOwnTransaction(await readTransaction(), aptPid) as TransactionRecord;
    if (record.environment === null || record.dpkgFailed !== null) {
      await abortTransaction(record, session.top, state);
      return { outcome: 'aborted', name: record.environment?.name ?? null, dpkgStatus: record.dpkgFailed } as const;
    }
    try {
      return await finalize(scope, session, state, record);
    } catch (error) {
      await abortTransaction(record, session.top, state);
      throw error;
    }
  });
}

async function finalize(
  scope: Scope,
  session: Session,
  state: BootenvState,
  record: TransactionRecord,
): Promise<TransactionOutcome> {
  const environment = record.environment as NonNullable<TransactionRecord['environment']>;
  const root = path.join(session.top, environment.subvolume);
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
  if (environment.basePending && pending !== undefined && pending.uuid === environment.baseUuid) {
    await clearPending();
    const previous = path.join(session.top, pending.subvolume);
    // The replaced BE was never booted: the new one descends from what it descended from.
    entry.originUuid = state.environments[pending.uuid]?.originUuid ?? entry.originUuid;
    delete state.environments[pending.uuid];
    session.subvolumes = session.subvolumes.filter((subvolume) => subvolume.uuid !== pending.uuid);
    await saveState(scope, session, state);
    await refreshBootMenu(scope, session, state);
    await deleteSubvolume(previous);
    replaced = pending.name;
  } else {
    await saveState(scope, session, state);
    await refreshBootMenu(scope, session, state);
  }
  if (pending !== undefined && replaced === null) await clearPending();
  await makeDirectory(PENDING_ROOT, 0o755);
  if (!(await isMountPoint(PENDING_ROOT))) await mountBtrfs(session.probe.device, PENDING_ROOT, `subvol=/${environment.subvolume}`);
  await writePending({ name: environment.name, uuid: environment.uuid, subvolume: environment.subvolume });
  await removeTransactionRecord();
  return { outcome: 'finished', name: environment.name, subvolume: environment.subvolume, replaced, skipUnchanged };
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
    const topMount = mountAt(parseMountInfo(await readText('/proc/self/mountinfo')), session.top);
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
