/**
 * Bootable disk images for the real-boot tests (issue #5), and the machine
 * that boots them. An image is what a Debian/Ubuntu installer leaves on a BIOS
 * machine: a GPT disk with a 1 MiB BIOS boot partition and one btrfs partition
 * holding @ (the system) and @home, the cached debootstrapped Debian 12 base
 * plus systemd-sysv, udev and unattended-upgrades (allowed to upgrade from the
 * fixture repository), bootenv installed from its .deb with apt-get,
 * GRUB's core.img in the BIOS boot partition with its prefix in @/boot/grub,
 * update-grub's menu on the serial console, fstab by UUID. It also holds the
 * serial-console probe and the writer service (test/harness/boot-probe),
 * the fixture APT repository with bootenv-t-changed 1.0 and the boot
 * package's older version (./boot-package.ts) installed, apt's daily timers masked.
 *
 * Images are cached as zstd files under .cache/test/ keyed by their inputs
 * (the base tarball, the .deb, this file, the probe and the fixtures); BootMachine.create
 * unpacks a private copy. A machine boots in qemu (TCG: KVM cannot boot a
 * kernel on this host) once per boot, with a hard timeout and killing only the
 * qemu it started; between boots the host mounts the btrfs partition through
 * a loop device with an offset (the host kernel reads no partition tables on
 * loop devices) to leave the next step for the probe and to inspect BEs.
 * Everything a machine creates (temp dir, loop devices, host mounts, qemu) is
 * undone by close().
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { execa } from 'execa';
import { REPOSITORY, cacheDirectory } from './base.js';
import { BOOT_PACKAGE_NAME, bootPackage } from './boot-package.js';
import { FIXTURE_PACKAGES, installRepositoryInRoot } from './repo.js';

const PROBE_DIRECTORY = path.join(REPOSITORY, 'test/harness/boot-probe');
const IMAGE_BYTES = 4 * 1024 ** 3;
const SECTOR = 512;
/** GPT type GUIDs: BIOS boot partition (GRUB's core.img) and Linux filesystem. */
const BIOS_BOOT = '21686148-6449-6E6F-744E-656564454649';
const LINUX_FILESYSTEM = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
/** Where the probe looks for its step, from the installed root (BEs see it at /.rootbe/bootenv-test). */
export const PROBE_STEP_DIRECTORY = 'bootenv-test';
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

export interface Partition {
  /** Byte offset of the btrfs partition in the image. */
  offset: number;
  size: number;
}

/** The btrfs partition of an image, from its GPT (read with sfdisk, which needs no loop device). */
export async function btrfsPartition(image: string): Promise<Partition> {
  const { stdout } = await execa('sfdisk', ['--json', image]);
  const table = JSON.parse(stdout) as { partitiontable: { sectorsize?: number; partitions: Array<{ start: number; size: number; type: string }> } };
  const sectorSize = table.partitiontable.sectorsize ?? SECTOR;
  const partition = table.partitiontable.partitions.find((candidate) => candidate.type.toUpperCase() === LINUX_FILESYSTEM);
  if (partition === undefined) throw new Error(`${image}: no Linux filesystem partition`);
  return { offset: partition.start * sectorSize, size: partition.size * sectorSize };
}

/**
 * Attaches the btrfs partition of `image` to a loop device, mounts the btrfs
 * top level at a new directory under `workDirectory`, runs `body(top, loop)`,
 * and unmounts and detaches whatever happens. Never while qemu runs the image.
 */
export async function withImageTopLevel<T>(image: string, workDirectory: string, body: (top: string, loop: string) => Promise<T>): Promise<T> {
  const { offset, size } = await btrfsPartition(image);
  const loop = (await execa('losetup', ['--find', '--show', '--offset', String(offset), '--sizelimit', String(size), image])).stdout.trim();
  try {
    const top = mkdtempSync(path.join(workDirectory, 'top.'));
    try {
      await execa('mount', ['-t', 'btrfs', '-o', 'subvolid=5', loop, top]);
      try {
        return await body(top, loop);
      } finally {
        await execa('umount', [top]);
      }
    } finally {
      rmdirSync(top);
    }
  } finally {
    await execa('losetup', ['-d', loop]);
  }
}

