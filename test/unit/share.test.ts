// Unit tests for the pure parts of shared subvolumes: src/be/share-paths.ts (which paths may be
// shared, the subvolume's name, package files below a path through merged-/usr aliases), the fstab
// lines of src/be/fstab.ts, and the share's records in the state (src/be/state.ts).
import { describe, expect, it } from 'vitest';
import { hasSharedMount, mountsInFstab, rewriteFstabForBootEnvironment, sharedMountLine, withoutSharedMount, withSharedMount } from '../../src/be/fstab.js';
import { isSameOrBelow, listedPathsBelow, normalizeSharePath, packageOfListFile, resolveAliases, sharedSubvolumeName } from '../../src/be/share-paths.js';
import { newState, parseState, serializeState } from '../../src/be/state.js';
import { bootenvErrorFrom } from './helpers.js';

const UUID = '9759ea5f-e03d-4d69-a24a-9d439e386768';
const MERGED_USR = [
  ['/bin', '/usr/bin'],
  ['/lib', '/usr/lib'],
  ['/sbin', '/usr/sbin'],
] as const;

describe('normalizeSharePath', () => {
  it.each([
    ['/var/lib/postgresql', '/var/lib/postgresql'],
    ['/var/log/', '/var/log'],
    ['/srv/data.d/x_y+z-1', '/srv/data.d/x_y+z-1'],
    ['/var/lib/.hidden', '/var/lib/.hidden'],
    ['/home/alice', '/home/alice'],
  ])('%s is allowed, as %s', (given, normalized) => {
    expect(normalizeSharePath(given)).toBe(normalized);
  });

  it.each([
    ['var/log', /not an absolute path/],
    ['', /not an absolute path/],
    ['/', /it is what a boot environment is/],
    ['//', /it is what a boot environment is/],
    ['/srv//', /not a plain path/],
    ['/var//log', /not a plain path/],
    ['/var/./log', /not a plain path/],
    ['/var/lib/../log', /not a plain path/],
    ['/srv/with space', /characters other than/],
    ['/srv/tab\there', /characters other than/],
    ['/srv/ünï', /characters other than/],
    ['/etc', /\/etc is part of the system/],
    ['/etc/postgresql', /\/etc is part of the system/],
    ['/usr', /\/usr is part of the system/],
    ['/usr/local', /\/usr is part of the system/],
    ['/boot', /\/boot is part of the system/],
    ['/boot/grub', /\/boot is part of the system/],
    ['/proc', /\/proc is part/],
    ['/sys/fs', /\/sys is part/],
    ['/dev', /\/dev is part/],
    ['/run/user', /\/run is part/],
    ['/tmp', /\/tmp is part/],
    ['/.rootbe', /bootenv's mount of the installed root/],
    ['/var/lib/dpkg', /\/var\/lib\/dpkg is package state/],
    ['/var/lib/dpkg/info', /\/var\/lib\/dpkg is package state/],
    ['/var/lib/apt/lists', /\/var\/lib\/apt is package state/],
    ['/var/cache/debconf', /\/var\/cache\/debconf is package state/],
    ['/var', /\/var\/lib\/dpkg is package state/],
    ['/var/lib', /\/var\/lib\/dpkg is package state/],
    ['/var/cache', /\/var\/cache\/debconf is package state/],
  ])('%s is refused (USAGE)', (given, message) => {
    const error = bootenvErrorFrom(() => normalizeSharePath(given));
    expect(error.code).toBe('USAGE');
    expect(error.message).toMatch(message);
  });
});

describe('sharedSubvolumeName', () => {
  it.each([
    ['/var/lib/postgresql', '@var_lib_postgresql'],
    ['/var/log', '@var_log'],
    ['/srv', '@srv'],
    ['/srv/k-1.d', '@srv_k-1.d'],
  ])('%s lives in %s', (sharePath, name) => {
    expect(sharedSubvolumeName(sharePath)).toBe(name);
  });
});

describe('isSameOrBelow', () => {
  it.each([
    ['/var/log', '/var/log', true],
    ['/var/log/apt', '/var/log', true],
    ['/var/logs', '/var/log', false],
    ['/var', '/var/log', false],
    ['/anything', '/', true],
  ])('%s below %s: %s', (child, ancestor, expected) => {
    expect(isSameOrBelow(child, ancestor)).toBe(expected);
  });
});

describe('package files below a path', () => {
  it('resolves merged-/usr aliases, whole components only', () => {
    expect(resolveAliases('/lib/x86_64-linux-gnu/libc.so.6', MERGED_USR)).toBe('/usr/lib/x86_64-linux-gnu/libc.so.6');
    expect(resolveAliases('/bin', MERGED_USR)).toBe('/usr/bin');
    expect(resolveAliases('/lib64/ld.so', MERGED_USR)).toBe('/lib64/ld.so');
    expect(resolveAliases('/libexec/x', MERGED_USR)).toBe('/libexec/x');
  });

  it('lists the entries of a dpkg .list below the path, not the path itself; the caller drops directories', () => {
    const list = ['/.', '/srv', '/srv/pkgdata', '/srv/pkgdata/sub', '/srv/pkgdata/sub/owned', '/srv/pkgdatabase/other', ''].join('\n');
    expect(listedPathsBelow(list, '/srv/pkgdata', [])).toEqual(['/srv/pkgdata/sub', '/srv/pkgdata/sub/owned']);
    expect(listedPathsBelow(list, '/srv/other', [])).toEqual([]);
  });

  it('finds a file listed under an alias below a path given through /usr, and the other way round', () => {
    const list = ['/lib/firmware', '/lib/firmware/blob.bin', '/usr/lib/udev/rules.d/x.rules'].join('\n');
    expect(listedPathsBelow(list, '/usr/lib/firmware', MERGED_USR)).toEqual(['/usr/lib/firmware/blob.bin']);
    expect(listedPathsBelow(list, '/lib/udev', MERGED_USR)).toEqual(['/usr/lib/udev/rules.d/x.rules']);
  });

  it.each([
    ['postgresql-15.list', 'postgresql-15'],
    ['libc6:amd64.list', 'libc6:amd64'],
    ['dpkg.md5sums', undefined],
    ['format', undefined],
  ])('the package of %s is %s', (file, owner) => {
    expect(packageOfListFile(file)).toBe(owner);
  });
});

describe('fstab lines of shared subvolumes', () => {
  const FSTAB = [`UUID=${UUID} / btrfs defaults,subvol=@ 0 1`, `UUID=${UUID} /home btrfs defaults,subvol=@home 0 2`, ''].join('\n');
  const LINE = sharedMountLine(UUID, '/var/lib/postgresql', '@var_lib_postgresql');

  it('is written like the line for @home', () => {
    expect(LINE).toBe(`UUID=${UUID} /var/lib/postgresql btrfs defaults,subvol=@var_lib_postgresql 0 0`);
  });

  it('is added once, kept by the rewrite for a new BE, before bootenv own lines, and removed again byte for byte', () => {
    const shared = withSharedMount(FSTAB, LINE);
    expect(shared).toBe(`${FSTAB}${LINE}\n`);
    expect(withSharedMount(shared, LINE)).toBe(shared);
    expect(hasSharedMount(shared, '/var/lib/postgresql', '@var_lib_postgresql')).toBe(true);
    expect(mountsInFstab(shared, '/var/lib/postgresql')).toBe(true);
    const be = rewriteFstabForBootEnvironment(shared, '@bootenv/b1', '@');
    expect(be.split('\n').filter((line) => line === LINE)).toHaveLength(1);
    // A BE's fstab: the line goes before bootenv's managed lines, and a second rewrite keeps it.
    const beShared = withSharedMount(rewriteFstabForBootEnvironment(FSTAB, '@bootenv/b1', '@'), LINE);
    expect(beShared.indexOf(LINE)).toBeLessThan(beShared.indexOf('# bootenv:'));
    expect(rewriteFstabForBootEnvironment(beShared, '@bootenv/b2', '@').split('\n').filter((line) => line === LINE)).toHaveLength(1);
    expect(withoutSharedMount(shared, '/var/lib/postgresql', '@var_lib_postgresql')).toBe(FSTAB);
    expect(withoutSharedMount(beShared, '/var/lib/postgresql', '@var_lib_postgresql')).toBe(rewriteFstabForBootEnvironment(FSTAB, '@bootenv/b1', '@'));
  });

  it('replaces another line for the same mount point, and removes only its own line', () => {
    const other = `${FSTAB}/dev/sdb1 /var/lib/postgresql ext4 defaults 0 2\n`;
    expect(withSharedMount(other, LINE)).toBe(`${FSTAB}${LINE}\n`);
    expect(withoutSharedMount(other, '/var/lib/postgresql', '@var_lib_postgresql')).toBe(other);
    expect(hasSharedMount(`UUID=${UUID} /var/lib/postgresql btrfs defaults,subvol=/@var_lib_postgresql 0 0\n`, '/var/lib/postgresql', '@var_lib_postgresql')).toBe(true);
  });
});

describe('shared subvolumes in the state', () => {
  const shared = { path: '/srv/data', subvolume: '@srv_data', uuid: '0f8b1d2e-1111-2222-3333-444455556666', since: '2026-12-02T10:00:00.000Z' };
  const share = { path: '/srv/x', root: '@', subvolume: '@srv_x', temporary: '@bootenv/.share/new-1', snapshots: ['@bootenv/.share/root-1', '@bootenv/.share/check-1'], uuid: null, aside: '/srv/.x.bootenv-share-old-1', started: '2026-12-02T10:00:00.000Z' };

  it('round-trips the shared paths and a share under way', () => {
    const state = { ...newState('@'), shared: [shared], share };
    expect(parseState(serializeState(state))).toEqual(state);
  });

  it.each([
    ['shared that is no list', { shared: { path: '/srv' } }],
    ['a shared entry without uuid', { shared: [{ ...shared, uuid: 1 }] }],
    ['a share without snapshots', { share: { ...share, snapshots: 'x' } }],
    ['a share with a numeric uuid', { share: { ...share, uuid: 5 } }],
  ])('refuses %s (PARSE)', (_, extra) => {
    const error = bootenvErrorFrom(() => parseState(JSON.stringify({ ...newState('@'), ...extra })));
    expect(error.code).toBe('PARSE');
  });
});
