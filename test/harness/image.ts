/**
 * Bootable disk images for the real-boot tests (issues #5 and #15), and the
 * machine that boots them. An image is what a distribution's installer leaves,
 * for BIOS or for UEFI firmware:
 * - bios, as Ubuntu's installer makes it: a GPT disk with a 1 MiB BIOS boot
 *   partition and one btrfs partition holding @ (the system) and @home;
 * - uefi, as debian-installer makes it: a GPT disk with a 100 MiB EFI System
 *   Partition (FAT32, mounted at /boot/efi) and one btrfs partition holding
 *   the one subvolume @rootfs.
 * Both hold the cached debootstrapped Debian 12 base plus systemd-sysv, udev
 * and unattended-upgrades (allowed to upgrade from the fixture repository),
 * bootenv installed from its .deb with apt-get, fstab by UUID, and the
 * distribution's GRUB installed the normal way: debconf preseeded, then
 * apt-get install of grub-pc (bios) or grub-efi-amd64, grub-efi-amd64-signed
 * and shim-signed (uefi), then, as debian-installer's grub-installer does, on
 * the machine itself (a first boot of the kernel straight from qemu):
 * grub-install on /dev/vda (bios: core.img in the BIOS boot partition; uefi:
 * shim, GRUB and the removable-media path on the ESP and a boot entry in the
 * firmware's NVRAM) and update-grub (its menu on the serial console). It also
 * holds the serial-console probe and the writer service
 * (test/harness/boot-probe), the fixture APT repository with
 * bootenv-t-changed 1.0 and the boot package's older version
 * (./boot-package.ts) installed, apt's daily timers masked, and a second APT
 * repository, not enabled, with higher versions of the installed GRUB
 * packages, and in uefi images the kernel's (./upgrades.ts; upgradesOf names
 * them).
 *
 * Images are cached as zstd files under .cache/test/ keyed by their inputs
 * (the firmware, the base tarball, the .deb, this file, the probe and the
 * fixtures); BootMachine.create unpacks a private copy. A machine boots in
 * qemu (TCG: KVM cannot boot a kernel on this host) once per boot, with a hard
 * timeout and killing only the qemu it started; a uefi machine boots OVMF with
 * an NVRAM (OVMF_VARS) of its own, kept across its boots. Between boots the
 * host attaches the btrfs partition to a loop device with an offset (the host
 * kernel reads no partition tables on loop devices) to leave the next step for
 * the probe and to inspect BEs, and reads and writes the ESP's files with
 * mtools (the host kernel has no vfat). Everything a machine creates (temp
 * dir, loop devices, host mounts, qemu) is undone by close().
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { execa } from 'execa';
import { REPOSITORY, cacheDirectory } from './base.js';
import { BOOT_PACKAGE_NAME, bootPackage } from './boot-package.js';
import { corePrefixes } from './grub-core.js';
import { FIXTURE_PACKAGES, installRepositoryInRoot, writeAptRepository } from './repo.js';
import { buildUpgrades, type UpgradePackage } from './upgrades.js';

/** The machine's firmware: a PC BIOS (SeaBIOS) or UEFI (OVMF). */
export type Firmware = 'bios' | 'uefi';

const PROBE_DIRECTORY = path.join(REPOSITORY, 'test/harness/boot-probe');
/** Sparse; room for a BE that holds a second kernel, and for the upgrades repository. */
const IMAGE_BYTES = 6 * 1024 ** 3;
const SECTOR = 512;
const MIB = 1024 ** 2;
/** GPT type GUIDs: BIOS boot partition (GRUB's core.img), EFI System Partition, Linux filesystem. */
const BIOS_BOOT = '21686148-6449-6E6F-744E-656564454649';
const EFI_SYSTEM = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
const LINUX_FILESYSTEM = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
/** OVMF from Debian's ovmf package: the firmware (read-only) and the NVRAM template each uefi machine copies. */
const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
/** Where the probe looks for its step, from the installed root (BEs see it at /.rootbe/bootenv-test). */
export const PROBE_STEP_DIRECTORY = 'bootenv-test';
/** The repository of upgraded GRUB and kernel packages in every image, and its sources line beside it. */
export const UPGRADES_REPOSITORY = '/srv/bootenv-test-upgrades';
export const UPGRADES_SOURCES_LIST = `${UPGRADES_REPOSITORY}/sources.list`;
/**
 * A step's line that turns the skip-unchanged pass off in the booted BE (and
 * the BEs made from it): the real-boot stories are about booting, and under
 * TCG the pass over an upgraded kernel (4342 files, 409 MB) took about 400 s
 * of each story, in which nothing checked it. The pass runs, with real apt
 * and dpkg, in the sandboxes of skip-unchanged.test.ts and apt.test.ts.
 */
export const SKIP_UNCHANGED_OFF = "sed -i 's/^skip-unchanged = .*/skip-unchanged = no/' /etc/bootenv/bootenv.conf && grep -H '^skip-unchanged' /etc/bootenv/bootenv.conf";
/** Its Origin: not bootenv-tests, the one origin unattended-upgrades takes from. */
const UPGRADES_ORIGIN = 'bootenv-test-upgrades';
/** Kernel command line of every menu entry: serial console, and reboot 5 s after a panic (qemu -no-reboot then exits). */
const KERNEL_COMMAND_LINE = 'console=ttyS0 panic=5';
const GRUB_DEFAULTS = [
  'GRUB_DEFAULT=0',
  'GRUB_TIMEOUT=1',
  'GRUB_DISTRIBUTOR=Debian',
  'GRUB_CMDLINE_LINUX_DEFAULT="quiet"',
  `GRUB_CMDLINE_LINUX="${KERNEL_COMMAND_LINE}"`,
  'GRUB_TERMINAL="serial console"',
  'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"',
  '',
].join('\n');
const APT_ENV = 'export DEBIAN_FRONTEND=noninteractive; ';

