/**
 * What changed in a subvolume since a snapshot of it, from the commands of
 * `btrfs send -p BASE CURRENT` (src/btrfs/send-stream.ts): the stream is
 * replayed on a tree of names (new inodes appear under orphan names and are
 * renamed into place; removed directories are renamed away, emptied and
 * removed; a renamed file may come as link-then-unlink), and what remains is
 * a set of paths of the current tree whose entry is new there or changed,
 * and a set of paths of the base whose entry is no longer there. Entries the
 * stream never names are the base's, unchanged. Pure; throws PARSE on a
 * stream that contradicts itself (a name used after its removal, a
 * directory removed while not empty).
 */
import { BootenvError } from '../errors.js';
import type { SendCommand, SendTime } from './send-stream.js';

export interface EntryChange {
  /** The base held no entry at this path that is this one: created, linked, or moved here. */
  arrived: boolean;
  /** Where this entry was in the base, when it was moved here (itself or with a directory above it). */
  movedFrom: string | null;
  /** Its data changed (write, update_extent, clone, truncate, fallocate). */
  content: boolean;
  /** Its mode, owner, xattrs or inode flags changed. */
  metadata: boolean;
  /** Its times as the stream last set them; alone, maybe only atime moved (a read), which is no change. */
  times: { atime: SendTime; mtime: SendTime; ctime: SendTime } | null;
}

export interface SubvolumeDelta {
  /** Paths of the current tree (relative, '' the root) whose entry is new there or changed. */
  changed: Map<string, EntryChange>;
  /** Paths of the base whose entry is gone from there (removed, or moved away). */
  vacated: Set<string>;
  /** Entries moved: everything below `to` now came from below `from` (for a directory, its whole subtree). */
  moved: Array<{ from: string; to: string }>;
  /**
   * Directories of the base that are gone, whose paths below are not all in
   * `vacated` (the tree reader, ./tree-changes.ts, names only the top; a send
   * stream names every one): the caller walks the base there.
   */
  removedDirectories?: Set<string>;
}

const GONE = Symbol('gone');

/**
 * Whether moving `from` to `to` is only what the move of a directory above
 * it did: `moves` maps each moved path to where it went. Looks at the
 * directories above `from`, not at every move (a moved subtree's entries are
 * many).
 */
export function movedWithDirectory(moves: ReadonlyMap<string, readonly string[]>, from: string, to: string): boolean {
  for (let slash = from.lastIndexOf('/'); slash > 0; slash = from.lastIndexOf('/', slash - 1)) {
    if (moves.get(from.slice(0, slash))?.some((outer) => to === `${outer}${from.slice(slash)}`) === true) return true;
  }
  return false;
}

/** Adds the move of `from` to `to` to `moves`. */
export function addMove(moves: Map<string, string[]>, from: string, to: string): void {
  moves.set(from, [...(moves.get(from) ?? []), to]);
}

class Name {
  readonly children = new Map<string, Name | typeof GONE>();
  content = false;
  metadata = false;
  times: EntryChange['times'] = null;

  constructor(
    public name: string,
    public parent: Name | null,
    /** Its path in the base; null for an inode the stream created. */
    readonly basePath: string | null,
  ) {}
}

function split(path: string): { parent: string; name: string } {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? { parent: '', name: path } : { parent: path.slice(0, slash), name: path.slice(slash + 1) };
}

function join(parent: string, name: string): string {
  return parent === '' ? name : `${parent}/${name}`;
}

/** Replays one send stream; feed it every command in order, then call finish(). */
export class ChangeTracker {
  private readonly root = new Name('', null, '');
  private readonly removed = new Set<string>();
  private started = false;
  private finished = false;

