// Unit tests for src/btrfs/mountinfo.ts: parsing /proc/self/mountinfo and finding subvolume mounts in it.
import { describe, expect, it } from 'vitest';
import { mountAt, mountedSubvolumeIds, mountsOfSubvolume, parseMountInfo, subvolumePathOf, type MountInfo } from '../../src/sys/mountinfo.js';
import { bootenvErrorFrom } from './helpers.js';

const TOP_LEVEL = '44 27 0:40 / /var/tmp/cap.PbRh/top rw,relatime - btrfs /dev/loop0 rw,discard=async,space_cache=v2,subvolid=5,subvol=/';
const BE_B1 =
  '45 27 0:40 /@bootenv/b1 /var/tmp/cap.PbRh/m rw,relatime - btrfs /dev/loop0 rw,discard=async,space_cache=v2,subvolid=258,subvol=/@bootenv/b1';
const ROOT = '23 1 0:27 /@ / rw,relatime shared:1 - btrfs /dev/vda2 rw,space_cache=v2,subvolid=256,subvol=/@';

describe('parseMountInfo', () => {
  it.each<[string, string, MountInfo]>([
    [
      'the top level of a loop-mounted btrfs',
      TOP_LEVEL,
      {
        mountId: 44,
        parentId: 27,
        device: '0:40',
        root: '/',
        mountPoint: '/var/tmp/cap.PbRh/top',
        fsType: 'btrfs',
        source: '/dev/loop0',
        superOptions: 'rw,discard=async,space_cache=v2,subvolid=5,subvol=/',
      },
    ],
    [
      'a BE subvolume',
      BE_B1,
      {
        mountId: 45,
        parentId: 27,
        device: '0:40',
        root: '/@bootenv/b1',
        mountPoint: '/var/tmp/cap.PbRh/m',
        fsType: 'btrfs',
        source: '/dev/loop0',
        superOptions: 'rw,discard=async,space_cache=v2,subvolid=258,subvol=/@bootenv/b1',
      },
    ],
    [
      'the booted root with one optional field',
      ROOT,
      {
        mountId: 23,
        parentId: 1,
        device: '0:27',
        root: '/@',
        mountPoint: '/',
        fsType: 'btrfs',
        source: '/dev/vda2',
        superOptions: 'rw,space_cache=v2,subvolid=256,subvol=/@',
      },
    ],
    [
      'two optional fields',
      '60 23 0:27 /@home /home rw,relatime shared:1 master:2 - btrfs /dev/vda2 rw,subvolid=257,subvol=/@home',
      {
        mountId: 60,
        parentId: 23,
        device: '0:27',
        root: '/@home',
        mountPoint: '/home',
        fsType: 'btrfs',
        source: '/dev/vda2',
        superOptions: 'rw,subvolid=257,subvol=/@home',
      },
    ],
    [
      'octal escapes for space, tab and backslash',
      '61 23 0:27 /@data/my\\040dir /mnt/with\\040space\\011tab\\134slash rw - btrfs /dev/disk\\040x rw,subvolid=260,subvol=/@data',
      {
        mountId: 61,
        parentId: 23,
        device: '0:27',
        root: '/@data/my dir',
        mountPoint: '/mnt/with space\ttab\\slash',
        fsType: 'btrfs',
        source: '/dev/disk x',
        superOptions: 'rw,subvolid=260,subvol=/@data',
      },
    ],
    [
      'a non-btrfs mount',
      '22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw',
      {
        mountId: 22,
        parentId: 1,
        device: '0:21',
        root: '/',
        mountPoint: '/proc',
        fsType: 'proc',
        source: 'proc',
        superOptions: 'rw',
      },
    ],
  ])('parses %s', (_, line, expected) => {
    expect(parseMountInfo(`${line}\n`)).toEqual([expected]);
  });

  it('parses every line of a table, in order', () => {
    const mounts = parseMountInfo([ROOT, TOP_LEVEL, BE_B1, ''].join('\n'));
    expect(mounts.map((mount) => mount.mountId)).toEqual([23, 44, 45]);
  });

  it.each([
    ['a line without the - separator', '44 27 0:40 / /mnt rw,relatime btrfs /dev/loop0 rw'],
    ['a line cut after the filesystem type', '44 27 0:40 / /mnt rw,relatime - btrfs'],
    ['a line cut after the source', '44 27 0:40 / /mnt rw,relatime - btrfs /dev/loop0'],
    ['garbage', 'not a mountinfo line'],
  ])('throws PARSE on %s', (_, line) => {
    expect(bootenvErrorFrom(() => parseMountInfo(`${ROOT}\n${line}\n`)).code).toBe('PARSE');
  });
});

