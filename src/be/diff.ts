/**
 * `beadm diff A [B]`: what differs between two BEs (B defaults to the running
 * one). Both are snapshotted read-only under @bootenv/.carry/diff-ID/ for the
 * duration (a crash leaves them to the next session's sweep), and their
 * trees name every path whose entry may differ without reading file data:
 * the blocks written since they forked (../btrfs/tree-changes.ts, its way
 * to their common ancestor kept by ./ancestry.ts), or, when that ancestor is
 * unknown, `btrfs send --no-data -p`. Paths of dpkg's (conffiles aside) are
 * counted from that alone; the others are looked at: lstat in both, and a
 * byte comparison of the regular files btrfs says were written (a rewrite
 * with the same bytes is no change). The two dpkg databases are
 * read as files. Classification is ./diff-plan.ts.
 */
import { ancestryLinks } from './ancestry.js';
import { randomUuid } from './random-id.js';
import path from 'node:path';
import { parseDpkgStatus, type InstalledPackage } from '../apt/dpkg-status.js';
import { deleteSubvolume, snapshotSubvolume, subvolumeChanges, treeChanges } from '../btrfs/commands.js';
import type { Subvolume } from '../btrfs/parse.js';
import type { SubvolumeDelta } from '../btrfs/send-changes.js';
import { BootenvError } from '../errors.js';
import { listDirectory, listDirectoryBytesSync, lstatBytesSync, makeDirectory, readBytesSync, readTextIfExists, removeEmptyDirectory, sameBytesSync } from '../sys/fs.js';
import { withScope } from '../sys/scope.js';
import { displayPath } from './carry.js';
import { carryPath } from './carry-records.js';
import { isPackaged, planDiff, type DiffReport, type EntryFacts, type PathFacts } from './diff-plan.js';
import { bootEnvironmentSubvolumes, findBootEnvironment, requireState, type Options, type Session } from './session.js';
import { resolveAliases, packageOfListFile, type PathAliases } from './share-paths.js';
import { mergedUsrAliases } from './share.js';
import { openSession } from './transaction.js';

export type { DiffReport } from './diff-plan.js';

export interface DiffOptions extends Options {
  /** The BE compared to; default the running BE. */
  to?: string;
}

/** The BE `name`, or the running system's subvolume when `name` is undefined. Throws NOT_FOUND, INVALID_NAME. */
function subvolumeNamed(session: Session, name: string | undefined): { name: string; subvolume: Subvolume } {
  if (name !== undefined) return { name, subvolume: findBootEnvironment(session, name) };
  const booted = session.subvolumes.find((subvolume) => subvolume.path === session.probe.bootedSubvolume);
  if (booted === undefined) throw new BootenvError('NOT_FOUND', `the running system's subvolume ${session.probe.bootedSubvolume} is not in the subvolume list`);
  const environment = bootEnvironmentSubvolumes(session).find((entry) => entry.subvolume.uuid === booted.uuid);
  return { name: environment?.name ?? '(installed root)', subvolume: booted };
}

function factsOf(file: string): (EntryFacts & { size: number }) | undefined {
  const stats = lstatBytesSync(file);
  if (stats === undefined) return undefined;
  const kind = stats.isFile() ? 'file' : stats.isDirectory() ? 'directory' : stats.isSymbolicLink() ? 'symlink' : 'other';
  return { kind, mode: Number(stats.mode), uid: Number(stats.uid), gid: Number(stats.gid), size: Number(stats.size) };
}

/** Every path at or below `relative` in the tree at `root` (byte strings). */
function subtree(root: string, relative: string, into: Set<string>): void {
  into.add(relative);
  const stats = lstatBytesSync(path.join(root, relative));
  if (stats?.isDirectory() !== true) return;
  for (const name of listDirectoryBytesSync(path.join(root, relative))) subtree(root, relative === '' ? name : `${relative}/${name}`, into);
}

/** The paths btrfs names as possibly different (byte strings, relative), moved directories' subtrees on both sides and removed ones' included. */
export function candidatePaths(delta: SubvolumeDelta, rootA: string, rootB: string): Set<string> {
  const paths = new Set<string>([...delta.changed.keys(), ...delta.vacated]);
  for (const directory of delta.removedDirectories ?? []) subtree(rootA, directory, paths);
  for (const { from, to } of delta.moved) {
    subtree(rootA, from, paths);
    subtree(rootB, to, paths);
  }
  paths.delete('');
  return paths;
}

/** The entries at `relative` in both roots; `written`: btrfs says the file's data was written (its bytes are compared then). */
function compareEntries(rootA: string, rootB: string, relative: string, written: boolean): PathFacts {
  const a = factsOf(path.join(rootA, relative));
  const b = factsOf(path.join(rootB, relative));
  let sameContent: boolean | undefined;
  if (a?.kind === 'symlink' && b?.kind === 'symlink') {
    sameContent = readBytesSync(path.join(rootA, relative)).equals(readBytesSync(path.join(rootB, relative)));
  } else if (a?.kind === 'file' && b?.kind === 'file') {
    sameContent = a.size !== b.size ? false : written ? sameBytesSync(path.join(rootA, relative), path.join(rootB, relative)) : true;
  }
  const entry = (facts: typeof a): EntryFacts | undefined => (facts === undefined ? undefined : { kind: facts.kind, mode: facts.mode, uid: facts.uid, gid: facts.gid });
  return { path: displayPath(relative), a: entry(a), b: entry(b), sameContent };
}