/** What each firmware's image differs in. */
interface FirmwareLayout {
  /** The installed root's subvolume, as the distribution's installer names it. */
  rootSubvolume: string;
  /** The other subvolumes, by mount point. */
  otherSubvolumes: Record<string, string>;
  /** The sfdisk lines of the partitions before the btrfs one, and where that starts (sectors). */
  bootPartitions: string[];
  rootStart: number;
  /** GRUB's packages, as the installer installs them, and debconf's answers given before. */
  grubPackages: string[];
  preseed: string[];
  /** Other packages the installer leaves (fsck.vfat for the ESP, efibootmgr for grub-install's NVRAM entry). */
  extraPackages: string[];
  /** The first boot's step: what grub-installer runs on the target. */
  grubInstall: string;
  /** The installed packages rebuilt for the upgrades repository. */
  upgradedPackages: string[];
  /**
   * Whether the kernel's packages are rebuilt too. Only uefi's story upgrades
   * the kernel: under TCG its 409 MB unpack, depmod and update-initramfs cost
   * each story about a quarter of an hour, and a BE booting the kernel and
   * initramfs it built itself is the same proof on either firmware (GRUB reads
   * the BE's /boot the same way); bios's story upgrades GRUB alone.
   */
  upgradesKernel: boolean;
}

const LAYOUTS: Record<Firmware, FirmwareLayout> = {
  bios: {
    rootSubvolume: '@',
    otherSubvolumes: { '/home': '@home' },
    bootPartitions: [`start=2048, size=2048, type=${BIOS_BOOT}, name="bios"`],
    rootStart: 4096,
    grubPackages: ['grub-pc'],
    preseed: ['grub-pc grub-pc/install_devices multiselect /dev/vda'],
    extraPackages: [],
    grubInstall: 'grub-install /dev/vda',
    upgradedPackages: ['grub-pc', 'grub-pc-bin', 'grub-common', 'grub2-common'],
    upgradesKernel: false,
  },
  uefi: {
    rootSubvolume: '@rootfs',
    otherSubvolumes: {},
    bootPartitions: [`start=2048, size=${(100 * MIB) / SECTOR}, type=${EFI_SYSTEM}, name="esp"`],
    rootStart: 2048 + (100 * MIB) / SECTOR,
    grubPackages: ['grub-efi-amd64', 'grub-efi-amd64-signed', 'shim-signed'],
    // A fresh NVRAM has no boot entry: EFI/BOOT/BOOTX64.EFI is what OVMF then boots.
    preseed: ['grub-efi-amd64 grub2/force_efi_extra_removable boolean true'],
    extraPackages: ['dosfstools', 'efibootmgr'],
    grubInstall: 'grub-install --target=x86_64-efi --force-extra-removable',
    upgradedPackages: ['grub-efi-amd64', 'grub-efi-amd64-bin', 'grub-efi-amd64-signed', 'grub-common', 'grub2-common'],
    upgradesKernel: true,
  },
};

/** The subvolume the image's installer made for the system: @ (bios, Ubuntu-like) or @rootfs (uefi, debian-installer-like). */
export function installedRootSubvolume(firmware: Firmware): string {
  return LAYOUTS[firmware].rootSubvolume;
}

export interface Partition {
  /** GPT partition name (sfdisk's name=), e.g. bios, esp, root. */
  name: string;
  /** GPT type GUID, upper case. */
  type: string;
  /** Byte offset of the partition in the image. */
  offset: number;
  size: number;
}

/** The partitions of an image, from its GPT (read with sfdisk, which needs no loop device). */
export async function imagePartitions(image: string): Promise<Partition[]> {
  const { stdout } = await execa('sfdisk', ['--json', image]);
  const table = JSON.parse(stdout) as { partitiontable: { sectorsize?: number; partitions: Array<{ start: number; size: number; type: string; name?: string }> } };
  const sectorSize = table.partitiontable.sectorsize ?? SECTOR;
  return table.partitiontable.partitions.map((partition) => ({
    name: partition.name ?? '',
    type: partition.type.toUpperCase(),
    offset: partition.start * sectorSize,
    size: partition.size * sectorSize,
  }));
}

async function partitionOfType(image: string, type: string): Promise<Partition> {
  const partition = (await imagePartitions(image)).find((candidate) => candidate.type === type);
  if (partition === undefined) throw new Error(`${image}: no partition of type ${type}`);
  return partition;
}

/** The btrfs partition of an image. */
export function btrfsPartition(image: string): Promise<Partition> {
  return partitionOfType(image, LINUX_FILESYSTEM);
}

/** Attaches `partition` of `image` to a loop device (offset and size limit), runs `body(loop)`, detaches whatever happens. */
async function withPartitionLoop<T>(image: string, partition: Partition, body: (loop: string) => Promise<T>): Promise<T> {
  const loop = (await execa('losetup', ['--find', '--show', '--offset', String(partition.offset), '--sizelimit', String(partition.size), image])).stdout.trim();
  try {
    return await body(loop);
  } finally {
    await execa('losetup', ['-d', loop]);
  }
}

