/**
 * Sandboxes for integration tests: a sparse image file on a loop device with a
 * fresh btrfs holding the cached Debian base, laid out the way installers do
 * (Ubuntu: @ and @home; Debian: @rootfs; flat: the system at the top level),
 * with bootenv installed where the package puts it. "Booting" a subvolume runs
 * a command chrooted in it inside private mount and PID namespaces (see
 * boot-be.sh); its mounts and processes die with it.
 *
 * Everything a sandbox creates (temp dir, loop device, host mounts) is undone
 * by close(), which tests call in afterAll/finally; assertNothingLeft() checks it.
 * This module imports no vitest: the demo (test/demo.ts, run by plain node)
 * uses it too. The vitest hooks around it are in use-sandbox.ts.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { execa, type Result } from 'execa';
import { REPOSITORY } from './base.js';
import { readBootMenu } from './grub-menu.js';

export type Layout = 'ubuntu' | 'debian' | 'flat';

/** Whether a subvolume path (as `btrfs subvolume list` prints it) is a BE's: directly under @bootenv/, not the carry's snapshots in @bootenv/.carry. */
export function isBootEnvironmentPath(subvolume: string): boolean {
  return /^@bootenv\/[^./][^/]*$/.test(subvolume);
}

/**
 * Installs bootenv's files into the root at `root` where the package puts
 * them: beadm, the GRUB script, the APT hooks and configuration, and the
 * diversion of /usr/bin/dpkg to the wrapper.
 */
export async function installBootenv(root: string): Promise<void> {
  const files: Array<[string, string, string]> = [
    ['dist/beadm.js', 'usr/lib/bootenv/beadm.js', '0755'],
    ['dist/beadm-bundle.js', 'usr/lib/bootenv/beadm-bundle.js', '0644'],
    ['dist/bootenv-dedupe', 'usr/lib/bootenv/bootenv-dedupe', '0755'],
    ['dist/bootenv-carry', 'usr/lib/bootenv/bootenv-carry', '0755'],
    ['dist/bootenv-boot-carry', 'usr/lib/bootenv/bootenv-boot-carry', '0755'],
    ['dist/bootenv-changes', 'usr/lib/bootenv/bootenv-changes', '0755'],
    ['hooks/grub.d/09_bootenv', 'etc/grub.d/09_bootenv', '0755'],
    ['hooks/apt/apt-hook', 'usr/lib/bootenv/apt-hook', '0755'],
    ['hooks/apt/apt.conf', 'usr/lib/bootenv/apt.conf', '0644'],
    ['hooks/bootenv.conf', 'etc/bootenv/bootenv.conf', '0644'],
    ['hooks/tmpfiles.d/bootenv.conf', 'usr/lib/tmpfiles.d/bootenv.conf', '0644'],
  ];
  for (const [source, target, mode] of files) {
    await execa('install', ['-D', '-m', mode, path.join(REPOSITORY, source), path.join(root, target)]);
  }
  await execa('ln', ['-sfn', 'apt-hook', path.join(root, 'usr/lib/bootenv/dpkg')]);
  await execa('ln', ['-sfn', '/usr/lib/bootenv/beadm.js', path.join(root, 'usr/sbin/beadm')]);
  // As the package's preinst does: the real dpkg diverted to dpkg.distrib, the wrapper at /usr/bin/dpkg.
  await execa('chroot', [root, 'dpkg-divert', '--package', 'bootenv', '--add', '--rename', '--divert', '/usr/bin/dpkg.distrib', '/usr/bin/dpkg'], { stdout: 'ignore' });
  await execa('ln', ['-sfn', '/usr/lib/bootenv/apt-hook', path.join(root, 'usr/bin/dpkg')]);
  await execa('ln', ['-sfn', '/usr/lib/bootenv/apt.conf', path.join(root, 'etc/apt/apt.conf.d/50bootenv')]);
  await execa('ln', ['-sfn', '/run/bootenv/pending/apt.conf', path.join(root, 'etc/apt/apt.conf.d/51bootenv-pending')]);
}

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface BootResult extends RunResult {
  /** What the initramfs printed on the console (bootenv's carry, when one was pending). */
  console: string;
}

export class Sandbox {
  private closed = false;

  private constructor(
    readonly directory: string,
    readonly image: string,
    readonly loop: string,
    readonly uuid: string,
    readonly layout: Layout,
  ) {}

