// Boot truth (issue #5): a real GRUB 2.06 boots a real Debian 12 kernel and systemd in qemu, from a
// GPT disk laid out like an Ubuntu install with bootenv installed from its .deb (test/harness/image.ts).
// Every boot is one qemu run; the probe unit prints the booted subvolume (`findmnt -no SOURCE /`) on
// the serial console, runs the step this test left for it and powers off (or, where the story needs
// it, shuts down for real with systemctl reboot). Serial logs are kept in test-artifacts/boot/NN-step.log.
// The steps depend on each other and run in order.
//
// Issue #14 runs through it: a service (bootenv-test-writer) appends a numbered, fsynced record to
// /var/lib/bootenv-test-writer/records every 200 ms in every fully booted system until systemd stops
// it at shutdown, and names its last record on the console. After a diverted apt-get upgrade (the boot
// package, ../harness/boot-package.ts: a conffile changed, a system user added) and the admin's own
// edits, a real shutdown and the new BE's boot: every record up to the last one is there (counted),
// both users, the admin's edits (the conffile's conflict saved beside it and reported). Activating the
// previous BE and rebooting rolls the system back (old versions) while the data follows (the records
// written in the new BE are in the previous one). A trial BE that fails leaves the last good BE's
// data whole.
//
// Issue #15 runs through it too: GRUB is Debian's grub-pc, installed by apt-get and grub-install on the
// image's first boot. The apt boot's apt-get upgrade also takes the upgrades repository's GRUB packages
// (Debian's own .debs rebuilt as a higher version; the kernel's upgrade in a BE is uefi.test.ts's, to
// keep CI's time): grub-pc's postinst asks grub-install for
// /dev/vda, which bootenv runs at commit, into GRUB's home in @ (the BIOS boot partition's core.img keeps
// a prefix naming @/boot/grub); the new BE boots through that GRUB, the previous BE too, and after the
// new BE is destroyed the machine still boots. UEFI tells the same story in uefi.test.ts.
import { statSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { REPOSITORY } from '../harness/base.js';
import { cameUp, escaped } from '../harness/boot-expect.js';
import { bootPackage } from '../harness/boot-package.js';
import { readBootMenu } from '../harness/grub-menu.js';
import { BootMachine, SKIP_UNCHANGED_OFF, UPGRADES_SOURCES_LIST, ensureBootImage, upgradesOf, type BootResult } from '../harness/image.js';
import type { UpgradePackage } from '../harness/upgrades.js';

const ARTIFACTS = path.join(REPOSITORY, 'test-artifacts/boot');
const APT = 'export DEBIAN_FRONTEND=noninteractive\n';
const FIRST = 'debian-12';
const BROKEN = 'broken';
const PACKAGE = bootPackage();
const RECORDS = '/var/lib/bootenv-test-writer/records';
/** Ends the step's boot with a real shutdown (the probe runs systemctl reboot). */
const REBOOT = 'touch /run/bootenv-test-reboot';
/** Prints the records file's count and last line, and any gap in its numbering. */
const COUNT_RECORDS = `awk '$1 != NR { print "records: gap at line " NR ": " $0; exit 1 } END { print "records: " NR " last: " $0 }' ${RECORDS}`;
/** A step boots at most twice; a boot has its own time limit (1200 s by default, 2400 s for the apt run). */
const STEP_TIMEOUT_MS = 2_700_000;

/** The writer's last record of a boot that shut down for real, from its serial log ("N BOOT stop"). */
function lastRecord(result: BootResult): string {
  const match = /BOOTENV-WRITER last=(\d+) boot=(\S+)/.exec(result.log);
  expect(match, `the writer named no last record at shutdown:\n${result.log}`).not.toBeNull();
  return `${match?.[1]} ${match?.[2]} stop`;
}

/** `beadm list -H` lines of an output, as name → Active flags. */
function activeFlags(output: string): Record<string, string> {
  const flags: Record<string, string> = {};
  for (const line of output.split('\n')) {
    // illumos beadm's fields: name;uuid;active;mountpoint;space;policy;created.
    const fields = line.split(';');
    if (fields.length === 7 && fields[0] !== undefined) flags[fields[0]] = fields[2] ?? '';
  }
  return flags;
}

describe('booting bootenv for real: GRUB 2.06, Debian 12 kernel and systemd, on btrfs', () => {
  let machine: BootMachine;
  let upgraded: string;
  /** Output of a boot whose step was the next test's action. */
  let upgradeOutput: string;
  let activateOutput: string;
  /** The writer's last record at the latest real shutdown. */
  let shutdownRecord: string;
  /** GRUB's packages, rebuilt as a higher version in the image's upgrades repository. */
  let upgrades: UpgradePackage[];
  /** The installed kernel (its package is linux-image-VERSION), which this story does not upgrade. */
  let kernelVersion: string;
  /** mtime of a GRUB module in GRUB's home before the upgrade. */
  let homeModuleBefore: number;

  beforeAll(async () => {
    const image = await ensureBootImage(inject('bookwormBase'), inject('debPackage'));
    ({ packages: upgrades, kernelVersion } = upgradesOf(image));
    machine = await BootMachine.create(image, ARTIFACTS);
  });

  afterAll(async () => {
    if (machine === undefined) return;
    await machine.close();
    const { stdout } = await execa('losetup', ['-j', machine.image]);
    expect(stdout).toBe('');
  });

  const versionIn = (subvolume: string, name: string) => machine.installedVersion(subvolume, name);

  /** A BE's records file read from the host: every line numbered 1…N in order (zero lost), ending with `last` when given. */
  async function recordsIn(subvolume: string): Promise<string[]> {
    const text = await machine.withTopLevel(async (top) => (await execa('cat', [path.join(top, subvolume, RECORDS)])).stdout);
    const lines = text.split('\n');
    lines.forEach((line, index) => expect(line.split(' ')[0], `record ${index + 1} of ${subvolume}`).toBe(String(index + 1)));
    return lines;
  }

  async function grubenv(): Promise<string> {
    return machine.withTopLevel(async (top) => (await execa('grub-editenv', [path.join(top, '@/boot/grub/grubenv'), 'list'])).stdout);
  }

  // Each boot checks what the previous one prepared and then does the next step's action, so that
  // the story takes 8 boots: qemu without KVM makes each one cost about a minute.
  it('1. first boot of the installed system; beadm init; reboot → the first BE is up', async () => {
    const installed = cameUp(await machine.boot('installed-root', 'beadm init'));
    expect(installed.source).toBe('/dev/vda2[/@]');
    expect(installed.output).toContain(`Created boot environment ${FIRST}`);
    homeModuleBefore = await machine.withTopLevel(async (top) => statSync(path.join(top, '@/boot/grub/i386-pc/normal.mod')).mtimeMs);
    expect(await machine.grubCorePrefix()).toBe('(,gpt2)/@/boot/grub');
    // Step 2's action in the same boot, fully booted (the writer runs): a diverted apt-get install, then
    // unattended-upgrade (as the apt-daily-upgrade timer runs it) upgrading bootenv-t-changed, then
    // apt-get upgrade of the boot package, all stacked onto the same pending BE; then the admin adds a
    // user and edits the package's conffile and a file no package owns; then a real shutdown.
    // (An initramfs rebuilt inside a transaction is proven in initramfs.test.ts: update-initramfs
    // costs minutes under TCG.)
    const firstBoot = await machine.boot(
      'first-be-apt-upgrade',
      [
        'beadm list -H',
        'cat /proc/cmdline',
        SKIP_UNCHANGED_OFF,
        `cp ${UPGRADES_SOURCES_LIST} /etc/apt/sources.list.d/bootenv-test-upgrades.list`,
        `${APT}apt-get update -qq`,
        'apt-get install -y bootenv-t-marker',
        'unattended-upgrade -v; echo "unattended-upgrade exit status $?"',
        'apt-get upgrade -y; echo "apt-get upgrade exit status $?"',
        // The upgrade's system user, in the pending BE (for the log: the carry merges the accounts).
        `grep -H '^${PACKAGE.systemUser}:' /run/bootenv/pending/be/root/etc/passwd || echo 'no ${PACKAGE.systemUser} in the pending BE'`,
        'cat /run/reboot-required',
        `dpkg-query -W bootenv-t-changed ${PACKAGE.name}`,
        `dpkg-query -W ${upgrades.map((upgrade) => upgrade.name).join(' ')}`,
        'useradd -m alice',
        `echo 'local = yes' >> ${PACKAGE.conffile}`,
        "echo 'maintenance window: Sundays' >> /etc/motd",
        COUNT_RECORDS,
        REBOOT,
      ].join('\n'),
      { late: true, timeoutSeconds: 2400 },
    );
    const first = cameUp(firstBoot);
    expect(first.subvolume).toBe(`@bootenv/${FIRST}`);
    expect(first.output).toContain(`rootflags=subvol=@bootenv/${FIRST}`);
    expect(activeFlags(first.output)[FIRST]).toBe('NR');
    expect(first.output).toMatch(/^records: \d+ last: /m);
    upgradeOutput = first.output;
    shutdownRecord = lastRecord(firstBoot);
  }, STEP_TIMEOUT_MS + 1_200_000);

  it('2. three apt runs stack into one BE; after a real shutdown it is up with every record written until then, both users, the admin\'s edits and the upgrades; the previous BE keeps the old versions', async () => {
    const matches = [...upgradeOutput.matchAll(/apt's changes are in boot environment (\S+) \(@bootenv\/\S+\)/g)];
    expect(matches.length, upgradeOutput).toBeGreaterThanOrEqual(3);
    upgraded = matches.at(-1)?.[1] as string;
    expect(upgradeOutput).toContain(`bootenv: ${upgraded} includes and replaces ${matches.at(-2)?.[1]}`);
    expect(upgradeOutput).toContain('All upgrades installed');
    expect(upgradeOutput).toContain('unattended-upgrade exit status 0');
    expect(upgradeOutput).toContain('apt-get upgrade exit status 0');
    expect(upgradeOutput).toContain('*** System restart required ***');
    // The running BE was not changed: apt's and unattended-upgrade's dpkg ran in the new BE.
    expect(upgradeOutput).toMatch(/^bootenv-t-changed\t1\.0$/m);
    expect(upgradeOutput).toMatch(new RegExp(`^${PACKAGE.name}\\t${PACKAGE.oldVersion.replace(/\./g, '\\.')}$`, 'm'));
    const bootResult = await machine.boot(
      'upgraded-be',
      [
        `dpkg-query -W bootenv-t-changed ${PACKAGE.name} ${upgrades.map((upgrade) => upgrade.name).join(' ')}`,
        'cat /usr/share/bootenv-t-changed/version',
        'cat /proc/cmdline',
        COUNT_RECORDS,
        `getent passwd alice ${PACKAGE.systemUser} | cut -d: -f1`,
        `cat ${PACKAGE.conffile}.bootenv-origin`,
        'tail -n 1 /etc/motd',
        'journalctl -b -o cat -u bootenv-boot-complete.service',
        // Step 3's action: roll back to the first BE; a real shutdown.
        `beadm activate ${FIRST}`,
        'beadm list -H',
        REBOOT,
      ].join('\n'),
      { late: true },
    );
    const booted = cameUp(bootResult);
    expect(booted.subvolume).toBe(`@bootenv/${upgraded}`);
    expect(booted.output).toMatch(/^bootenv-t-changed\t1\.1$/m);
    expect(booted.output).toMatch(new RegExp(`^${PACKAGE.name}\\t${PACKAGE.newVersion.replace(/\./g, '\\.')}$`, 'm'));
    // GRUB loaded the kernel and the initramfs from the new BE's own /boot.
    expect(booted.output).toContain(`BOOT_IMAGE=/@bootenv/${upgraded}/boot/vmlinuz-`);
    // The carry, from the new BE's initramfs: every record the writer wrote until the shutdown, none lost.
    expect(bootResult.log).toMatch(new RegExp(`bootenv: carried into ${upgraded} what ${FIRST} changed since \\S+: \\d+ created`));
    const conflict = `bootenv: conflict: ${PACKAGE.conffile}: changed in both: ${upgraded} keeps its version; ${FIRST}'s is saved as ${PACKAGE.conffile}.bootenv-origin`;
    expect(bootResult.log).toContain(conflict);
    expect(booted.output).toContain(conflict);
    expect(booted.output).not.toMatch(/^records: gap/m);
    expect(booted.output).toMatch(/^alice\n/m);
    expect(booted.output).toContain(`\n${PACKAGE.systemUser}\n`);
    expect(booted.output).toContain('local = yes');
    expect(booted.output).toMatch(/^maintenance window: Sundays$/m);
    const menu = await machine.withTopLevel(async (top) => readBootMenu(path.join(top, '@')));
    expect(menu).toMatch(new RegExp(`initrd\\s+/@bootenv/${upgraded}/boot/initrd\\.img-`));
    expect(await versionIn(`@bootenv/${FIRST}`, 'bootenv-t-changed')).toBe('1.0');
    expect(await versionIn(`@bootenv/${upgraded}`, 'bootenv-t-changed')).toBe('1.1');
    expect(await versionIn(`@bootenv/${FIRST}`, 'bootenv-t-marker')).toBeUndefined();
    expect(await versionIn(`@bootenv/${upgraded}`, 'bootenv-t-marker')).toBe('1.0');
    expect(await versionIn(`@bootenv/${upgraded}`, PACKAGE.name)).toBe(PACKAGE.newVersion);
    // GRUB: upgraded in the new BE, not in the running one; grub-pc's postinst asked for
    // grub-install, which ran at commit into GRUB's home in @ and the BIOS boot partition.
    for (const upgrade of upgrades) {
      expect(await versionIn(`@bootenv/${upgraded}`, upgrade.name)).toBe(upgrade.newVersion);
      expect(await versionIn(`@bootenv/${FIRST}`, upgrade.name)).toBe(upgrade.oldVersion);
      expect(upgradeOutput).toMatch(new RegExp(`^${upgrade.name}\\t${escaped(upgrade.oldVersion)}$`, 'm'));
    }
    expect(upgradeOutput).toContain('bootenv: grub-install --target=i386-pc --force --no-floppy /dev/vda runs when the new boot environment is committed');
    expect(upgradeOutput).toContain(`ran grub-install --target=i386-pc --force --no-floppy /dev/vda for boot environment ${upgraded}, into GRUB's home in the installed root`);
    expect(await machine.grubCorePrefix()).toBe('(,gpt2)/@/boot/grub');
    await machine.withTopLevel(async (top) => {
      expect(statSync(path.join(top, '@/boot/grub/i386-pc/normal.mod')).mtimeMs).toBeGreaterThan(homeModuleBefore);
      expect(statSync(path.join(top, `@bootenv/${upgraded}`, 'boot/grub/i386-pc/normal.mod')).mtimeMs).toBe(homeModuleBefore);
    });
    // The kernel is the one the previous BE boots: this story upgrades GRUB alone.
    expect(upgrades.map((upgrade) => upgrade.name)).not.toContain(`linux-image-${kernelVersion}`);
    expect(booted.output).toContain(`BOOT_IMAGE=/@bootenv/${upgraded}/boot/vmlinuz-${kernelVersion} `);
    // From the host: the new BE holds every record of the first BE's boot up to its last, and its own after it.
    const records = await recordsIn(`@bootenv/${upgraded}`);
    expect(records).toContain(shutdownRecord);
    expect(records.at(-1)).toBe(lastRecord(bootResult));
    expect(await machine.withTopLevel(async (top) => (await execa('cat', [path.join(top, `@bootenv/${upgraded}`, PACKAGE.conffile)])).stdout + '\n')).toBe(PACKAGE.newConffile);
    shutdownRecord = lastRecord(bootResult);
    activateOutput = booted.output;
  }, STEP_TIMEOUT_MS);

  it('3. beadm activate <previous>; a real shutdown → the previous BE is up with its old packages, and with every record the new BE wrote', async () => {
    expect(activeFlags(activateOutput)).toMatchObject({ [FIRST]: 'R', [upgraded]: 'N' });
    const previousBoot = await machine.boot(
      'previous-be',
      [
        `dpkg-query -W bootenv-t-changed ${PACKAGE.name} grub-pc`,
        COUNT_RECORDS,
        // Step 4's action.
        `beadm activate -t ${upgraded}`,
        'beadm list -H',
        'grub-editenv /boot/grub/grubenv list',
      ].join('\n'),
    );
    const previous = cameUp(previousBoot);
    expect(previous.subvolume).toBe(`@bootenv/${FIRST}`);
    expect(previous.output).toMatch(/^bootenv-t-changed\t1\.0$/m);
    // Booted through the newer GRUB, with its own older GRUB packages.
    const grub = upgrades.find((upgrade) => upgrade.name === 'grub-pc') as UpgradePackage;
    expect(previous.output).toMatch(new RegExp(`^grub-pc\\t${escaped(grub.oldVersion)}$`, 'm'));
    expect(previous.output).toMatch(new RegExp(`^${PACKAGE.name}\\t${PACKAGE.oldVersion.replace(/\./g, '\\.')}$`, 'm'));
    expect(previousBoot.log).toMatch(new RegExp(`bootenv: carried into ${FIRST} the data \\(files no package owns, outside /etc, /usr and /boot\\) of ${upgraded}, the BE it was activated from`));
    expect(previous.output).toMatch(new RegExp(`^records: \\d+ last: ${shutdownRecord}$`, 'm'));
    // From the host: the records the new BE wrote until its shutdown are in the previous BE; its packages are its own.
    expect((await recordsIn(`@bootenv/${FIRST}`)).at(-1)).toBe(shutdownRecord);
    expect(await versionIn(`@bootenv/${FIRST}`, PACKAGE.name)).toBe(PACKAGE.oldVersion);
    expect(await versionIn(`@bootenv/${FIRST}`, 'bootenv-t-marker')).toBeUndefined();
    activateOutput = previous.output;
  }, STEP_TIMEOUT_MS);

  it('4. beadm activate -t <new>; reboot → the new BE once; reboot → the previous BE again', async () => {
    expect(activeFlags(activateOutput)).toMatchObject({ [FIRST]: 'NR', [upgraded]: 'T' });
    expect(activateOutput).toContain(`next_entry=bootenv-${upgraded}`);
    // GRUB boots next_entry but cannot clear it on btrfs; bootenv-boot-complete.service did, before the probe.
    const onceBoot = await machine.boot('one-shot-be', 'grub-editenv /boot/grub/grubenv list\nbeadm list -H');
    const once = cameUp(onceBoot);
    expect(once.subvolume).toBe(`@bootenv/${upgraded}`);
    // The initramfs took the one-shot (next_entry → bootenv_tried); bootenv-boot-complete.service, before the probe, cleared that.
    expect(onceBoot.log).toContain(`bootenv: took the one-shot boot entry bootenv-${upgraded}`);
    expect(once.output).not.toMatch(/next_entry=|bootenv_tried=/);
    expect(activeFlags(once.output)).toMatchObject({ [FIRST]: 'R', [upgraded]: 'N' });
    // Step 5's action, fully booted (the writer runs in the last good BE until a real shutdown): a BE
    // whose /sbin/init exits 1 (the kernel panics), activated as a trial.
    const againBoot = await machine.boot(
        'after-one-shot',
        [
          'set -e',
          COUNT_RECORDS,
          `beadm create -e ${FIRST} -d 'init exits 1' ${BROKEN}`,
          // Writable only at the default mount point, behind a directory only root can enter.
          `beadm mount --writable ${BROKEN}`,
          `rm /run/bootenv/mnt/${BROKEN}/sbin/init`,
          `printf '#!/bin/sh\\nexit 1\\n' > /run/bootenv/mnt/${BROKEN}/sbin/init`,
          `chmod 755 /run/bootenv/mnt/${BROKEN}/sbin/init`,
          `beadm unmount ${BROKEN}`,
          `beadm activate -t ${BROKEN}`,
          'grub-editenv /boot/grub/grubenv list',
          REBOOT,
        ].join('\n'),
        { late: true },
      );
    const again = cameUp(againBoot);
    expect(again.subvolume).toBe(`@bootenv/${FIRST}`);
    expect(again.output).toContain(`next_entry=bootenv-${BROKEN}`);
    shutdownRecord = lastRecord(againBoot);
  }, STEP_TIMEOUT_MS);

  // GRUB 2.06 cannot write its environment block on btrfs (save_env: "sparse file not allowed"), so it
  // can neither count nor clear a trial boot. bootenv takes the one-shot from the initramfs instead
  // (bootenv-one-shot, initramfs-tools local-bottom: root mounted, before it becomes /): next_entry
  // becomes bootenv_tried. A trial BE that fails from there on (here: its init exits 1, the kernel
  // panics, panic=5 reboots) is not booted again: the next boot is the default BE's, with nobody at
  // the console; its bootenv-boot-complete.service reports the failed trial and clears the record.
  it('5. a trial BE whose init fails: the next boot, unattended, is the last good BE, its data whole; the failed trial is reported', async () => {
    const trial = await machine.boot('trial-broken', undefined);
    expect(trial.timedOut, trial.log).toBe(false);
    expect(trial.steps).toEqual([]);
    expect(trial.log).toMatch(new RegExp(`Loading Linux \\S+ from boot environment ${BROKEN} `));
    expect(trial.log).toContain('bootenv: took the one-shot boot entry bootenv-broken');
    expect(trial.log).toMatch(/Kernel panic - not syncing: Attempted to kill init!/);
    const env = await grubenv();
    expect(env).not.toContain('next_entry=');
    expect(env).toContain(`bootenv_tried=bootenv-${BROKEN}`);

    const recovered = cameUp(
      await machine.boot('unattended-after-failed-trial', `grub-editenv /boot/grub/grubenv list\njournalctl -b -o cat -u bootenv-boot-complete.service\n${COUNT_RECORDS}\nbeadm list --json`, {
        late: true,
      }),
    );
    // The failed trial ate nothing of the last good BE's data: every record up to its last shutdown's.
    expect(recovered.output).not.toMatch(/^records: gap/m);
    expect(await recordsIn(`@bootenv/${FIRST}`)).toContain(shutdownRecord);
    expect(recovered.subvolume).toBe(`@bootenv/${FIRST}`);
    expect(recovered.output).not.toMatch(/next_entry=|bootenv_tried=/);
    expect(recovered.output).toContain(`The one-shot boot environment ${BROKEN} did not come up; cleared its activation.`);
    const list = JSON.parse(recovered.output.slice(recovered.output.indexOf('\n[') + 1)) as Array<{ name: string; active: string; bootedSuccessfully: boolean }>;
    expect(Object.fromEntries(list.map((be) => [be.name, [be.active, be.bootedSuccessfully]]))).toEqual({
      [FIRST]: ['NR', true],
      // The upgraded BE came fully up in step 2 (its boot ran to multi-user.target, bootenv-boot-good recorded it).
      [upgraded]: ['', true],
      [BROKEN]: ['', false],
    });
    expect(await grubenv()).not.toMatch(/next_entry=|bootenv_tried=/);
  }, STEP_TIMEOUT_MS);

  it('6. beadm destroy of the BE that brought the GRUB upgrade; the machine boots again, through the same GRUB', async () => {
    const destroyed = cameUp(await machine.boot('destroy-upgraded', `beadm destroy ${upgraded}\nbeadm destroy ${BROKEN}\nbeadm list -H`));
    expect(destroyed.subvolume).toBe(`@bootenv/${FIRST}`);
    expect(destroyed.output).toContain(`Destroyed boot environment ${upgraded}`);
    const again = cameUp(await machine.boot('after-destroy', 'beadm list -H'));
    expect(again.subvolume).toBe(`@bootenv/${FIRST}`);
    expect(Object.keys(activeFlags(again.output))).toEqual([FIRST]);
    expect(await machine.grubCorePrefix()).toBe('(,gpt2)/@/boot/grub');
  }, STEP_TIMEOUT_MS);
});
