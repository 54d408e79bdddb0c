/**
 * The debootstrapped Debian base every integration sandbox starts from, built
 * once and cached as a tarball under .cache/test/ (or $BOOTENV_TEST_CACHE),
 * keyed by suite and package list: a fresh checkout (CI) builds it once per
 * run, a developer's later runs reuse it.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

/** The checkout: the nearest directory above this file (or its bundle in dist/) holding package.json. */
export const REPOSITORY = findRepository(path.dirname(fileURLToPath(import.meta.url)));

function findRepository(start: string): string {
  for (let directory = start; directory !== path.dirname(directory); directory = path.dirname(directory)) {
    if (existsSync(path.join(directory, 'package.json')) && existsSync(path.join(directory, 'hooks'))) return directory;
  }
  throw new Error(`no bootenv checkout above ${start}`);
}
export const MIRROR = process.env.BOOTENV_TEST_MIRROR ?? 'http://deb.debian.org/debian';

export interface BaseSpec {
  /** Names the cached tarball (default: the suite). */
  name?: string;
  suite: string;
  packages: readonly string[];
  /** Installed with apt-get in the debootstrapped root afterwards (debootstrap's resolver cannot take every package). */
  extraPackages?: readonly string[];
}

const PACKAGES = ['linux-image-amd64', 'grub2-common', 'grub-pc-bin', 'btrfs-progs', 'nodejs', 'man-db'];

/** Debian 12: nodejs 18.20, the oldest Node bootenv supports. */
export const BOOKWORM: BaseSpec = { suite: 'bookworm', packages: PACKAGES };

/**
 * Debian 12 with the other programs that drive apt's package manager
 * (unattended-upgrades through python-apt, aptitude, PackageKit) and the
 * other packages' apt hooks that look at the running root (needrestart,
 * apt-listchanges, etckeeper): for the front-end tests only, so that their
 * hooks stay out of every other test's apt runs.
 */
export const BOOKWORM_FRONTENDS: BaseSpec = {
  name: 'bookworm-frontends',
  suite: 'bookworm',
  packages: PACKAGES,
  extraPackages: ['unattended-upgrades', 'aptitude', 'packagekit', 'packagekit-tools', 'needrestart', 'apt-listchanges', 'etckeeper'],
};

/** Debian 13: nodejs 20, GRUB 2.12. */
export const TRIXIE: BaseSpec = { suite: 'trixie', packages: PACKAGES };

export function cacheDirectory(): string {
  return process.env.BOOTENV_TEST_CACHE ?? path.join(REPOSITORY, '.cache/test');
}

export function baseTarball(spec: BaseSpec): string {
  const { name, ...keyed } = spec;
  const key = createHash('sha256').update(JSON.stringify({ ...keyed, mirror: MIRROR, layout: 2 })).digest('hex').slice(0, 12);
  return path.join(cacheDirectory(), `base-${name ?? spec.suite}-${key}.tar.zst`);
}

/** Whether `file` is a cached tarball of the base named like `spec` (of any package list). */
function isTarballOf(spec: BaseSpec, file: string): boolean {
  return new RegExp(`^base-${spec.name ?? spec.suite}-[0-9a-f]{12}\\.tar\\.zst$`).test(file);
}

/** Builds the base tarball unless it is cached; returns its path. */
export async function ensureBase(spec: BaseSpec): Promise<string> {
  const tarball = baseTarball(spec);
  if (existsSync(tarball)) return tarball;
  mkdirSync(cacheDirectory(), { recursive: true });
  const work = mkdtempSync(path.join(cacheDirectory(), 'build.'));
  try {
    const root = path.join(work, 'root');
    await execa(
      'debootstrap',
      ['--variant=minbase', `--include=${spec.packages.join(',')}`, spec.suite, root, MIRROR],
      { stdout: 'ignore', stderr: 'pipe' },
    );
    // What a GRUB install would leave: GRUB's home and its defaults (serial console for the boot tests).
    mkdirSync(path.join(root, 'boot/grub'), { recursive: true });
    writeFileSync(
      path.join(root, 'etc/default/grub'),
      'GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_DISTRIBUTOR=Debian\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="console=ttyS0"\nGRUB_TERMINAL=console\n',
    );
    writeFileSync(path.join(root, 'etc/hostname'), 'sandbox\n');
    if (spec.extraPackages !== undefined && spec.extraPackages.length > 0) await installExtraPackages(root, spec.extraPackages);
    await execa('chroot', [root, 'apt-get', 'clean']);
    const partial = `${tarball}.partial`;
    await execa('sh', ['-c', 'tar --xattrs --xattrs-include="*" --acls --numeric-owner -C "$1" -cf - . | zstd -q -1 -T0 -o "$2" -f', 'sh', root, partial]);
    renameSync(partial, tarball);
    // Older bases of this suite (other package lists) are not needed any more.
    for (const name of readdirSync(cacheDirectory())) {
      if (isTarballOf(spec, name) && path.join(cacheDirectory(), name) !== tarball) {
        rmSync(path.join(cacheDirectory(), name));
      }
    }
    return tarball;
  } finally {
    await unmountUnder(work);
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * apt-get install of `packages` chrooted in a fresh debootstrapped `root`, with
 * /proc and /dev for their maintainer scripts and a policy-rc.d that starts no
 * service; everything mounted is unmounted again.
 */
async function installExtraPackages(root: string, packages: readonly string[]): Promise<void> {
  const policy = path.join(root, 'usr/sbin/policy-rc.d');
  writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  await execa('mount', ['-t', 'proc', 'proc', path.join(root, 'proc')]);
  try {
    await execa('mount', ['--rbind', '/dev', path.join(root, 'dev')]);
    try {
      await execa('chroot', [root, 'apt-get', 'install', '-y', '-q', '--no-install-recommends', ...packages], {
        env: { DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C' },
        stdout: 'ignore',
      });
    } finally {
      await execa('umount', ['--recursive', path.join(root, 'dev')]);
    }
  } finally {
    await execa('umount', [path.join(root, 'proc')]);
    rmSync(policy, { force: true });
  }
}

/** Unmounts whatever a failed debootstrap left mounted below `directory` (deepest first). */
async function unmountUnder(directory: string): Promise<void> {
  const mountPoints = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((mountPoint) => mountPoint.startsWith(`${directory}/`))
    .sort((a, b) => b.length - a.length);
  for (const mountPoint of mountPoints) await execa('umount', ['--lazy', mountPoint]);
}
