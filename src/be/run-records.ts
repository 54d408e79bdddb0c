/**
 * The records of the clones `beadm run` has in use, and their recovery.
 * A clone is a writable snapshot at @bootenv/.carry/run-ID/root-XXXXXXXX,
 * mounted with its chroot filesystems at /run/bootenv/run/run-ID; its record,
 * /run/bootenv/run/run-ID.json (root's alone, like the directory), names the
 * beadm that made it (pid and start time, which identify it across pid
 * reuse) and both paths. While mounted, the clone is safe from the carry
 * sweep, which skips mounted snapshots; once unmounted, the sweep deletes it,
 * since no carry record refers to it. So recovery, for a record whose beadm
 * is gone (a crash, SIGKILL, a second Ctrl-C), only has to stop what still
 * runs rooted in the clone and unmount it; the sweep that every session runs
 * next removes the snapshot. A reboot needs nothing: /run starts empty and
 * the unmounted clone is swept.
 */
import path from 'node:path';
import { mountAt, readMountTable } from '../sys/mountinfo.js';
import { listDirectory, makePrivateDirectory, readTextIfExists, removeEmptyDirectory, removeFile, writePrivateFileAtomic } from '../sys/fs.js';
import { detachMount, RUNTIME_DIRECTORY, unmount } from '../sys/mount.js';
import { processInfo, stopProcessesRootedIn } from '../sys/process.js';
import type { Session } from './session.js';

/** The clones' mount points and records: root's alone (a clone's setuid programs and devices work inside it). */
export const RUN_DIRECTORY = `${RUNTIME_DIRECTORY}/run`;

export interface RunRecord {
  id: string;
  /** The beadm run that made the clone. */
  pid: number;
  startTime: string;
  /** The clone's subvolume, from the top level. */
  subvolume: string;
  /** Where it is mounted (its chroot filesystems below). */
  root: string;
  /** The BE it was cloned from. */
  source: string;
}

function recordFile(id: string): string {
  return path.join(RUN_DIRECTORY, `${id}.json`);
}

/** Where the clone of run `id` is mounted. */
export function runRoot(id: string): string {
  return path.join(RUN_DIRECTORY, id);
}

export async function writeRunRecord(record: RunRecord): Promise<void> {
  await makePrivateDirectory(RUN_DIRECTORY);
  await writePrivateFileAtomic(recordFile(record.id), `${JSON.stringify(record, null, 2)}\n`);
}

export async function removeRunRecord(id: string): Promise<void> {
  await removeFile(recordFile(id));
}

async function readRunRecords(): Promise<RunRecord[]> {
  const records: RunRecord[] = [];
  for (const name of await listDirectory(RUN_DIRECTORY)) {
    if (!name.endsWith('.json')) continue;
    const text = await readTextIfExists(path.join(RUN_DIRECTORY, name));
    if (text !== undefined) records.push(JSON.parse(text) as RunRecord);
  }
  return records;
}

async function isAlive(record: RunRecord): Promise<boolean> {
  const now = await processInfo(record.pid);
  return now !== undefined && now.startTime === record.startTime;
}

/**
 * Stops what runs in the clone at `root` and unmounts it with everything
 * below; a mount still busy after that is detached (the kernel lets go of it
 * when its last file is closed). Nothing is left mounted at `root`.
 */
export async function releaseRunRoot(root: string): Promise<void> {
  await stopProcessesRootedIn(root);
  if (mountAt(await readMountTable(), root) !== undefined) {
    try {
      await unmount(root, true);
    } catch {
      await detachMount(root);
    }
  }
  await removeEmptyDirectory(root);
}

/**
 * For each run whose beadm is gone: stops its processes, unmounts its clone
 * and removes its record, saying so. The clone's snapshot is left to the
 * carry sweep that follows (nothing of it is kept, even with --keep).
 */
export async function recoverInterruptedRuns(session: Session): Promise<void> {
  for (const record of await readRunRecords()) {
    if (await isAlive(record)) continue;
    await releaseRunRoot(record.root);
    await removeRunRecord(record.id);
    session.notify(`discarded the clone of ${record.source} left by beadm run (pid ${record.pid}), which ended without cleaning up; nothing of it was kept`);
  }
}