  /** The installed root's subvolume path ('' for flat). */
  get installedRoot(): string {
    return { ubuntu: '@', debian: '@rootfs', flat: '' }[this.layout];
  }

  /** `withBootenv: false` leaves bootenv out (to install it from the .deb). */
  static async create(tarball: string, layout: Layout, options: { withBootenv?: boolean; sizeGiB?: number } = {}): Promise<Sandbox> {
    const sizeGiB = options.sizeGiB ?? 4;
    const directory = mkdtempSync('/var/tmp/bootenv-test.');
    const image = path.join(directory, 'disk.img');
    let loop: string | undefined;
    try {
      await execa('truncate', ['-s', `${sizeGiB}G`, image]);
      loop = (await execa('losetup', ['--find', '--show', image])).stdout.trim();
      await execa('mkfs.btrfs', ['-q', loop]);
      const uuid = (await execa('blkid', ['-s', 'UUID', '-o', 'value', loop])).stdout.trim();
      const sandbox = new Sandbox(directory, image, loop, uuid, layout);
      await sandbox.withTopLevel(async (top) => {
        const root = layout === 'flat' ? top : path.join(top, sandbox.installedRoot);
        if (layout !== 'flat') await execa('btrfs', ['subvolume', 'create', root]);
        if (layout === 'ubuntu') await execa('btrfs', ['subvolume', 'create', path.join(top, '@home')]);
        await execa('sh', ['-c', 'zstd -q -d -c "$1" | tar --xattrs --xattrs-include="*" --acls --numeric-owner -C "$2" -xf -', 'sh', tarball, root]);
        const rootOptions = layout === 'flat' ? 'defaults' : `defaults,subvol=${sandbox.installedRoot}`;
        const fstab = [
          '# /etc/fstab: static file system information.',
          `UUID=${uuid} / btrfs ${rootOptions} 0 1`,
          ...(layout === 'ubuntu' ? [`UUID=${uuid} /home btrfs defaults,subvol=@home 0 2`] : []),
          '',
        ].join('\n');
        await execa('sh', ['-c', 'printf "%s" "$1" > "$2"', 'sh', fstab, path.join(root, 'etc/fstab')]);
        if (options.withBootenv ?? true) await installBootenv(root);
      });
      return sandbox;
    } catch (error) {
      if (loop !== undefined) await execa('losetup', ['-d', loop], { reject: false });
      rmSync(directory, { recursive: true, force: true });
      throw error;
    }
  }

  /** Mounts the top level on the host for inspection, runs `body`, unmounts. */
  async withTopLevel<T>(body: (top: string) => Promise<T>): Promise<T> {
    const top = mkdtempSync(path.join(this.directory, 'top.'));
    await execa('mount', ['-t', 'btrfs', '-o', 'subvolid=5', this.loop, top]);
    try {
      return await body(top);
    } finally {
      await execa('umount', [top]);
      rmdirSync(top);
    }
  }

  /**
   * Boots `subvolume` (mounted as /; the carry the initramfs would run, when
   * one is pending; then the btrfs and bind lines of its own fstab) in a
   * private mount namespace and runs argv chrooted there. `setup` lines are
   * extra shell run before chroot with $NEWROOT set; `env` reaches the carry
   * too.
   */
  async boot(subvolume: string, argv: readonly string[], options: { setup?: string; env?: Record<string, string>; input?: string } = {}): Promise<BootResult> {
    const newRoot = mkdtempSync(path.join(this.directory, 'boot.'));
    const consoleLog = `${newRoot}.console`;
    try {
      const result: Result = await execa(
        'unshare',
        // A PID namespace of its own: when the boot's first process ends, the kernel kills
        // everything still running in it, as a power cut would; no boot leaves processes behind.
        ['--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', '--', 'bash', path.join(REPOSITORY, 'test/harness/boot-be.sh'), this.loop, this.uuid, subvolume, newRoot, options.setup ?? '', '--', ...argv],
        {
          reject: false,
          // A booted system starts with a clean environment, not the test runner's.
          extendEnv: false,
          env: {
            PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
            HOME: '/root',
            LC_ALL: 'C',
            BOOTENV_BOOT_CARRY: path.join(REPOSITORY, 'dist/bootenv-boot-carry'),
            BOOTENV_CONSOLE: consoleLog,
            ...options.env,
          },
          ...(options.input === undefined ? { stdin: 'ignore' } : { input: options.input }) },
      );
      return { exitCode: result.exitCode ?? -1, stdout: String(result.stdout), stderr: String(result.stderr), console: existsSync(consoleLog) ? readFileSync(consoleLog, 'utf8') : '' };
    } finally {
      // The namespace's mounts are gone with it; rmdir (never rm -r) proves the directory is empty.
      rmdirSync(newRoot);
      rmSync(consoleLog, { force: true });
    }
  }

