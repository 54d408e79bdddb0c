import { describe, expect, it } from 'vitest';
import { packageKey, parseDpkgStatus } from '../../src/apt/dpkg-status.js';
import { compareVersions } from '../../src/deb/version.js';
import { planDiff, type EntryFacts, type PathFacts } from '../../src/be/diff-plan.js';
import { renderDiff } from '../../src/cli/render.js';

// Each expected order was printed by dpkg 1.21.22's `dpkg --compare-versions A lt|eq B` on Debian 12.
const ORDERED: Array<[string, string, number]> = [
  ['1.0', '1.0-1', -1],
  ['1.0~rc1', '1.0', -1],
  ['1:0.9', '2.0', 1],
  ['2.36-9+deb12u4', '2.36-9+deb12u10', -1],
  ['1.0a', '1.0', 1],
  ['1.0+b1', '1.0', 1],
  ['7.88+dfsg-1', '7.88-1', 1],
  ['0.9.8-3', '0.10-1', -1],
  ['1.2.3', '1.2.3-0', 0],
  ['2:1.0', '1:9.9', 1],
  ['1.0~~', '1.0~', -1],
  ['1.0-1~bpo12+1', '1.0-1', -1],
  ['1.01', '1.1', 0],
  ['9.2p1-2+deb12u3', '9.2p1-2+deb12u2', 1],
  ['252.30-1~deb12u2', '252.31-1~deb12u1', -1],
  ['1.0.0', '1.0', 1],
  ['6.1.0-13', '6.1.0-9', 1],
];

describe('compareVersions', () => {
  it.each(ORDERED)('%s against %s as dpkg orders them', (a, b, order) => {
    expect(Math.sign(compareVersions(a, b))).toBe(order);
    expect(Math.sign(compareVersions(b, a))).toBe(order === 0 ? 0 : -order);
  });
});

const STATUS = `Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Version: 12.4+deb12u5
Conffiles:
 /etc/debian_version 2f4c0bb2ff8da8a0d82b4e1a8a8d0f32
 /etc/dpkg/origins/debian 731423fa8ba067262f8ef37882d1e742
 /etc/old.conf 0123 obsolete
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy.

Package: removed-one
Status: deinstall ok config-files
Architecture: all
Version: 1.0
Conffiles:
 /etc/removed-one.conf 5f

Package: libc6
Status: install ok unpacked
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4

Package: libc6
Status: install ok installed
Architecture: i386
Multi-Arch: same
Version: 2.36-9+deb12u4
`;

describe('parseDpkgStatus', () => {
  it('keeps instances with files on disk, by name:arch, with their live conffiles', () => {
    const packages = parseDpkgStatus(STATUS);
    expect([...packages.keys()].sort()).toEqual(['base-files:amd64', 'libc6:amd64', 'libc6:i386']);
    expect(packages.get('base-files:amd64')).toEqual({
      package: 'base-files',
      architecture: 'amd64',
      version: '12.4+deb12u5',
      state: 'installed',
      conffiles: [
        { path: '/etc/debian_version', md5: '2f4c0bb2ff8da8a0d82b4e1a8a8d0f32' },
        { path: '/etc/dpkg/origins/debian', md5: '731423fa8ba067262f8ef37882d1e742' },
      ],
    });
    expect(packages.get('libc6:amd64')?.state).toBe('unpacked');
    expect(packageKey({ package: 'x', architecture: 'all' })).toBe('x:all');
  });
});

const file = (mode = 0o100644): EntryFacts => ({ kind: 'file', mode, uid: 0, gid: 0 });
const directory: EntryFacts = { kind: 'directory', mode: 0o40755, uid: 0, gid: 0 };

describe('planDiff', () => {
  const before = parseDpkgStatus(`Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\nConffiles:\n /etc/a.conf 11\n\nPackage: b\nStatus: install ok installed\nArchitecture: all\nVersion: 2.0\n\nPackage: c\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0\n`);
  const after = parseDpkgStatus(`Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.1-1\nConffiles:\n /etc/a.conf 11\n\nPackage: c\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.9\n\nPackage: d\nStatus: install ok installed\nArchitecture: amd64\nVersion: 0.1\n`);
  const paths: PathFacts[] = [
    { path: '/etc/a.conf', a: file(), b: file(), sameContent: false },
    { path: '/usr/bin/a', a: file(0o100755), b: file(0o100755), sameContent: false },
    { path: '/bin/alias', a: file(), b: undefined, sameContent: undefined },
    { path: '/var/lib/dpkg/status', a: file(), b: file(), sameContent: false },
    { path: '/srv/new', a: undefined, b: file(), sameContent: undefined },
    { path: '/srv/dir', a: undefined, b: directory, sameContent: undefined },
    { path: '/srv/gone', a: file(), b: undefined, sameContent: undefined },
    { path: '/srv/same', a: file(), b: file(), sameContent: true },
    { path: '/srv/chmod', a: file(0o100644), b: file(0o100600), sameContent: true },
    { path: '/srv/was-file', a: file(), b: directory, sameContent: undefined },
    { path: '/var', a: directory, b: directory, sameContent: undefined },
  ];
  const report = planDiff({
    from: 'old',
    to: 'new',
    packagesA: before,
    packagesB: after,
    known: new Set(['/etc/a.conf', '/usr/bin/a', '/usr/bin/alias']),
    resolve: (path) => path.replace(/^\/bin\//, '/usr/bin/'),
    paths,
  });

  it('tells added, removed, upgraded and downgraded packages with both versions', () => {
    expect(report.packages).toEqual({
      added: [{ package: 'd', architecture: 'amd64', version: '0.1' }],
      removed: [{ package: 'b', architecture: 'all', version: '2.0' }],
      upgraded: [{ package: 'a', architecture: 'amd64', from: '1.0-1', to: '1.1-1' }],
      downgraded: [{ package: 'c', architecture: 'amd64', from: '3.0', to: '2.9' }],
    });
  });

  it('lists changed conffiles, and only files dpkg does not know of (aliases resolved, its database left out); same bytes and bare directories are no change', () => {
    expect(report.conffiles).toEqual([{ path: '/etc/a.conf', packages: ['a'], change: 'modified' }]);
    expect(report.files).toEqual({
      added: [
        { path: '/srv/dir', kind: 'directory' },
        { path: '/srv/new', kind: 'file' },
      ],
      removed: [{ path: '/srv/gone', kind: 'file' }],
      changed: [
        { path: '/srv/chmod', kind: 'file', content: false, metadata: true },
        { path: '/srv/was-file', kind: 'directory', kindBefore: 'file', content: true, metadata: true },
      ],
    });
    expect(report.packagedChanges).toBe(4);
  });

  it('renders every section with a count, and says so when nothing differs', () => {
    const text = renderDiff(report);
    expect(text).toContain('Changes from old to new:\n');
    expect(text).toContain('Packages upgraded (1):\n  a:amd64  1.0-1  ->  1.1-1\n');
    expect(text).toContain('Packages downgraded (1):\n  c:amd64  3.0  ->  2.9\n');
    expect(text).toContain('Conffiles (1):\n  modified  /etc/a.conf  (a)\n');
    expect(text).toContain('/srv/was-file  file -> directory');
    const empty = planDiff({ from: 'x', to: 'y', packagesA: new Map(), packagesB: new Map(), known: new Set(), resolve: (path) => path, paths: [] });
    expect(renderDiff(empty)).toBe("Changes from x to y:\nNo differences.\n0 paths of dpkg's packages and database differ as well.\n");
  });
});
