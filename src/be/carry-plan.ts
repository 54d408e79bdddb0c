/**
 * The carry's plan: which changes of the origin BE since the new BE was
 * snapshotted go into the new BE, and how. Inputs are the two deltas
 * (src/btrfs/send-changes.ts) — base → origin now, and new-base → the new BE
 * now, plus what the new BE changed by itself before an earlier carry — and
 * read-only views of the trees; the output is a list of operations for the
 * carry helper (src/sys/carry.ts) and a report. The rules, per path:
 *   - never carried: dpkg/apt/debconf/ucf state and logs, /etc/alternatives,
 *     deb-systemd-helper's state, GRUB's home, /tmp and
 *     the mount points of /proc, /sys, /dev, /run, the account databases'
 *     backups, the settings' `carry-exclude` paths; in mode `data` also /etc,
 *     /usr (but /usr/local), /boot, /bin, /sbin, /lib*, and every path a
 *     package owns in either BE (what dpkg installed is the system's, not
 *     data: a rollback keeps the older BE's packages whole);
 *   - a path the new BE did not change takes the origin's state (created,
 *     replaced, removed; a file as a reflinked copy with its owner, mode,
 *     times and xattrs; a hard-linked file with all its names, linked again);
 *   - a path both changed keeps the new BE's version, and the origin's is
 *     saved beside it as PATH.bootenv-origin (PATH.bootenv-origin.2, …) and
 *     reported; identical changes are no conflict;
 *   - /etc/fstab takes the origin's lines, rewritten for the new BE;
 *   - the account databases are merged entry by entry (./accounts.ts).
 * Paths are relative to the subvolume root ('' the root) and are byte
 * strings (one character per byte). Pure: every read goes through the views.
 */
import type { EntryChange, SubvolumeDelta } from '../btrfs/send-changes.js';
import { ACCOUNT_FILES, mergeAccountFile, type AccountClash } from './accounts.js';
import type { CarryMode } from './state.js';

