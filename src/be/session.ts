/**
 * A session: what every operation on BEs starts from. It owns the global lock
 * (held for the session), the private mount of the btrfs top level, the
 * subvolume list and bootenv's durable state as read at the start, the
 * lookups of BEs in them (only subvolumes directly under @bootenv/ with a
 * valid name are BEs), and the one way to write the state file. Sessions are
 * opened through openSession in ./transaction.ts, which first cleans up what an
 * interrupted apt transaction left.
 */
import path from 'node:path';
import { listSubvolumes } from '../btrfs/commands.js';
import type { Subvolume } from '../btrfs/parse.js';
import { BootenvError } from '../errors.js';
import { readTextIfExists, removeFile, writePrivateFileAtomic } from '../sys/fs.js';
import { acquireGlobalLock } from '../sys/lock.js';
import { mountBtrfsTemporarily, NOSUID_NODEV } from '../sys/mount.js';
import type { Scope } from '../sys/scope.js';
import { assertValidName, nameProblem } from './names.js';
import { CONTAINER, STATE_FILE, parseState, serializeState, type BootenvState } from './state.js';
import { probeSystem, type SystemProbe } from './system.js';

export interface Options {
  /** Seconds to wait for another beadm to finish. */
  lockWaitSeconds?: number;
  /** Receives the sentences an operation has for the user on the way (cleaned up, decided); the CLI prints them, whether the operation succeeds or fails. */
  onNotice?: (sentence: string) => void;
}

const DEFAULT_LOCK_WAIT_SECONDS = 10;

export interface Session {
  probe: SystemProbe;
  /** Private mount of the btrfs top level. */
  top: string;
  subvolumes: Subvolume[];
  /** Undefined before `beadm init`. */
  state: BootenvState | undefined;
  /** Tells the user a sentence (Options.onNotice). */
  notify: (sentence: string) => void;
}

/**
 * Throws NOT_ROOT, before anything is read or written, unless this process runs
 * as root: every operation but `check` mounts, locks or writes.
 */
export function requireRoot(): void {
  if (process.geteuid?.() !== 0) {
    throw new BootenvError('NOT_ROOT', 'beadm needs root for this: it mounts the btrfs top level, takes the global lock and writes bootenv state', {
      hint: 'run it with sudo (beadm check and --help work as any user)',
    });
  }
}

/**
 * Checks for root, probes the system, takes the global lock, mounts the top level privately
 * for the duration of `scope` (noatime: what beadm reads there, such as every
 * BE's dpkg md5sums for audit and dedupe, must not rewrite inodes and so
 * metadata of the BEs), and reads subvolumes and state. Throws NOT_ROOT,
 * UNSUPPORTED, TOOL_MISSING, LOCKED, PARSE.
 */
export async function beginSession(scope: Scope, options: Options): Promise<Session> {
  requireRoot();
  const probe = await probeSystem();
  await acquireGlobalLock(scope, options.lockWaitSeconds ?? DEFAULT_LOCK_WAIT_SECONDS);
  const top = await mountBtrfsTemporarily(scope, probe.device, `subvolid=5,noatime,${NOSUID_NODEV}`, 'top');
  const stateText = await readTextIfExists(path.join(top, CONTAINER, STATE_FILE));
  return {
    probe,
    top,
    subvolumes: await listSubvolumes(top),
    state: stateText === undefined ? undefined : parseState(stateText),
    notify: options.onNotice ?? (() => undefined),
  };
}

export function requireState(session: Session): BootenvState {
  if (session.state === undefined) {
    throw new BootenvError('NOT_INITIALIZED', 'this system has no boot environments yet', { hint: 'run beadm init' });
  }
  return session.state;
}

/** The BE subvolumes, oldest first: directly under @bootenv/, with a valid name. Nothing else is a BE. */
export function bootEnvironmentSubvolumes(session: Session): Array<{ name: string; subvolume: Subvolume }> {
  return session.subvolumes
    .filter((subvolume) => path.dirname(subvolume.path) === CONTAINER)
    .map((subvolume) => ({ name: path.basename(subvolume.path), subvolume }))
    .filter(({ name }) => nameProblem(name) === undefined)
    .sort((a, b) => a.subvolume.id - b.subvolume.id);
}

/** The BE named `name`. Throws INVALID_NAME or NOT_FOUND. */
export function findBootEnvironment(session: Session, name: string): Subvolume {
  assertValidName(name);
  const found = bootEnvironmentSubvolumes(session).find((environment) => environment.name === name);
  if (found === undefined) throw new BootenvError('NOT_FOUND', `no boot environment named ${name}`, { hint: 'see beadm list' });
  return found.subvolume;
}

/** The installed root (GRUB's home) as seen through the session's top-level mount. */
/** The BE named `name`, or (undefined) the running BE, else the default: what a new BE is made from. Throws NOT_FOUND. */
export function sourceFor(session: Session, state: BootenvState, name: string | undefined): Subvolume {
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

export function installedRootPath(session: Session, state: BootenvState): string {
  return path.join(session.top, state.installedRoot);
}

/** Writes `state` to @bootenv/.bootenv.json atomically, root's alone (0600); the previous file comes back if `scope` aborts. */
export async function saveState(scope: Scope, session: Session, state: BootenvState): Promise<void> {
  const file = path.join(session.top, CONTAINER, STATE_FILE);
  const previous = await readTextIfExists(file);
  await writePrivateFileAtomic(file, serializeState(state));
  scope.onAbort(`restore ${CONTAINER}/${STATE_FILE}`, () =>
    previous === undefined ? removeFile(file) : writePrivateFileAtomic(file, previous),
  );
  session.state = state;
}

/**
 * Sets the state's ancestry (./ancestry.ts) in memory and in the state file
 * as it is on disk, leaving everything else there as it was saved: final,
 * never undone (a lost link only sends beadm diff the slower way).
 */
export async function saveAncestry(session: Session, ancestry: BootenvState['ancestry']): Promise<void> {
  const file = path.join(session.top, CONTAINER, STATE_FILE);
  const text = await readTextIfExists(file);
  if (text === undefined || session.state === undefined) return;
  const saved = parseState(text);
  if (ancestry === undefined) delete saved.ancestry;
  else saved.ancestry = ancestry;
  await writePrivateFileAtomic(file, serializeState(saved));
  if (ancestry === undefined) delete session.state.ancestry;
  else session.state.ancestry = ancestry;
}
