// Issue #5: what a kernel upgrade does to /boot inside a diverted apt run lands in the new BE. A
// package whose dpkg trigger runs update-initramfs (as linux-image and initramfs-tools upgrades do)
// is installed with a plain apt-get in the first BE of a sandbox; the initramfs rebuilt inside the
// transaction is in the new BE's /boot, and GRUB's entry for the new BE loads it from there, while
// the previous BE keeps its own. (The real-boot test does not repeat this: update-initramfs takes
// minutes under TCG.)
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { expect, inject, it } from 'vitest';
import { useSandbox } from '../harness/use-sandbox.js';

const MARKER_SCRIPT = 'scripts/init-bottom/bootenv-t-initramfs';

/**
 * Builds bootenv-t-initramfs into `outDir`: a package that triggers
 * update-initramfs and adds an init-bottom script to every initramfs built
 * while it is installed.
 */
async function buildInitramfsMarkerPackage(outDir: string): Promise<string> {
  const stage = mkdtempSync(path.join(tmpdir(), 'bootenv-initramfs-marker.'));
  try {
    mkdirSync(path.join(stage, 'DEBIAN'));
    writeFileSync(
      path.join(stage, 'DEBIAN/control'),
      'Package: bootenv-t-initramfs\nVersion: 1.0\nArchitecture: all\nMaintainer: bootenv tests <tests@bootenv.invalid>\nDescription: bootenv test package: its trigger rebuilds the initramfs\n',
    );
    writeFileSync(path.join(stage, 'DEBIAN/triggers'), 'activate-noawait update-initramfs\n');
    const script = path.join(stage, 'usr/share/initramfs-tools', MARKER_SCRIPT);
    mkdirSync(path.dirname(script), { recursive: true });
    writeFileSync(script, '#!/bin/sh\n[ "$1" = prereqs ] && exit 0\necho bootenv-t-initramfs > /run/bootenv-t-initramfs\n');
    chmodSync(script, 0o755);
    const deb = path.join(outDir, 'bootenv-t-initramfs_1.0_all.deb');
    await execa('dpkg-deb', ['--root-owner-group', '--build', stage, deb], { stdout: 'ignore' });
    return deb;
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

const sandbox = useSandbox(() => inject('bookwormBase'), 'ubuntu');

it('an initramfs rebuilt by a dpkg trigger in a diverted apt run is in the new BE, and its GRUB entry loads it', async () => {
  const init = await sandbox().boot('@', ['beadm', 'init', '--json']);
  expect(init.exitCode, init.stderr).toBe(0);
  const first = (JSON.parse(init.stdout) as { subvolume: string }).subvolume;
  await sandbox().withTopLevel((top) => buildInitramfsMarkerPackage(path.join(top, first, 'root')));
  const apt = await sandbox().boot(first, ['sh', '-c', 'DEBIAN_FRONTEND=noninteractive apt-get install -y /root/bootenv-t-initramfs_1.0_all.deb 2>&1; echo "rc=$?"']);
  expect(apt.stdout).toContain('rc=0');
  expect(apt.stdout).toContain('update-initramfs: Generating /boot/initrd.img-');
  const upgraded = /apt's changes are in boot environment \S+ \((@bootenv\/\S+)\)/.exec(apt.stdout)?.[1] as string;
  expect(upgraded, apt.stdout).toBeDefined();

  const initrds = await sandbox().withTopLevel(async (top) => {
    const name = readdirSync(path.join(top, first, 'boot')).find((file) => file.startsWith('initrd.img-')) as string;
    const digest = (subvolume: string) => createHash('sha256').update(readFileSync(path.join(top, subvolume, 'boot', name))).digest('hex');
    return { name, first: digest(first), upgraded: digest(upgraded), installedRoot: digest('@') };
  });
  expect(initrds.upgraded).not.toBe(initrds.first);
  expect(initrds.first).toBe(initrds.installedRoot);
  const listing = async (subvolume: string) => (await sandbox().boot(subvolume, ['lsinitramfs', `/boot/${initrds.name}`])).stdout;
  expect(await listing(upgraded)).toContain(MARKER_SCRIPT);
  expect(await listing(first)).not.toContain(MARKER_SCRIPT);
  const menu = await sandbox().readBootMenu();
  expect(menu).toContain(`initrd /${upgraded}/boot/${initrds.name}`);
  expect(menu).toContain(`initrd /${first}/boot/${initrds.name}`);
});