export interface EntryFacts {
  kind: 'file' | 'directory' | 'symlink' | 'other';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  ino: bigint;
  nlink: number;
  rdev: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** A read-only view of one subvolume's tree. */
export interface TreeView {
  lstat(path: string): EntryFacts | undefined;
  /** Names in a directory. */
  list(path: string): string[];
  /** A regular file's bytes, or a symlink's target. */
  read(path: string): Buffer;
}

/** What the new BE changed by itself: exact paths, and trees it moved (everything below them). */
export interface TouchedPaths {
  exact: string[];
  trees: string[];
}

export interface PlanInput {
  mode: CarryMode;
  /** Further paths never carried (relative, from carry-exclude). */
  exclude: readonly string[];
  originDelta: SubvolumeDelta;
  newDelta: SubvolumeDelta;
  /** What the new BE changed by itself before the last carry into it. */
  touchedBefore: TouchedPaths;
  base: TreeView;
  newBase: TreeView;
  origin: TreeView;
  target: TreeView;
  /** Every name of an origin inode (a file with hard links). */
  namesOfInode(ino: bigint, path: string): string[];
  /** The origin's /etc/fstab as the new BE's. */
  rewriteFstab(text: string): string;
  /** A rollback's carry (CarryRecord.follow): the origin's dpkg database differs from the BE's by design, no warning. */
  follow?: boolean;
  /** Whether a package owns `path` in the origin or the new BE (dpkg's file lists); read in mode `data` only. */
  packageOwned?(path: string): boolean;
}

export type CarryOperation =
  /** Make `target` (new BE) a copy of `source` (origin): reflinked data, owner, mode, times, xattrs. */
  | { op: 'copy'; source: string; target: string }
  /** The same for the origin's version saved beside the new BE's: without setuid, setgid or file capabilities (it is kept to be read, not run). */
  | { op: 'save'; source: string; target: string }
  /** Make directory `target` with `source`'s owner, mode and xattrs (times later). */
  | { op: 'mkdir'; source: string; target: string }
  /** Give directory `target` the owner, mode and xattrs of `source`. */
  | { op: 'meta'; source: string; target: string }
  /** Give `target` the atime and mtime of `source`. */
  | { op: 'times'; source: string; target: string }
  /** Make `target` another name of `existing` (both in the new BE). */
  | { op: 'link'; existing: string; target: string }
  | { op: 'remove'; target: string }
  /** Replace `target`'s content, keeping its owner, mode and xattrs. */
  | { op: 'write'; target: string; content: Buffer };

export type ConflictKind =
  | 'changed-both'
  | 'removed-in-new'
  | 'removed-in-origin'
  | 'type-both'
  | 'metadata-both'
  | 'directory-kept'
  | 'directory-recreated'
  | 'accounts';

export interface CarryConflict {
  path: string;
  kind: ConflictKind;
  /** Where the origin's version was saved, or null when it was not (nothing to save, or a directory). */
  savedAs: string | null;
}

export interface CarryPlan {
  operations: CarryOperation[];
  /** Changes of the origin carried: entries created, replaced (content or metadata), removed. */
  changes: { created: number; modified: number; removed: number };
  /** Bytes of the files copied (shared, not written). */
  carriedBytes: number;
  conflicts: CarryConflict[];
  accounts: { added: string[]; changed: string[]; removed: string[]; clashes: AccountClash[] };
  /** Changed paths of the origin left out: package state and bootenv's own, or excluded by the settings. */
  skipped: { packageState: number; excluded: number };
  warnings: string[];
  /** What the new BE changed by itself up to now, for the next carry. */
  touched: TouchedPaths;
}

const PACKAGE_STATE = [
  'var/lib/dpkg', 'var/lib/apt', 'var/cache/apt', 'var/cache/debconf', 'var/lib/ucf', 'var/log/apt', 'var/log/dpkg.log',
  'var/log/alternatives.log', 'etc/alternatives', 'var/lib/systemd/deb-systemd-helper-enabled', 'var/lib/systemd/deb-systemd-helper-masked',
  'var/lib/systemd/deb-systemd-user-helper-enabled',
];
const NEVER = [
  'boot/grub', '.rootbe', 'tmp', 'run', 'proc', 'sys', 'dev', 'etc/.pwd.lock',
  ...ACCOUNT_FILES.map((file) => `etc/${file}-`),
];
/** In mode `data`: the system's trees, which hold no data of the machine's (/usr/local does). */
const SYSTEM_TREES = ['etc', 'usr', 'boot', 'bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'];
const FSTAB = 'etc/fstab';
const SAVED_SUFFIX = '.bootenv-origin';
/** Files compared byte for byte when both BEs changed them; larger ones count as different. */
const COMPARE_LIMIT = 16 * 1024 * 1024;

const under = (path: string, prefix: string) => path === prefix || path.startsWith(`${prefix}/`);
const parentOf = (path: string) => (path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '');
const join = (parent: string, name: string) => (parent === '' ? name : `${parent}/${name}`);
const depth = (path: string) => (path === '' ? 0 : path.split('/').length);
/** Parents before children (a prefix sorts first), byte order otherwise. */
const byPath = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** A times-only change that moved nothing but atime (a read) is no change; `now` and `before` are read only for those. */
function realChange(change: EntryChange, now: () => EntryFacts | undefined, before: () => EntryFacts | undefined): boolean {
  if (change.arrived || change.content || change.metadata) return true;
  const current = now();
  if (current === undefined || current.kind === 'directory') return false;
  const previous = before();
  return previous === undefined || current.mtimeNs !== previous.mtimeNs || current.ctimeNs !== previous.ctimeNs;
}

function walk(tree: TreeView, path: string, into: Set<string>): void {
  into.add(path);
  if (tree.lstat(path)?.kind !== 'directory') return;
  for (const name of tree.list(path)) walk(tree, join(path, name), into);
}

/**
 * The paths the origin changed: named by its delta (a read that moved only
 * atime is no change), with the whole subtrees of moved directories, on both
 * sides of the move. The other names of a hard-linked file are not among them:
 * the caller resolves those (PlanInput.namesOfInode).
 */
export function originCandidates(input: Pick<PlanInput, 'originDelta' | 'origin' | 'base'>): string[] {
  const { originDelta, origin, base } = input;
  const paths = new Set<string>();
  for (const [path, change] of originDelta.changed) if (realChange(change, () => origin.lstat(path), () => base.lstat(path))) paths.add(path);
  for (const path of originDelta.vacated) paths.add(path);
  for (const { from, to } of originDelta.moved) {
    walk(origin, to, paths);
    walk(base, from, paths);
  }
  return [...paths];
}

class Planner {
  private readonly removals = new Set<string>();
  private readonly creations: CarryOperation[] = [];
  private readonly links: CarryOperation[] = [];
  private readonly planned = new Set<string>();
  private readonly directoriesToTime = new Set<string>();
  private readonly copiedInodes = new Map<bigint, string>();
  private readonly exact: Set<string>;
  private readonly trees: string[];
  /** Directories whose entries the new BE changed. */
  private readonly changedDirectories = new Set<string>();
  readonly plan: CarryPlan;

