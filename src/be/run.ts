/**
 * `beadm run` and `beadm shell`: a command in a throw-away clone of a BE (the
 * running one by default), set up as the apt transaction sets up a BE being
 * made — /proc, /sys, /dev from the host, a fresh /run and /tmp, apt's
 * archives bound in, invoke-rc.d's policy forbidding every service start,
 * BOOTENV_INSIDE so that apt in the clone installs in place, and
 * grub-install/update-grub made inert — plus the caller's working directory
 * bound read-only at its own path, so that ./foo.deb means the caller's file.
 *
 * Three steps, the global lock held only in the first and the last (a shell
 * may stay open for hours while apt and beadm go on outside):
 *   1. snapshot SOURCE to @bootenv/.carry/run-ID/root-…, write the run's
 *      record, mount the clone (./run-records.ts);
 *   2. COMMAND in the foreground, chrooted in the clone, with signals left
 *      to it;
 *   3. stop what it left running, unmount, and with --keep make the clone a
 *      BE (a snapshot of it, as beadm create makes one); then delete it.
 * Whatever stops beadm between 1 and 3 leaves a record whose beadm is gone:
 * the next beadm unmounts the clone and the carry sweep deletes it.
 */
import { randomUuid } from './random-id.js';
import path from 'node:path';
import { deleteSubvolume, snapshotSubvolume } from '../btrfs/commands.js';
import type { Subvolume } from '../btrfs/parse.js';
import { BootenvError } from '../errors.js';
import { DEFERRED_BIN, inertWrappers } from '../grub/install.js';
import { FIXED_PATH, runForeground } from '../sys/exec.js';
import { isDirectory, makeDirectory, pathExists, removeEmptyDirectory, removeFile, renamePath, writeFileAtomic } from '../sys/fs.js';
import { bindMount, mountBtrfs, mountChrootFilesystems } from '../sys/mount.js';
import { processInfo, stopProcessesRootedIn } from '../sys/process.js';
import { withScope, type Scope } from '../sys/scope.js';
import { carryPath } from './carry-records.js';
import { makeBootEnvironment, refreshBootMenu } from './environments.js';
import { assertValidName } from './names.js';
import { releaseRunRoot, removeRunRecord, runRoot, writeRunRecord, type RunRecord } from './run-records.js';
import { bootEnvironmentSubvolumes, requireState, saveState, sourceFor, type Options, type Session } from './session.js';
import { ARCHIVES, POLICY_RC_D, POLICY_RC_D_SAVED, openSession } from './transaction.js';

export interface RunOptions extends Options {
  /** The BE cloned; default the running BE. */
  source?: string;
  /** Make the clone the BE of this name afterwards, whatever COMMAND's exit status. */
  keep?: string;
  /** The kept BE's description (default: the command line). */
  description?: string;
  /** What runs; undefined for an interactive shell (bash, else sh). */
  command?: readonly string[];
  /** The caller's working directory: bound read-only at its own path, and the command starts there. */
  cwd: string;
}

export interface RunReport {
  /** The BE cloned. */
  source: string;
  command: string[];
  /** COMMAND's exit status (128 + N when signal N ended it). */
  exitStatus: number;
  /** The BE the clone became, with --keep. */
  kept: string | null;
}

/** The apt transaction's line, for the fresh /run: /etc/apt/apt.conf.d/51bootenv-pending points at it, and apt reads it. */
const PENDING_APT_CONF = '/run/bootenv/pending/apt.conf';
/** Directories the caller's working directory is not bound from: the clone has its own. */
const OWN_TREES = ['/proc', '/sys', '/dev'];

function nameOf(session: Session, subvolume: Subvolume): string {
  return bootEnvironmentSubvolumes(session).find((entry) => entry.subvolume.uuid === subvolume.uuid)?.name ?? subvolume.path;
}

function requireFreeName(session: Session, name: string): void {
  if (bootEnvironmentSubvolumes(session).some((entry) => entry.name === name)) {
    throw new BootenvError('EXISTS', `a BE named ${name} exists already`, { hint: 'choose another name for --keep, or beadm destroy the old one first' });
  }
}

/** The chroot's mounts, the bound working directory, the inert boot-loader programs and the service policy, in the clone at `root`. */
async function prepareClone(scope: Scope, root: string, cwd: string): Promise<{ policySaved: boolean }> {
  await mountChrootFilesystems(scope, root, { binds: (await isDirectory(ARCHIVES)) ? [ARCHIVES] : [], lifetime: 'kept' });
  if (cwd !== '/' && !OWN_TREES.some((tree) => cwd === tree || cwd.startsWith(`${tree}/`)) && !cwd.startsWith(`${root}/`)) {
    await makeDirectory(`${root}${cwd}`);
    await bindMount(scope, cwd, `${root}${cwd}`, 'kept', { options: 'ro,nosuid,nodev' });
  }
  await makeDirectory(`${root}${path.dirname(PENDING_APT_CONF)}`);
  await writeFileAtomic(`${root}${PENDING_APT_CONF}`, '');
  await makeDirectory(`${root}${DEFERRED_BIN}`);
  for (const [program, text] of Object.entries(inertWrappers())) await writeFileAtomic(`${root}${DEFERRED_BIN}/${program}`, text, 0o755);
  const policySaved = await pathExists(`${root}${POLICY_RC_D}`);
  if (policySaved) await renamePath(`${root}${POLICY_RC_D}`, `${root}${POLICY_RC_D_SAVED}`);
  await writeFileAtomic(`${root}${POLICY_RC_D}`, "#!/bin/sh\n# bootenv: no service starts in beadm run's clone.\nexit 101\n", 0o755);
  return { policySaved };
}

