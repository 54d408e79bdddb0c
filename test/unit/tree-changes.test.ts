// The reader of bootenv-changes' records (src/btrfs/tree-changes.ts): records built here as the
// helper writes them (its header in src/native/bootenv-changes.c); the comparison itself is
// checked against btrfs send on real trees in test/integration/tree-changes.test.ts.
import { describe, expect, it } from 'vitest';
import { deltaOfTrees, parseTreeChanges } from '../../src/btrfs/tree-changes.js';

const u8 = (value: number) => Buffer.from([value]);
function u16(value: number): Buffer {
  const buffer = Buffer.alloc(2);
  buffer.writeUInt16LE(value);
  return buffer;
}
function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32LE(value);
  return buffer;
}
function u64(value: number | bigint): Buffer {
  const buffer = Buffer.alloc(8);
  buffer.writeBigUInt64LE(BigInt(value));
  return buffer;
}

function item(side: number, objectid: number, type: number, offset: number, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from('I'), u8(side), u64(objectid), u8(type), u64(offset), u32(data.length), data]);
}
function inode(side: number, objectid: number, fields: { generation: number; mode: number; size?: number; uid?: number }): Buffer {
  const data = Buffer.alloc(72);
  data.writeBigUInt64LE(BigInt(fields.generation), 0);
  data.writeBigUInt64LE(BigInt(fields.size ?? 0), 16);
  data.writeUInt32LE(fields.uid ?? 0, 44);
  data.writeUInt32LE(fields.mode, 52);
  return item(side, objectid, 1, 0, data);
}
function ref(side: number, objectid: number, parent: number, name: string): Buffer {
  return item(side, objectid, 12, parent, Buffer.concat([u64(2), u16(name.length), Buffer.from(name, 'latin1')]));
}
function entry(side: number, directory: number, name: string, child: number, fileType: number): Buffer {
  const location = Buffer.concat([u64(child), u8(1), u64(0)]);
  return item(side, directory, 96, 3, Buffer.concat([location, u64(9), u16(0), u16(name.length), u8(fileType), Buffer.from(name, 'latin1')]));
}
function hashes(side: number, objectid: number, extents: number, xattrs = 1): Buffer {
  return Buffer.concat([Buffer.from('H'), u8(side), u64(objectid), u64(extents), u64(xattrs)]);
}
function directoryPath(side: number, objectid: number, path: string): Buffer {
  return Buffer.concat([Buffer.from('P'), u8(side), u64(objectid), u32(path.length), Buffer.from(path, 'latin1')]);
}
const FORK = 10;
const DIRECTORY = 0o040755;
const FILE = 0o100644;

/** Two trees: /etc (257) holds passwd (258, rewritten in place on B), old (259, gone from B), and /etc/sub (260), gone with what it held. */
function sample(): Buffer {
  const sides = [0, 1].map((side) =>
    Buffer.concat([
      inode(side, 256, { generation: 1, mode: DIRECTORY }),
      inode(side, 257, { generation: 1, mode: DIRECTORY }),
      ref(side, 257, 256, 'etc'),
      entry(side, 257, 'passwd', 258, 1),
      ...(side === 0 ? [entry(side, 257, 'old', 259, 1), entry(side, 257, 'sub', 260, 2)] : [entry(side, 257, 'new', 300, 1)]),
      hashes(side, 257, 1),
      inode(side, 258, { generation: 2, mode: FILE, size: 10 }),
      ref(side, 258, 257, 'passwd'),
      hashes(side, 258, side === 0 ? 5 : 6),
      ...(side === 1 ? [inode(side, 300, { generation: FORK + 1, mode: FILE }), ref(side, 300, 257, 'new'), hashes(side, 300, 1)] : []),
      directoryPath(side, 256, ''),
      directoryPath(side, 257, 'etc'),
    ]),
  );
  return Buffer.concat([Buffer.from('G'), u64(FORK), ...sides, Buffer.from('E')]);
}