  constructor(private readonly input: PlanInput) {
    this.exact = new Set(input.touchedBefore.exact);
    this.trees = [...input.touchedBefore.trees];
    for (const [path, change] of input.newDelta.changed) {
      if (realChange(change, () => input.target.lstat(path), () => input.newBase.lstat(path))) this.exact.add(path);
    }
    for (const path of input.newDelta.vacated) this.exact.add(path);
    for (const { from, to } of input.newDelta.moved) this.trees.push(from, to);
    for (const path of this.exact) this.changedDirectories.add(parentOf(path));
    this.plan = {
      operations: [],
      changes: { created: 0, modified: 0, removed: 0 },
      carriedBytes: 0,
      conflicts: [],
      accounts: { added: [], changed: [], removed: [], clashes: [] },
      skipped: { packageState: 0, excluded: 0 },
      warnings: [],
      touched: { exact: [...this.exact].sort(byPath), trees: [...new Set(this.trees)].sort(byPath) },
    };
  }

  private touchedByNew(path: string): boolean {
    return this.exact.has(path) || this.trees.some((tree) => under(path, tree));
  }

  private skipped(path: string): 'packageState' | 'excluded' | null {
    if (PACKAGE_STATE.some((prefix) => under(path, prefix))) return 'packageState';
    if (NEVER.some((prefix) => under(path, prefix))) return 'packageState';
    if (this.input.mode === 'data') {
      if (SYSTEM_TREES.some((prefix) => under(path, prefix)) && !under(path, 'usr/local')) return 'excluded';
      if (this.input.packageOwned?.(path) === true) return 'excluded';
    }
    if (this.input.exclude.some((prefix) => under(path, prefix))) return 'excluded';
    return null;
  }

  /** The origin's changed paths (originCandidates) and every name of a changed hard-linked file. */
  private candidates(): string[] {
    const { originDelta, origin } = this.input;
    const paths = new Set(originCandidates(this.input));
    for (const path of [...paths]) {
      const facts = origin.lstat(path);
      if (facts?.kind === 'file' && facts.nlink > 1) for (const name of this.input.namesOfInode(facts.ino, path)) paths.add(name);
    }
    if (originDelta.changed.has('var/lib/dpkg/status') && this.input.follow !== true) {
      this.plan.warnings.push("dpkg's database changed in the origin after the snapshot (dpkg run in place, e.g. BOOTENV=off): those package changes are not carried, only files outside dpkg's and apt's state");
    }
    return [...paths].sort(byPath);
  }

  build(): CarryPlan {
    const accountPaths = new Set(ACCOUNT_FILES.map((file) => `etc/${file}`));
    const accounts: string[] = [];
    for (const path of this.candidates()) {
      const skip = this.skipped(path);
      if (skip !== null) {
        this.plan.skipped[skip] += 1;
        continue;
      }
      if (path === FSTAB) this.fstab();
      else if (accountPaths.has(path)) accounts.push(path);
      else this.decide(path);
    }
    this.accountFiles(new Set(accounts));
    const removals = this.removalOperations();
    this.plan.operations = [...removals, ...this.creations, ...this.links, ...this.timeOperations()];
    return this.plan;
  }

  private conflict(path: string, kind: ConflictKind, savedAs: string | null = null): void {
    this.plan.conflicts.push({ path, kind, savedAs });
  }

  private decide(path: string): void {
    const { origin, target } = this.input;
    const o = origin.lstat(path);
    const n = target.lstat(path);
    const touched = this.touchedByNew(path);
    if (o === undefined) {
      if (n === undefined) return;
      if (touched) return this.conflict(path, 'removed-in-origin');
      this.removals.add(path);
      this.directoriesToTime.add(parentOf(path));
      return;
    }
    if (touched) return this.decideBoth(path, o, n);
    if (o.kind === 'directory') {
      if (n?.kind === 'directory') {
        if (this.input.originDelta.changed.get(path)?.metadata || o.mode !== n.mode || o.uid !== n.uid || o.gid !== n.gid) {
          this.creations.push({ op: 'meta', source: path, target: path });
          this.plan.changes.modified += 1;
        }
        this.directoriesToTime.add(path);
        return;
      }
      if (n !== undefined) this.removals.add(path);
      this.makeDirectory(path, path);
      this.plan.changes.created += 1;
      return;
    }
    if (n?.kind === 'directory') this.removals.add(path);
    this.copy(path, path, o);
    if (n === undefined) this.plan.changes.created += 1;
    else this.plan.changes.modified += 1;
  }

