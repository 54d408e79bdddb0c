// The carry's planner (src/be/carry-plan.ts) on small trees described in the test: what the origin
// changed goes into the new BE unless the new BE changed the same path; package state never goes;
// conflicts keep the new BE's version and save the origin's beside it; accounts and fstab merge.
import { describe, expect, it } from 'vitest';
import type { EntryChange, SubvolumeDelta } from '../../src/btrfs/send-changes.js';
import { planCarry, type CarryOperation, type EntryFacts, type PlanInput, type TreeView } from '../../src/be/carry-plan.js';

interface Spec {
  /** File content, or a directory ({}), or a symlink ({ link }). */
  [path: string]: string | { dir: true; mode?: number } | { link: string } | { content: string; ino?: number; nlink?: number; mode?: number; mtime?: number; ctime?: number; uid?: number };
}

function tree(spec: Spec): TreeView {
  const entries = new Map<string, { facts: EntryFacts; content: Buffer }>();
  const add = (path: string, facts: Partial<EntryFacts> & Pick<EntryFacts, 'kind'>, content = '') => {
    entries.set(path, { facts: { mode: 0o644, uid: 0, gid: 0, size: content.length, ino: BigInt(entries.size + 256), nlink: 1, rdev: 0, mtimeNs: 1n, ctimeNs: 1n, ...facts }, content: Buffer.from(content, 'latin1') });
  };
  add('', { kind: 'directory', mode: 0o40755 });
  for (const [path, value] of Object.entries(spec).sort()) {
    const parts = path.split('/');
    for (let index = 1; index < parts.length; index++) {
      const parent = parts.slice(0, index).join('/');
      if (!entries.has(parent)) add(parent, { kind: 'directory', mode: 0o40755 });
    }
    if (typeof value === 'string') add(path, { kind: 'file', mode: 0o100644 }, value);
    else if ('dir' in value) add(path, { kind: 'directory', mode: value.mode ?? 0o40755 });
    else if ('link' in value) add(path, { kind: 'symlink', mode: 0o120777 }, value.link);
    else {
      add(path, { kind: 'file', mode: value.mode ?? 0o100644, uid: value.uid ?? 0, nlink: value.nlink ?? 1, mtimeNs: BigInt(value.mtime ?? 1), ctimeNs: BigInt(value.ctime ?? 1), ...(value.ino === undefined ? {} : { ino: BigInt(value.ino) }) }, value.content);
    }
  }
  return {
    lstat: (path) => entries.get(path)?.facts,
    list: (path) => [...entries.keys()].filter((other) => other !== path && other.startsWith(path === '' ? '' : `${path}/`) && !other.slice(path === '' ? 0 : path.length + 1).includes('/')).map((other) => other.split('/').at(-1) as string),
    read: (path) => {
      const entry = entries.get(path);
      if (entry === undefined) throw new Error(`read of missing ${path}`);
      return entry.content;
    },
  };
}

const changed = (fields: Partial<EntryChange> = {}): EntryChange => ({ arrived: false, movedFrom: null, content: true, metadata: false, times: null, ...fields });
const arrived: EntryChange = changed({ arrived: true, content: false });

function delta(changes: Record<string, EntryChange> = {}, vacated: string[] = [], moved: Array<{ from: string; to: string }> = []): SubvolumeDelta {
  return { changed: new Map(Object.entries(changes)), vacated: new Set(vacated), moved };
}

const FSTAB_BASE = 'UUID=x / btrfs subvol=@bootenv/old 0 0\n';

function plan(overrides: Partial<PlanInput> & { base: TreeView; origin: TreeView; target: TreeView }) {
  return planCarry({
    mode: 'all',
    exclude: [],
    originDelta: delta(),
    newDelta: delta(),
    touchedBefore: { exact: [], trees: [] },
    newBase: overrides.base,
    namesOfInode: () => [],
    rewriteFstab: (text) => text.replaceAll('@bootenv/old', '@bootenv/new'),
    ...overrides,
  });
}

const ops = (operations: CarryOperation[]) => operations.map((operation) => ('content' in operation ? { ...operation, content: operation.content.toString() } : operation));

