/**
 * The btrfs-progs commands bootenv runs, as argv plus strict parser. Each
 * function says what it changes on disk; all need root.
 */
import { release } from 'node:os';
import path from 'node:path';
import { BootenvError } from '../errors.js';
import { locateNativeHelper, run, runChunks, runLines } from '../sys/exec.js';
import { listDirectory, pathExists, readText, readTextIfExists, realPathIfExists } from '../sys/fs.js';
import { throwIfInterrupted } from '../sys/scope.js';
import { parseSubvolumeTreeIds, TreeDumpParser, type TreeReferences } from './dump-tree.js';
import { parseFilesystemUuid, parseQgroupShow, parseSubvolumeList, type QgroupUsage, type Subvolume } from './parse.js';
import { ChangeTracker, type SubvolumeDelta } from './send-changes.js';
import { SendStreamParser } from './send-stream.js';
import { deltaOfTrees, parseTreeChanges } from './tree-changes.js';

/** Every subvolume of the filesystem mounted at `topLevel`, with the generation each was made in (read-only). */
export async function listSubvolumes(topLevel: string): Promise<Subvolume[]> {
  const { stdout } = await run(['btrfs', 'subvolume', 'list', '-u', '-q', '-c', topLevel]);
  return parseSubvolumeList(stdout);
}

/** Creates a snapshot of subvolume `source` at `target` (which must not exist): writable, or read-only. */
export async function snapshotSubvolume(source: string, target: string, access: 'writable' | 'read-only' = 'writable'): Promise<void> {
  throwIfInterrupted();
  await run(['btrfs', 'subvolume', 'snapshot', ...(access === 'read-only' ? ['-r'] : []), source, target]);
}

/** Creates an empty subvolume at `target` (which must not exist). */
export async function createSubvolume(target: string): Promise<void> {
  throwIfInterrupted();
  await run(['btrfs', 'subvolume', 'create', target]);
}

/**
 * What changed in read-only subvolume `current` since read-only subvolume
 * `parent`: `btrfs send --no-data -p PARENT CURRENT` (metadata only, no file
 * data read), decoded and replayed (send-stream.ts, send-changes.ts). Reads
 * only; needs root. Throws COMMAND_FAILED, PARSE.
 */
export async function subvolumeChanges(parent: string, current: string): Promise<SubvolumeDelta> {
  const parser = new SendStreamParser();
  const tracker = new ChangeTracker();
  await runChunks(['btrfs', 'send', '--no-data', '-q', '-p', parent, current], (chunk) => {
    for (const command of parser.push(chunk)) tracker.command(command);
  });
  parser.end();
  return tracker.finish();
}

/**
 * What differs from read-only subvolume `base` to read-only subvolume
 * `current`, when the two share an ancestor: read from their trees by
 * bootenv-changes (src/native/bootenv-changes.c, ./tree-changes.ts), which
 * looks only at the tree blocks written since they forked, where `btrfs
 * send` resolves every path of every changed inode in the kernel (an
 * upgrade of 60 packages: 0.07 s against 0.9 s). Paths below a directory in
 * `removedDirectories` are not all listed. `links` stand for deleted
 * subvolumes on the way to their common ancestor (whose snapshot each was,
 * made in which generation). Undefined when they share no ancestor that
 * exists or is linked (the caller asks send). Reads only; needs root.
 * Throws TOOL_MISSING, COMMAND_FAILED, PARSE.
 */
export async function treeChanges(
  base: string,
  current: string,
  links: ReadonlyArray<{ uuid: string; parentUuid: string; generation: number }> = [],
  helper: string = locateNativeHelper('bootenv-changes'),
): Promise<SubvolumeDelta | undefined> {
  const chunks: Buffer[] = [];
  const linkArguments = links.map(({ uuid, parentUuid, generation }) => `${uuid}:${parentUuid}:${generation}`);
  await runChunks([helper, base, current, ...linkArguments], (chunk) => chunks.push(chunk));
  const changes = parseTreeChanges(Buffer.concat(chunks));
  return changes.related ? deltaOfTrees(changes) : undefined;
}