function execFileSyncText(file: string, args: string[]): string {
  return execFileSync(file, args, { encoding: 'utf8' });
}

/** Cache file of the image built from these inputs. */
function imagePath(baseTarball: string, debPackage: string): string {
  const hash = createHash('sha256');
  hash.update(path.basename(baseTarball));
  hash.update(readFileSync(debPackage));
  hash.update(readFileSync(path.join(REPOSITORY, 'test/harness/image.ts')));
  for (const file of readdirSync(PROBE_DIRECTORY).sort()) hash.update(file).update(readFileSync(path.join(PROBE_DIRECTORY, file)));
  for (const file of ['test/harness/repo.ts', 'test/harness/boot-be.sh', 'test/harness/boot-package.ts']) hash.update(readFileSync(path.join(REPOSITORY, file)));
  hash.update(BOOT_PACKAGE_NAME);
  // The fixture repository the image holds.
  const fixtures = execFileSyncText('find', [FIXTURE_PACKAGES, '-type', 'f', '-printf', '%P\\0']).split('\0').filter(Boolean).sort();
  for (const file of fixtures) hash.update(file).update(readFileSync(path.join(FIXTURE_PACKAGES, file)));
  return path.join(cacheDirectory(), `boot-image-${hash.digest('hex').slice(0, 12)}.img.zst`);
}

/**
 * Builds the bootable image from the base tarball and the bootenv .deb unless
 * it is cached; returns the cached .img.zst. Needs root, loop devices, btrfs,
 * sfdisk, network access to the base's Debian mirror (for systemd-sysv and
 * udev) and the host's grub-bios-setup (grub-pc-bin). Older cached images are
 * removed. Throws when a step fails; its work directory is removed.
 */