describe('planCarry: what only the origin changed', () => {
  it('carries new, changed, removed and moved entries, removals first, then parents before children, then directory times', () => {
    const base = tree({ 'var/lib/db/table': 'v1', 'var/log/old.log': 'old', 'srv/a/page': 'p', 'etc/hostname': 'box' });
    const origin = tree({ 'var/lib/db/table': 'v2', 'var/log': { dir: true }, 'srv/b/page': 'p', 'srv/www/index.html': 'new', 'etc/hostname': 'box', 'root/notes': { link: '/srv/www' } });
    const result = plan({
      base,
      origin,
      target: base,
      originDelta: delta({ 'var/lib/db/table': changed(), 'srv/b': changed({ arrived: true, movedFrom: 'srv/a', content: false }), 'srv/www': arrived, 'srv/www/index.html': changed({ arrived: true }), root: arrived, 'root/notes': arrived }, ['var/log/old.log', 'srv/a'], [{ from: 'srv/a', to: 'srv/b' }]),
    });
    expect(ops(result.operations)).toEqual([
      { op: 'remove', target: 'srv/a/page' },
      { op: 'remove', target: 'var/log/old.log' },
      { op: 'remove', target: 'srv/a' },
      { op: 'mkdir', source: 'root', target: 'root' },
      { op: 'copy', source: 'root/notes', target: 'root/notes' },
      { op: 'mkdir', source: 'srv/b', target: 'srv/b' },
      { op: 'copy', source: 'srv/b/page', target: 'srv/b/page' },
      { op: 'mkdir', source: 'srv/www', target: 'srv/www' },
      { op: 'copy', source: 'srv/www/index.html', target: 'srv/www/index.html' },
      { op: 'copy', source: 'var/lib/db/table', target: 'var/lib/db/table' },
      { op: 'times', source: 'var/lib/db', target: 'var/lib/db' },
      { op: 'times', source: 'srv/b', target: 'srv/b' },
      { op: 'times', source: 'srv/www', target: 'srv/www' },
      { op: 'times', source: 'var/log', target: 'var/log' },
      { op: 'times', source: 'root', target: 'root' },
      { op: 'times', source: 'srv', target: 'srv' },
      { op: 'times', source: '', target: '' },
    ]);
    expect(result.changes).toEqual({ created: 6, modified: 1, removed: 3 });
    expect(result.carriedBytes).toBe('p'.length + 'new'.length + 'v2'.length);
    expect(result.conflicts).toEqual([]);
  });

  it('a read (atime alone) is no change; touch -m is', () => {
    const base = tree({ 'srv/read': { content: 'r', mtime: 5, ctime: 5 }, 'srv/touched': { content: 't', mtime: 5, ctime: 5 } });
    const origin = tree({ 'srv/read': { content: 'r', mtime: 5, ctime: 5 }, 'srv/touched': { content: 't', mtime: 9, ctime: 9 } });
    const times = changed({ content: false, times: { atime: { seconds: 9n, nanoseconds: 0 }, mtime: { seconds: 0n, nanoseconds: 5 }, ctime: { seconds: 0n, nanoseconds: 5 } } });
    const result = plan({ base, origin, target: base, originDelta: delta({ 'srv/read': times, 'srv/touched': times }) });
    expect(ops(result.operations).filter((operation) => operation.op === 'copy')).toEqual([{ op: 'copy', source: 'srv/touched', target: 'srv/touched' }]);
  });

  it('never carries package state, GRUB’s home or /tmp; in mode data not /etc; nor carry-exclude paths', () => {
    const paths = ['var/lib/dpkg/status', 'var/lib/apt/extended_states', 'var/cache/debconf/config.dat', 'var/log/apt/history.log', 'etc/alternatives/editor', 'var/lib/systemd/deb-systemd-helper-enabled/x.service.dsh-also', 'boot/grub/grub.cfg', 'tmp/x', 'etc/passwd-', 'etc/motd', 'srv/scratch/big', 'srv/kept'];
    const base = tree({});
    const origin = tree(Object.fromEntries(paths.map((path) => [path, 'x'])));
    const originDelta = delta(Object.fromEntries(paths.map((path) => [path, changed({ arrived: true })])));
    const all = plan({ base, origin, target: base, originDelta, exclude: ['srv/scratch'] });
    expect(all.operations.filter((operation) => operation.op === 'copy').map((operation) => operation.target)).toEqual(['etc/motd', 'srv/kept']);
    expect(all.skipped).toEqual({ packageState: 9, excluded: 1 });
    expect(all.warnings).toEqual([expect.stringMatching(/dpkg's database changed in the origin after the snapshot/)]);
    const data = plan({ base, origin, target: base, originDelta, mode: 'data' });
    expect(data.operations.filter((operation) => operation.op === 'copy').map((operation) => operation.target)).toEqual(['srv/kept', 'srv/scratch/big']);
  });

  it('in mode data leaves out the system’s trees (but /usr/local) and every path a package owns', () => {
    const paths = ['usr/share/doc/x/changelog', 'usr/local/bin/tool', 'boot/initrd.img-6.1.0-1', 'lib/modules/6.1.0-1/modules.dep', 'var/lib/x/owned.db', 'var/lib/x/records', 'srv/data'];
    const base = tree({});
    const origin = tree(Object.fromEntries(paths.map((path) => [path, 'x'])));
    const originDelta = delta(Object.fromEntries(paths.map((path) => [path, changed({ arrived: true })])));
    const owned = new Set(['var/lib/x/owned.db', 'var/lib/x']);
    const data = plan({ base, origin, target: base, originDelta, mode: 'data', packageOwned: (path: string) => owned.has(path) });
    expect(data.operations.filter((operation) => operation.op === 'copy').map((operation) => operation.target)).toEqual(['srv/data', 'usr/local/bin/tool', 'var/lib/x/records']);
    expect(data.skipped).toEqual({ packageState: 0, excluded: 4 });
    const all = plan({ base, origin, target: base, originDelta, packageOwned: (path: string) => owned.has(path) });
    expect(all.operations.filter((operation) => operation.op === 'copy')).toHaveLength(paths.length);
  });

  it('carries a changed hard-linked file once and links its other names to it', () => {
    const base = tree({ 'srv/a': { content: 'x', ino: 900, nlink: 2 }, 'srv/b': { content: 'x', ino: 900, nlink: 2 } });
    const origin = tree({ 'srv/a': { content: 'y', ino: 900, nlink: 3 }, 'srv/b': { content: 'y', ino: 900, nlink: 3 }, 'srv/c': { content: 'y', ino: 900, nlink: 3 } });
    const result = plan({ base, origin, target: base, originDelta: delta({ 'srv/a': changed(), 'srv/c': changed({ arrived: true, content: false }) }), namesOfInode: () => ['srv/a', 'srv/b', 'srv/c'] });
    expect(ops(result.operations).filter((operation) => operation.op !== 'times')).toEqual([
      { op: 'copy', source: 'srv/a', target: 'srv/a' },
      { op: 'link', existing: 'srv/a', target: 'srv/b' },
      { op: 'link', existing: 'srv/a', target: 'srv/c' },
    ]);
  });

  it('/etc/fstab takes the origin’s lines rewritten for the new BE, unless the new BE changed it itself', () => {
    const base = tree({ 'etc/fstab': FSTAB_BASE });
    const target = tree({ 'etc/fstab': FSTAB_BASE.replace('old', 'new') });
    const origin = tree({ 'etc/fstab': `${FSTAB_BASE}/dev/sdb1 /data ext4 defaults 0 2\n` });
    const result = plan({ base, origin, target, originDelta: delta({ 'etc/fstab': changed() }) });
    expect(ops(result.operations).filter((operation) => operation.op !== 'times')).toEqual([
      { op: 'write', target: 'etc/fstab', content: 'UUID=x / btrfs subvol=@bootenv/new 0 0\n/dev/sdb1 /data ext4 defaults 0 2\n' },
    ]);
    const edited = tree({ 'etc/fstab': `${FSTAB_BASE.replace('old', 'new')}tmpfs /tmp tmpfs defaults 0 0\n` });
    const conflict = plan({ base, origin, target: edited, originDelta: delta({ 'etc/fstab': changed() }) });
    expect(conflict.conflicts).toEqual([{ path: 'etc/fstab', kind: 'changed-both', savedAs: 'etc/fstab.bootenv-origin' }]);
  });
});

describe('planCarry: paths both changed', () => {
  const conffile = { base: 'setting = 1\n', admin: 'setting = 1\nlocal = yes\n', upgrade: 'setting = 2\n' };

  it('keeps the new BE’s conffile and saves the admin’s beside it, reported; an identical change is no conflict', () => {
    const base = tree({ 'etc/app.conf': conffile.base, 'etc/same': 'a' });
    const origin = tree({ 'etc/app.conf': conffile.admin, 'etc/same': 'b', 'etc/app.conf.bootenv-origin': 'older save' });
    const target = tree({ 'etc/app.conf': conffile.upgrade, 'etc/same': 'b', 'etc/app.conf.bootenv-origin': 'older save' });
    const result = plan({ base, origin, target, originDelta: delta({ 'etc/app.conf': changed(), 'etc/same': changed() }), newDelta: delta({ 'etc/app.conf': changed({ arrived: true }), 'etc/same': changed() }) });
    expect(result.conflicts).toEqual([{ path: 'etc/app.conf', kind: 'changed-both', savedAs: 'etc/app.conf.bootenv-origin.2' }]);
    expect(ops(result.operations).filter((operation) => operation.op !== 'times')).toEqual([{ op: 'save', source: 'etc/app.conf', target: 'etc/app.conf.bootenv-origin.2' }]);
  });

  it('removed in the new BE, changed in the origin: the origin’s is saved; removed in the origin, changed in the new BE: kept', () => {
    const base = tree({ 'usr/share/pkg/data': 'v1', 'srv/notes': 'n1' });
    const origin = tree({ 'usr/share/pkg/data': 'edited', 'srv/x': '' });
    const target = tree({ 'srv/notes': 'n2', 'usr/share': { dir: true } });
    const result = plan({ base, origin, target, originDelta: delta({ 'usr/share/pkg/data': changed() }, ['srv/notes']), newDelta: delta({ 'srv/notes': changed() }, ['usr/share/pkg/data', 'usr/share/pkg']) });
    expect(result.conflicts).toEqual([
      { path: 'srv/notes', kind: 'removed-in-origin', savedAs: null },
      { path: 'usr/share/pkg', kind: 'directory-recreated', savedAs: null },
      { path: 'usr/share/pkg/data', kind: 'removed-in-new', savedAs: 'usr/share/pkg/data.bootenv-origin' },
    ]);
    expect(ops(result.operations).filter((operation) => operation.op !== 'times')).toEqual([
      { op: 'mkdir', source: 'usr/share/pkg', target: 'usr/share/pkg' },
      { op: 'save', source: 'usr/share/pkg/data', target: 'usr/share/pkg/data.bootenv-origin' },
    ]);
  });

  it('a directory the origin removed stays where the new BE put entries in it', () => {
    const base = tree({ 'srv/cache/a': 'a' });
    const origin = tree({ srv: { dir: true } });
    const target = tree({ 'srv/cache/a': 'a', 'srv/cache/new': 'n' });
    const result = plan({ base, origin, target, originDelta: delta({}, ['srv/cache/a', 'srv/cache']), newDelta: delta({ 'srv/cache/new': arrived }) });
    expect(ops(result.operations).filter((operation) => operation.op !== 'times')).toEqual([{ op: 'remove', target: 'srv/cache/a' }]);
    expect(result.conflicts).toEqual([{ path: 'srv/cache', kind: 'directory-kept', savedAs: null }]);
  });

  it('merges the account databases: the admin’s user and the postinst’s system user both exist; a clash is reported with the origin’s file saved', () => {
    const passwd = 'root:x:0:0:root:/root:/bin/bash\n';
    const base = tree({ 'etc/passwd': passwd, 'etc/group': 'root:x:0:\n' });
    const origin = tree({ 'etc/passwd': `${passwd}alice:x:1000:1000::/home/alice:/bin/sh\n`, 'etc/group': 'root:x:0:\nalice:x:1000:\n' });
    const target = tree({ 'etc/passwd': `${passwd}_svc:x:100:65534::/nonexistent:/usr/sbin/nologin\n`, 'etc/group': 'root:x:0:\n_svc:x:1000:\n' });
    const result = plan({ base, origin, target, originDelta: delta({ 'etc/passwd': changed(), 'etc/group': changed() }), newDelta: delta({ 'etc/passwd': changed(), 'etc/group': changed() }) });
    expect(ops(result.operations).filter((operation) => operation.op === 'write')).toEqual([
      { op: 'write', target: 'etc/passwd', content: `${passwd}_svc:x:100:65534::/nonexistent:/usr/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/sh\n` },
    ]);
    expect(result.accounts.added).toEqual(['passwd:alice']);
    expect(result.accounts.clashes).toEqual([{ file: 'group', name: 'alice', reason: expect.stringMatching(/gid 1000 is _svc's/) }]);
    expect(result.conflicts).toEqual([{ path: 'etc/group', kind: 'accounts', savedAs: 'etc/group.bootenv-origin' }]);
  });

  it('what the new BE changed before an earlier carry still counts as its own', () => {
    const base = tree({ 'etc/app.conf': 'a' });
    const origin = tree({ 'etc/app.conf': 'b' });
    const target = tree({ 'etc/app.conf': 'c' });
    const result = plan({ base, origin, target, originDelta: delta({ 'etc/app.conf': changed() }), touchedBefore: { exact: ['etc/app.conf'], trees: [] } });
    expect(result.conflicts.map((conflict) => conflict.kind)).toEqual(['changed-both']);
    expect(result.touched.exact).toEqual(['etc/app.conf']);
  });
});