describe('mountAt', () => {
  const stacked = parseMountInfo(
    [
      ROOT,
      '70 23 0:40 /@bootenv/b1 /mnt rw - btrfs /dev/loop0 rw,subvolid=258,subvol=/@bootenv/b1',
      '71 70 0:40 /@bootenv/b2 /mnt rw - btrfs /dev/loop0 rw,subvolid=259,subvol=/@bootenv/b2',
      '72 23 0:41 / /mnt/other rw - ext4 /dev/vdb1 rw',
    ].join('\n'),
  );

  it.each([
    ['/', 23],
    ['/mnt', 71],
    ['/mnt/other', 72],
  ])('finds the mount visible at %s (the last one stacked there)', (mountPoint, mountId) => {
    expect(mountAt(stacked, mountPoint)?.mountId).toBe(mountId);
  });

  it.each(['/nowhere', '/mnt/', ''])('returns undefined when nothing is mounted at %j', (mountPoint) => {
    expect(mountAt(stacked, mountPoint)).toBeUndefined();
  });
});

describe('subvolumePathOf', () => {
  it.each([
    [TOP_LEVEL, ''],
    [BE_B1, '@bootenv/b1'],
    [ROOT, '@'],
    ['80 23 0:27 //@bootenv/b2/etc /mnt rw - btrfs /dev/vda2 rw', '@bootenv/b2/etc'],
  ])('gives the path from the top level without a leading slash: %s', (line, path) => {
    const [mount] = parseMountInfo(line);
    expect(subvolumePathOf(mount as MountInfo)).toBe(path);
  });
});

describe('mountsOfSubvolume', () => {
  const mounts = parseMountInfo(
    [
      ROOT,
      '44 23 0:27 / /var/tmp/top rw - btrfs /dev/vda2 rw,subvolid=5,subvol=/',
      '45 23 0:27 /@bootenv/b1 /tmp/be_mount.a rw - btrfs /dev/vda2 rw,subvolid=258,subvol=/@bootenv/b1',
      '46 23 0:27 /@bootenv/b1 /tmp/be_mount.b rw shared:7 - btrfs /dev/vda2 rw,subvolid=258,subvol=/@bootenv/b1',
      '47 23 0:27 /@bootenv/b1/etc /tmp/etc rw - btrfs /dev/vda2 rw,subvolid=258,subvol=/@bootenv/b1',
      '48 23 0:40 /@bootenv/b1 /media/usb rw - btrfs /dev/sdb1 rw,subvolid=258,subvol=/@bootenv/b1',
      '49 23 0:27 /@bootenv/b1 /tmp/fake rw - tmpfs tmpfs rw',
    ].join('\n'),
  );

  it.each([
    ['0:27', '@', [23]],
    ['0:27', '', [44]],
    ['0:27', '@bootenv/b1', [45, 46]],
    ['0:27', '@bootenv/b1/etc', [47]],
    ['0:40', '@bootenv/b1', [48]],
    ['0:27', '@bootenv/b2', []],
    ['0:99', '@', []],
  ])('on device %s finds the btrfs mounts of %j', (device, subvolumePath, mountIds) => {
    expect(mountsOfSubvolume(mounts, device, subvolumePath).map((mount) => mount.mountId)).toEqual(mountIds);
  });
});

describe('mountedSubvolumeIds', () => {
  it('gives the subvolid= of every btrfs mount of that filesystem, and no other', () => {
    const mounts = parseMountInfo([TOP_LEVEL, BE_B1, ROOT, '50 27 0:41 / /run rw - tmpfs tmpfs rw,mode=755'].join('\n'));
    expect(mountedSubvolumeIds(mounts, '0:40')).toEqual(new Set([5, 258]));
    expect(mountedSubvolumeIds(mounts, '0:27')).toEqual(new Set([256]));
    expect(mountedSubvolumeIds(mounts, '0:41')).toEqual(new Set());
  });
});