export async function ensureBootImage(baseTarball: string, debPackage: string): Promise<string> {
  const cached = imagePath(baseTarball, debPackage);
  if (existsSync(cached)) return cached;
  mkdirSync(cacheDirectory(), { recursive: true });
  const work = mkdtempSync(path.join(cacheDirectory(), 'image.'));
  try {
    const image = path.join(work, 'disk.img');
    await execa('truncate', ['-s', String(IMAGE_BYTES), image]);
    const layout = ['label: gpt', `start=2048, size=2048, type=${BIOS_BOOT}, name="bios"`, `start=4096, type=${LINUX_FILESYSTEM}, name="root"`, ''].join('\n');
    await execa('sfdisk', ['--quiet', image], { input: layout });
    const { offset, size } = await btrfsPartition(image);
    const loop = (await execa('losetup', ['--find', '--show', '--offset', String(offset), '--sizelimit', String(size), image])).stdout.trim();
    try {
      await execa('mkfs.btrfs', ['-q', loop]);
    } finally {
      await execa('losetup', ['-d', loop]);
    }
    await withImageTopLevel(image, work, async (top, device) => {
      const uuid = (await execa('blkid', ['-s', 'UUID', '-o', 'value', device])).stdout.trim();
      const root = path.join(top, '@');
      await execa('btrfs', ['subvolume', 'create', root]);
      await execa('btrfs', ['subvolume', 'create', path.join(top, '@home')]);
      await execa('sh', ['-c', 'zstd -q -d -c "$1" | tar --xattrs --xattrs-include="*" --acls --numeric-owner -C "$2" -xf -', 'sh', baseTarball, root]);
      writeFileSync(
        path.join(root, 'etc/fstab'),
        ['# /etc/fstab: static file system information.', `UUID=${uuid} / btrfs defaults,subvol=@ 0 1`, `UUID=${uuid} /home btrfs defaults,subvol=@home 0 2`, ''].join('\n'),
      );
      writeFileSync(path.join(root, 'etc/default/grub'), GRUB_DEFAULTS);
      copyFileSync('/etc/resolv.conf', path.join(root, 'etc/resolv.conf'));
      const inRoot = (script: string) => chrootRun(device, uuid, work, script);
      // What a real boot needs beyond the base: systemd as init, udev for the disk's device units.
      // unattended-upgrades: the boot test's first apt step runs it, as the apt-daily-upgrade timer would.
      await inRoot(`${APT_ENV} apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd-sysv udev unattended-upgrades`);
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
      // GRUB as grub-install would leave it for BIOS on GPT: modules and core.img in @/boot/grub/i386-pc,
      // core.img's prefix naming the btrfs partition and the subvolume, the menu from update-grub.
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
          'mkdir -p /boot/grub/i386-pc',
          'cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst /usr/lib/grub/i386-pc/boot.img /boot/grub/i386-pc/',
          "grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img -p '(hd0,gpt2)/@/boot/grub' biosdisk part_gpt btrfs",
          'rm -f /etc/resolv.conf',
          'apt-get clean',
        ].join('\n'),
      );
      // grub-bios-setup on the image file: the device map names it (hd0); GRUB reads its GPT itself.
      const deviceMap = path.join(work, 'device.map');
      writeFileSync(deviceMap, `(hd0) ${image}\n`);
      await execa('/usr/lib/grub/i386-pc/grub-bios-setup', ['--device-map', deviceMap, '--directory', path.join(root, 'boot/grub/i386-pc'), image]);
      // update-grub cannot make the menu in a chroot on a loop device (10_linux skips file-backed
      // loop roots, and the kernel's root= would name the loop device): a hand-written entry boots
      // the system once, and update-grub runs there, on the machine's own /dev/vda2.
      writeFileSync(path.join(root, 'boot/grub/grub.cfg'), bootstrapMenu(uuid, kernelVersion(root)));
      writeFileSync(path.join(root, PROBE_STEP_DIRECTORY, 'step.sh'), 'set -e\nupdate-grub\n');
    });
    const first = await bootImage(image, path.join(work, 'first-boot.log'));
    if (first.steps[0]?.exitCode !== 0) throw new Error(`update-grub on the first boot failed:\n${first.log}`);
    await withImageTopLevel(image, work, async (top) => {
      const menu = readFileSync(path.join(top, '@/boot/grub/grub.cfg'), 'utf8');
      if (!menu.includes('rootflags=subvol=@ ')) throw new Error(`update-grub made no entry for @:\n${menu}`);
      rmSync(path.join(top, '@', PROBE_STEP_DIRECTORY, 'step.sh.taken'));
    });
    const partial = `${cached}.partial`;
    await execa('zstd', ['-q', '-1', '-T0', '-f', image, '-o', partial]);
    renameSync(partial, cached);
    for (const name of readdirSync(cacheDirectory())) {
      if (name.startsWith('boot-image-') && path.join(cacheDirectory(), name) !== cached) rmSync(path.join(cacheDirectory(), name), { force: true });
    }
    return cached;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Runs a shell script chrooted in the image's @, with /home, /proc, /sys,
 * /dev, /run and /tmp mounted, in private mount and PID namespaces (through
 * boot-be.sh): its mounts and processes end with it. Throws on a non-zero exit.
 */
