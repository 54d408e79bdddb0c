/**
 * What this system is: which filesystem and subvolume `/` is mounted from,
 * read from /proc/self/mountinfo (not the kernel command line), and whether
 * that layout can hold BEs. Every refusal says what to do instead.
 */
import { mountAt, readMountTable, subvolumePathOf, type MountInfo } from '../sys/mountinfo.js';
import { BootenvError } from '../errors.js';
import { haveProgram } from '../sys/exec.js';

export interface SystemProbe {
  mounts: MountInfo[];
  /** Block device `/` is mounted from (mount source), e.g. /dev/vda2. */
  device: string;
  /** "major:minor" shared by every mount of this btrfs. */
  deviceNumber: string;
  /** Subvolume path of `/`, from the btrfs top level. */
  bootedSubvolume: string;
}

const REQUIRED_PROGRAMS = ['btrfs', 'mount', 'umount', 'chroot', 'flock'];

/**
 * Reads the mount table and checks that BEs can live here. Throws UNSUPPORTED
 * (root not on btrfs, root at the top level, a separate /boot) or TOOL_MISSING.
 * Changes nothing.
 */
export async function probeSystem(): Promise<SystemProbe> {
  const mounts = await readMountTable();
  const root = mountAt(mounts, '/');
  if (root === undefined) throw new BootenvError('UNSUPPORTED', 'no mount for / in /proc/self/mountinfo');
  if (root.fsType !== 'btrfs') {
    throw new BootenvError('UNSUPPORTED', `the root filesystem is ${root.fsType}, not btrfs`, {
      hint: 'boot environments need / on btrfs; install Debian or Ubuntu with a btrfs root',
    });
  }
  const bootedSubvolume = subvolumePathOf(root);
  if (bootedSubvolume === '') {
    throw new BootenvError('UNSUPPORTED', '/ is the top level of its btrfs filesystem, not a subvolume', {
      hint: 'move the system into a subvolume (e.g. @), boot it with rootflags=subvol=@, then run beadm init',
    });
  }
  const boot = mountAt(mounts, '/boot');
  if (boot !== undefined) {
    throw new BootenvError('UNSUPPORTED', `/boot is a separate filesystem (${boot.source}), outside every snapshot`, {
      hint: 'copy /boot into the root filesystem, remove its /etc/fstab line, run update-grub and grub-install, then beadm init',
    });
  }
  for (const program of REQUIRED_PROGRAMS) {
    if (!haveProgram(program)) {
      throw new BootenvError('TOOL_MISSING', `${program} is not installed`, {
        hint: program === 'btrfs' ? 'apt-get install btrfs-progs' : 'apt-get install util-linux coreutils',
      });
    }
  }
  return { mounts, device: root.source, deviceNumber: root.device, bootedSubvolume };
}
