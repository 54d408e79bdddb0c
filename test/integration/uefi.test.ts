// Issue #15 on UEFI: OVMF boots Debian's shim and GRUB from an ESP, as Debian's installer lays a disk
// out (ESP at /boot/efi, btrfs with @rootfs), GRUB installed from Debian's packages (grub-efi-amd64,
// grub-efi-amd64-signed, shim-signed) by apt and grub-install (test/harness/image.ts). A diverted apt
// run upgrades the GRUB packages and the kernel (Debian's own .debs rebuilt as a higher version,
// test/harness/upgrades.ts) into a new BE: the postinst's grub-install runs at commit, into the ESP and
// GRUB's home in the installed root. Then: the new BE boots; the previous BE, activated, boots with
// the new boot loader; a one-shot trial BE that fails is followed, unattended, by the default BE; the
// new BE is destroyed, and the machine boots again; a GRUB upgrade that the ESP has no room for is
// refused and writes nothing. Every boot's subvolume is the serial probe's; the ESP is read in the
// guest (this host's kernel mounts no vfat), GRUB's home and the BEs from the host between boots.
// BIOS tells the same story in boot.test.ts.
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { REPOSITORY } from '../harness/base.js';
import { cameUp, escaped } from '../harness/boot-expect.js';
import { readBootMenu } from '../harness/grub-menu.js';
import { BootMachine, SKIP_UNCHANGED_OFF, UPGRADES_SOURCES_LIST, ensureBootImage, upgradesOf } from '../harness/image.js';
import type { UpgradePackage } from '../harness/upgrades.js';

const ARTIFACTS = path.join(REPOSITORY, 'test-artifacts/uefi');
const APT = 'export DEBIAN_FRONTEND=noninteractive\n';
const ROOT = '@rootfs';
const FIRST = 'debian-12';
const BROKEN = 'broken';
const STEP_TIMEOUT_MS = 2_700_000;

/** The ESP's boot-loader files with their modification times, printed in the guest. */
const ESP_FILES = 'find /boot/efi/EFI -type f -printf "esp %P %T@\\n" | sort';

/** `esp PATH MTIME` lines of an output (between `marker` and the next marker, when given) as path → mtime. */
function espFiles(output: string, marker: string): Record<string, number> {
  // The marker's own line, not the `+ echo -- …` that sh -x traces before it.
  const section = output.split(`\n${marker}\n`)[1]?.split(/^-- /m)[0] ?? '';
  const files: Record<string, number> = {};
  for (const match of section.matchAll(/^esp (\S+) (\S+)$/gm)) files[match[1] as string] = Number(match[2]);
  return files;
}

