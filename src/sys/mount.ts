/**
 * Mounts and unmounts. Every mount is made through a Scope and registers its
 * undo the moment it exists, with one of two lifetimes: `operation` mounts (the
 * btrfs top level, GRUB's home, a chroot's /proc, /sys, /dev for
 * grub-mkconfig) are unmounted, newest first, however the operation ends;
 * `kept` mounts (`beadm mount`, the apt transaction's chroot, this boot's
 * pending BE) outlive a committed scope and are unmounted only if it aborts.
 */
import { promises as fs } from 'node:fs';
import { run } from './exec.js';
import { makePrivateDirectory, makeTemporaryDirectory, removeEmptyDirectory } from './fs.js';
import { readMountTable } from './mountinfo.js';
import type { Scope } from './scope.js';

/** bootenv's runtime directory (0755: apt reads pending/apt.conf in it as any user). */
export const RUNTIME_DIRECTORY = '/run/bootenv';
/** Where bootenv makes its short-lived mount points: root's alone (0700), so no other user reaches a BE through them. */
const PRIVATE_MOUNTS = `${RUNTIME_DIRECTORY}/private`;

export type MountLifetime = 'operation' | 'kept';

/**
 * Mount options for a BE that is not the running root: its setuid programs
 * (an older BE holds the ones from before the last security update) and its
 * device nodes give nobody anything.
 */
export const NOSUID_NODEV = 'nosuid,nodev';

function registerUnmount(scope: Scope, target: string, lifetime: MountLifetime, recursive: boolean): void {
  const undo = () => unmount(target, recursive);
  if (lifetime === 'kept') scope.onAbort(`unmount ${target}`, undo);
  else scope.always(`unmount ${target}`, undo);
}

/** Mounts a btrfs filesystem with the given options (e.g. `subvolid=5`, `subvol=/@bootenv/x`). */
export async function mountBtrfs(scope: Scope, device: string, target: string, options: string, lifetime: MountLifetime): Promise<void> {
  await run(['mount', '-t', 'btrfs', '-o', options, device, target]);
  registerUnmount(scope, target, lifetime, false);
}

/** Mounts `spec` (a device, or UUID=… as in fstab) of filesystem `type` with `options` (fstab's field, e.g. umask=0077). */
export async function mountFilesystem(scope: Scope, spec: string, target: string, type: string, options: string, lifetime: MountLifetime): Promise<void> {
  await run(['mount', '-t', type, '-o', options, spec, target]);
  registerUnmount(scope, target, lifetime, false);
}

export interface BindOptions {
  /** With the mounts below `source`. */
  recursive?: boolean;
  /** Per-mount flags for the bind, e.g. NOSUID_NODEV. */
  options?: string;
}

/**
 * Binds `source` at `target`. The bind is made a slave of its source (it
 * gets what is mounted there later, and nothing mounted or unmounted in it
 * reaches back): on a systemd host every mount is shared, and a bind of a
 * shared mount is its peer, so mounting efivarfs inside a chroot's /sys, or
 * unmounting its /dev/pts, would otherwise happen on the host too.
 */
export async function bindMount(scope: Scope, source: string, target: string, lifetime: MountLifetime, bind: BindOptions = {}): Promise<void> {
  const recursive = bind.recursive === true;
  const before = await mountsAt(target);
  try {
    // One mount(8) makes the bind and then the slave (util-linux 2.23+ applies propagation flags after the mount it makes).
    await run(['mount', recursive ? '--rbind' : '--bind', ...(bind.options === undefined ? [] : ['-o', bind.options]), recursive ? '--make-rslave' : '--make-slave', source, target]);
  } catch (error) {
    // The bind may have been made before the step after it failed: then it goes again.
    if ((await mountsAt(target)) > before) await unmount(target, recursive);
    throw error;
  }
  registerUnmount(scope, target, lifetime, recursive);
}

/** How many mounts the mount table has at `target` (stacked ones counted). */
async function mountsAt(target: string): Promise<number> {
  return (await readMountTable()).filter((mount) => mount.mountPoint === target).length;
}

async function mountTmpfs(scope: Scope, target: string, options: string, lifetime: MountLifetime): Promise<void> {
  await run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', target]);
  registerUnmount(scope, target, lifetime, false);
}

/** Unmounts `target` (with the mounts below it when `recursive`). */
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
 * Mounts btrfs `device` with `options` on a fresh directory under
 * /run/bootenv/private (root's alone) for the duration of `scope`. Returns
 * the mount point.
 */
export async function mountBtrfsTemporarily(scope: Scope, device: string, options: string, label: string): Promise<string> {
  await makePrivateDirectory(PRIVATE_MOUNTS);
  const target = await makeTemporaryDirectory(`${PRIVATE_MOUNTS}/${label}.`);
  scope.always(`remove ${target}`, () => removeEmptyDirectory(target));
  await mountBtrfs(scope, device, target, options, 'operation');
  return target;
}

export interface ChrootOptions {
  /** Bind the host's /tmp (apt's --recursive directories live there) instead of a fresh tmpfs. */
  hostTmp?: boolean;
  /** Host directories bound at the same path inside (e.g. /var/cache/apt/archives). */
  binds?: readonly string[];
  /** `kept` for a chroot that spans processes (the apt transaction); default `operation`. */
  lifetime?: MountLifetime;
}

/**
 * Prepares `root` for running a program chrooted in it: /proc, /sys, /dev (with
 * /dev/pts) bound from the host, a fresh tmpfs /run, /tmp (fresh or the
 * host's), and `binds`. Returns the mount points in the order they were made.
 */
export async function mountChrootFilesystems(scope: Scope, root: string, options: ChrootOptions = {}): Promise<string[]> {
  const lifetime = options.lifetime ?? 'operation';
  const steps: Array<[string, (target: string) => Promise<void>]> = [
    ['/proc', (target) => bindMount(scope, '/proc', target, lifetime)],
    ['/sys', (target) => bindMount(scope, '/sys', target, lifetime)],
    ['/dev', (target) => bindMount(scope, '/dev', target, lifetime, { recursive: true })],
    ['/run', (target) => mountTmpfs(scope, target, 'mode=0755', lifetime)],
    ['/tmp', (target) => (options.hostTmp ? bindMount(scope, '/tmp', target, lifetime, { recursive: true }) : mountTmpfs(scope, target, 'mode=1777', lifetime))],
    ...(options.binds ?? []).map((source): [string, (target: string) => Promise<void>] => [source, (target) => bindMount(scope, source, target, lifetime)]),
  ];
  const made: string[] = [];
  for (const [directory, mount] of steps) {
    await fs.mkdir(`${root}${directory}`, { recursive: true });
    await mount(`${root}${directory}`);
    made.push(`${root}${directory}`);
  }
  return made;
}
