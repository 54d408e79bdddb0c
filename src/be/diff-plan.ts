/**
 * What `beadm diff A B` reports, from facts gathered by ./diff.ts: the package
 * changes between the two dpkg databases (added, removed, upgraded,
 * downgraded, with both versions), the conffiles whose content differs, and
 * the files added, removed and changed that dpkg knows nothing of (in no
 * package's file list, not a diversion, outside dpkg's own database). Which
 * paths to look at comes from btrfs (what `btrfs send --no-data` names); this
 * module only classifies them. Pure.
 */
import { compareVersions } from '../deb/version.js';
import type { InstalledPackage } from '../apt/dpkg-status.js';

export type EntryKind = 'file' | 'directory' | 'symlink' | 'other';

/** One path's entry in one BE. */
export interface EntryFacts {
  kind: EntryKind;
  mode: number;
  uid: number;
  gid: number;
}

/** A path btrfs names as possibly different, with its entry in each BE and, when both are files or symlinks, whether their content is equal. */
export interface PathFacts {
  /** Absolute, as people read it. */
  path: string;
  a: EntryFacts | undefined;
  b: EntryFacts | undefined;
  /** Both regular files (bytes) or both symlinks (targets): equal? Undefined otherwise. */
  sameContent: boolean | undefined;
}

export interface PackageVersion {
  package: string;
  architecture: string;
  version: string;
}

export interface PackageChange {
  package: string;
  architecture: string;
  from: string;
  to: string;
}

export interface FileChange {
  path: string;
  kind: EntryKind;
  /** For a changed entry: what differs. */
  content?: boolean;
  metadata?: boolean;
  /** For a changed entry whose kind changed: its kind in A. */
  kindBefore?: EntryKind;
}

export interface DiffReport {
  from: string;
  to: string;
  packages: { added: PackageVersion[]; removed: PackageVersion[]; upgraded: PackageChange[]; downgraded: PackageChange[] };
  conffiles: Array<{ path: string; packages: string[]; change: 'modified' | 'added' | 'removed' }>;
  files: { added: FileChange[]; removed: FileChange[]; changed: FileChange[] };
  /** Paths that dpkg knows (package files, diversions, its database) that differ, or that btrfs says were rewritten: the package changes account for them. */
  packagedChanges: number;
}

export interface DiffInput {
  from: string;
  to: string;
  packagesA: ReadonlyMap<string, InstalledPackage>;
  packagesB: ReadonlyMap<string, InstalledPackage>;
  /** Paths dpkg knows in either BE (file lists, diversions), absolute, merged-/usr aliases resolved. */
  known: ReadonlySet<string>;
  /** Resolves merged-/usr aliases of a path (/bin/x → /usr/bin/x). */
  resolve: (path: string) => string;
  /** Times are no change, nor is a directory's list of entries (the entries are listed themselves). */
  paths: readonly PathFacts[];
  /** dpkg's paths (conffiles aside) that btrfs says changed, counted by the caller without looking at them; `paths` holds none of them. */
  packagedWritten?: number;
}

const DPKG_DATABASE = '/var/lib/dpkg';

function isBelow(path: string, directory: string): boolean {
  return path === directory || path.startsWith(`${directory}/`);
}

/** Whether `resolved` (merged-/usr aliases resolved) is one of dpkg's files or lies in its database. */
export function isPackaged(resolved: string, known: ReadonlySet<string>): boolean {
  return known.has(resolved) || isBelow(resolved, DPKG_DATABASE);
}

function versionOf(entry: InstalledPackage): PackageVersion {
  return { package: entry.package, architecture: entry.architecture, version: entry.version };
}

function byName<T extends { package: string; architecture: string }>(a: T, b: T): number {
  return a.package < b.package ? -1 : a.package > b.package ? 1 : a.architecture < b.architecture ? -1 : a.architecture > b.architecture ? 1 : 0;
}

/** The change of one path from A to B, or undefined when it is the same entry (times aside). */
function changeOf(facts: PathFacts): { side: 'added' | 'removed' | 'changed'; change: FileChange } | undefined {
  const { a, b, path } = facts;
  if (a === undefined && b === undefined) return undefined;
  if (a === undefined) return { side: 'added', change: { path, kind: b!.kind } };
  if (b === undefined) return { side: 'removed', change: { path, kind: a.kind } };
  if (a.kind !== b.kind) return { side: 'changed', change: { path, kind: b.kind, kindBefore: a.kind, content: true, metadata: true } };
  const metadata = a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid;
  const content = facts.sameContent === false;
  if (!metadata && !content) return undefined;
  return { side: 'changed', change: { path, kind: b.kind, content, metadata } };
}

export function planDiff(input: DiffInput): DiffReport {
  const added: PackageVersion[] = [];
  const removed: PackageVersion[] = [];
  const upgraded: PackageChange[] = [];
  const downgraded: PackageChange[] = [];
  for (const [key, entry] of input.packagesB) {
    const before = input.packagesA.get(key);
    if (before === undefined) {
      added.push(versionOf(entry));
      continue;
    }
    const order = compareVersions(before.version, entry.version);
    if (order < 0) upgraded.push({ package: entry.package, architecture: entry.architecture, from: before.version, to: entry.version });
    else if (order > 0) downgraded.push({ package: entry.package, architecture: entry.architecture, from: before.version, to: entry.version });
  }
  for (const [key, entry] of input.packagesA) if (!input.packagesB.has(key)) removed.push(versionOf(entry));

  const conffileOwners = new Map<string, Set<string>>();
  for (const packages of [input.packagesA, input.packagesB]) {
    for (const entry of packages.values()) {
      for (const conffile of entry.conffiles) {
        const resolved = input.resolve(conffile.path);
        const owners = conffileOwners.get(resolved) ?? new Set<string>();
        owners.add(entry.package);
        conffileOwners.set(resolved, owners);
      }
    }
  }

  const report: DiffReport = {
    from: input.from,
    to: input.to,
    packages: { added, removed, upgraded, downgraded },
    conffiles: [],
    files: { added: [], removed: [], changed: [] },
    packagedChanges: input.packagedWritten ?? 0,
  };
  for (const facts of input.paths) {
    const found = changeOf(facts);
    if (found === undefined) continue;
    const resolved = input.resolve(facts.path);
    const owners = conffileOwners.get(resolved);
    if (owners !== undefined && (found.side !== 'changed' || found.change.content === true)) {
      report.conffiles.push({ path: facts.path, packages: [...owners].sort(), change: found.side === 'changed' ? 'modified' : found.side });
    }
    if (isPackaged(resolved, input.known)) {
      report.packagedChanges++;
      continue;
    }
    report.files[found.side].push(found.change);
  }
  for (const list of [added, removed, upgraded, downgraded]) list.sort(byName);
  report.conffiles.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
  for (const list of Object.values(report.files)) list.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
  return report;
}
