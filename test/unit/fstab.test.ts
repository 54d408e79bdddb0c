// Unit tests for src/be/fstab.ts: a BE's own /etc/fstab and the root subvolume named in an fstab.
import { describe, expect, it } from 'vitest';
import { INSTALLED_ROOT_MOUNTPOINT, rewriteFstabForBootEnvironment, rootSubvolumeInFstab } from '../../src/be/fstab.js';
import { bootenvErrorFrom } from './helpers.js';

const UUID = '9759ea5f-e03d-4d69-a24a-9d439e386768';

// As written by the Ubuntu installer (subiquity/ubiquity) on btrfs.
const UBUNTU_FSTAB = [
  '# /etc/fstab: static file system information.',
  '#',
  "# Use 'blkid' to print the universally unique identifier for a",
  '# device; this may be used with UUID= as a more robust way to name devices',
  '# that works even if disks are added and removed. See fstab(5).',
  '#',
  '# <file system> <mount point>   <type>  <options>       <dump>  <pass>',
  '# / was on /dev/vda2 during installation',
  `UUID=${UUID} /               btrfs   defaults,subvol=@ 0       1`,
  '# /boot/efi was on /dev/vda1 during installation',
  'UUID=4A1B-2C3D  /boot/efi       vfat    umask=0077      0       1',
  '# /home was on /dev/vda2 during installation',
  `UUID=${UUID} /home           btrfs   defaults,subvol=@home 0       2`,
  '/swapfile                                 none            swap    sw              0       0',
  '',
].join('\n');

// As written by the Debian installer (partman-btrfs).
const DEBIAN_FSTAB = [
  '# /etc/fstab: static file system information.',
  '#',
  '# <file system> <mount point>   <type>  <options>       <dump>  <pass>',
  '# / was on /dev/vda1 during installation',
  `UUID=${UUID} /               btrfs   defaults,subvol=@rootfs 0       0`,
  '/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0',
  '',
].join('\n');

const MANAGED_COMMENT = "# bootenv: the installed root and GRUB's home, shared by every BE (see beadm(8))";
const GRUB_BIND = `${INSTALLED_ROOT_MOUNTPOINT}/boot/grub /boot/grub none bind,x-systemd.requires-mounts-for=${INSTALLED_ROOT_MOUNTPOINT} 0 0`;

function lines(text: string): string[] {
  return text.split('\n');
}

function countManagedBlocks(text: string): number {
  return lines(text).filter((line) => line === MANAGED_COMMENT).length;
}

