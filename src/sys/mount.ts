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

/**
 * Prepares `root` for running a program chrooted in it: /proc, /sys, /dev (with
 * /dev/pts) bound from the host, and fresh tmpfs /run and /tmp. Every mount's
 * undo is registered in `scope` as soon as it exists.
 */
export async function mountChrootFilesystems(scope: Scope, root: string): Promise<void> {
  const binds: Array<[string, boolean]> = [
    ['/proc', false],
    ['/sys', false],
    ['/dev', true],
  ];
  for (const [source, recursive] of binds) {
    const target = `${root}${source}`;
    await fs.mkdir(target, { recursive: true });
    await bindMount(source, target, recursive);
    scope.always(`unmount ${target}`, () => unmount(target, recursive));
  }
  for (const tmpfs of ['/run', '/tmp']) {
    const target = `${root}${tmpfs}`;
    await fs.mkdir(target, { recursive: true });
    await mountTmpfs(target, tmpfs === '/tmp' ? 'mode=1777' : 'mode=0755');
    scope.always(`unmount ${target}`, () => unmount(target));
  }
}
