/**
 * What a path in a .deb's tar members may be: pure checks that turn tar
 * member names and link targets into paths relative to the package root
 * ("usr/bin/x"), or refuse them — absolute names, `..` components, NUL bytes,
 * over-long names, symlinks whose relative target climbs out of the root,
 * hard links to anything but an earlier file, and entries placed below a
 * symlink of the same archive (a write through it would land elsewhere).
 */
import { malformed } from './ar.js';

/** PATH_MAX: no member of a real package comes near it. */
const MAX_PATH_LENGTH = 4096;

/**
 * "./usr/bin/x", "usr/bin/x/" → "usr/bin/x"; "./" and "." → "" (the root).
 * Throws PARSE for an absolute name, a `..` component, NUL or an over-long name.
 */
export function normalizeMemberPath(name: string, what: string): string {
  if (name.length > MAX_PATH_LENGTH) throw malformed(what, `a member name of ${name.length} characters`);
  if (name.includes('\0')) throw malformed(what, `member name ${JSON.stringify(name)} holds a NUL byte`);
  if (name.startsWith('/')) throw malformed(what, `absolute member name ${JSON.stringify(name)}`);
  const parts = name.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw malformed(what, `member name ${JSON.stringify(name)} climbs out with ..`);
  return parts.join('/');
}

/**
 * Where a relative symlink at `entryPath` points, as a root-relative path;
 * null for an absolute target (dpkg resolves those inside the root it
 * installs into). Throws PARSE when the target climbs above the root.
 */
export function symlinkTargetInRoot(entryPath: string, target: string, what: string): string | null {
  if (target === '' || target.includes('\0')) throw malformed(what, `symlink ${entryPath} has target ${JSON.stringify(target)}`);
  if (target.length > MAX_PATH_LENGTH) throw malformed(what, `symlink ${entryPath} has a target of ${target.length} characters`);
  if (target.startsWith('/')) return null;
  const resolved = entryPath.split('/').slice(0, -1);
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (resolved.length === 0) throw malformed(what, `symlink ${entryPath} -> ${target} points out of the package root`);
      resolved.pop();
    } else {
      resolved.push(part);
    }
  }
  return resolved.join('/');
}

/** Tracks the entries seen so far, for the checks that need the archive's earlier members. */
export class ArchivePaths {
  private readonly symlinks = new Set<string>();
  private readonly files = new Set<string>();

  constructor(private readonly what: string) {}

  /** Refuses an entry below a symlink of this archive. */
  checkParents(entryPath: string): void {
    const parts = entryPath.split('/');
    for (let length = 1; length < parts.length; length++) {
      const parent = parts.slice(0, length).join('/');
      if (this.symlinks.has(parent)) throw malformed(this.what, `${entryPath} lies below the symlink ${parent}`);
    }
  }

  /** A hard link must name a regular file that came earlier in the archive. */
  checkHardLink(entryPath: string, target: string): string {
    const normalized = normalizeMemberPath(target, this.what);
    if (!this.files.has(normalized)) throw malformed(this.what, `hard link ${entryPath} -> ${target} names no earlier file of the package`);
    return normalized;
  }

  addSymlink(entryPath: string): void {
    this.symlinks.add(entryPath);
  }

  addFile(entryPath: string): void {
    this.files.add(entryPath);
  }
}
