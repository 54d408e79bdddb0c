/**
 * Strict parsers for `btrfs inspect-internal dump-tree` (btrfs-progs 6.2,
 * samples under test/fixtures-captured/): the roots (`-r`: which trees are
 * subvolumes) and one subvolume's tree (`--hide-names -t ID`: the physical
 * things it refers to, as quota groups count them). Every line must have a
 * known shape; an item's body lines (two tabs) are read only for the data
 * extent (`extent data disk byte`, `prealloc data disk byte`). With
 * --hide-names no file name or xattr value reaches the output, so no line is
 * text a user of the filesystem wrote.
 */
import { BootenvError } from '../errors.js';

/** BTRFS_FS_TREE_OBJECTID: the top level's tree. Subvolumes have ids from 256. */
const FS_TREE = 5;
const FIRST_SUBVOLUME_ID = 256;

const VERSION_LINE = /^btrfs-progs v\d+(?:\.\d+)*\S*$/;
const ROOT_POINTER = /^(root|chunk|log root|block group) tree: \d+ level \d+$/;
const TREE_ROOT = /^([a-z][a-z ]*) tree key \((\w+) ROOT_ITEM (\d+)\) (\d+) level (\d+)$/;
const SUPER_LINE = /^(?:total bytes \d+|bytes used \d+|uuid [0-9a-f-]{36})$/;

/**
 * The ids of the filesystem's subvolume trees (the top level's, 5, and every
 * subvolume's, including deleted ones the cleaner has not dropped yet, which
 * still hold blocks) from `btrfs inspect-internal dump-tree -r`.
 */
export function parseSubvolumeTreeIds(output: string): number[] {
  const ids: number[] = [];
  for (const line of output.split('\n')) {
    if (line === '' || VERSION_LINE.test(line) || ROOT_POINTER.test(line) || SUPER_LINE.test(line)) continue;
    const match = TREE_ROOT.exec(line);
    if (match === null) throw parseError('btrfs inspect-internal dump-tree -r', line);
    const [, name, objectid] = match as unknown as [string, string, string];
    if (name === 'fs' && objectid === 'FS_TREE') ids.push(FS_TREE);
    else if (name === 'file' && /^\d+$/.test(objectid) && Number(objectid) >= FIRST_SUBVOLUME_ID) ids.push(Number(objectid));
  }
  return ids;
}

/** What one subvolume's tree refers to: each tree block and each data extent once. */
export interface TreeReferences {
  /** Logical addresses of the tree's nodes and leaves (one node size each). */
  blocks: Set<number>;
  /** Data extents: logical address → bytes on disk (whole extents, as quota groups count them, however little of one a file still uses). */
  dataExtents: Map<number, number>;
}

const TREE_HEADER = /^(\w+) tree key \((\w+) ROOT_ITEM \d+\) ?$/;
const NODE_HEADER = /^(?:node (\d+) level \d+|leaf (\d+)) items \d+ free space \d+ generation \d+ owner \S+$/;
const BLOCK_FLAGS = /^(?:node|leaf) \d+ flags 0x[0-9a-f]+\([A-Z|]*\) backref revision \d+$/;
const BLOCK_UUID = /^(?:fs|chunk) uuid [0-9a-f-]{36}$/;
const KEY_POINTER = /^\tkey \([^()]*\) block (\d+) gen \d+$/;
const ITEM = /^\titem \d+ key \([^()]*\) itemoff \d+ itemsize \d+$/;
const EXTENT_DATA = /^\t\t(?:extent|prealloc) data disk byte (\d+) nr (\d+)$/;

/**
 * Reads `btrfs inspect-internal dump-tree --hide-names -t ID DEVICE` one line
 * at a time. finish() checks that every block a node points to was printed
 * (a tree read whole and consistently) and returns what the tree refers to.
 * Throws PARSE on a line of unknown shape or a missing block.
 */
export class TreeDumpParser {
  private readonly references: TreeReferences = { blocks: new Set(), dataExtents: new Map() };
  private readonly pointedTo: number[] = [];
  private sawHeader = false;

  line(line: string): void {
    if (line.startsWith('\t\t')) {
      const extent = EXTENT_DATA.exec(line);
      // Disk byte 0 is a hole (a file range with no extent).
      if (extent !== null && extent[1] !== '0') this.references.dataExtents.set(Number(extent[1]), Number(extent[2]));
      return;
    }
    const pointer = KEY_POINTER.exec(line);
    if (pointer !== null) {
      this.pointedTo.push(Number(pointer[1]));
      return;
    }
    if (ITEM.test(line) || BLOCK_FLAGS.test(line) || BLOCK_UUID.test(line) || SUPER_LINE.test(line) || VERSION_LINE.test(line) || line === '') return;
    const header = NODE_HEADER.exec(line);
    if (header !== null) {
      this.references.blocks.add(Number(header[1] ?? header[2]));
      return;
    }
    if (TREE_HEADER.test(line)) {
      this.sawHeader = true;
      return;
    }
    throw parseError('btrfs inspect-internal dump-tree', line);
  }

  finish(): TreeReferences {
    if (!this.sawHeader || this.references.blocks.size === 0) throw new BootenvError('PARSE', 'btrfs inspect-internal dump-tree printed no tree');
    const missing = this.pointedTo.find((block) => !this.references.blocks.has(block));
    if (missing !== undefined) throw new BootenvError('PARSE', `btrfs inspect-internal dump-tree: block ${missing} is pointed to but was not printed (the tree changed while it was read, or could not be read)`);
    return this.references;
  }
}

function parseError(what: string, line: string): BootenvError {
  return new BootenvError('PARSE', `unexpected line from ${what}: ${JSON.stringify(line.slice(0, 200))}`);
}