describe('parseTreeChanges and deltaOfTrees', () => {
  it('names what changed in place, what arrived, what went, and the removed directory to walk', () => {
    const changes = parseTreeChanges(sample());
    expect(changes.related).toBe(true);
    if (!changes.related) return;
    const delta = deltaOfTrees(changes);
    expect(Object.fromEntries(delta.changed)).toEqual({
      'etc/passwd': { arrived: false, movedFrom: null, content: true, metadata: false, times: null },
      'etc/new': { arrived: true, movedFrom: null, content: true, metadata: false, times: null },
    });
    expect([...delta.vacated].sort()).toEqual(['etc/old', 'etc/sub']);
    expect([...(delta.removedDirectories ?? [])]).toEqual(['etc/sub']);
    expect(delta.moved).toEqual([]);
  });

  it('takes an inode made after the fork for another file, though its number is the same on both sides', () => {
    const output = Buffer.concat([
      Buffer.from('G'), u64(FORK),
      inode(0, 400, { generation: FORK + 1, mode: FILE }), ref(0, 400, 256, 'log'), hashes(0, 400, 1), directoryPath(0, 256, ''),
      inode(1, 400, { generation: FORK + 1, mode: FILE }), ref(1, 400, 256, 'tool'), hashes(1, 400, 1), directoryPath(1, 256, ''),
      Buffer.from('E'),
    ]);
    const changes = parseTreeChanges(output);
    if (!changes.related) throw new Error('related expected');
    const delta = deltaOfTrees(changes);
    expect([...delta.changed.keys()]).toEqual(['tool']);
    expect(delta.changed.get('tool')?.movedFrom).toBeNull();
    expect([...delta.vacated]).toEqual(['log']);
  });

  it('lists a moved directory once, not what moved with it unchanged', () => {
    const side = (number: number, parent: number, name: string, at: string) =>
      Buffer.concat([
        inode(number, 256, { generation: 1, mode: DIRECTORY }),
        inode(number, 257, { generation: 1, mode: DIRECTORY }), ref(number, 257, 256, 'opt'),
        inode(number, 258, { generation: 1, mode: DIRECTORY }), ref(number, 258, 256, 'srv'),
        inode(number, 500, { generation: 2, mode: DIRECTORY }), ref(number, 500, parent, name), hashes(number, 500, 1),
        inode(number, 501, { generation: 2, mode: FILE }), ref(number, 501, 500, 'deep'), hashes(number, 501, 7),
        directoryPath(number, 256, ''), directoryPath(number, 257, 'opt'), directoryPath(number, 258, 'srv'), directoryPath(number, 500, at),
      ]);
    const changes = parseTreeChanges(Buffer.concat([Buffer.from('G'), u64(FORK), side(0, 257, 'moved', 'opt/moved'), side(1, 258, 'here', 'srv/here'), Buffer.from('E')]));
    if (!changes.related) throw new Error('related expected');
    const delta = deltaOfTrees(changes);
    expect(delta.moved).toEqual([{ from: 'opt/moved', to: 'srv/here' }]);
    expect([...delta.changed.keys()]).toEqual(['srv/here']);
    expect([...delta.vacated]).toEqual(['opt/moved']);
    expect([...(delta.removedDirectories ?? [])]).toEqual([]);
  });

  it('reads "no common ancestor", and refuses output that is cut short, runs on or holds an unknown record', () => {
    expect(parseTreeChanges(Buffer.from('U'))).toEqual({ related: false });
    const whole = sample();
    expect(() => parseTreeChanges(whole.subarray(0, whole.length - 1))).toThrow(/cut short/);
    expect(() => parseTreeChanges(whole.subarray(0, 40))).toThrow(/cut short/);
    expect(() => parseTreeChanges(Buffer.concat([whole, Buffer.from('E')]))).toThrow(/after E/);
    expect(() => parseTreeChanges(Buffer.from('UU'))).toThrow(/after U/);
    expect(() => parseTreeChanges(Buffer.concat([Buffer.from('G'), u64(FORK), Buffer.from('X')]))).toThrow(/record/);
    expect(() => parseTreeChanges(Buffer.from(''))).toThrow(/cut short/);
    expect(() => parseTreeChanges(Buffer.concat([Buffer.from('G'), u64(2n ** 60n), Buffer.from('E')]))).toThrow(/out of range/);
  });
});
