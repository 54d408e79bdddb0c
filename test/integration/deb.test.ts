// The Debian package (issue #4): built from this checkout, lintian-clean, installed with
// apt-get into a debootstrapped Debian 12 and Debian 13 laid out like an Ubuntu install; then
// the whole story runs from the installed files only: beadm init, boot the first BE, a diverted
// apt-get from the fixture repository, boot the new BE, and removal/purge leaving every BE.
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { installRepositoryInRoot } from '../harness/repo.js';
import { Sandbox, isBootEnvironmentPath } from '../harness/sandbox.js';

const APT_ENV = 'export DEBIAN_FRONTEND=noninteractive; ';

it('lintian reports no error and no warning', async () => {
  const result = await execa('lintian', ['--fail-on', 'error,warning', inject('debPackage')], { reject: false });
  expect(result.stdout).toBe('');
  expect(result.exitCode).toBe(0);
});

async function bootEnvironments(sandbox: Sandbox): Promise<string[]> {
  return (await sandbox.subvolumes()).filter(isBootEnvironmentPath);
}

async function versionIn(sandbox: Sandbox, subvolume: string, name: string): Promise<string | undefined> {
  return sandbox.withTopLevel(async (top) => {
    const result = await execa('dpkg-query', [`--admindir=${path.join(top, subvolume, 'var/lib/dpkg')}`, '-f', '${db:Status-Abbrev} ${Version}', '-W', name], { reject: false });
    const [status, version] = result.stdout.trim().split(/\s+/);
    return result.exitCode === 0 && status === 'ii' ? version : undefined;
  });
}