/** Whether `a` and `b`, in two snapshots, are still the file they shared at the fork: same inode, size and change time. */
function sameFile(a: string, b: string): boolean {
  const x = lstatBytesSync(a);
  const y = lstatBytesSync(b);
  return x !== undefined && y !== undefined && x.ino === y.ino && x.size === y.size && x.ctimeNs === y.ctimeNs && x.mtimeNs === y.mtimeNs;
}

/**
 * Paths dpkg knows in the root at `root`: every package's file list and the
 * diversions' targets, merged-/usr aliases resolved. `readAlready`: a root
 * whose lists were read with the same aliases; a list that is the same file
 * there is not read again.
 */
async function knownPaths(root: string, aliases: PathAliases, into: Set<string>, readAlready?: string): Promise<void> {
  const info = path.join(root, 'var/lib/dpkg/info');
  for (const name of await listDirectory(info)) {
    if (packageOfListFile(name) === undefined) continue;
    if (readAlready !== undefined && sameFile(path.join(readAlready, 'var/lib/dpkg/info', name), path.join(info, name))) continue;
    const text = (await readTextIfExists(path.join(info, name))) ?? '';
    for (const line of text.split('\n')) if (line.startsWith('/')) into.add(resolveAliases(line, aliases));
  }
  const diversions = (await readTextIfExists(path.join(root, 'var/lib/dpkg/diversions'))) ?? '';
  for (const line of diversions.split('\n')) if (line.startsWith('/')) into.add(resolveAliases(line, aliases));
}

/** Compares BE `from` with BE `options.to` (default: the running BE). Reads only; its two snapshots are gone when it returns. Throws NOT_FOUND, INVALID_NAME, COMMAND_FAILED. */
export async function diffBootEnvironments(from: string, options: DiffOptions = {}): Promise<DiffReport> {
  return withScope(async (scope) => {
    const session = await openSession(scope, options, 'allow');
    requireState(session);
    const a = subvolumeNamed(session, from);
    const b = subvolumeNamed(session, options.to);
    const id = `diff-${randomUuid()}`;
    const snapshotA = carryPath(id, 'a');
    const snapshotB = carryPath(id, 'b');
    const directory = path.join(session.top, path.dirname(snapshotA));
    await makeDirectory(directory, 0o700);
    scope.always(`remove ${path.dirname(snapshotA)}`, () => removeEmptyDirectory(directory));
    await snapshotSubvolume(path.join(session.top, a.subvolume.path), path.join(session.top, snapshotA), 'read-only');
    scope.always(`delete ${snapshotA}`, () => deleteSubvolume(path.join(session.top, snapshotA), false));
    await snapshotSubvolume(path.join(session.top, b.subvolume.path), path.join(session.top, snapshotB), 'read-only');
    scope.always(`delete ${snapshotB}`, () => deleteSubvolume(path.join(session.top, snapshotB), false));
    const rootA = path.join(session.top, snapshotA);
    const rootB = path.join(session.top, snapshotB);

    // bootenv-changes reads the trees while the dpkg databases are read here: on a cold cache both wait on the disk.
    const changes = treeChanges(rootA, rootB, ancestryLinks(session.state, session.subvolumes)).then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
    let outcome: { value: SubvolumeDelta | undefined } | { error: unknown } | undefined;
    const aliasesA = await mergedUsrAliases(rootA);
    const aliasesB = await mergedUsrAliases(rootB);
    const resolve = (file: string): string => resolveAliases(resolveAliases(file, aliasesB), aliasesA);
    const known = new Set<string>();
    let packagesA: Map<string, InstalledPackage>;
    let packagesB: Map<string, InstalledPackage>;
    try {
      await knownPaths(rootA, aliasesA, known);
      await knownPaths(rootB, aliasesB, known, JSON.stringify(aliasesA) === JSON.stringify(aliasesB) ? rootA : undefined);
      packagesA = parseDpkgStatus((await readTextIfExists(path.join(rootA, 'var/lib/dpkg/status'))) ?? '');
      packagesB = parseDpkgStatus((await readTextIfExists(path.join(rootB, 'var/lib/dpkg/status'))) ?? '');
    } finally {
      // Never delete the snapshots under a helper still reading them.
      outcome = await changes;
    }
    if ('error' in outcome) throw outcome.error;
    const delta = outcome.value ?? (await subvolumeChanges(rootA, rootB));
    const conffiles = new Set<string>();
    for (const packages of [packagesA, packagesB]) for (const entry of packages.values()) for (const conffile of entry.conffiles) conffiles.add(resolve(conffile.path));
    // dpkg's own files (conffiles aside) are only counted: what btrfs says of them is enough, no lstat or read.
    let packagedWritten = 0;
    const facts: PathFacts[] = [];
    for (const relative of [...candidatePaths(delta, rootA, rootB)].sort()) {
      const change = delta.changed.get(relative);
      const resolved = resolve(displayPath(relative));
      if (isPackaged(resolved, known) && !conffiles.has(resolved)) {
        if (change === undefined || change.arrived || change.content || change.metadata || change.movedFrom !== null) packagedWritten++;
        continue;
      }
      const written = change === undefined || change.arrived || change.content || change.movedFrom !== null;
      facts.push(compareEntries(rootA, rootB, relative, written));
    }
    return planDiff({ from: a.name, to: b.name, packagesA, packagesB, known, resolve, paths: facts, packagedWritten });
  });
}