  /** A path the new BE changed too. */
  private decideBoth(path: string, o: EntryFacts, n: EntryFacts | undefined): void {
    if (n === undefined) {
      if (o.kind === 'directory') return this.conflict(path, 'removed-in-new');
      return this.conflict(path, 'removed-in-new', this.saveBeside(path, o));
    }
    if (o.kind === 'directory' && n.kind === 'directory') {
      if (this.input.originDelta.changed.get(path)?.metadata && (o.mode !== n.mode || o.uid !== n.uid || o.gid !== n.gid)) this.conflict(path, 'metadata-both');
      return;
    }
    if (o.kind === 'directory' || n.kind === 'directory') return this.conflict(path, 'type-both', this.saveBeside(path, o));
    if (this.identical(path, o, n)) return;
    this.conflict(path, 'changed-both', this.saveBeside(path, o));
  }

  private identical(path: string, o: EntryFacts, n: EntryFacts): boolean {
    if (o.kind !== n.kind || o.mode !== n.mode || o.uid !== n.uid || o.gid !== n.gid || o.size !== n.size || o.rdev !== n.rdev) return false;
    if (o.kind === 'other') return true;
    if (o.size > COMPARE_LIMIT) return false;
    return this.input.origin.read(path).equals(this.input.target.read(path));
  }

  /** Saves the origin's entry at `path` beside the new BE's; returns where. A directory is saved with its whole tree. */
  private saveBeside(path: string, o: EntryFacts): string {
    let saved = `${path}${SAVED_SUFFIX}`;
    for (let count = 2; this.input.target.lstat(saved) !== undefined || this.planned.has(saved); count++) saved = `${path}${SAVED_SUFFIX}.${count}`;
    if (o.kind === 'directory') {
      const tree = new Set<string>();
      walk(this.input.origin, path, tree);
      for (const source of [...tree].sort(byPath)) {
        const destination = `${saved}${source.slice(path.length)}`;
        const facts = this.input.origin.lstat(source) as EntryFacts;
        if (facts.kind === 'directory') this.makeDirectory(source, destination);
        else this.copy(source, destination, facts, 'save');
      }
    } else {
      this.copy(path, saved, o, 'save');
    }
    return saved;
  }

  /** Makes sure the directory above `path` exists in the new BE once the plan ran, making missing ones from the origin. */
  private ensureParent(path: string): void {
    const parent = parentOf(path);
    if (parent === path || this.planned.has(parent)) return;
    const n = this.input.target.lstat(parent);
    if (n?.kind === 'directory' && !this.removals.has(parent)) return;
    const o = this.input.origin.lstat(parent);
    if (o?.kind !== 'directory') return;
    this.ensureParent(parent);
    if (n !== undefined) this.removals.add(parent);
    this.makeDirectory(parent, parent);
    this.conflict(parent, 'directory-recreated');
  }

  private makeDirectory(source: string, destination: string): void {
    this.ensureParent(destination);
    this.creations.push({ op: 'mkdir', source, target: destination });
    this.planned.add(destination);
    this.directoriesToTime.add(destination);
    this.directoriesToTime.add(parentOf(destination));
  }

  private copy(source: string, destination: string, facts: EntryFacts, op: 'copy' | 'save' = 'copy'): void {
    this.ensureParent(destination);
    // Hard links are carried as links; a copy saved beside another file stands alone.
    const linked = op === 'copy' && facts.kind === 'file' && facts.nlink > 1 && source === destination;
    const first = linked ? this.copiedInodes.get(facts.ino) : undefined;
    if (first !== undefined) {
      this.links.push({ op: 'link', existing: first, target: destination });
    } else {
      this.creations.push({ op, source, target: destination });
      if (facts.kind === 'file') {
        this.plan.carriedBytes += facts.size;
        if (linked) this.copiedInodes.set(facts.ino, destination);
      }
    }
    this.planned.add(destination);
    this.directoriesToTime.add(parentOf(destination));
  }

