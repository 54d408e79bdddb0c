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
  suite: string;
  packages: readonly string[];
}

const PACKAGES = ['linux-image-amd64', 'grub2-common', 'grub-pc-bin', 'btrfs-progs', 'nodejs', 'man-db'];

/** Debian 12: nodejs 18.20, the oldest Node bootenv supports. */
export const BOOKWORM: BaseSpec = { suite: 'bookworm', packages: PACKAGES };

/** Debian 13: nodejs 20, GRUB 2.12. */
export const TRIXIE: BaseSpec = { suite: 'trixie', packages: PACKAGES };

export function cacheDirectory(): string {
  return process.env.BOOTENV_TEST_CACHE ?? path.join(REPOSITORY, '.cache/test');
}

export function baseTarball(spec: BaseSpec): string {
  const key = createHash('sha256').update(JSON.stringify({ ...spec, mirror: MIRROR, layout: 2 })).digest('hex').slice(0, 12);
  return path.join(cacheDirectory(), `base-${spec.suite}-${key}.tar.zst`);
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
    await execa('chroot', [root, 'apt-get', 'clean']);
    const partial = `${tarball}.partial`;
    await execa('sh', ['-c', 'tar --xattrs --xattrs-include="*" --acls --numeric-owner -C "$1" -cf - . | zstd -q -1 -T0 -o "$2" -f', 'sh', root, partial]);
    renameSync(partial, tarball);
    // Older bases of this suite (other package lists) are not needed any more.
    for (const name of readdirSync(cacheDirectory())) {
      if (name.startsWith(`base-${spec.suite}-`) && name.endsWith('.tar.zst') && path.join(cacheDirectory(), name) !== tarball) {
        rmSync(path.join(cacheDirectory(), name));
      }
    }
    return tarball;
  } finally {
    await unmountUnder(work);
    rmSync(work, { recursive: true, force: true });
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