/** Mounts `device` (`mountOptions`) at a new directory under `workDirectory`, runs `body(directory)`, unmounts and removes it whatever happens. */
async function withMount<T>(device: string, mountOptions: string[], workDirectory: string, prefix: string, body: (directory: string) => Promise<T>): Promise<T> {
  const directory = mkdtempSync(path.join(workDirectory, prefix));
  try {
    await execa('mount', [...mountOptions, device, directory]);
    try {
      return await body(directory);
    } finally {
      await execa('umount', [directory]);
    }
  } finally {
    rmdirSync(directory);
  }
}

/**
 * Attaches the btrfs partition of `image` to a loop device, mounts the btrfs
 * top level at a new directory under `workDirectory`, runs `body(top, loop)`,
 * and unmounts and detaches whatever happens. Never while qemu runs the image.
 */
export async function withImageTopLevel<T>(image: string, workDirectory: string, body: (top: string, loop: string) => Promise<T>): Promise<T> {
  return withPartitionLoop(image, await btrfsPartition(image), (loop) => withMount(loop, ['-t', 'btrfs', '-o', 'subvolid=5'], workDirectory, 'top.', (top) => body(top, loop)));
}

/** mtools' name of the EFI System Partition of `image` (the file and the partition's offset). */
async function espDrive(image: string): Promise<string> {
  return `${image}@@${(await partitionOfType(image, EFI_SYSTEM)).offset}`;
}