  /** `beadm ARGS` in the booted `subvolume`. */
  beadm(subvolume: string, args: readonly string[], options: { setup?: string; env?: Record<string, string> } = {}): Promise<RunResult> {
    return this.boot(subvolume, ['/usr/sbin/beadm', ...args], options);
  }

  /** Subvolume paths as the host's `btrfs subvolume list` prints them. */
  async subvolumes(): Promise<string[]> {
    return this.withTopLevel(async (top) => {
      const { stdout } = await execa('btrfs', ['subvolume', 'list', top]);
      return stdout
        .split('\n')
        .filter(Boolean)
        .map((line) => line.replace(/^.* path /, ''));
    });
  }

  /** The BE subvolumes (`@bootenv/NAME`, not the carry's snapshots), as the host's `btrfs subvolume list` prints them. */
  async bootEnvironments(): Promise<string[]> {
    return (await this.subvolumes()).filter(isBootEnvironmentPath);
  }

  /**
   * Package → `STATUS VERSION` (dpkg's db:Status-Abbrev, e.g. `ii 1.0`) of the packages named
   * `prefix…` that dpkg knows in `subvolume`, read from the host with `dpkg-query --admindir`;
   * packages dpkg only remembers as not installed are left out. Throws when dpkg-query fails.
   */
  async packages(subvolume: string, prefix = 'bootenv-t-'): Promise<Record<string, string>> {
    return this.withTopLevel(async (top) => {
      const { stdout } = await execa('dpkg-query', [`--admindir=${path.join(top, subvolume, 'var/lib/dpkg')}`, '-f', '${Package} ${db:Status-Abbrev} ${Version}\n', '-W']);
      const packages: Record<string, string> = {};
      for (const line of stdout.split('\n')) {
        const [name, status, version] = line.split(/\s+/);
        if (name?.startsWith(prefix) && status !== 'un') packages[name] = `${status} ${version}`;
      }
      return packages;
    });
  }

  /** Reads a file at a path from the top level (e.g. `@/boot/grub/grub.cfg`). */
  async readFile(relative: string): Promise<string> {
    return this.withTopLevel(async (top) => readFileSync(path.join(top, relative), 'utf8'));
  }

  /** The boot menu GRUB reads from the installed root `root`'s home: its grub.cfg and the entries.cfg it sources (./grub-menu.ts). */
  async readBootMenu(root = '@'): Promise<string> {
    return this.withTopLevel(async (top) => readBootMenu(path.join(top, root)));
  }

  /** Mount points on the host that show this sandbox's filesystem. */
  async hostMounts(): Promise<string[]> {
    const { stdout } = await execa('findmnt', ['-rn', '-S', this.loop, '-o', 'TARGET'], { reject: false });
    return stdout.split('\n').filter(Boolean);
  }

  /** Detaches the loop device and removes the sandbox directory. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const mount of (await this.hostMounts()).reverse()) {
      if (mount.startsWith(this.directory)) await execa('umount', [mount], { reject: false });
    }
    const remaining = await this.hostMounts();
    if (remaining.length > 0) throw new Error(`sandbox ${this.directory} is still mounted at ${remaining.join(', ')}; not removing it`);
    await execa('losetup', ['-d', this.loop], { reject: false });
    rmSync(this.directory, { recursive: true, force: true });
  }

  /**
   * Throws if anything of this sandbox is still mounted or attached. Once close() has detached
   * the loop device, its name may already serve another test file's image (they run side by
   * side): mounts are then looked for by this sandbox's image, not by that name.
   */
  async assertNothingLeft(): Promise<void> {
    const { stdout } = await execa('losetup', ['-j', this.image]);
    const attached = stdout.trim() !== '';
    if (this.closed && attached) throw new Error(`loop device still attached: ${stdout}`);
    if (!attached) return;
    const mounts = await this.hostMounts();
    if (mounts.length > 0) throw new Error(`left mounted: ${mounts.join(', ')}`);
  }
}