describe('rewriteFstabForBootEnvironment', () => {
  it('mounts / from the BE, keeps every other line byte for byte and appends one managed block', () => {
    const rewritten = rewriteFstabForBootEnvironment(UBUNTU_FSTAB, '@bootenv/b2', '@');
    const original = lines(UBUNTU_FSTAB.slice(0, -1));
    expect(rewritten).toBe(
      [
        ...original.slice(0, 8),
        `UUID=${UUID} / btrfs defaults,subvol=@bootenv/b2 0 1`,
        ...original.slice(9),
        MANAGED_COMMENT,
        `UUID=${UUID} /.rootbe btrfs defaults,subvol=@ 0 0`,
        GRUB_BIND,
        '',
      ].join('\n'),
    );
  });

  it('handles the Debian installer layout with @rootfs', () => {
    const rewritten = rewriteFstabForBootEnvironment(DEBIAN_FSTAB, '@bootenv/b1', '@rootfs');
    expect(lines(rewritten)).toEqual([
      ...lines(DEBIAN_FSTAB).slice(0, 4),
      `UUID=${UUID} / btrfs defaults,subvol=@bootenv/b1 0 0`,
      '/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0',
      MANAGED_COMMENT,
      `UUID=${UUID} /.rootbe btrfs defaults,subvol=@rootfs 0 0`,
      GRUB_BIND,
      '',
    ]);
  });

  it.each([
    ['a rename', '@bootenv/b2', '@bootenv/renamed'],
    ['a BE made from a BE', '@bootenv/b2', '@bootenv/b3'],
    ['the same BE again', '@bootenv/b2', '@bootenv/b2'],
  ])('rewriting twice (%s) keeps exactly one managed block', (_, first, second) => {
    const once = rewriteFstabForBootEnvironment(UBUNTU_FSTAB, first, '@');
    const twice = rewriteFstabForBootEnvironment(once, second, '@');
    expect(countManagedBlocks(twice)).toBe(1);
    expect(lines(twice).filter((line) => line.includes(' /.rootbe '))).toEqual([`UUID=${UUID} /.rootbe btrfs defaults,subvol=@ 0 0`]);
    expect(lines(twice).filter((line) => line.includes(' /boot/grub '))).toEqual([GRUB_BIND]);
    expect(twice).toBe(rewriteFstabForBootEnvironment(UBUNTU_FSTAB, second, '@'));
    expect(rootSubvolumeInFstab(twice)).toBe(second);
  });

  it.each([
    ['subvolid= before subvol=', 'noatime,subvolid=256,subvol=/@,compress=zstd:1', 'noatime,compress=zstd:1'],
    ['subvolid= alone', 'defaults,subvolid=256', 'defaults'],
    ['no options at all', undefined, 'defaults'],
  ])('drops the old subvolume options: %s', (_, options, kept) => {
    const rootLine = [`UUID=${UUID}`, '/', 'btrfs', ...(options === undefined ? [] : [options, '0', '1'])].join('\t');
    const rewritten = lines(rewriteFstabForBootEnvironment(`${rootLine}\n`, '@bootenv/b2', '@'));
    const rest = options === undefined ? '' : ' 0 1';
    expect(rewritten[0]).toBe(`UUID=${UUID} / btrfs ${kept},subvol=@bootenv/b2${rest}`);
    expect(rewritten[2]).toBe(`UUID=${UUID} /.rootbe btrfs ${kept},subvol=@ 0 0`);
  });

  it('keeps a file without a final newline, adding one', () => {
    const rewritten = rewriteFstabForBootEnvironment(`UUID=${UUID} / btrfs subvol=@ 0 1`, '@bootenv/b2', '@');
    expect(rewritten.endsWith(`${GRUB_BIND}\n`)).toBe(true);
    expect(lines(rewritten)).toHaveLength(5);
  });

  it('ignores a commented-out / line', () => {
    const text = `# UUID=0000 / ext4 errors=remount-ro 0 1\nUUID=${UUID} / btrfs subvol=@ 0 1\n`;
    const rewritten = lines(rewriteFstabForBootEnvironment(text, '@bootenv/b2', '@'));
    expect(rewritten.slice(0, 2)).toEqual(['# UUID=0000 / ext4 errors=remount-ro 0 1', `UUID=${UUID} / btrfs subvol=@bootenv/b2 0 1`]);
  });

  it.each([
    ['/ on ext4', 'UUID=0000 / ext4 errors=remount-ro 0 1\n', /ext4, not btrfs/],
    ['no line for /', `UUID=${UUID} /home btrfs subvol=@home 0 2\n`, /no line for \//],
    ['an empty fstab', '', /no line for \//],
    ['only comments', '# / was on /dev/vda2\n#\n', /no line for \//],
  ])('throws UNSUPPORTED for %s', (_, text, message) => {
    const error = bootenvErrorFrom(() => rewriteFstabForBootEnvironment(text, '@bootenv/b2', '@'));
    expect(error.code).toBe('UNSUPPORTED');
    expect(error.message).toMatch(message);
  });
});

describe('rootSubvolumeInFstab', () => {
  it.each([
    ['Ubuntu', UBUNTU_FSTAB, '@'],
    ['Debian installer', DEBIAN_FSTAB, '@rootfs'],
    ['a leading slash', `UUID=${UUID} / btrfs defaults,subvol=/@ 0 1\n`, '@'],
    ['a BE fstab', rewriteFstabForBootEnvironment(UBUNTU_FSTAB, '@bootenv/b2', '@'), '@bootenv/b2'],
    ['no subvol option', `UUID=${UUID} / btrfs defaults 0 1\n`, undefined],
    ['only subvolid', `UUID=${UUID} / btrfs subvolid=256 0 1\n`, undefined],
    ['/ on ext4', 'UUID=0000 / ext4 errors=remount-ro 0 1\n', undefined],
    ['no line for /', `UUID=${UUID} /home btrfs subvol=@home 0 2\n`, undefined],
  ])('%s → %j', (_, text, subvolume) => {
    expect(rootSubvolumeInFstab(text)).toBe(subvolume);
  });
});