async function chrootRun(device: string, uuid: string, work: string, script: string): Promise<void> {
  const newRoot = mkdtempSync(path.join(work, 'chroot.'));
  try {
    const result = await execa(
      'unshare',
      ['--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', '--', 'bash', path.join(REPOSITORY, 'test/harness/boot-be.sh'), device, uuid, '@', newRoot, '', '--', 'sh', '-c', script],
      { reject: false, extendEnv: false, env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LC_ALL: 'C' }, stdin: 'ignore', all: true },
    );
    if (result.exitCode !== 0) throw new Error(`in the image's root: ${script}\nexit ${result.exitCode}\n${result.all}`);
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

/** A grub.cfg good for the one boot that runs update-grub (see ensureBootImage). */
function bootstrapMenu(uuid: string, version: string): string {
  return [
    'serial --unit=0 --speed=115200',
    'terminal_input serial console',
    'terminal_output serial console',
    'set timeout=0',
    "menuentry 'first boot: update-grub' {",
    '  insmod part_gpt',
    '  insmod btrfs',
    `  search --no-floppy --fs-uuid --set=root ${uuid}`,
    `  linux /@/boot/vmlinuz-${version} root=UUID=${uuid} ro rootflags=subvol=@ ${KERNEL_COMMAND_LINE} quiet`,
    `  initrd /@/boot/initrd.img-${version}`,
    '}',
    '',
  ].join('\n');
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
  for (const line of log.split(/\r?\n/)) {
    const begin = /BOOTENV-PROBE-BEGIN phase=(early|late) root=(\S+) boot_id=(\S+) uptime=(\S+)/.exec(line);
    if (begin !== null) {
      const [, phase, source = '', bootId = '', uptime = ''] = begin;
      const subvolume = /\[\/?(.*)\]$/.exec(source)?.[1] ?? '';
      current = { phase: phase as 'early' | 'late', source, subvolume, bootId, uptimeSeconds: Number(uptime), exitCode: undefined, output: '' };
      output = [];
      continue;
    }
    if (current === undefined) continue;
    const out = /BOOTENV-OUT: (.*)$/.exec(line);
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

/**
 * Boots `image` once in qemu (TCG; the guest's reboot or power-off ends qemu
 * through -no-reboot) with the serial console written to `serialLog`, and
 * parses the probe's reports. qemu is killed (by its own PID, through execa)
 * after `timeoutSeconds`. The image must not be attached or mounted on the host.
 */
export async function bootImage(image: string, serialLog: string, timeoutSeconds = 600): Promise<BootResult> {
  rmSync(serialLog, { force: true });
  const started = Date.now();
  const result = await execa(
    'qemu-system-x86_64',
    [
      // q35: no floppy controller for the kernel and udev to probe.
      '-machine', 'q35', '-accel', 'tcg', '-cpu', 'max', '-smp', '2', '-m', '1024',
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
 * A private copy of a cached image, booted once per step. Host mounts happen
 * only between boots. Everything it creates is removed by close().
 */
export class BootMachine {
  private closed = false;
  private boots = 0;

  private constructor(
    readonly directory: string,
    readonly image: string,
    /** Where each boot's serial log is kept (test-artifacts/boot/...). */
    readonly artifacts: string,
  ) {}

  /** Unpacks `cachedImage` into a new directory under /var/tmp; serial logs go to `artifacts` (emptied first). */
  static async create(cachedImage: string, artifacts: string): Promise<BootMachine> {
    const directory = mkdtempSync('/var/tmp/bootenv-boot.');
    try {
      const image = path.join(directory, 'disk.img');
      await execa('zstd', ['-q', '-d', '-f', cachedImage, '-o', image]);
      rmSync(artifacts, { recursive: true, force: true });
      mkdirSync(artifacts, { recursive: true });
      return new BootMachine(directory, image, artifacts);
    } catch (error) {
      rmSync(directory, { recursive: true, force: true });
      throw error;
    }
  }

  /** Mounts the btrfs top level on the host (never while booted), runs `body`, unmounts and detaches. */
  withTopLevel<T>(body: (top: string) => Promise<T>): Promise<T> {
    return withImageTopLevel(this.image, this.directory, (top) => body(top));
  }

  /**
   * Boots once. `step` (shell, run by the probe with `sh -x`) is left in the
   * installed root for the probe; `late` makes the probe wait for
   * multi-user.target. The serial log is kept as `artifacts/NN-name.log`.
   */
  async boot(name: string, step: string | undefined, options: { late?: boolean; timeoutSeconds?: number } = {}): Promise<BootResult> {
    await this.withTopLevel(async (top) => {
      const directory = path.join(top, '@', PROBE_STEP_DIRECTORY);
      for (const file of ['step.sh', 'step.sh.taken', 'late']) rmSync(path.join(directory, file), { force: true });
      if (step !== undefined) writeFileSync(path.join(directory, 'step.sh'), step);
      if (options.late) writeFileSync(path.join(directory, 'late'), '');
    });
    this.boots += 1;
    const log = path.join(this.artifacts, `${String(this.boots).padStart(2, '0')}-${name}.log`);
    return bootImage(this.image, log, options.timeoutSeconds);
  }

  /** Removes the image and its directory (the serial logs stay). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    rmSync(this.directory, { recursive: true, force: true });
  }
}
