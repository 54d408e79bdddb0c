/**
 * What differs between two subvolumes that share an ancestor, from the
 * items bootenv-changes (src/native/bootenv-changes.c) reads out of their
 * trees: the inodes that have an item in a tree block newer than the fork,
 * on either side, with their inode items, names (refs), directory entries
 * and hashes of their extents and xattrs. An inode of both sides that
 * existed at the fork (same number, same creation generation, not newer than
 * the fork) is the same file: its names, data and metadata are compared. Any
 * other is a removal from A or an arrival in B. A name a directory lost is a
 * path of A gone (with whatever was below it, which the caller walks).
 * Pure: the same SubvolumeDelta send-changes.ts makes of a send stream, but
 * without times (a time alone is no change to anyone who reads this), and
 * naming of a removed directory only the top (`removedDirectories`).
 * Throws PARSE on output that is cut short or malformed.
 */
import { BootenvError } from '../errors.js';
import { addMove, movedWithDirectory, type EntryChange, type SubvolumeDelta } from './send-changes.js';

const INODE_ITEM = 1;
const INODE_REF = 12;
const INODE_EXTREF = 13;
const DIR_INDEX = 96;
/** The root directory of every subvolume. */
const ROOT_DIRECTORY = 256;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
/** A directory entry's file type for a directory (BTRFS_FT_DIR). */
const FT_DIR = 2;

/** The fields compared, as numbers (exact below 2^53, beyond any inode number, generation or size seen). */
interface InodeItem {
  generation: number;
  size: number;
  uid: number;
  gid: number;
  mode: number;
  rdev: number;
  flags: number;
}

interface Inode {
  item?: InodeItem;
  refs: Array<{ parent: number; name: string }>;
  /** Directory entries by name (latin1: bytes as they are): the entry's inode number, or -1 for another subvolume. */
  entries: Map<string, number>;
  /** The entries' names that are directories (the entry's own file type). */
  directoryEntries?: Set<string>;
  extents?: bigint;
  xattrs?: bigint;
}

interface Side {
  inodes: Map<number, Inode>;
  /** Directories' paths (relative, '' the root). */
  directories: Map<number, string>;
}

export type TreeChanges = { related: false } | { related: true; forkGeneration: number; sides: [Side, Side] };

function cut(): BootenvError {
  return new BootenvError('PARSE', 'bootenv-changes: output cut short');
}

/** The u64 at `at`, as a number; PARSE at 2^53 or more (never an inode number, a generation or a size). */
function u64(buffer: Buffer, at: number): number {
  const high = buffer.readUInt32LE(at + 4);
  if (high > 0x1fffff) throw new BootenvError('PARSE', `bootenv-changes: ${buffer.readBigUInt64LE(at)} is out of range`);
  return high * 0x100000000 + buffer.readUInt32LE(at);
}

function inodeOf(side: Side, objectid: number): Inode {
  let inode = side.inodes.get(objectid);
  if (inode === undefined) {
    inode = { refs: [], entries: new Map() };
    side.inodes.set(objectid, inode);
  }
  return inode;
}

/** The names an INODE_REF (key offset: the parent) or INODE_EXTREF item at [start, end) of `output` holds. */
function addRefs(inode: Inode, type: number, parent: number, output: Buffer, start: number, end: number): void {
  let at = start;
  while (at < end) {
    if (type === INODE_REF) {
      if (at + 10 > end) throw cut();
      const length = output.readUInt16LE(at + 8);
      if (at + 10 + length > end) throw cut();
      inode.refs.push({ parent, name: output.toString('latin1', at + 10, at + 10 + length) });
      at += 10 + length;
    } else {
      if (at + 18 > end) throw cut();
      const length = output.readUInt16LE(at + 16);
      if (at + 18 + length > end) throw cut();
      inode.refs.push({ parent: u64(output, at), name: output.toString('latin1', at + 18, at + 18 + length) });
      at += 18 + length;
    }
  }
}