/**
 * Every path (relative to `subvolumeRoot`, as byte strings) of inode `inode`
 * of the subvolume mounted or reachable at `subvolumeRoot` (btrfs
 * inspect-internal inode-resolve: a hard-linked file's names). Reads only;
 * needs root. Throws COMMAND_FAILED, PARSE on a line outside the subvolume.
 */
export async function inodePaths(inode: bigint, subvolumeRoot: string): Promise<string[]> {
  const { stdout } = await run(['btrfs', 'inspect-internal', 'inode-resolve', String(inode), subvolumeRoot]);
  const prefix = `${subvolumeRoot}/`;
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      if (!line.startsWith(prefix)) throw new BootenvError('PARSE', `unexpected line from btrfs inspect-internal inode-resolve: ${JSON.stringify(line)}`);
      return Buffer.from(line.slice(prefix.length), 'utf8').toString('latin1');
    });
}

/**
 * Deletes the subvolume at `path` and, unless `commit` is false (garbage that
 * a lost deletion only leaves for the next sweep), waits for the deletion to
 * be committed.
 */
export async function deleteSubvolume(path: string, commit = true): Promise<void> {
  await run(['btrfs', 'subvolume', 'delete', ...(commit ? ['--commit-after'] : []), path]);
}

/**
 * Waits until btrfs has cleaned every deleted subvolume of the filesystem at
 * `path` (`btrfs subvolume sync`): only then is their space free again.
 */
export async function waitForSubvolumeCleaning(path: string): Promise<void> {
  await run(['btrfs', 'subvolume', 'sync', path]);
}

/**
 * Per-subvolume usage from quota groups; null when quotas are not enabled
 * (read-only). With `device` (the block device the filesystem is mounted
 * from), a kernel that shows enabled quotas in sysfs (Linux 5.9 and later:
 * /sys/fs/btrfs/FSID/qgroups) answers "not enabled" without running btrfs.
 */
export async function qgroupUsage(topLevel: string, device?: string): Promise<QgroupUsage[] | null> {
  if (device !== undefined && sysfsShowsQuotas()) {
    const sysfs = await sysfsDirectoryOf(device);
    if (sysfs !== undefined && !(await pathExists(`${sysfs.directory}/qgroups`))) return null;
  }
  const result = await run(['btrfs', 'qgroup', 'show', '--raw', topLevel], { okExitCodes: [1] });
  if (result.exitCode !== 0) {
    if (/quotas not enabled/i.test(result.stderr)) return null;
    throw new BootenvError('COMMAND_FAILED', `btrfs qgroup show failed: ${result.stderr.trim()}`);
  }
  return parseQgroupShow(result.stdout);
}

/** Whether the running kernel lists a filesystem's quota groups in sysfs when quotas are on (Linux 5.9 and later). */
function sysfsShowsQuotas(): boolean {
  const match = /^(\d+)\.(\d+)/.exec(release());
  return match !== null && Number(match[1]) * 1000 + Number(match[2]) >= 5009;
}

const SYSFS_BTRFS = '/sys/fs/btrfs';
const sysfsDirectories = new Map<string, { uuid: string; directory: string } | undefined>();

/**
 * /sys/fs/btrfs/FSID of the btrfs that block device `device` belongs to
 * (its devices/ lists the device's kernel name), read once per process;
 * undefined when sysfs does not tell: no /sys, the device unknown there, or a
 * temporary fsid (Linux 6.7+ mounts a cloned device under another name than
 * the UUID on disk, which GRUB searches for).
 */
