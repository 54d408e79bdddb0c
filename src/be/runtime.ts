/**
 * bootenv's runtime state in /run/bootenv, which a reboot clears by design:
 *   txn/       the apt transaction under way: txn.json, the new BE mounted at
 *              txn/root with its chroot filesystems, and pre-images of the
 *              files apt writes before dpkg runs (extended_states, debconf's
 *              databases), which are put back once the BE holds apt's version;
 *   pending/   the BE made by this boot's apt runs: pending.json, the BE
 *              mounted at pending/root, and apt.conf, which apt reads through
 *              /etc/apt/apt.conf.d/51bootenv-pending (a dangling symlink, which
 *              apt skips, when nothing is pending) so that later apt runs plan
 *              against the pending BE's dpkg status.
 * A transaction spans apt's separate hook and dpkg processes (tukit's
 * keep/resume); it belongs to the apt process whose pid and start time it
 * records. Recovery aborts a transaction whose apt is gone, and deletes BEs
 * that state.json marks as still being made by a transaction of an earlier boot.
 */
import path from 'node:path';
import { deleteSubvolume } from '../btrfs/commands.js';
import { mountAt, parseMountInfo } from '../btrfs/mountinfo.js';
import type { PackageAction } from '../apt/hook-input.js';
import { BootenvError } from '../errors.js';
import {
  makeDirectory,
  modificationTime,
  pathExists,
  readText,
  readTextIfExists,
  removeEmptyDirectory,
  removeFile,
  removeTree,
  restoreFileCopy,
  saveFileCopy,
  setModificationTime,
  writeFileAtomic,
  type SavedFile,
} from '../sys/fs.js';
import { detachMount, RUNTIME_DIRECTORY, unmount } from '../sys/mount.js';
import { stopProcessesRootedIn } from '../sys/process.js';
import { CONTAINER, serializeState, STATE_FILE, type BootenvState } from './state.js';

export const TRANSACTION_DIRECTORY = `${RUNTIME_DIRECTORY}/txn`;
export const TRANSACTION_ROOT = `${TRANSACTION_DIRECTORY}/root`;
const TRANSACTION_FILE = `${TRANSACTION_DIRECTORY}/txn.json`;
const PREIMAGE_DIRECTORY = `${TRANSACTION_DIRECTORY}/preimage`;
export const PENDING_DIRECTORY = `${RUNTIME_DIRECTORY}/pending`;
export const PENDING_ROOT = `${PENDING_DIRECTORY}/root`;
export const PENDING_APT_CONF = `${PENDING_DIRECTORY}/apt.conf`;
const PENDING_FILE = `${PENDING_DIRECTORY}/pending.json`;

export interface PreImage {
  /** Absolute path of the file apt may write (in the running root or the pending BE). */
  path: string;
  saved: SavedFile | null;
}

export interface PreImages {
  files: PreImage[];
  /** Modification times of the files' directories, which apt's renames change. */
  directories: Array<{ path: string; mtime: string }>;
}

export interface TransactionRecord {
  aptPid: number;
  aptStartTime: string;
  started: string;
  /** dpkg runs in place (divert = auto on a system that cannot make a BE). */
  passthrough: boolean;
  /** apt's command line, for the BE's metadata. */
  command: string[];
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
}

export interface PendingRecord {
  name: string;
  uuid: string;
  subvolume: string;
}

export async function readTransaction(): Promise<TransactionRecord | undefined> {
  const text = await readTextIfExists(TRANSACTION_FILE);
  return text === undefined ? undefined : (JSON.parse(text) as TransactionRecord);
}

export async function writeTransaction(record: TransactionRecord): Promise<void> {
  await makeDirectory(TRANSACTION_DIRECTORY, 0o700);
  await writeFileAtomic(TRANSACTION_FILE, `${JSON.stringify(record, null, 2)}\n`, 0o600);
}

/** Forgets the transaction: its record, pre-images and (empty, unmounted) root directory. */
export async function removeTransactionRecord(): Promise<void> {
  await removeTree(PREIMAGE_DIRECTORY);
  await removeFile(TRANSACTION_FILE);
  await removeEmptyDirectory(TRANSACTION_ROOT);
  await removeEmptyDirectory(TRANSACTION_DIRECTORY);
}

export async function readPending(): Promise<PendingRecord | undefined> {
  const text = await readTextIfExists(PENDING_FILE);
  return text === undefined ? undefined : (JSON.parse(text) as PendingRecord);
}

/** Makes `record` the pending BE of this boot: mounted at PENDING_ROOT, apt pointed at it. */
export async function writePending(record: PendingRecord): Promise<void> {
  await makeDirectory(PENDING_DIRECTORY, 0o755);
  await writeFileAtomic(PENDING_FILE, `${JSON.stringify(record, null, 2)}\n`);
  await writeFileAtomic(
    PENDING_APT_CONF,
    [
      `// Written by bootenv: BE ${record.name} holds apt's changes since this boot; apt plans against it.`,
      `Dir::State::status "${PENDING_ROOT}/var/lib/dpkg/status";`,
      `Dir::State::extended_states "${PENDING_ROOT}/var/lib/apt/extended_states";`,
      '',
    ].join('\n'),
  );
}

/**
 * Forgets the pending BE of this boot (the BE itself stays). Unmounts
 * PENDING_ROOT. apt.conf stays as an empty file, as bootenv's tmpfiles.d entry
 * creates it at boot: apt prints a notice for a dangling conf symlink.
 */