/** Parses bootenv-changes' whole output (the records its header describes). Throws PARSE. */
export function parseTreeChanges(output: Buffer): TreeChanges {
  if (output.length === 0) throw cut();
  if (output[0] === 0x55 /* U */) {
    if (output.length !== 1) throw new BootenvError('PARSE', 'bootenv-changes: output after U');
    return { related: false };
  }
  if (output[0] !== 0x47 /* G */ || output.length < 9) throw new BootenvError('PARSE', 'bootenv-changes: no fork generation first');
  const forkGeneration = u64(output, 1);
  const sides: [Side, Side] = [
    { inodes: new Map(), directories: new Map() },
    { inodes: new Map(), directories: new Map() },
  ];
  let at = 9;
  const need = (bytes: number) => {
    if (at + bytes > output.length) throw cut();
  };
  const sideAt = (offset: number): Side => {
    const side = sides[output[offset] as number];
    if (side === undefined) throw new BootenvError('PARSE', `bootenv-changes: side ${output[offset]}`);
    return side;
  };
  for (;;) {
    need(1);
    const record = output[at++];
    if (record === 0x45 /* E */) {
      if (at !== output.length) throw new BootenvError('PARSE', 'bootenv-changes: output after E');
      return { related: true, forkGeneration, sides };
    }
    if (record === 0x49 /* I */) {
      need(22);
      const side = sideAt(at);
      const objectid = u64(output, at + 1);
      const type = output[at + 9] as number;
      const length = output.readUInt32LE(at + 18);
      const data = at + 22;
      need(22 + length);
      const inode = inodeOf(side, objectid);
      if (type === INODE_ITEM) {
        if (length < 72) throw cut();
        inode.item = {
          generation: u64(output, data),
          size: u64(output, data + 16),
          uid: output.readUInt32LE(data + 44),
          gid: output.readUInt32LE(data + 48),
          mode: output.readUInt32LE(data + 52),
          rdev: u64(output, data + 56),
          flags: u64(output, data + 64),
        };
      } else if (type === INODE_REF || type === INODE_EXTREF) {
        addRefs(inode, type, type === INODE_REF ? u64(output, at + 10) : 0, output, data, data + length);
      } else if (type === DIR_INDEX) {
        // btrfs_dir_item: location key (objectid, type, offset), transid, data_len, name_len, type; then the name.
        if (length < 30) throw cut();
        const nameLength = output.readUInt16LE(data + 27);
        if (30 + nameLength > length) throw cut();
        const name = output.toString('latin1', data + 30, data + 30 + nameLength);
        inode.entries.set(name, output[data + 8] === INODE_ITEM ? u64(output, data) : -1);
        if (output[data + 29] === FT_DIR) (inode.directoryEntries ??= new Set()).add(name);
      } else {
        throw new BootenvError('PARSE', `bootenv-changes: item type ${type}`);
      }
      at = data + length;
      continue;
    }
    if (record === 0x48 /* H */) {
      need(25);
      const inode = inodeOf(sideAt(at), u64(output, at + 1));
      inode.extents = output.readBigUInt64LE(at + 9);
      inode.xattrs = output.readBigUInt64LE(at + 17);
      at += 25;
      continue;
    }
    if (record === 0x50 /* P */) {
      need(13);
      const side = sideAt(at);
      const objectid = u64(output, at + 1);
      const length = output.readUInt32LE(at + 9);
      at += 13;
      need(length);
      side.directories.set(objectid, output.toString('latin1', at, at + length));
      at += length;
      continue;
    }
    throw new BootenvError('PARSE', `bootenv-changes: record ${record}`);
  }
}

function join(parent: string, name: string): string {
  return parent === '' ? name : `${parent}/${name}`;
}

/** The paths of `inode` (number `objectid`) in `side`: one per name; the root is ''. */
function pathsOf(side: Side, objectid: number, inode: Inode): string[] {
  if (objectid === ROOT_DIRECTORY) return [''];
  const paths: string[] = [];
  for (const { parent, name } of inode.refs) {
    const directory = side.directories.get(parent);
    if (directory === undefined) throw new BootenvError('PARSE', `bootenv-changes: no path for directory ${parent}`);
    paths.push(join(directory, name));
  }
  return paths;
}

function isDirectory(item: InodeItem | undefined): boolean {
  return item !== undefined && (item.mode & S_IFMT) === S_IFDIR;
}

