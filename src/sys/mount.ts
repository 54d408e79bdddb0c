/**
 * Mounts and unmounts. Temporary mounts (the btrfs top level, GRUB's home, the
 * chroot's /proc, /sys, /dev) are made through a Scope so that they are
 * unmounted, newest first, however the operation ends. Persistent mounts
 * (`beadm mount`) are the caller's to keep.
 */
import { promises as fs } from 'node:fs';
import { run } from './exec.js';
import { makeTemporaryDirectory, removeEmptyDirectory } from './fs.js';
import type { Scope } from './scope.js';

/** Where bootenv makes its private, short-lived mount points. */
export const RUNTIME_DIRECTORY = '/run/bootenv';

/** Mounts a btrfs filesystem with the given options (e.g. `subvolid=5`, `subvol=/@bootenv/x`). */
export async function mountBtrfs(device: string, target: string, options: string): Promise<void> {
  await run(['mount', '-t', 'btrfs', '-o', options, device, target]);
}

export async function bindMount(source: string, target: string, recursive = false): Promise<void> {
  await run(['mount', recursive ? '--rbind' : '--bind', source, target]);
}

export async function mountTmpfs(target: string, options = 'mode=0755'): Promise<void> {
  await run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', target]);
}

export async function unmount(target: string, recursive = false): Promise<void> {
  await run(recursive ? ['umount', '--recursive', target] : ['umount', target]);
}

/**
 * Detaches a mount that a running process still uses (apt keeps the dpkg lock
 * files of the admin directory it planned against open until it exits); the
 * kernel lets go of it when the last file is closed.
 */
export async function detachMount(target: string): Promise<void> {
  await run(['umount', '--lazy', target]);
}

/**
 * Mounts btrfs `device` with `options` on a fresh directory under /run/bootenv
 * and registers its unmount and removal in `scope`. Returns the mount point.
 */
export async function mountBtrfsTemporarily(scope: Scope, device: string, options: string, label: string): Promise<string> {
  const target = await makeTemporaryDirectory(`${RUNTIME_DIRECTORY}/${label}.`);
  scope.always(`remove ${target}`, () => removeEmptyDirectory(target));
  await mountBtrfs(device, target, options);
  scope.always(`unmount ${target}`, () => unmount(target));
  return target;
}

export interface ChrootOptions {
  /** Bind the host's /tmp (apt's --recursive directories live there) instead of a fresh tmpfs. */
  hostTmp?: boolean;
  /** Host directories bound at the same path inside (e.g. /var/cache/apt/archives). */
  binds?: readonly string[];
  /** Keep the mounts when the scope commits (a transaction spanning processes); default: always undo. */
  persist?: boolean;
}

/**
 * Prepares `root` for running a program chrooted in it: /proc, /sys, /dev (with
 * /dev/pts) bound from the host, a fresh tmpfs /run, /tmp (fresh or the
 * host's), and `binds`. Every mount's undo is registered in `scope` as soon as
 * it exists. Returns the mount points in the order they were made.
 */
export async function mountChrootFilesystems(scope: Scope, root: string, options: ChrootOptions = {}): Promise<string[]> {
  const made: string[] = [];
  const register = (target: string, recursive: boolean) => {
    made.push(target);
    const undo = () => unmount(target, recursive);
    if (options.persist) scope.onAbort(`unmount ${target}`, undo);
    else scope.always(`unmount ${target}`, undo);
  };
  const steps: Array<[string, () => Promise<void>, boolean]> = [
    ['/proc', () => bindMount('/proc', `${root}/proc`), false],
    ['/sys', () => bindMount('/sys', `${root}/sys`), false],
    ['/dev', () => bindMount('/dev', `${root}/dev`, true), true],
    ['/run', () => mountTmpfs(`${root}/run`, 'mode=0755'), false],
    ['/tmp', () => (options.hostTmp ? bindMount('/tmp', `${root}/tmp`, true) : mountTmpfs(`${root}/tmp`, 'mode=1777')), options.hostTmp === true],
  ];
  for (const [directory, mount, recursive] of steps) {
    await fs.mkdir(`${root}${directory}`, { recursive: true });
    await mount();
    register(`${root}${directory}`, recursive);
  }
  for (const source of options.binds ?? []) {
    const target = `${root}${source}`;
    await fs.mkdir(target, { recursive: true });
    await bindMount(source, target);
    register(target, false);
  }
  return made;
}