export async function clearPending(): Promise<void> {
  await writeFileAtomic(PENDING_APT_CONF, '// No boot environment is pending (bootenv).\n');
  await removeFile(PENDING_FILE);
  // Detached, not unmounted: the apt run that replaces the pending BE holds its dpkg lock files.
  if (await isMountPoint(PENDING_ROOT)) await detachMount(PENDING_ROOT);
}

export async function isMountPoint(target: string): Promise<boolean> {
  return mountAt(parseMountInfo(await readText('/proc/self/mountinfo')), target) !== undefined;
}

/** Field 22 of /proc/PID/stat (start time in clock ticks); undefined when the process is gone. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  const stat = await readTextIfExists(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

async function parentOf(pid: number): Promise<{ ppid: number; comm: string } | undefined> {
  const stat = await readTextIfExists(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
  return { comm, ppid: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) };
}

/**
 * The apt process a hook or dpkg call belongs to: the first ancestor from
 * `startPid` on that is not a shell (apt runs hooks through `sh -c`), and then
 * the topmost of a chain of processes of that name, because apt forks a child
 * of itself for part of its work (measured with apt 2.6: Post-Invoke runs
 * under such a child, Pre-Install-Pkgs and dpkg under the parent).
 */
export async function findAptProcess(startPid: number): Promise<number> {
  let pid = startPid;
  for (let depth = 0; depth < 8; depth += 1) {
    const info = await parentOf(pid);
    if (info === undefined) break;
    if (['sh', 'dash', 'bash', 'apt-hook', 'bootenv-apt'].includes(info.comm)) {
      pid = info.ppid;
      continue;
    }
    let current = pid;
    let currentInfo = info;
    for (;;) {
      const parent = await parentOf(currentInfo.ppid);
      if (parent === undefined || parent.comm !== currentInfo.comm) return current;
      current = currentInfo.ppid;
      currentInfo = parent;
    }
  }
  throw new BootenvError('INTERNAL', `cannot find the apt process above pid ${startPid}`);
}

export async function isAlive(record: { aptPid: number; aptStartTime: string }): Promise<boolean> {
  return (await processStartTime(record.aptPid)) === record.aptStartTime;
}

/** Copies each file (or notes its absence), and its directory's mtime, before apt writes it. */
export async function savePreImages(paths: readonly string[]): Promise<PreImages> {
  await makeDirectory(PREIMAGE_DIRECTORY, 0o700);
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
export async function restorePreImages(preImages: PreImages): Promise<void> {
  for (const preImage of preImages.files) {
    if (preImage.saved === null) await removeFile(preImage.path);
    else await restoreFileCopy(preImage.saved, preImage.path);
  }
  for (const directory of preImages.directories) await setModificationTime(directory.path, directory.mtime);
}

/** Unmounts the transaction's mounts, newest first; a mount already gone is fine. */
export async function unmountTransaction(record: TransactionRecord): Promise<void> {
  for (const target of [...record.mounts].reverse()) {
    if (await isMountPoint(target)) await unmount(target, true);
  }
}

/**
 * Undoes a transaction: unmounts it, deletes its half-made BE and its state
 * record, restores the pre-images, forgets the runtime record. `top` is a
 * mount of the btrfs top level. Leaves the pending BE and the running root as
 * they were before apt started.
 */
export async function abortTransaction(record: TransactionRecord, top: string, state: BootenvState | undefined): Promise<void> {
  await stopProcessesRootedIn(TRANSACTION_ROOT);
  await unmountTransaction(record);
  if (record.environment !== null) {
    const subvolume = path.join(top, record.environment.subvolume);
    if (await pathExists(subvolume)) await deleteSubvolume(subvolume);
    if (state !== undefined && state.environments[record.environment.uuid] !== undefined) {
      delete state.environments[record.environment.uuid];
      await writeFileAtomic(path.join(top, CONTAINER, STATE_FILE), serializeState(state));
    }
  }
  if (!record.preImagesRestored) await restorePreImages(record.preImages);
  await removeTransactionRecord();
}

/**
 * Cleans what an interrupted transaction left: a runtime record whose apt is
 * gone (apt killed, Post-Invoke never ran) is aborted; a BE that state.json
 * still marks as being made, with no live transaction for it (the machine went
 * down mid-transaction), is deleted. Returns a sentence per thing cleaned.
 */
export async function recoverInterruptedTransactions(top: string, state: BootenvState | undefined): Promise<string[]> {
  const cleaned: string[] = [];
  const record = await readTransaction();
  let live: TransactionRecord | undefined;
  if (record !== undefined) {
    if (await isAlive(record)) live = record;
    else {
      await abortTransaction(record, top, state);
      cleaned.push(`aborted the transaction of apt (pid ${record.aptPid}), which ended without finishing it`);
    }
  }
  if (state !== undefined) {
    for (const [uuid, entry] of Object.entries(state.environments)) {
      if (entry.transaction?.open !== true || live?.environment?.uuid === uuid) continue;
      const subvolume = path.join(top, entry.transaction.subvolume);
      if (await pathExists(subvolume)) await deleteSubvolume(subvolume);
      delete state.environments[uuid];
      await writeFileAtomic(path.join(top, CONTAINER, STATE_FILE), serializeState(state));
      cleaned.push(`deleted ${entry.transaction.subvolume}, left half-made by an interrupted apt run`);
    }
  }
  return cleaned;
}