/** Step 1: the clone, mounted and ready, and its record. Undone entirely if anything in it fails. */
async function openClone(options: RunOptions): Promise<{ record: RunRecord; policySaved: boolean; sourceUuid: string }> {
  return withScope(async (scope) => {
    const session = await openSession(scope, options, 'allow');
    const state = requireState(session);
    const source = sourceFor(session, state, options.source);
    if (options.keep !== undefined) requireFreeName(session, options.keep);
    const id = `run-${randomUuid()}`;
    const subvolume = carryPath(id, 'root');
    const directory = path.join(session.top, path.dirname(subvolume));
    await makeDirectory(directory, 0o700);
    scope.onAbort(`remove ${path.dirname(subvolume)}`, () => removeEmptyDirectory(directory));
    await snapshotSubvolume(path.join(session.top, source.path), path.join(session.top, subvolume));
    scope.onAbort(`delete ${subvolume}`, () => deleteSubvolume(path.join(session.top, subvolume), false));
    const me = await processInfo(process.pid);
    if (me === undefined) throw new BootenvError('INTERNAL', 'no /proc entry for this process');
    const root = runRoot(id);
    const record: RunRecord = { id, pid: me.pid, startTime: me.startTime, subvolume, root, source: nameOf(session, source) };
    await writeRunRecord(record);
    scope.onAbort(`remove the record of ${id}`, () => removeRunRecord(id));
    await makeDirectory(root);
    scope.onAbort(`remove ${root}`, () => removeEmptyDirectory(root));
    // Setuid bits and devices honoured, as in the apt transaction's chroot, behind /run/bootenv/run, which is root's alone.
    await mountBtrfs(scope, session.probe.device, root, `subvol=/${subvolume}`, 'kept');
    const { policySaved } = await prepareClone(scope, root, options.cwd);
    return { record, policySaved, sourceUuid: source.uuid };
  });
}

/** Step 3: nothing running or mounted in the clone; with --keep, the BE made from it; the clone deleted. Returns the kept BE's name. */
async function closeClone(options: RunOptions, opened: { record: RunRecord; policySaved: boolean; sourceUuid: string }, command: readonly string[]): Promise<string | null> {
  const { record } = opened;
  return withScope(async (scope) => {
    const session = await openSession(scope, options, 'allow');
    await stopProcessesRootedIn(record.root);
    let kept: string | null = null;
    if (options.keep !== undefined) {
      await removeFile(`${record.root}${POLICY_RC_D}`);
      if (opened.policySaved) await renamePath(`${record.root}${POLICY_RC_D_SAVED}`, `${record.root}${POLICY_RC_D}`);
    }
    await releaseRunRoot(record.root);
    const clone = session.subvolumes.find((subvolume) => subvolume.path === record.subvolume);
    if (options.keep !== undefined && clone !== undefined) {
      const state = requireState(session);
      // Never lose the clone asked for: a BE that took the name meanwhile gets the clone a name of its own beside it.
      const taken = new Set(bootEnvironmentSubvolumes(session).map((entry) => entry.name));
      kept = taken.has(options.keep) ? `${options.keep}-${record.id.slice(4, 12)}` : options.keep;
      if (kept !== options.keep) session.notify(`a BE named ${options.keep} was made while the command ran: the clone is kept as ${kept}`);
      const description = options.description ?? `beadm run ${command.join(' ')}`.slice(0, 200);
      const created = await makeBootEnvironment(scope, session, state, kept, clone, description);
      const entry = state.environments[created.uuid];
      if (entry !== undefined) entry.originUuid = opened.sourceUuid;
      await saveState(scope, session, state);
      await refreshBootMenu(scope, session, state);
    }
    if (clone !== undefined) await deleteSubvolume(path.join(session.top, record.subvolume), false);
    await removeEmptyDirectory(path.join(session.top, path.dirname(record.subvolume)));
    await removeRunRecord(record.id);
    return kept;
  });
}

/**
 * Runs the command (or a shell) in a clone of `options.source` (default the
 * running BE) and returns its exit status; the clone is gone afterwards
 * unless `options.keep` names the BE it becomes. Throws INVALID_NAME,
 * NOT_FOUND, EXISTS (the --keep name), TOOL_MISSING (chroot).
 */
export async function runInClone(options: RunOptions): Promise<RunReport> {
  if (options.source !== undefined) assertValidName(options.source);
  if (options.keep !== undefined) assertValidName(options.keep);
  if (options.command !== undefined && options.command.length === 0) throw new BootenvError('USAGE', 'beadm run needs a command after --');
  const opened = await openClone(options);
  const root = opened.record.root;
  const command = options.command !== undefined ? [...options.command] : [(await pathExists(`${root}/bin/bash`)) ? '/bin/bash' : '/bin/sh'];
  let exitStatus = 1;
  let failure: unknown;
  try {
    if (options.command === undefined) {
      options.onNotice?.(`a shell in a throw-away clone of ${opened.record.source}: ${options.keep === undefined ? 'exit to discard it' : `exit, and it is kept as BE ${options.keep}`}`);
    }
    exitStatus = await runForeground(['chroot', root, '/bin/sh', '-c', 'cd "$1" 2>/dev/null || cd /; shift; exec "$@"', 'sh', options.cwd, ...command], {
      BOOTENV_INSIDE: '1',
      BOOTENV_RUN: opened.record.source,
      PATH: `${DEFERRED_BIN}:${FIXED_PATH}`,
    });
  } catch (error) {
    failure = error;
  }
  const kept = await closeClone(options, opened, command);
  if (failure !== undefined) throw failure;
  if (kept !== null) options.onNotice?.(`kept the clone as BE ${kept} (beadm diff ${opened.record.source} ${kept} tells what changed)`);
  return { source: opened.record.source, command, exitStatus, kept };
}