async function sysfsDirectoryOf(device: string): Promise<{ uuid: string; directory: string } | undefined> {
  if (sysfsDirectories.has(device)) return sysfsDirectories.get(device);
  let found: { uuid: string; directory: string } | undefined;
  const resolved = await realPathIfExists(device);
  if (resolved !== undefined) {
    for (const uuid of await listDirectory(SYSFS_BTRFS)) {
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(uuid)) continue;
      const directory = `${SYSFS_BTRFS}/${uuid}`;
      if (!(await pathExists(`${directory}/devices/${path.basename(resolved)}`))) continue;
      if ((await readTextIfExists(`${directory}/temp_fsid`))?.trim() === '1') break;
      found = { uuid, directory };
      break;
    }
  }
  sysfsDirectories.set(device, found);
  return found;
}

/**
 * The UUID of the btrfs filesystem holding `mounted` (read-only). With `device`
 * (the block device it is mounted from), read from sysfs when sysfs tells,
 * without running btrfs.
 */
export async function filesystemUuid(mounted: string, device?: string): Promise<string> {
  if (device !== undefined) {
    const sysfs = await sysfsDirectoryOf(device);
    if (sysfs !== undefined) return sysfs.uuid;
  }
  const { stdout } = await run(['btrfs', 'filesystem', 'show', mounted]);
  return parseFilesystemUuid(stdout);
}

export interface FilesystemGeometry {
  /** Bytes of one tree block. */
  nodeSize: number;
  /** The block devices the filesystem lies on (/dev/NAME). */
  devices: string[];
}

/** Node size and devices of the btrfs mounted at `mounted` (from block device `device`, when given), from /sys/fs/btrfs/UUID (read-only). */
export async function filesystemGeometry(mounted: string, device?: string): Promise<FilesystemGeometry> {
  const sysfs = (device === undefined ? undefined : (await sysfsDirectoryOf(device))?.directory) ?? `${SYSFS_BTRFS}/${await filesystemUuid(mounted)}`;
  const nodeSize = (await readText(`${sysfs}/nodesize`)).trim();
  if (!/^\d+$/.test(nodeSize)) throw new BootenvError('PARSE', `unexpected ${sysfs}/nodesize: ${JSON.stringify(nodeSize)}`);
  const devices = (await listDirectory(`${sysfs}/devices`)).sort().map((name) => `/dev/${name}`);
  if (devices.length === 0) throw new BootenvError('PARSE', `${sysfs}/devices lists no device`);
  return { nodeSize: Number(nodeSize), devices };
}

/** Commits the filesystem mounted at `path` (`btrfs filesystem sync`), so that its devices hold the current trees. */
export async function syncFilesystem(path: string): Promise<void> {
  await run(['btrfs', 'filesystem', 'sync', path]);
}

/**
 * Drops the page cache of block device `device` (`blockdev --flushbufs`,
 * BLKFLSBUF), so that reading it shows what btrfs wrote since it was last
 * read through the cache. Changes no data; needs root.
 */
export async function flushDeviceCache(device: string): Promise<void> {
  await run(['blockdev', '--flushbufs', device]);
}

/** The ids of every subvolume tree of the btrfs on `device`, read from the device (read-only; needs root). */
export async function subvolumeTreeIds(device: string): Promise<number[]> {
  const { stdout } = await run(['btrfs', 'inspect-internal', 'dump-tree', '-r', device]);
  return parseSubvolumeTreeIds(stdout);
}

/**
 * The tree blocks and data extents subvolume tree `treeId` refers to, read
 * from `device` as last committed (sync first). Read-only; needs root.
 * Throws COMMAND_FAILED when dump-tree fails or complains on stderr (a block
 * unreadable or rewritten while read), PARSE as TreeDumpParser.
 */
export async function subvolumeTreeReferences(device: string, treeId: number): Promise<TreeReferences> {
  const parser = new TreeDumpParser();
  const argv = ['btrfs', 'inspect-internal', 'dump-tree', '--hide-names', '-t', String(treeId), device];
  const { stderr } = await runLines(argv, (line) => parser.line(line));
  if (stderr.trim() !== '') throw new BootenvError('COMMAND_FAILED', `${argv.join(' ')}: ${stderr.trim()}`);
  return parser.finish();
}
