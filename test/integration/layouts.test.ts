// Which installs beadm adopts and which it refuses, on real btrfs images: Debian's @rootfs
// is adopted like Ubuntu's @; a root that is not btrfs, a root at the btrfs top level and a
// separate /boot are refused with a clear error and nothing changed.
import path from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { EXIT_CODES } from '../../src/errors.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { useSandbox } from '../harness/use-sandbox.js';

describe('Debian installer layout (@rootfs, no @home)', () => {
  const sandbox = useSandbox(() => inject('bookwormBase'), 'debian');

  it('check passes silently, list says init is needed', async () => {
    const check = await sandbox().beadm('@rootfs', ['check']);
    expect(check).toMatchObject({ exitCode: 0, stdout: '', stderr: '' });
    const list = await sandbox().beadm('@rootfs', ['list']);
    expect(list.exitCode).toBe(EXIT_CODES.NOT_INITIALIZED);
    expect(list.stderr).toMatch(/beadm init/);
  });

  it('before beadm init, apt runs dpkg in place (the system has not adopted BEs) and says so', async () => {
    await sandbox().withTopLevel((top) => installRepositoryInRoot(path.join(top, '@rootfs')));
    const script = 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y bootenv-t-marker 2>&1; echo "rc=$?"; dpkg-query -W bootenv-t-marker';
    const result = await sandbox().boot('@rootfs', ['bash', '-c', script]);
    expect(result.stdout).toContain('rc=0');
    expect(result.stdout).toContain('beadm: note: this system has no boot environments yet: dpkg runs in place, without a boot environment');
    expect(result.stdout).toContain('bootenv-t-marker\t1.0');
    expect(await sandbox().subvolumes()).toEqual(['@rootfs']);
  });

  it('init adopts @rootfs and the new BE boots by its own fstab', async () => {
    const init = await sandbox().beadm('@rootfs', ['init', '--name', 'first', '-d', 'adopted']);
    expect(init.stderr).toBe('');
    expect(init.exitCode).toBe(0);
    const subvolumes = await sandbox().subvolumes();
    expect(subvolumes.filter((subvolume) => !subvolume.startsWith('@bootenv/.carry/'))).toEqual(['@rootfs', '@bootenv/first']);
    // The carry's base: @rootfs as of init, for what it changes until the first boot of the BE.
    expect(subvolumes.filter((subvolume) => subvolume.startsWith('@bootenv/.carry/'))).toEqual([expect.stringMatching(/^@bootenv\/\.carry\/[0-9a-f-]{36}\/base-[0-9a-f]{8}$/)]);
    const fstab = await sandbox().readFile('@bootenv/first/etc/fstab');
    expect(fstab).toMatch(/ \/ btrfs defaults,subvol=@bootenv\/first 0 1$/m);
    expect(fstab).toMatch(/ \/\.rootbe btrfs defaults,subvol=@rootfs 0 0$/m);
    const listed = JSON.parse((await sandbox().beadm('@bootenv/first', ['list', '--json'])).stdout);
    expect(listed).toMatchObject([{ name: 'first', active: 'NR', description: 'adopted', origin: '(installed root)' }]);
    expect(await sandbox().readBootMenu('@rootfs')).toContain('rootflags=subvol=@bootenv/first');
  });
});

describe('refused layouts', () => {
  const sandbox = useSandbox(() => inject('bookwormBase'), 'flat');

  it('a root at the btrfs top level is refused and nothing changes', async () => {
    const before = await sandbox().subvolumes();
    for (const args of [['check'], ['init']]) {
      const result = await sandbox().beadm('', args);
      expect(result.exitCode).toBe(EXIT_CODES.UNSUPPORTED);
    }
    const init = await sandbox().beadm('', ['init']);
    expect(init.stderr).toMatch(/top level .* not a subvolume/);
    expect(init.stderr).toMatch(/hint: move the system into a subvolume/);
    expect(await sandbox().subvolumes()).toEqual(before);
  });

  it('a root that is not btrfs is refused', async () => {
    // Same files, but / is a tmpfs (over the image's /mnt, inside the boot's namespace) holding bind mounts of them.
    const setup = [
      'R="$NEWROOT/mnt"; mount -t tmpfs tmpfs "$R"',
      'for d in usr etc bin sbin lib lib64 var root; do if [ -L "$NEWROOT/$d" ]; then cp -a "$NEWROOT/$d" "$R/"; elif [ -d "$NEWROOT/$d" ]; then mkdir "$R/$d"; mount --bind "$NEWROOT/$d" "$R/$d"; fi; done',
      'mkdir "$R/proc" "$R/dev" "$R/tmp" "$R/run" && mount -t proc proc "$R/proc" && mount --rbind /dev "$R/dev"',
      'NEWROOT="$R"',
    ].join('\n');
    const result = await sandbox().boot('', ['/usr/sbin/beadm', 'init'], { setup });
    expect(result.exitCode).toBe(EXIT_CODES.UNSUPPORTED);
    expect(result.stderr).toMatch(/root filesystem is tmpfs, not btrfs/);
  });
});

describe('separate /boot', () => {
  const sandbox = useSandbox(() => inject('bookwormBase'), 'ubuntu');

  it('is refused with what to do, and nothing changes', async () => {
    const before = await sandbox().subvolumes();
    const result = await sandbox().beadm('@', ['init'], { setup: 'mount -t tmpfs tmpfs "$NEWROOT/boot"' });
    expect(result.exitCode).toBe(EXIT_CODES.UNSUPPORTED);
    expect(result.stderr).toMatch(/\/boot is a separate filesystem/);
    expect(result.stderr).toMatch(/hint: copy \/boot into the root filesystem/);
    expect(await sandbox().subvolumes()).toEqual(before);
  });
});