  command(command: SendCommand): void {
    if (command.type === 'end') {
      this.finished = true;
      return;
    }
    if (this.finished) throw new BootenvError('PARSE', 'send stream: a command after END');
    if (!this.started) {
      if (command.type !== 'snapshot') throw new BootenvError('PARSE', `send stream: expected an incremental stream (snapshot first), got ${command.type}`);
      this.started = true;
      return;
    }
    switch (command.type) {
      case 'snapshot':
      case 'subvol':
        throw new BootenvError('PARSE', `send stream: a second ${command.type} command`);
      case 'mkfile':
      case 'mkdir':
      case 'mknod':
      case 'mkfifo':
      case 'mksock':
      case 'symlink':
      case 'link': {
        if (command.type === 'link') this.lookup(command.target);
        this.attach(command.path, new Name('', null, null));
        return;
      }
      case 'rename': {
        const entry = this.lookup(command.path);
        this.detach(entry);
        this.attach(command.to, entry);
        return;
      }
      case 'unlink':
      case 'rmdir': {
        const entry = this.lookup(command.path);
        if ([...entry.children.values()].some((child) => child !== GONE)) throw new BootenvError('PARSE', `send stream: ${command.type} of ${JSON.stringify(command.path)}, which is not empty`);
        this.detach(entry);
        if (entry.basePath !== null) this.removed.add(entry.basePath);
        return;
      }
      case 'write':
      case 'update_extent':
      case 'encoded_write':
      case 'clone':
      case 'truncate':
      case 'fallocate':
        this.lookup(command.path).content = true;
        return;
      case 'chmod':
      case 'chown':
      case 'set_xattr':
      case 'remove_xattr':
      case 'fileattr':
      case 'enable_verity':
        this.lookup(command.path).metadata = true;
        return;
      case 'utimes':
        this.lookup(command.path).times = { atime: command.atime, mtime: command.mtime, ctime: command.ctime };
        return;
    }
  }

  /** The delta. Throws PARSE when the stream did not end with END. */
  finish(): SubvolumeDelta {
    if (!this.finished) throw new BootenvError('PARSE', 'send stream: no END command');
    const delta: SubvolumeDelta = { changed: new Map(), vacated: new Set(this.removed), moved: [] };
    const moves = new Map<string, string[]>();
    const visit = (entry: Name, path: string) => {
      const moved = entry.basePath !== null && entry.basePath !== path;
      if (moved) {
        delta.vacated.add(entry.basePath as string);
        // Only the topmost entry of a moved subtree is listed; the rest moved with it.
        if (!movedWithDirectory(moves, entry.basePath as string, path)) {
          delta.moved.push({ from: entry.basePath as string, to: path });
          addMove(moves, entry.basePath as string, path);
        }
      }
      if (entry.basePath === null || moved || entry.content || entry.metadata || entry.times !== null) {
        delta.changed.set(path, {
          arrived: entry.basePath === null || moved,
          movedFrom: moved ? entry.basePath : null,
          content: entry.content,
          metadata: entry.metadata,
          times: entry.times,
        });
      }
      for (const [name, child] of entry.children) if (child !== GONE) visit(child, join(path, name));
    };
    visit(this.root, '');
    return delta;
  }

  /** The entry now at `path`, made on first sight as the base's entry there. */
  private lookup(path: string): Name {
    let entry = this.root;
    if (path === '') return entry;
    for (const name of path.split('/')) {
      const child = entry.children.get(name);
      if (child === GONE) throw new BootenvError('PARSE', `send stream: ${JSON.stringify(path)} is used after it was removed or moved away`);
      if (child !== undefined) {
        entry = child;
        continue;
      }
      if (entry.basePath === null) throw new BootenvError('PARSE', `send stream: ${JSON.stringify(path)} is used, but a new directory on its way holds no such entry`);
      const made = new Name(name, entry, join(entry.basePath, name));
      entry.children.set(name, made);
      entry = made;
    }
    return entry;
  }

  private detach(entry: Name): void {
    if (entry.parent === null) throw new BootenvError('PARSE', 'send stream: the root is renamed or removed');
    entry.parent.children.set(entry.name, GONE);
    entry.parent = null;
  }

  private attach(path: string, entry: Name): void {
    const { parent, name } = split(path);
    const directory = this.lookup(parent);
    if (directory.children.get(name) instanceof Name) throw new BootenvError('PARSE', `send stream: ${JSON.stringify(path)} is made where an entry already is`);
    entry.name = name;
    entry.parent = directory;
    directory.children.set(name, entry);
  }
}

/** The delta of a whole stream's commands. */
export function deltaOf(commands: Iterable<SendCommand>): SubvolumeDelta {
  const tracker = new ChangeTracker();
  for (const command of commands) tracker.command(command);
  return tracker.finish();
}