  private fstab(): void {
    const { origin, base, target, rewriteFstab } = this.input;
    if (origin.lstat(FSTAB)?.kind !== 'file' || target.lstat(FSTAB)?.kind !== 'file') return this.decide(FSTAB);
    const wanted = Buffer.from(rewriteFstab(origin.read(FSTAB).toString('latin1')), 'latin1');
    const current = target.read(FSTAB);
    if (current.equals(wanted)) return;
    const untouched = base.lstat(FSTAB)?.kind === 'file' && current.equals(Buffer.from(rewriteFstab(base.read(FSTAB).toString('latin1')), 'latin1'));
    if (!untouched) return this.conflict(FSTAB, 'changed-both', this.saveBeside(FSTAB, origin.lstat(FSTAB) as EntryFacts));
    this.creations.push({ op: 'write', target: FSTAB, content: wanted });
    this.plan.changes.modified += 1;
  }

  /** The account databases the origin changed, in the order the refusals flow (passwd → shadow, subuid, subgid; group → gshadow). */
  private accountFiles(changed: ReadonlySet<string>): void {
    const { origin, base, target } = this.input;
    const refusedUsers = new Set<string>();
    const refusedGroups = new Set<string>();
    for (const file of ACCOUNT_FILES) {
      const path = `etc/${file}`;
      if (!changed.has(path)) continue;
      const o = origin.lstat(path);
      if (!this.touchedByNew(path) || o?.kind !== 'file' || target.lstat(path)?.kind !== 'file' || base.lstat(path)?.kind !== 'file') {
        this.decide(path);
        continue;
      }
      const refused = file === 'gshadow' ? refusedGroups : file === 'group' ? new Set<string>() : file === 'passwd' ? new Set<string>() : refusedUsers;
      let merge;
      try {
        merge = mergeAccountFile(file, base.read(path).toString('latin1'), origin.read(path).toString('latin1'), target.read(path).toString('latin1'), refused);
      } catch {
        this.conflict(path, 'changed-both', this.saveBeside(path, o));
        continue;
      }
      for (const name of merge.refused) (file === 'group' ? refusedGroups : refusedUsers).add(name);
      const content = Buffer.from(merge.text, 'latin1');
      if (!content.equals(target.read(path))) {
        this.creations.push({ op: 'write', target: path, content });
        this.plan.changes.modified += 1;
      }
      this.plan.accounts.added.push(...merge.added.map((name) => `${file}:${name}`));
      this.plan.accounts.changed.push(...merge.changed.map((name) => `${file}:${name}`));
      this.plan.accounts.removed.push(...merge.removed.map((name) => `${file}:${name}`));
      this.plan.accounts.clashes.push(...merge.clashes);
      if (merge.clashes.length > 0) this.conflict(path, 'accounts', this.saveBeside(path, o));
    }
  }

  /**
   * Removals, deepest first. A directory goes only if every entry the new
   * BE has in it goes too; otherwise it stays (with what the new BE put there).
   */
  private removalOperations(): CarryOperation[] {
    const operations: CarryOperation[] = [];
    const gone = new Set<string>();
    for (const path of [...this.removals].sort((a, b) => depth(b) - depth(a) || byPath(a, b))) {
      const facts = this.input.target.lstat(path);
      if (facts === undefined) continue;
      if (facts.kind === 'directory' && this.input.target.list(path).some((name) => !gone.has(join(path, name)))) {
        this.keepDirectory(path);
        continue;
      }
      gone.add(path);
      operations.push({ op: 'remove', target: path });
      if (!this.planned.has(path)) this.plan.changes.removed += 1;
    }
    return operations;
  }

  /**
   * A directory of the new BE that cannot go (the new BE put entries in it)
   * stays; what the origin has at its path instead is saved beside it.
   */
  private keepDirectory(path: string): void {
    const replacement = this.creations.findIndex((operation) => operation.target === path);
    if (replacement < 0) return this.conflict(path, 'directory-kept');
    this.creations.splice(replacement, 1);
    this.planned.delete(path);
    this.conflict(path, 'directory-kept', this.saveBeside(path, this.input.origin.lstat(path) as EntryFacts));
  }

  /** Directories whose entries or metadata the carry changed take the origin's times, unless the new BE changed their entries too. */
  private timeOperations(): CarryOperation[] {
    return [...this.directoriesToTime]
      .filter((path) => this.skipped(path) === null && !this.changedDirectories.has(path) && this.input.origin.lstat(path)?.kind === 'directory')
      .sort((a, b) => depth(b) - depth(a) || byPath(a, b))
      .map((path) => ({ op: 'times', source: path, target: path }));
  }
}

/** Plans a carry (see the file comment). */
export function planCarry(input: PlanInput): CarryPlan {
  return new Planner(input).build();
}