/**
 * The delta from side A (the base) to side B (the current tree), as
 * send-changes.ts defines it. Paths below a directory in
 * `removedDirectories` are not all listed: the caller walks A there.
 */
export function deltaOfTrees(changes: Extract<TreeChanges, { related: true }>): SubvolumeDelta {
  const [a, b] = changes.sides;
  const removedDirectories = new Set<string>();
  const delta: SubvolumeDelta = { changed: new Map(), vacated: new Set(), moved: [], removedDirectories };
  const arrive = (path: string, change: Omit<EntryChange, 'times'>) => {
    if (!delta.changed.has(path)) delta.changed.set(path, { ...change, times: null });
  };
  const objectids = new Set([...a.inodes.keys(), ...b.inodes.keys()]);
  for (const objectid of objectids) {
    const before = a.inodes.get(objectid);
    const after = b.inodes.get(objectid);
    const pathsA = before?.item === undefined ? [] : pathsOf(a, objectid, before);
    const pathsB = after?.item === undefined ? [] : pathsOf(b, objectid, after);
    const itemA = before?.item;
    const itemB = after?.item;
    if (before !== undefined && after !== undefined && itemA !== undefined && itemB !== undefined && itemA.generation === itemB.generation && itemA.generation <= changes.forkGeneration) {
      // A directory's size is the length of its names: its entries are compared below, name by name.
      const content = !isDirectory(itemB) && (itemA.size !== itemB.size || before.extents !== after.extents);
      const metadata = itemA.mode !== itemB.mode || itemA.uid !== itemB.uid || itemA.gid !== itemB.gid || itemA.rdev !== itemB.rdev || itemA.flags !== itemB.flags || before.xattrs !== after.xattrs;
      const gone = pathsA.filter((path) => !pathsB.includes(path));
      let moves = 0;
      for (const path of pathsB) {
        if (pathsA.includes(path)) {
          if (content || metadata) delta.changed.set(path, { arrived: false, movedFrom: null, content, metadata, times: null });
          continue;
        }
        const movedFrom = gone[moves++] ?? null;
        delta.changed.set(path, { arrived: true, movedFrom, content, metadata, times: null });
        if (movedFrom !== null) delta.moved.push({ from: movedFrom, to: path });
      }
      for (const path of gone) delta.vacated.add(path);
      // A directory's lost and new names: the inodes behind them need not be in either tree's new blocks.
      if (isDirectory(itemA) && isDirectory(itemB) && pathsA[0] !== undefined && pathsB[0] !== undefined) {
        for (const [name, child] of before.entries) {
          if (after.entries.get(name) === child) continue;
          delta.vacated.add(join(pathsA[0], name));
          if (before.directoryEntries?.has(name) === true) removedDirectories.add(join(pathsA[0], name));
        }
        for (const [name, child] of after.entries) if (before.entries.get(name) !== child) arrive(join(pathsB[0], name), { arrived: true, movedFrom: null, content: true, metadata: false });
      }
    } else {
      for (const path of pathsA) delta.vacated.add(path);
      if (isDirectory(itemA)) for (const path of pathsA) removedDirectories.add(path);
      for (const path of pathsB) delta.changed.set(path, { arrived: true, movedFrom: null, content: !isDirectory(itemB), metadata: false, times: null });
    }
  }
  // A directory moved away is walked as moved, not as removed.
  for (const { from } of delta.moved) removedDirectories.delete(from);
  // Only the topmost entry of a moved subtree is listed, as for send; what moved with it and did not change is not.
  const moves = new Map<string, string[]>();
  for (const { from, to } of delta.moved) addMove(moves, from, to);
  const within = ({ from, to }: { from: string; to: string }) => movedWithDirectory(moves, from, to);
  const carried = delta.moved.filter(within);
  delta.moved = delta.moved.filter((move) => !within(move));
  for (const { from, to } of carried) {
    const change = delta.changed.get(to);
    if (change === undefined || change.content || change.metadata) continue;
    delta.changed.delete(to);
    delta.vacated.delete(from);
  }
  return delta;
}