describe('UEFI (OVMF): shim and GRUB upgraded inside a BE, with a kernel; rollback, one-shot, destroy', () => {
  let machine: BootMachine;
  let upgrades: UpgradePackage[];
  /** The kernel the upgrades repository has a higher version of (its package is linux-image-VERSION). */
  let kernelVersion: string;
  let upgraded: string;
  let homeModuleBefore: number;

  beforeAll(async () => {
    const image = await ensureBootImage(inject('bookwormBase'), inject('debPackage'), 'uefi');
    ({ packages: upgrades, kernelVersion } = upgradesOf(image));
    machine = await BootMachine.create(image, ARTIFACTS, 'uefi');
  });

  afterAll(async () => {
    if (machine === undefined) return;
    await machine.close();
    const { stdout } = await execa('losetup', ['-j', machine.image]);
    expect(stdout).toBe('');
  });

  const versionIn = (subvolume: string, name: string) => machine.installedVersion(subvolume, name);

  async function environments(): Promise<string[]> {
    return machine.withTopLevel(async (top) =>
      (await execa('btrfs', ['subvolume', 'list', top])).stdout
        .split('\n')
        .map((line) => line.replace(/^.* path /, ''))
        .filter((subvolume) => /^@bootenv\/[^./][^/]*$/.test(subvolume)),
    );
  }

  it('1. the installed root boots through OVMF, shim and GRUB from the ESP; beadm init', async () => {
    const installed = cameUp(await machine.boot('installed-root', 'findmnt -n -o FSTYPE,TARGET /boot/efi\nbeadm init'));
    expect(installed.subvolume).toBe(ROOT);
    expect(installed.output).toMatch(/^vfat\s+\/boot\/efi$/m);
    expect(installed.output).toContain(`Created boot environment ${FIRST}`);
    await machine.withTopLevel(async (top) => {
      homeModuleBefore = statSync(path.join(top, ROOT, 'boot/grub/x86_64-efi/normal.mod')).mtimeMs;
      // Every BE's fstab keeps the installer's ESP line.
      expect(readFileSync(path.join(top, `@bootenv/${FIRST}`, 'etc/fstab'), 'utf8')).toMatch(/^UUID=\S+ \/boot\/efi vfat umask=0077 0 1$/m);
    });
  }, STEP_TIMEOUT_MS);

  it("2. in the first BE, a diverted apt-get install of the upgraded GRUB packages and kernel lands in a new BE; grub-install ran at commit into the ESP and GRUB's home", async () => {
    const names = upgrades.map((upgrade) => upgrade.name);
    const report = cameUp(
      await machine.boot(
        'first-be-grub-upgrade',
        [
          'findmnt -n -o FSTYPE,TARGET /boot/efi',
          'echo "-- before"',
          ESP_FILES,
          SKIP_UNCHANGED_OFF,
          `cp ${UPGRADES_SOURCES_LIST} /etc/apt/sources.list.d/bootenv-test-upgrades.list`,
          `${APT}apt-get update -qq`,
          // Two seconds at least between the ESP's times (FAT keeps them to 2 s).
          'sleep 2',
          `apt-get install -y ${names.join(' ')}; echo "apt-get exit status $?"`,
          `dpkg-query -W ${names.join(' ')}`,
          'echo "-- after"',
          ESP_FILES,
          'echo "-- grub.cfg"',
          'cat /boot/efi/EFI/debian/grub.cfg',
          'echo "-- efibootmgr"',
          'efibootmgr || true',
        ].join('\n'),
        { late: true, timeoutSeconds: 1800 },
      ),
    );
    expect(report.subvolume).toBe(`@bootenv/${FIRST}`);
    expect(report.output).toMatch(/^vfat\s+\/boot\/efi$/m);
    const output = report.output;
    expect(output).toContain('apt-get exit status 0');
    upgraded = /apt's changes are in boot environment (\S+) \(@bootenv\/\S+\)/.exec(output)?.[1] as string;
    expect(upgraded, output).toBeDefined();
    // The postinst asked; bootenv ran it once dpkg had succeeded, into the ESP.
    expect(output).toMatch(/bootenv: grub-install --target=x86_64-efi .*runs when the new boot environment is committed/);
    expect(output).toMatch(new RegExp(`ran grub-install --target=x86_64-efi .*for boot environment ${upgraded}, into GRUB's home in the installed root and the ESP at /boot/efi`));
    // The running BE kept its versions; the new BE has the new ones.
    for (const upgrade of upgrades) {
      expect(output).toMatch(new RegExp(`^${upgrade.name}\\t${escaped(upgrade.oldVersion)}$`, 'm'));
      expect(await versionIn(`@bootenv/${upgraded}`, upgrade.name)).toBe(upgrade.newVersion);
      expect(await versionIn(`@bootenv/${FIRST}`, upgrade.name)).toBe(upgrade.oldVersion);
    }
    // shim and GRUB rewritten on the ESP, both paths; the prefix names the installed root, never a BE.
    const before = espFiles(output, '-- before');
    const after = espFiles(output, '-- after');
    for (const file of ['debian/grubx64.efi', 'debian/shimx64.efi', 'debian/grub.cfg', 'BOOT/BOOTX64.EFI', 'BOOT/grubx64.efi']) {
      expect(before[file], `${file} before`).toBeDefined();
      expect(after[file], `${file} after`).toBeGreaterThan(before[file] as number);
    }
    const config = output.split('\n-- grub.cfg\n')[1]?.split('-- efibootmgr')[0] ?? '';
    expect(config).toContain(`/${ROOT}/boot/grub`);
    expect(config).not.toContain('@bootenv');
    await machine.withTopLevel(async (top) => {
      // GRUB's home in the installed root got the new modules; the new BE's own /boot/grub copy was not written.
      expect(statSync(path.join(top, ROOT, 'boot/grub/x86_64-efi/normal.mod')).mtimeMs).toBeGreaterThan(homeModuleBefore);
      expect(statSync(path.join(top, `@bootenv/${upgraded}`, 'boot/grub/x86_64-efi/normal.mod')).mtimeMs).toBe(homeModuleBefore);
      const menu = readBootMenu(path.join(top, ROOT));
      expect(menu).toContain(`rootflags=subvol=@bootenv/${upgraded}\n`);
      expect(menu).toContain(`rootflags=subvol=@bootenv/${FIRST}\n`);
    });
  }, STEP_TIMEOUT_MS + 600_000);

  it('3. the new BE boots (its own kernel, through the new GRUB); beadm activate <previous>', async () => {
    const kernel = upgrades.find((upgrade) => upgrade.name === `linux-image-${kernelVersion}`) as UpgradePackage;
    const report = cameUp(
      await machine.boot('upgraded-be', [`dpkg-query -W ${kernel.name} grub-efi-amd64`, 'cat /proc/cmdline', 'findmnt -n -o FSTYPE,TARGET /boot/efi', `beadm activate ${FIRST}`].join('\n')),
    );
    expect(report.subvolume).toBe(`@bootenv/${upgraded}`);
    expect(report.output).toContain(`BOOT_IMAGE=/@bootenv/${upgraded}/boot/vmlinuz-`);
    expect(report.output).toMatch(new RegExp(`^${kernel.name}\\t${escaped(kernel.newVersion)}$`, 'm'));
    expect(report.output).toMatch(/^vfat\s+\/boot\/efi$/m);
  }, STEP_TIMEOUT_MS);

  it('4. the previous BE boots with the newer boot loader and its own older GRUB packages; a broken trial BE is activated once', async () => {
    const grub = upgrades.find((upgrade) => upgrade.name === 'grub-efi-amd64') as UpgradePackage;
    const report = cameUp(
      await machine.boot(
        'previous-be',
        [
          'set -e',
          'dpkg-query -W grub-efi-amd64',
          'cat /proc/cmdline',
          `beadm create -e ${FIRST} ${BROKEN}`,
          `beadm mount --writable ${BROKEN}`,
          `rm /run/bootenv/mnt/${BROKEN}/sbin/init`,
          `printf '#!/bin/sh\\nexit 1\\n' > /run/bootenv/mnt/${BROKEN}/sbin/init`,
          `chmod 755 /run/bootenv/mnt/${BROKEN}/sbin/init`,
          `beadm unmount ${BROKEN}`,
          `beadm activate -t ${BROKEN}`,
          'grub-editenv /boot/grub/grubenv list',
        ].join('\n'),
      ),
    );
    expect(report.subvolume).toBe(`@bootenv/${FIRST}`);
    expect(report.output).toContain(`BOOT_IMAGE=/@bootenv/${FIRST}/boot/vmlinuz-`);
    expect(report.output).toMatch(new RegExp(`^grub-efi-amd64\\t${escaped(grub.oldVersion)}$`, 'm'));
    expect(report.output).toContain(`next_entry=bootenv-${BROKEN}`);
  }, STEP_TIMEOUT_MS);

  it('5. GRUB on UEFI boots the one-shot trial, whose init fails; the next boot, unattended, is the default BE; beadm destroy <new>', async () => {
    const trial = await machine.boot('trial-broken', undefined);
    expect(trial.timedOut, trial.log).toBe(false);
    expect(trial.steps).toEqual([]);
    expect(trial.log).toMatch(new RegExp(`Loading Linux \\S+ from boot environment ${BROKEN} `));
    expect(trial.log).toContain(`bootenv: took the one-shot boot entry bootenv-${BROKEN}`);
    const report = cameUp(
      await machine.boot('unattended-after-failed-trial', ['journalctl -b -o cat -u bootenv-boot-complete.service', `beadm destroy ${BROKEN}`, `beadm destroy ${upgraded}`, 'beadm list -H'].join('\n'), { late: true }),
    );
    expect(report.subvolume).toBe(`@bootenv/${FIRST}`);
    expect(report.output).toContain(`The one-shot boot environment ${BROKEN} did not come up; cleared its activation.`);
    expect(report.output).toContain(`Destroyed boot environment ${upgraded}`);
    expect(await environments()).toEqual([`@bootenv/${FIRST}`]);
  }, STEP_TIMEOUT_MS);

  it('6. with the BE that brought the GRUB upgrade destroyed, the machine boots; a GRUB upgrade the ESP has no room for is refused (NO_SPACE) and writes nothing', async () => {
    const report = cameUp(
      await machine.boot(
        'after-destroy-esp-full',
        [
          'echo "-- before"',
          ESP_FILES,
          'cd /boot/efi/EFI && find . -type f -exec sha256sum {} + > /run/esp.sha256 && cd /',
          // Leave 512 KiB free on the ESP: rewriting shim and GRUB needs what they grow by and 1 MiB to spare.
          'free=$(df --output=avail -B1 /boot/efi | tail -n 1)',
          'dd if=/dev/zero of=/boot/efi/filler bs=64K count=$(( (free - 524288) / 65536 )) status=none',
          'df -B1 /boot/efi',
          `${APT}apt-get install -y grub-efi-amd64; echo "apt-get exit status $?"`,
          'rm /boot/efi/filler',
          'cd /boot/efi/EFI && sha256sum -c /run/esp.sha256 && cd /',
          'echo "-- after"',
          ESP_FILES,
          'dpkg-query -W grub-efi-amd64',
          'beadm list -H',
        ].join('\n'),
        { late: true, timeoutSeconds: 1200 },
      ),
    );
    expect(report.subvolume).toBe(`@bootenv/${FIRST}`);
    expect(report.output).toContain('apt-get exit status 100');
    expect(report.output).toMatch(/the ESP \(\/boot\/efi\) has 0\.\d MiB free, and writing .*EFI\/debian\/shimx64\.efi.* needs [\d.]+ MiB: nothing was written, and boot environment \S+ was discarded/);
    expect(report.output).not.toContain('ran grub-install');
    expect(report.output).toMatch(/^\.\/debian\/grubx64\.efi: OK$/m);
    expect(Object.keys(espFiles(report.output, '-- before'))).toContain('debian/shimx64.efi');
    expect(espFiles(report.output, '-- after')).toEqual(espFiles(report.output, '-- before'));
    expect(await environments()).toEqual([`@bootenv/${FIRST}`]);
  }, STEP_TIMEOUT_MS);
});
