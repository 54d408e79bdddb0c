/**
 * The btrfs-progs commands bootenv runs, as argv plus strict parser. Each
 * function says what it changes on disk; all need root.
 */
import { BootenvError } from '../errors.js';
import { run } from '../sys/exec.js';
import { throwIfInterrupted } from '../sys/scope.js';
import { parseFilesystemUuid, parseQgroupShow, parseSubvolumeList, type QgroupUsage, type Subvolume } from './parse.js';

/** Every subvolume of the filesystem mounted at `topLevel` (read-only). */
export async function listSubvolumes(topLevel: string): Promise<Subvolume[]> {
  const { stdout } = await run(['btrfs', 'subvolume', 'list', '-u', '-q', topLevel]);
  return parseSubvolumeList(stdout);
}

/** Creates a writable snapshot of subvolume `source` at `target` (which must not exist). */
export async function snapshotSubvolume(source: string, target: string): Promise<void> {
  throwIfInterrupted();
  await run(['btrfs', 'subvolume', 'snapshot', source, target]);
}

/** Deletes the subvolume at `path` and waits for the deletion to be committed. */
export async function deleteSubvolume(path: string): Promise<void> {
  await run(['btrfs', 'subvolume', 'delete', '--commit-after', path]);
}

/** Per-subvolume usage from quota groups; null when quotas are not enabled (read-only). */
export async function qgroupUsage(topLevel: string): Promise<QgroupUsage[] | null> {
  const result = await run(['btrfs', 'qgroup', 'show', '--raw', topLevel], { okExitCodes: [1] });
  if (result.exitCode !== 0) {
    if (/quotas not enabled/i.test(result.stderr)) return null;
    throw new BootenvError('COMMAND_FAILED', `btrfs qgroup show failed: ${result.stderr.trim()}`);
  }
  return parseQgroupShow(result.stdout);
}

/** The UUID of the btrfs filesystem holding `path` (read-only). */
export async function filesystemUuid(path: string): Promise<string> {
  const { stdout } = await run(['btrfs', 'filesystem', 'show', path]);
  return parseFilesystemUuid(stdout);
}