describe.each([
  { distribution: 'Debian 12 (nodejs 18)', base: 'bookwormBase' as const, purge: 'diverted' },
  { distribution: 'Debian 13 (nodejs 20)', base: 'trixieBase' as const, purge: 'in place' },
])('$distribution', ({ base, purge }) => {
  let sandbox: Sandbox;
  let first: string;
  let upgraded: string;

  beforeAll(async () => {
    sandbox = await Sandbox.create(inject(base), 'ubuntu', { withBootenv: false });
    await sandbox.withTopLevel(async (top) => {
      copyFileSync(inject('debPackage'), path.join(top, '@/root/bootenv.deb'));
    });
  });

  afterAll(async () => {
    if (sandbox === undefined) return;
    await sandbox.close();
    await sandbox.assertNothingLeft();
  });

  it('apt-get install ./bootenv.deb works without making a BE; man beadm works', async () => {
    const result = await sandbox.boot('@', ['bash', '-c', `${APT_ENV} apt-get install -y /root/bootenv.deb; echo "rc=$?"; man -P cat beadm | head -5; apt-config dump | grep '^Dir::Bin::dpkg'; lsinitramfs /boot/initrd.img-* | grep bootenv`]);
    expect(result.stdout).toContain('rc=0');
    expect(result.stdout).toContain("bootenv: run 'beadm init' to start using boot environments");
    expect(result.stdout).toMatch(/beadm - manage boot environments on btrfs/);
    expect(result.stdout).toContain('Dir::Bin::dpkg "/usr/lib/bootenv/dpkg";');
    expect(result.stdout).not.toContain("apt's changes are in boot environment");
    // Its trigger rebuilt the initramfs with what takes a one-shot activation (beadm activate -t)
    // and what carries into a BE at its first boot.
    expect(result.stdout).toContain('usr/lib/bootenv/bootenv-one-shot');
    expect(result.stdout).toContain('usr/lib/bootenv/bootenv-boot-carry');
    expect(result.stdout).toContain('scripts/local-bottom/bootenv');
    expect(await bootEnvironments(sandbox)).toEqual([]);
  });

  it('beadm init from the installed files; the first BE boots', async () => {
    await sandbox.withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
    const init = await sandbox.boot('@', ['beadm', 'init', '--json']);
    expect(init.exitCode).toBe(0);
    first = (JSON.parse(init.stdout) as { subvolume: string }).subvolume;
    const list = await sandbox.boot(first, ['beadm', 'list', '-H']);
    expect(list.stdout.split('\t').slice(0, 2)).toEqual([first.replace('@bootenv/', ''), 'NR']);
    expect(await sandbox.readFile('@/boot/grub/grub.cfg')).toContain(`rootflags=subvol=${first}`);
  });

  it('a plain apt-get install is diverted by the installed hooks; the new BE boots with it', async () => {
    const result = await sandbox.boot(first, ['bash', '-c', `${APT_ENV} apt-get update -qq && apt-get install -y bootenv-t-marker; echo "rc=$?"`]);
    expect(result.stdout).toContain('rc=0');
    const match = /apt's changes are in boot environment (\S+) \((@bootenv\/\S+)\)/.exec(result.stdout);
    expect(match).not.toBeNull();
    upgraded = match?.[2] as string;
    expect(await versionIn(sandbox, first, 'bootenv-t-marker')).toBeUndefined();
    expect(await versionIn(sandbox, upgraded, 'bootenv-t-marker')).toBe('1.0');
    const booted = await sandbox.boot(upgraded, ['bash', '-c', 'dpkg-query -W bootenv-t-marker; beadm list -H | cut -f1,2']);
    expect(booted.stdout).toContain('bootenv-t-marker\t1.0');
    expect(booted.stdout).toContain(`${upgraded.replace('@bootenv/', '')}\tNR`);
  });

  it(`apt-get purge bootenv (${purge}) leaves every BE; apt then works in place`, async () => {
    const environments = await bootEnvironments(sandbox);
    let running = upgraded;
    if (purge === 'diverted') {
      // Removing bootenv is a package change like any other: it lands in a new BE.
      const result = await sandbox.boot(upgraded, ['bash', '-c', `${APT_ENV} apt-get purge -y bootenv; echo "rc=$?"`]);
      expect(result.stdout).toContain('rc=0');
      const match = /apt's changes are in boot environment \S+ \((@bootenv\/\S+)\)/.exec(result.stdout);
      expect(match).not.toBeNull();
      running = match?.[1] as string;
      expect(await versionIn(sandbox, upgraded, 'bootenv')).toBe('0.1.0');
      expect(await versionIn(sandbox, running, 'bootenv')).toBeUndefined();
    } else {
      const result = await sandbox.boot(upgraded, ['bash', '-c', `${APT_ENV} BOOTENV=off apt-get purge -y bootenv; echo "rc=$?"`]);
      expect(result.stdout).toContain('rc=0');
      expect(result.stdout + result.stderr).toContain('your boot environments were kept');
      expect(await versionIn(sandbox, upgraded, 'bootenv')).toBeUndefined();
      // postrm ran update-grub in the BE, which writes GRUB's home through the /boot/grub bind.
      expect(await sandbox.readFile('@/boot/grub/grub.cfg')).not.toContain("--id 'bootenv-");
    }
    const after = await sandbox.boot(running, ['bash', '-c', `${APT_ENV} ls /etc/apt/apt.conf.d /usr/lib/bootenv /etc/grub.d 2>&1; apt-config dump | grep -c bootenv; apt-get install -y bootenv-t-many-1; echo "rc=$?"`]);
    expect(after.stdout).not.toContain('50bootenv');
    expect(after.stdout).toContain("ls: cannot access '/usr/lib/bootenv'");
    expect(after.stdout).not.toContain('09_bootenv');
    expect(after.stdout).toMatch(/^0$/m);
    expect(after.stdout).toContain('rc=0');
    expect(after.stdout).not.toContain('bootenv:');
    expect(await versionIn(sandbox, running, 'bootenv-t-many-1')).toBe('1.0');
    const remaining = await bootEnvironments(sandbox);
    expect(remaining).toEqual(expect.arrayContaining(environments));
    expect(remaining).toHaveLength(purge === 'diverted' ? environments.length + 1 : environments.length);
  });
});
