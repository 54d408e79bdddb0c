/**
 * The pure rules of shared subvolumes (./share.ts does the work): which
 * paths may be shared, what a shared path's subvolume is called, and which
 * files of packages lie under a path. A shared path leaves every rollback:
 * it is never the system itself (/, /etc, /usr, /boot), a virtual or
 * volatile filesystem (/proc, /sys, /dev, /run, /tmp), bootenv's own
 * mounts, or package state (dpkg's and apt's databases, debconf's), which
 * must roll back with the packages it describes.
 */
import { BootenvError } from '../errors.js';

/** Paths never shared, nor anything below them. */
const SYSTEM_PATHS = ['/etc', '/usr', '/boot', '/proc', '/sys', '/dev', '/run', '/tmp', '/.rootbe'];
/** Package state: never shared, nor anything below or above it. */
const PACKAGE_STATE_PATHS = ['/var/lib/dpkg', '/var/lib/apt', '/var/cache/debconf', '/var/lib/ucf'];
/** One path component: the characters that need no quoting in fstab, a subvolume name or a GRUB script. */
const COMPONENT = /^[A-Za-z0-9._+-]+$/;

/** Whether `path` is `ancestor` or below it (both absolute, normalized). */
export function isSameOrBelow(path: string, ancestor: string): boolean {
  return ancestor === '/' || path === ancestor || path.startsWith(`${ancestor}/`);
}

/**
 * Checks a path given to `beadm share` or `init --share` and returns it
 * normalized (one trailing slash dropped). Throws USAGE for a relative path,
 * `.` or `..`, an empty component, characters other than letters, digits and
 * `._+-`, `/`, and the system's and package state's paths.
 */
export function normalizeSharePath(path: string): string {
  if (!path.startsWith('/')) throw new BootenvError('USAGE', `${JSON.stringify(path)} is not an absolute path`, { hint: 'give the full path, e.g. /var/lib/postgresql' });
  const trimmed = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  if (trimmed === '/') throw new BootenvError('USAGE', '/ cannot be shared: it is what a boot environment is');
  const components = trimmed.slice(1).split('/');
  for (const component of components) {
    if (component === '' || component === '.' || component === '..') {
      throw new BootenvError('USAGE', `${JSON.stringify(path)} is not a plain path (no empty components, no . or ..)`);
    }
    if (!COMPONENT.test(component)) {
      throw new BootenvError('USAGE', `${JSON.stringify(path)} holds characters other than letters, digits and ._+- (fstab and subvolume names need them plain)`);
    }
  }
  const system = SYSTEM_PATHS.find((system) => isSameOrBelow(trimmed, system));
  if (system !== undefined) {
    throw new BootenvError('USAGE', `${trimmed} cannot be shared: ${system} is part of the system that a boot environment rolls back${system === '/.rootbe' ? " (bootenv's mount of the installed root)" : ''}`);
  }
  const state = PACKAGE_STATE_PATHS.find((state) => isSameOrBelow(trimmed, state) || isSameOrBelow(state, trimmed));
  if (state !== undefined) {
    throw new BootenvError('USAGE', `${trimmed} cannot be shared: ${state} is package state, which must roll back with the packages it describes`);
  }
  return trimmed;
}

/** The top-level subvolume a shared path lives in: "@" and its components joined by "_" (/var/lib/postgresql → @var_lib_postgresql). */
export function sharedSubvolumeName(path: string): string {
  return `@${path.slice(1).split('/').join('_')}`;
}

/**
 * Merged-/usr aliases of a root: top-level symlinks such as /bin → usr/bin,
 * given as [alias, target] pairs of absolute paths (/bin, /usr/bin).
 */
export type PathAliases = ReadonlyArray<readonly [string, string]>;

/** `path` with a leading alias replaced by what it stands for (/lib/x → /usr/lib/x). */
export function resolveAliases(path: string, aliases: PathAliases): string {
  for (const [alias, target] of aliases) {
    if (path === alias) return target;
    if (path.startsWith(`${alias}/`)) return `${target}${path.slice(alias.length)}`;
  }
  return path;
}

/**
 * The entries of one dpkg file list (/var/lib/dpkg/info/PACKAGE.list: one
 * path a line) that are at or below `path`, both through the aliases. The
 * caller drops those that are directories.
 */
export function listedPathsBelow(listText: string, path: string, aliases: PathAliases): string[] {
  const wanted = resolveAliases(path, aliases);
  return listText
    .split('\n')
    .filter((line) => line.startsWith('/'))
    .map((line) => resolveAliases(line, aliases))
    .filter((line) => line !== wanted && isSameOrBelow(line, wanted));
}

/** The package of a file list's name: PACKAGE.list or PACKAGE:ARCH.list; undefined for other files in dpkg's info directory. */
export function packageOfListFile(fileName: string): string | undefined {
  return fileName.endsWith('.list') ? fileName.slice(0, -'.list'.length) : undefined;
}
