/**
 * The mount table: the one place that reads /proc/self/mountinfo, its strict
 * parser, and the questions bootenv asks of it: which subvolume is mounted at
 * `/` (the booted one — the kernel command line can lie after a rename or a
 * kexec, the mount table cannot), what is mounted at a path, and where a
 * given subvolume of a filesystem is mounted.
 */
import { BootenvError } from '../errors.js';
import { readText } from './fs.js';

export interface MountInfo {
  mountId: number;
  parentId: number;
  /** "major:minor" of the filesystem; equal for every subvolume of one btrfs. */
  device: string;
  /** Path inside the filesystem that is mounted (for btrfs: the subvolume path, from the top level). */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
  superOptions: string;
}

/** Parses the whole of /proc/self/mountinfo. */
export function parseMountInfo(text: string): MountInfo[] {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const fields = line.split(' ');
      const separator = fields.indexOf('-', 6);
      if (separator < 0 || separator + 3 >= fields.length) {
        throw new BootenvError('PARSE', `unexpected line in mountinfo: ${JSON.stringify(line)}`);
      }
      const [mountId, parentId, device, root, mountPoint] = fields as [string, string, string, string, string];
      return {
        mountId: Number(mountId),
        parentId: Number(parentId),
        device,
        root: unescapeOctal(root),
        mountPoint: unescapeOctal(mountPoint),
        fsType: fields[separator + 1] ?? '',
        source: unescapeOctal(fields[separator + 2] ?? ''),
        superOptions: fields[separator + 3] ?? '',
      };
    });
}

/** This process's mount table, as it is now. */
export async function readMountTable(): Promise<MountInfo[]> {
  return parseMountInfo(await readText('/proc/self/mountinfo'));
}

/** Whether something is mounted at `target` now. */
export async function isMountPoint(target: string): Promise<boolean> {
  return mountAt(await readMountTable(), target) !== undefined;
}

/** The mount currently visible at `mountPoint` (the last one stacked there). */
export function mountAt(mounts: readonly MountInfo[], mountPoint: string): MountInfo | undefined {
  return mounts.filter((mount) => mount.mountPoint === mountPoint).at(-1);
}

/**
 * The btrfs subvolume path (from the top level, without a leading slash) of a
 * btrfs mount; '' for the top level itself. A bind mount of a directory inside
 * a subvolume gives that directory's path: callers that need a subvolume must
 * check it against the subvolume list.
 */
export function subvolumePathOf(mount: MountInfo): string {
  return mount.root.replace(/^\/+/, '');
}

/** Mounts of the same filesystem as `device` whose root is `subvolumePath`. */
export function mountsOfSubvolume(mounts: readonly MountInfo[], device: string, subvolumePath: string): MountInfo[] {
  return mounts.filter((mount) => mount.device === device && mount.fsType === 'btrfs' && subvolumePathOf(mount) === subvolumePath);
}

/** Ids of the subvolumes of the filesystem `device` that some mount shows (btrfs puts subvolid= in each mount's options). */
export function mountedSubvolumeIds(mounts: readonly MountInfo[], device: string): Set<number> {
  const ids = new Set<number>();
  for (const mount of mounts) {
    if (mount.device !== device || mount.fsType !== 'btrfs') continue;
    const match = /(?:^|,)subvolid=(\d+)(?:,|$)/.exec(mount.superOptions);
    if (match !== null) ids.add(Number(match[1]));
  }
  return ids;
}

function unescapeOctal(value: string): string {
  return value.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}