/** Runs an mtools program on `drive` (`-i drive`); returns its stdout. Throws when it fails. */
async function mtools(program: string, drive: string, args: string[]): Promise<string> {
  return (await execa(program, ['-i', drive, ...args], { env: { MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C' } })).stdout;
}

/** Every file and directory on the ESP of `image`, as paths from its root (`EFI/BOOT/BOOTX64.EFI`, directories ending in /). */
export async function listEsp(image: string): Promise<string[]> {
  const drive = await espDrive(image);
  const { stdout, exitCode } = await execa('mdir', ['-i', drive, '-/', '-b', '::/'], { env: { MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C' }, reject: false });
  // mdir fails on an empty root directory.
  if (exitCode !== 0) return [];
  return stdout.split('\n').filter(Boolean).map((line) => line.replace(/^::\//, ''));
}

/** Paths, types, modes, mtimes and contents of a tree, for seeing whether it changed. */
function treeDigest(directory: string): string {
  const hash = createHash('sha256');
  const walk = (relative: string) => {
    for (const entry of readdirSync(path.join(directory, relative), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const child = path.join(relative, entry.name);
      const stat = statSync(path.join(directory, child));
      hash.update(`${child}\0${stat.mode}\0${stat.mtimeMs}\0`);
      if (entry.isDirectory()) walk(child);
      else hash.update(readFileSync(path.join(directory, child)));
    }
  };
  walk('');
  return hash.digest('hex');
}

/**
 * Copies the files of the EFI System Partition of `image` into a new
 * directory under `workDirectory` (mtools, on the image file at the
 * partition's offset: this host's kernel has no vfat), runs
 * `body(espDirectory)`, and when it returns and the tree changed writes the
 * tree back (the partition's files replaced by it; its FAT filesystem, volume
 * serial and label stay). The directory is removed whatever happens. Never
 * while qemu runs the image. Throws when the image has no ESP or mtools fails.
 */
export async function withImageEsp<T>(image: string, workDirectory: string, body: (espDirectory: string) => Promise<T>): Promise<T> {
  const drive = await espDrive(image);
  const directory = mkdtempSync(path.join(workDirectory, 'esp.'));
  try {
    if ((await listEsp(image)).length > 0) await mtools('mcopy', drive, ['-s', '-p', '-m', '-n', '::/*', directory]);
    const before = treeDigest(directory);
    const result = await body(directory);
    if (treeDigest(directory) !== before) {
      for (const entry of (await listEsp(image)).filter((file) => /^[^/]+\/?$/.test(file))) {
        await mtools(entry.endsWith('/') ? 'mdeltree' : 'mdel', drive, [`::/${entry.replace(/\/$/, '')}`]);
      }
      const entries = readdirSync(directory).map((name) => path.join(directory, name));
      if (entries.length > 0) await mtools('mcopy', drive, ['-s', '-p', '-m', '-o', ...entries, '::/']);
    }
    return result;
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

function execFileSyncText(file: string, args: string[]): string {
  return execFileSync(file, args, { encoding: 'utf8' });
}

/** Cache file of the image built from these inputs: boot-image-<firmware>-<hash>.img.zst. */
function imagePath(baseTarball: string, debPackage: string, firmware: Firmware): string {
  const hash = createHash('sha256');
  hash.update(firmware);
  hash.update(path.basename(baseTarball));
  hash.update(readFileSync(debPackage));
  hash.update(readFileSync(path.join(REPOSITORY, 'test/harness/image.ts')));
  for (const file of readdirSync(PROBE_DIRECTORY).sort()) hash.update(file).update(readFileSync(path.join(PROBE_DIRECTORY, file)));
  for (const file of ['test/harness/repo.ts', 'test/harness/boot-be.sh', 'test/harness/boot-package.ts', 'test/harness/upgrades.ts']) hash.update(readFileSync(path.join(REPOSITORY, file)));
  hash.update(BOOT_PACKAGE_NAME);
  // The fixture repository the image holds.
  const fixtures = execFileSyncText('find', [FIXTURE_PACKAGES, '-type', 'f', '-printf', '%P\\0']).split('\0').filter(Boolean).sort();
  for (const file of fixtures) hash.update(file).update(readFileSync(path.join(FIXTURE_PACKAGES, file)));
  return path.join(cacheDirectory(), `${imagePrefix(firmware)}${hash.digest('hex').slice(0, 12)}.img.zst`);
}

function imagePrefix(firmware: Firmware): string {
  return `boot-image-${firmware}-`;
}

/** The firmware a cached image was built for, from its name. Throws on a name ensureBootImage did not make. */
export function firmwareOfImage(cachedImage: string): Firmware {
  const match = /^boot-image-(bios|uefi)-[0-9a-f]{12}\.img\.zst$/.exec(path.basename(cachedImage));
  if (match === null) throw new Error(`${cachedImage}: not a cached boot image`);
  return match[1] as Firmware;
}

/** What the upgrades repository of an image holds (its manifest, beside the cached image). */
export interface Upgrades {
  /** Where the repository is in the image, and the file with its sources line (`deb [trusted=yes] file:... ./`). */
  repository: string;
  sourcesList: string;
  /** The installed kernel: its package is linux-image-<kernelVersion> (upgraded, with a higher version in `packages`, in uefi images). */
  kernelVersion: string;
  packages: UpgradePackage[];
}

function upgradesManifest(cachedImage: string): string {
  return cachedImage.replace(/\.img\.zst$/, '.upgrades.json');
}

/** The upgrades repository of a cached image (see ensureBootImage). Throws when its manifest is missing. */
export function upgradesOf(cachedImage: string): Upgrades {
  return JSON.parse(readFileSync(upgradesManifest(cachedImage), 'utf8')) as Upgrades;
}

/**
 * Builds the bootable image for `firmware` from the base tarball and the
 * bootenv .deb unless it is cached; returns the cached .img.zst (beside it its
 * upgrades manifest, see upgradesOf, and the serial log of the first boot,
 * .first-boot.log). Needs root, loop devices, btrfs, sfdisk, mkfs.vfat
 * (dosfstools), mtools, qemu (and OVMF for uefi) and network
 * access to the base's Debian mirror (for systemd-sysv, udev and GRUB). Older
 * cached images of the same firmware are removed. Throws when a step fails;
 * its work directory is removed.
 */
export async function ensureBootImage(baseTarball: string, debPackage: string, firmware: Firmware = 'bios'): Promise<string> {
  const cached = imagePath(baseTarball, debPackage, firmware);
  if (existsSync(cached) && existsSync(upgradesManifest(cached))) return cached;
  const layout = LAYOUTS[firmware];
  const rootSubvolume = layout.rootSubvolume;
  mkdirSync(cacheDirectory(), { recursive: true });
  const work = mkdtempSync(path.join(cacheDirectory(), 'image.'));
  try {
    const image = path.join(work, 'disk.img');
    await execa('truncate', ['-s', String(IMAGE_BYTES), image]);
    const table = ['label: gpt', ...layout.bootPartitions, `start=${layout.rootStart}, type=${LINUX_FILESYSTEM}, name="root"`, ''].join('\n');
    await execa('sfdisk', ['--quiet', image], { input: table });
    await withPartitionLoop(image, await btrfsPartition(image), (loop) => execa('mkfs.btrfs', ['-q', loop]));
    // blkid -p: the device itself, not blkid's cache, which keeps a reused loop device's previous UUID.
    const espUuid = firmware === 'uefi' ? await withPartitionLoop(image, await partitionOfType(image, EFI_SYSTEM), async (loop) => {
      await execa('mkfs.vfat', ['-F', '32', loop], { stdout: 'ignore' });
      return (await execa('blkid', ['-p', '-s', 'UUID', '-o', 'value', loop])).stdout.trim();
    }) : undefined;
    const machine = { firmware, vars: path.join(work, 'OVMF_VARS_4M.fd') };
    if (firmware === 'uefi') copyFileSync(OVMF_VARS, machine.vars);
    let upgrades: Omit<Upgrades, 'repository' | 'sourcesList'> | undefined;
    const firstBoot = path.join(work, 'first-boot');
    mkdirSync(firstBoot);
    const { uuid, kernel } = await withImageTopLevel(image, work, async (top, device) => {
      const uuid = (await execa('blkid', ['-p', '-s', 'UUID', '-o', 'value', device])).stdout.trim();
      const root = path.join(top, rootSubvolume);
      await execa('btrfs', ['subvolume', 'create', root]);
      for (const subvolume of Object.values(layout.otherSubvolumes)) await execa('btrfs', ['subvolume', 'create', path.join(top, subvolume)]);
      await execa('sh', ['-c', 'zstd -q -d -c "$1" | tar --xattrs --xattrs-include="*" --acls --numeric-owner -C "$2" -xf -', 'sh', baseTarball, root]);
      const fstab = [
        '# /etc/fstab: static file system information.',
        firmware === 'bios' ? `UUID=${uuid} / btrfs defaults,subvol=@ 0 1` : `UUID=${uuid} / btrfs defaults,subvol=${rootSubvolume} 0 0`,
        ...Object.entries(layout.otherSubvolumes).map(([mountPoint, subvolume]) => `UUID=${uuid} ${mountPoint} btrfs defaults,subvol=${subvolume} 0 2`),
        ...(espUuid === undefined ? [] : [`UUID=${espUuid} /boot/efi vfat umask=0077 0 1`]),
        '',
      ];
      writeFileSync(path.join(root, 'etc/fstab'), fstab.join('\n'));
      mkdirSync(path.join(root, 'boot/efi'), { recursive: true });
      copyFileSync('/etc/resolv.conf', path.join(root, 'etc/resolv.conf'));
      // The ESP stays unmounted in the chroot (this host's kernel has no vfat): on a fresh install
      // no maintainer script writes to it (grub-efi-amd64's and shim-signed's postinst run
      // grub-install only where /boot/efi/EFI/debian exists); the first boot's grub-install does.
      const inRoot = (script: string) => chrootRun(device, uuid, rootSubvolume, work, script);
      // What a real boot needs beyond the base: systemd as init, udev for the disk's device units.
      // unattended-upgrades: the boot test's first apt step runs it, as the apt-daily-upgrade timer would.
      // GRUB as the installer installs it: debconf answers first, then the packages, whose
      // postinst installs nothing yet (no core.img, no EFI/debian on the ESP, no grub.cfg).
      await inRoot(
        [
          'set -e',
          APT_ENV,
          `printf '%s\\n' ${layout.preseed.map((line) => `'${line}'`).join(' ')} | debconf-set-selections`,
          'apt-get update -qq',
          `apt-get install -y -qq --no-install-recommends systemd-sysv udev unattended-upgrades ${[...layout.grubPackages, ...layout.extraPackages].join(' ')}`,
          // The base's BIOS modules are no part of a UEFI install.
          ...(firmware === 'uefi' ? ['apt-get purge -y -qq grub-pc-bin'] : []),
        ].join('\n'),
      );
      writeFileSync(path.join(root, 'etc/default/grub'), GRUB_DEFAULTS);
      // The upgrades repository: the installed versions of GRUB's packages (and the kernel's, see upgradesKernel), from the mirror.
      const kernel = kernelVersion(root);
      const downloads = path.join(root, 'root/bootenv-test-downloads');
      mkdirSync(downloads);
      // With the kernel's metapackage, whose Depends names the kernel's exact version: apt-get upgrade would keep the kernel back without it.
      const packages = [...layout.upgradedPackages, ...(layout.upgradesKernel ? [`linux-image-${kernel}`, 'linux-image-amd64'] : [])];
      await inRoot(`set -e\ncd /root/bootenv-test-downloads\napt-get download -qq ${packages.map((name) => `${name}="$(dpkg-query -W -f='\${Version}' ${name})"`).join(' ')}`);
      const rebuilt = path.join(work, 'upgrades');
      mkdirSync(rebuilt);
      const built = await buildUpgrades(readdirSync(downloads).map((file) => path.join(downloads, file)), rebuilt);
      rmSync(downloads, { recursive: true });
      const repository = path.join(root, UPGRADES_REPOSITORY);
      await writeAptRepository(repository, built.debs, { origin: UPGRADES_ORIGIN });
      rmSync(rebuilt, { recursive: true });
      writeFileSync(path.join(root, UPGRADES_SOURCES_LIST), `deb [trusted=yes] file:${UPGRADES_REPOSITORY} ./\n`);
      upgrades = { kernelVersion: kernel, packages: built.packages };
      // The boot package (./boot-package.ts) is apt-get's to upgrade in the test, not unattended-upgrade's.
      const upgraded = bootPackage();
      writeFileSync(
        path.join(root, 'etc/apt/apt.conf.d/51bootenv-test-unattended'),
        `Unattended-Upgrade::Origins-Pattern { "origin=bootenv-tests"; };\nUnattended-Upgrade::Package-Blacklist { "${upgraded.name}"; };\n`,
      );
      await installRepositoryInRoot(root);
      copyFileSync(debPackage, path.join(root, 'root/bootenv.deb'));
      await inRoot(`${APT_ENV} apt-get update -qq && apt-get install -y -qq bootenv-t-changed=1.0 ${upgraded.name}=${upgraded.oldVersion} && apt-get install -y -qq /root/bootenv.deb && rm /root/bootenv.deb`);
      for (const program of ['bootenv-test-probe', 'bootenv-test-writer']) {
        await execa('install', ['-D', '-m', '0755', path.join(PROBE_DIRECTORY, program), path.join(root, 'usr/local/sbin', program)]);
      }
      for (const unit of ['bootenv-test-probe-early.service', 'bootenv-test-probe-late.service', 'bootenv-test-writer.service']) {
        await execa('install', ['-D', '-m', '0644', path.join(PROBE_DIRECTORY, unit), path.join(root, 'etc/systemd/system', unit)]);
      }
      mkdirSync(path.join(root, PROBE_STEP_DIRECTORY));
      await inRoot(
        [
          'set -e',
          'systemctl enable bootenv-test-probe-early.service bootenv-test-probe-late.service bootenv-test-writer.service',
          // apt's daily timers would start apt at a fully booted system's first minute (Persistent=true).
          'systemctl mask apt-daily.timer apt-daily-upgrade.timer',
          // No login on the serial console: agetty's vhangup would cut the probe's output.
          'systemctl mask serial-getty@ttyS0.service',
          // An initramfs with only what this machine needs (virtio disk, btrfs): the base's
          // MODULES=most one (37 MB) costs GRUB and the kernel about 15 s per boot under TCG.
          'echo MODULES=list > /etc/initramfs-tools/conf.d/bootenv-test-modules',
          'printf "virtio_pci\\nvirtio_blk\\nbtrfs\\n" >> /etc/initramfs-tools/modules',
          'update-initramfs -u',
          'rm -f /etc/resolv.conf',
          'apt-get clean',
        ].join('\n'),
      );
      // grub-install and update-grub need the machine's own disk (update-grub's 10_linux skips
      // file-backed loop roots, and root= would name the loop device): the first boot runs them,
      // the kernel and initramfs loaded by qemu itself.
      for (const file of [`vmlinuz-${kernel}`, `initrd.img-${kernel}`]) copyFileSync(path.join(root, 'boot', file), path.join(firstBoot, file));
      writeFileSync(path.join(root, PROBE_STEP_DIRECTORY, 'step.sh'), `set -e\n${layout.grubInstall}\nupdate-grub\n`);
      return { uuid, kernel };
    });
    // Kept beside the cached image: what grub-install and update-grub printed.
    const firstBootLog = cached.replace(/\.img\.zst$/, '.first-boot.log');
    const first = await bootImage(image, firstBootLog, {
      ...machine,
      kernel: {
        kernel: path.join(firstBoot, `vmlinuz-${kernel}`),
        initrd: path.join(firstBoot, `initrd.img-${kernel}`),
        append: `root=UUID=${uuid} ro rootflags=subvol=${rootSubvolume} ${KERNEL_COMMAND_LINE} quiet`,
      },
    });
    if (first.steps[0]?.exitCode !== 0) throw new Error(`grub-install or update-grub on the first boot failed:\n${first.log}`);
    await withImageTopLevel(image, work, async (top) => {
      const menu = readFileSync(path.join(top, rootSubvolume, 'boot/grub/grub.cfg'), 'utf8');
      if (!menu.includes(`rootflags=subvol=${rootSubvolume} `)) throw new Error(`update-grub made no entry for ${rootSubvolume}:\n${menu}`);
      rmSync(path.join(top, rootSubvolume, PROBE_STEP_DIRECTORY, 'step.sh.taken'));
    });
    if (firmware === 'uefi') {
      const files = await listEsp(image);
      const missing = ['EFI/debian/shimx64.efi', 'EFI/debian/grubx64.efi', 'EFI/debian/grub.cfg', 'EFI/BOOT/BOOTX64.EFI'].filter((file) => !files.some((found) => found.toLowerCase() === file.toLowerCase()));
      if (missing.length > 0) throw new Error(`grub-install left no ${missing.join(', ')} on the ESP (${files.join(', ')}):\n${first.log}`);
    }
    writeFileSync(upgradesManifest(cached), `${JSON.stringify({ repository: UPGRADES_REPOSITORY, sourcesList: UPGRADES_SOURCES_LIST, ...upgrades }, null, 2)}\n`);
    const partial = `${cached}.partial`;
    await execa('zstd', ['-q', '-1', '-T0', '-f', image, '-o', partial]);
    renameSync(partial, cached);
    for (const name of readdirSync(cacheDirectory())) {
      const file = path.join(cacheDirectory(), name);
      if (name.startsWith(imagePrefix(firmware)) && ![cached, upgradesManifest(cached), firstBootLog].includes(file)) rmSync(file, { force: true });
    }
    return cached;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Runs a shell script chrooted in the image's `rootSubvolume`, with the other
 * btrfs lines of its fstab, /proc, /sys, /dev, /run and /tmp mounted and then
 * `setup` run (shell, with $NEWROOT), in private mount and PID namespaces
 * (through boot-be.sh): its mounts and processes end with it. Throws on a
 * non-zero exit.
 */
async function chrootRun(device: string, uuid: string, rootSubvolume: string, work: string, script: string, setup = ''): Promise<void> {
  const result = await chrootCommand(device, uuid, rootSubvolume, work, script, setup);
  if (result.exitCode !== 0) throw new Error(`in the image's root: ${script}\nexit ${result.exitCode}\n${result.output}`);
}

/** chrootRun's command, whatever its exit status: the status and its output (stdout and stderr interleaved). */
async function chrootCommand(device: string, uuid: string, rootSubvolume: string, work: string, script: string, setup = ''): Promise<{ exitCode: number; output: string }> {
  const newRoot = mkdtempSync(path.join(work, 'chroot.'));
  try {
    const result = await execa(
      'unshare',
      ['--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', '--', 'bash', path.join(REPOSITORY, 'test/harness/boot-be.sh'), device, uuid, rootSubvolume, newRoot, setup, '--', 'sh', '-c', script],
      { reject: false, extendEnv: false, env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LC_ALL: 'C' }, stdin: 'ignore', all: true, maxBuffer: 1 << 28 },
    );
    return { exitCode: result.exitCode ?? -1, output: String(result.all ?? '') };
  } finally {
    rmdirSync(newRoot);
  }
}

/** The one kernel version in a root's /boot. */
function kernelVersion(root: string): string {
  const versions = readdirSync(path.join(root, 'boot'))
    .filter((name) => name.startsWith('vmlinuz-'))
    .map((name) => name.slice('vmlinuz-'.length));
  if (versions.length !== 1) throw new Error(`expected one kernel in ${root}/boot, found ${versions.join(', ') || 'none'}`);
  return versions[0] as string;
}

/** What the probe printed for one step (see boot-probe/bootenv-test-probe). */
export interface ProbeReport {
  phase: 'early' | 'late';
  /** `findmnt -no SOURCE /`, e.g. /dev/vda2[/@bootenv/debian-12]. */
  source: string;
  /** The booted subvolume from the top level, e.g. @bootenv/debian-12. */
  subvolume: string;
  bootId: string;
  /** Seconds since the kernel started when the probe ran. */
  uptimeSeconds: number;
  /** The step's exit status; undefined when the host left no step. */
  exitCode: number | undefined;
  /** The step's output (stdout, stderr and `sh -x` traces), prefixes removed. */
  output: string;
}

export interface BootResult {
  /** The whole serial log. */
  log: string;
  /** Wall time qemu ran. */
  seconds: number;
  /** qemu was killed at the time limit (a hung boot), not ended by the guest. */
  timedOut: boolean;
  /** One report per probe that ran; none when the boot failed before it. */
  steps: ProbeReport[];
}

/** Reads the probe's reports out of a serial log (CRLF, ANSI escapes and console messages around them). Pure. */
export function parseSerialLog(log: string): ProbeReport[] {
  const reports: ProbeReport[] = [];
  let current: ProbeReport | undefined;
  let output: string[] = [];
  // Lines end in CRLF (the serial console), and those apt copied from dpkg's pty in CR CR LF;
  // a progress line has bare CRs inside.
  for (const line of log.split(/\r*\n/)) {
    const begin = /BOOTENV-PROBE-BEGIN phase=(early|late) root=(\S+) boot_id=(\S+) uptime=(\S+)/.exec(line);
    if (begin !== null) {
      const [, phase, source = '', bootId = '', uptime = ''] = begin;
      const subvolume = /\[\/?(.*)\]$/.exec(source)?.[1] ?? '';
      current = { phase: phase as 'early' | 'late', source, subvolume, bootId, uptimeSeconds: Number(uptime), exitCode: undefined, output: '' };
      output = [];
      continue;
    }
    if (current === undefined) continue;
    const out = /BOOTENV-OUT: ([^]*)$/.exec(line);
    if (out !== null) {
      output.push(out[1] ?? '');
      continue;
    }
    const end = /BOOTENV-PROBE-END (?:rc=(\d+)|no step)/.exec(line);
    if (end !== null) {
      reports.push({ ...current, exitCode: end[1] === undefined ? undefined : Number(end[1]), output: output.join('\n') });
      current = undefined;
    }
  }
  return reports;
}

/** How bootImage starts the machine. */
export interface BootOptions {
  /** Default bios. */
  firmware?: Firmware;
  /** uefi: the machine's NVRAM, a copy of OVMF_VARS_4M.fd that OVMF reads and writes. */
  vars?: string;
  /** Boot this kernel and initramfs straight from qemu (-kernel), not the disk's boot loader. */
  kernel?: { kernel: string; initrd: string; append: string };
  /**
   * Default 1200 s: a limit for a boot that hangs, far above a boot's time. A BIOS boot
   * with a rollback carry and a real shutdown took over 600 s under TCG beside the other
   * tests (CI, 2026-12-03), though it came up and shut down in order.
   */
  timeoutSeconds?: number;
}

/**
 * Boots `image` once in qemu (TCG, q35; the guest's reboot or power-off ends
 * qemu through -no-reboot) with the serial console written to `serialLog`,
 * and parses the probe's reports. A uefi boot runs OVMF from the ovmf package
 * with `options.vars` as its NVRAM (written by the firmware and by the
 * guest's efibootmgr). qemu is killed (by its own PID, through execa) after
 * the time limit. The image must not be attached or mounted on the host.
 * Throws when qemu fails to start or exits non-zero by itself.
 */
export async function bootImage(image: string, serialLog: string, options: BootOptions = {}): Promise<BootResult> {
  const firmware = options.firmware ?? 'bios';
  if (firmware === 'uefi' && options.vars === undefined) throw new Error('a uefi boot needs its NVRAM (vars)');
  const timeoutSeconds = options.timeoutSeconds ?? 1200;
  rmSync(serialLog, { force: true });
  const started = Date.now();
  const result = await execa(
    'qemu-system-x86_64',
    [
      // q35: no floppy controller for the kernel and udev to probe.
      '-machine', 'q35', '-accel', 'tcg', '-cpu', 'max', '-smp', '2', '-m', '1024',
      ...(firmware === 'uefi'
        ? ['-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`, '-drive', `if=pflash,format=raw,unit=1,file=${options.vars}`]
        : []),
      ...(options.kernel === undefined ? [] : ['-kernel', options.kernel.kernel, '-initrd', options.kernel.initrd, '-append', options.kernel.append]),
      '-display', 'none', '-monitor', 'none', '-no-reboot',
      '-drive', `file=${image},format=raw,if=virtio,cache=unsafe`,
      '-nic', 'none', '-serial', `file:${serialLog}`,
    ],
    { reject: false, stdin: 'ignore', timeout: timeoutSeconds * 1000, killSignal: 'SIGKILL', all: true },
  );
  const seconds = (Date.now() - started) / 1000;
  if (!result.timedOut && result.exitCode !== 0) throw new Error(`qemu failed (exit ${result.exitCode}): ${result.all}`);
  const log = existsSync(serialLog) ? readFileSync(serialLog, 'latin1') : '';
  return { log, seconds, timedOut: result.timedOut === true, steps: parseSerialLog(log) };
}

/**
 * A private copy of a cached image, booted once per step, with (uefi) an
 * NVRAM of its own kept across its boots. Host mounts happen only between
 * boots. Everything it creates is removed by close().
 */
export class BootMachine {
  private closed = false;
  private boots = 0;

  private constructor(
    readonly directory: string,
    readonly image: string,
    /** Where each boot's serial log is kept (test-artifacts/boot/...). */
    readonly artifacts: string,
    readonly firmware: Firmware,
    /** uefi: the machine's NVRAM (a copy of OVMF_VARS_4M.fd made by create). */
    readonly vars: string | undefined,
  ) {}

  /**
   * Unpacks `cachedImage` into a new directory under /var/tmp (and, uefi, a
   * fresh NVRAM beside it); serial logs go to `artifacts` (emptied first).
   * The firmware is the one the image was built for unless told.
   */
  static async create(cachedImage: string, artifacts: string, firmware: Firmware = firmwareOfImage(cachedImage)): Promise<BootMachine> {
    const directory = mkdtempSync('/var/tmp/bootenv-boot.');
    try {
      const image = path.join(directory, 'disk.img');
      await execa('zstd', ['-q', '-d', '-f', cachedImage, '-o', image]);
      let vars: string | undefined;
      if (firmware === 'uefi') {
        vars = path.join(directory, path.basename(OVMF_VARS));
        copyFileSync(OVMF_VARS, vars);
      }
      rmSync(artifacts, { recursive: true, force: true });
      mkdirSync(artifacts, { recursive: true });
      return new BootMachine(directory, image, artifacts, firmware, vars);
    } catch (error) {
      rmSync(directory, { recursive: true, force: true });
      throw error;
    }
  }

  /** The installed root's subvolume (@ or @rootfs, see installedRootSubvolume). */
  get rootSubvolume(): string {
    return installedRootSubvolume(this.firmware);
  }

  /** Mounts the btrfs top level on the host (never while booted), runs `body`, unmounts and detaches. */
  withTopLevel<T>(body: (top: string) => Promise<T>): Promise<T> {
    return withImageTopLevel(this.image, this.directory, (top) => body(top));
  }

  /**
   * The EFI System Partition's files in a directory on the host (never while
   * booted) for `body(espDirectory)`, written back if it changed them (see
   * withImageEsp). Throws on a bios image.
   */
  withEsp<T>(body: (espDirectory: string) => Promise<T>): Promise<T> {
    return withImageEsp(this.image, this.directory, body);
  }

  /** The version of package `name` installed (dpkg status ii) in `subvolume`, read with dpkg-query from the host; undefined otherwise. */
  async installedVersion(subvolume: string, name: string): Promise<string | undefined> {
    return this.withTopLevel(async (top) => {
      const result = await execa('dpkg-query', [`--admindir=${path.join(top, subvolume, 'var/lib/dpkg')}`, '-f', '${db:Status-Abbrev} ${Version}', '-W', name], { reject: false });
      const [status, version] = result.stdout.trim().split(/\s+/);
      return result.exitCode === 0 && status === 'ii' ? version : undefined;
    });
  }

  /** The bytes of the partition named `name` in the GPT (bios, esp, root). Throws when there is none. */
  async readPartition(name: string): Promise<Buffer> {
    const partition = (await imagePartitions(this.image)).find((candidate) => candidate.name === name);
    if (partition === undefined) throw new Error(`${this.image}: no partition named ${name}`);
    const file = await open(this.image, 'r');
    try {
      const bytes = Buffer.alloc(partition.size);
      const { bytesRead } = await file.read(bytes, 0, partition.size, partition.offset);
      if (bytesRead !== partition.size) throw new Error(`${this.image}: partition ${name} ends past the image`);
      return bytes;
    } finally {
      await file.close();
    }
  }

  /**
   * The prefix GRUB's core.img in the BIOS boot partition was made with, e.g.
   * `(,gpt2)/@/boot/grub` (bios; never while booted). It is not in the
   * partition as text: an i386-pc core.img is diskboot.img (one sector),
   * lzma_decompress.img, then the kernel, its modules and the prefix as raw
   * LZMA. This decodes what follows the decompressor (its size from the
   * installed root's grub-pc-bin) with xz. Throws when no prefix is found.
   */
  async grubCorePrefix(): Promise<string> {
    const bios = await this.readPartition('bios');
    const decompressor = await this.withTopLevel(async (top) => statSync(path.join(top, this.rootSubvolume, 'usr/lib/grub/i386-pc/lzma_decompress.img')).size);
    const prefix = (await corePrefixes(bios, decompressor))[0];
    if (prefix === undefined) throw new Error(`${this.image}: no GRUB prefix in the BIOS boot partition's core.img`);
    return prefix;
  }

  /**
   * Boots once. `step` (shell, run by the probe with `sh -x`) is left in the
   * installed root for the probe; `late` makes the probe wait for
   * multi-user.target. The serial log is kept as `artifacts/NN-name.log`.
   */
  async boot(name: string, step: string | undefined, options: { late?: boolean; timeoutSeconds?: number } = {}): Promise<BootResult> {
    await this.withTopLevel(async (top) => {
      const directory = path.join(top, this.rootSubvolume, PROBE_STEP_DIRECTORY);
      for (const file of ['step.sh', 'step.sh.taken', 'late']) rmSync(path.join(directory, file), { force: true });
      if (step !== undefined) writeFileSync(path.join(directory, 'step.sh'), step);
      if (options.late) writeFileSync(path.join(directory, 'late'), '');
    });
    this.boots += 1;
    const log = path.join(this.artifacts, `${String(this.boots).padStart(2, '0')}-${name}.log`);
    return bootImage(this.image, log, { firmware: this.firmware, vars: this.vars, timeoutSeconds: options.timeoutSeconds });
  }

  /**
   * Runs `script` chrooted in `subvolume` of the image on the host, at native
   * speed and with the host's network (never while booted), as a sandbox
   * boots a BE (boot-be.sh: its fstab's btrfs lines, /proc, /sys, /dev, a
   * fresh /run). Returns the exit status and the output.
   */
  async chroot(subvolume: string, script: string): Promise<{ exitCode: number; output: string }> {
    return withPartitionLoop(this.image, await btrfsPartition(this.image), async (loop) => {
      const uuid = (await execa('blkid', ['-p', '-s', 'UUID', '-o', 'value', loop])).stdout.trim();
      return chrootCommand(loop, uuid, subvolume, this.directory, script);
    });
  }

  /** Removes the image, the NVRAM and their directory (the serial logs stay). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    rmSync(this.directory, { recursive: true, force: true });
  }
}
