// beadm on a real btrfs loop image laid out like an Ubuntu install (@ and @home), with a
// debootstrapped Debian 12, real GRUB tools and Debian's node: the story of issue #2,
// asserted through btrfs-progs, findmnt, the fstab and grub.cfg files and grub-script-check.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { EXIT_CODES } from '../../src/errors.js';
import { SOURCING_MARKER } from '../../src/grub/config.js';
import { bootenvCommandLine } from '../harness/grub-menu.js';
import { Sandbox } from '../harness/sandbox.js';
import { WAIT_UNTIL } from '../harness/shell.js';

interface ListedBE {
  name: string;
  subvolume: string;
  active: string;
  created: string;
  description: string;
  mountpoint: string | null;
  exclusiveBytes: number | null;
  bootedSuccessfully: boolean;
}

let sandbox: Sandbox;
let firstBE: ListedBE;

async function list(booted: string): Promise<ListedBE[]> {
  const result = await sandbox.beadm(booted, ['list', '--json']);
  expect(result.stderr).toBe('');
  expect(result.exitCode).toBe(0);
  return JSON.parse(result.stdout) as ListedBE[];
}

function grubScriptCheck(text: string): void {
  const directory = mkdtempSync('/tmp/bootenv-grubcheck.');
  try {
    writeFileSync(path.join(directory, 'grub.cfg'), text);
    execFileSync('grub-script-check', [path.join(directory, 'grub.cfg')]);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

/**
 * Everything an operation could change: subvolumes, state, GRUB files, each BE's fstab.
 * The (empty) section a test's own extra /etc/grub.d script adds to grub.cfg is left out.
 */
async function fingerprint(): Promise<Record<string, string>> {
  const subvolumes = await sandbox.subvolumes();
  return sandbox.withTopLevel(async (top) => {
    const files = ['@bootenv/.bootenv.json', '@/boot/grub/grub.cfg', '@/boot/grub/bootenv/entries.cfg', '@/boot/grub/grubenv'];
    files.push(...subvolumes.filter((s) => s.startsWith('@bootenv/')).map((s) => `${s}/etc/fstab`));
    const contents: Record<string, string> = { subvolumes: subvolumes.join('\n') };
    for (const file of files) {
      const text = execFileSync('cat', [path.join(top, file)], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
      contents[file] = text.replace(/\n### BEGIN \/etc\/grub\.d\/(99_test_[a-z]+) ###\n### END \/etc\/grub\.d\/\1 ###\n/g, '');
    }
    return contents;
  });
}

beforeAll(async () => {
  sandbox = await Sandbox.create(inject('bookwormBase'), 'ubuntu');
  // grubenv as grub-install would create it, so the fingerprint can read it.
  await sandbox.boot('@', ['grub-editenv', '/boot/grub/grubenv', 'create']);
});

afterAll(async () => {
  if (sandbox === undefined) return;
  await sandbox.close();
  await sandbox.assertNothingLeft();
});

describe('beadm on an Ubuntu-style layout', () => {
  it('init adopts the installed root: one BE, flagged R, GRUB entry for it', async () => {
    const init = await sandbox.beadm('@', ['init']);
    expect(init.stderr).toBe('');
    expect(init.exitCode).toBe(0);
    const listed = await list('@');
    expect(listed).toHaveLength(1);
    firstBE = listed[0] as ListedBE;
    expect(firstBE).toMatchObject({ name: 'debian-12', subvolume: '@bootenv/debian-12', active: 'R', mountpoint: null, exclusiveBytes: null });
    expect(new Date(firstBE.created).toISOString()).toBe(firstBE.created);

    expect(await sandbox.subvolumes()).toEqual(expect.arrayContaining(['@', '@home', '@bootenv/debian-12']));
    const fstab = await sandbox.readFile('@bootenv/debian-12/etc/fstab');
    expect(fstab).toMatch(new RegExp(`^UUID=${sandbox.uuid} / btrfs defaults,subvol=@bootenv/debian-12 0 1$`, 'm'));
    expect(fstab).toMatch(new RegExp(`^UUID=${sandbox.uuid} /home btrfs defaults,subvol=@home 0 2$`, 'm'));
    expect(await sandbox.readFile('@/etc/fstab')).toMatch(/subvol=@ 0 1$/m);

    // init ran grub-mkconfig: grub.cfg sources the entries and holds the command line, entries.cfg the entries.
    const grubCfg = await sandbox.readBootMenu();
    grubScriptCheck(grubCfg);
    grubScriptCheck(await sandbox.readFile('@/boot/grub/grub.cfg'));
    expect(bootenvCommandLine(await sandbox.readFile('@/boot/grub/grub.cfg'))).toBe('console=ttyS0 quiet');
    expect(grubCfg).toContain("--id 'bootenv-debian-12'");
    // The filesystem's UUID (beadm reads it from sysfs), as the host's blkid gave it when the sandbox was made.
    expect(grubCfg).toMatch(new RegExp(`^\\tbootenv_linux /@bootenv/debian-12/boot/vmlinuz-\\S+ root=UUID=${sandbox.uuid} ro rootflags=subvol=@bootenv/debian-12$`, 'm'));
    expect(grubCfg).toMatch(new RegExp(`^\\tsearch --no-floppy --fs-uuid --set=root ${sandbox.uuid}$`, 'm'));
    expect(grubCfg).toContain("set default='bootenv-debian-12'");
    expect(await sandbox.hostMounts()).toEqual([]);
  });

  it('init a second time refuses and changes nothing', async () => {
    const before = await fingerprint();
    const again = await sandbox.beadm('@', ['init']);
    expect(again.exitCode).toBe(EXIT_CODES.ALREADY_INITIALIZED);
    expect(again.stderr).toMatch(/already set up/);
    expect(await fingerprint()).toEqual(before);
  });

  it('booting the first BE: flagged NR, /home is still @home, GRUB home at /boot/grub', async () => {
    const listed = await list(firstBE.subvolume);
    expect(listed.map((be) => [be.name, be.active, be.mountpoint])).toEqual([['debian-12', 'NR', '/']]);
    const mounts = await sandbox.boot(firstBE.subvolume, ['findmnt', '-rn', '-o', 'TARGET,FSROOT', '-T', '/home']);
    expect(mounts.stdout.trim()).toBe('/home /@home');
    const grubHome = await sandbox.boot(firstBE.subvolume, ['findmnt', '-rn', '-o', 'FSROOT', '/boot/grub']);
    expect(grubHome.stdout.trim()).toBe('/@/boot/grub');
  });

  it('create b2 -d "try" and activate b2: b2 is R, its GRUB entry boots its own kernel', async () => {
    const create = await sandbox.beadm(firstBE.subvolume, ['create', 'b2', '-d', 'try']);
    expect(create.stderr).toBe('');
    expect(create.exitCode).toBe(0);
    const activate = await sandbox.beadm(firstBE.subvolume, ['activate', 'b2']);
    expect(activate.exitCode).toBe(0);
    const listed = await list(firstBE.subvolume);
    expect(listed.map((be) => [be.name, be.active, be.description])).toEqual([
      ['debian-12', 'N', 'created by beadm init'],
      ['b2', 'R', 'try'],
    ]);
    expect(await sandbox.subvolumes()).toContain('@bootenv/b2');
    expect(await sandbox.readFile('@bootenv/b2/etc/fstab')).toMatch(/ \/ btrfs defaults,subvol=@bootenv\/b2 0 1$/m);

    const grubCfg = await sandbox.readBootMenu();
    grubScriptCheck(grubCfg);
    const entry = /menuentry [^\n]*--id 'bootenv-b2' \{\n([\s\S]*?)\n\}/.exec(grubCfg)?.[1] ?? '';
    expect(entry).toContain('rootflags=subvol=@bootenv/b2');
    const kernel = /\tbootenv_linux (\S+)/.exec(entry)?.[1] ?? '';
    const initrd = /\tinitrd (\S+)/.exec(entry)?.[1] ?? '';
    expect(kernel).toMatch(/^\/@bootenv\/b2\/boot\/vmlinuz-/);
    expect(initrd).toMatch(/^\/@bootenv\/b2\/boot\/initrd.img-/);
    await sandbox.withTopLevel(async (top) => {
      execFileSync('test', ['-s', path.join(top, kernel)]);
      execFileSync('test', ['-s', path.join(top, initrd)]);
    });
    expect(grubCfg).toContain("set default='bootenv-b2'");
  });

  it('destroy refuses the booted BE and the next-boot BE, changing nothing', async () => {
    const before = await fingerprint();
    const booted = await sandbox.beadm(firstBE.subvolume, ['destroy', 'debian-12']);
    expect(booted.exitCode).toBe(EXIT_CODES.BUSY);
    expect(booted.stderr).toMatch(/running BE/);
    const next = await sandbox.beadm(firstBE.subvolume, ['destroy', 'b2']);
    expect(next.exitCode).toBe(EXIT_CODES.BUSY);
    expect(next.stderr).toMatch(/default BE/);
    const missing = await sandbox.beadm(firstBE.subvolume, ['destroy', 'home']);
    expect(missing.exitCode).toBe(EXIT_CODES.NOT_FOUND);
    const notABootEnvironment = await sandbox.beadm(firstBE.subvolume, ['destroy', '@home']);
    expect(notABootEnvironment.exitCode).toBe(EXIT_CODES.INVALID_NAME);
    expect(await fingerprint()).toEqual(before);
  });

  it.each([
    ['..'],
    ['a/b'],
    ['with space'],
    ["it's"],
    ['say"hi'],
    ['$(touch /tmp/pwned)'],
    ['-rf'],
    ['a,b'],
    ['x'.repeat(300)],
  ])('hostile name %j fails with a clear error and changes nothing', async (name) => {
    const before = await fingerprint();
    for (const args of [['create', name], ['create', '-e', name, 'ok'], ['activate', name], ['destroy', name], ['rename', 'b2', name], ['mount', name]]) {
      const result = await sandbox.beadm(firstBE.subvolume, args);
      // A leading '-' may already be refused by the option parser (USAGE).
      expect(name.startsWith('-') ? [EXIT_CODES.USAGE, EXIT_CODES.INVALID_NAME] : [EXIT_CODES.INVALID_NAME], args.join(' ')).toContain(result.exitCode);
      expect(result.stderr).not.toBe('');
    }
    expect(await fingerprint()).toEqual(before);
  });

  it('a non-UTF-8 name fails with a clear error and changes nothing', async () => {
    const before = await fingerprint();
    const result = await sandbox.boot(firstBE.subvolume, ['sh', '-c', 'exec /usr/sbin/beadm create "$(printf "b\\377\\376")"']);
    expect(result.exitCode).toBe(EXIT_CODES.INVALID_NAME);
    expect(result.stderr).toMatch(/invalid BE name/);
    expect(await fingerprint()).toEqual(before);
  });

  it('create refuses an existing name', async () => {
    const before = await fingerprint();
    const result = await sandbox.beadm(firstBE.subvolume, ['create', 'b2']);
    expect(result.exitCode).toBe(EXIT_CODES.EXISTS);
    expect(await fingerprint()).toEqual(before);
  });

  it('list -H: no header, illumos beadm\'s fields separated by ";", raw numbers', async () => {
    const result = await sandbox.beadm(firstBE.subvolume, ['list', '-H']);
    expect(result.exitCode).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line.split(';')).toHaveLength(7);
    const fields = lines.map((line) => line.split(';'));
    expect([fields[0]?.[0], fields[0]?.[2], fields[0]?.[3], fields[0]?.[5]]).toEqual(['debian-12', 'N', '/', 'static']);
    expect([fields[1]?.[0], fields[1]?.[2], fields[1]?.[3], fields[1]?.[4]]).toEqual(['b2', 'R', '', '']);
    // The uuid is the subvolume's, as btrfs subvolume show has it; created is in seconds since the epoch.
    const uuid = await sandbox.withTopLevel(async (top) => /UUID:\s+(\S+)/.exec(execFileSync('btrfs', ['subvolume', 'show', path.join(top, '@bootenv/b2')]).toString())?.[1]);
    expect(fields[1]?.[1]).toBe(uuid);
    expect(Math.abs(Number(fields[1]?.[6]) - Date.now() / 1000)).toBeLessThan(3600);
    const human = await sandbox.beadm(firstBE.subvolume, ['list']);
    expect(human.stdout.split('\n')[0]).toMatch(/^BE\s+Active\s+Mountpoint\s+Space\s+Created\s+Description$/);
  });

  it('Space shows the qgroup exclusive size once quotas are on', async () => {
    await sandbox.withTopLevel(async (top) => {
      execFileSync('btrfs', ['quota', 'enable', top]);
      execFileSync('btrfs', ['quota', 'rescan', '-w', top]);
    });
    try {
      const listed = await list(firstBE.subvolume);
      for (const be of listed) expect(be.exclusiveBytes).toBeGreaterThan(0);
      const qgroups = await sandbox.withTopLevel(async (top) => execFileSync('btrfs', ['qgroup', 'show', '--raw', top]).toString());
      const b2 = listed.find((be) => be.name === 'b2');
      const ids = await sandbox.withTopLevel(async (top) => execFileSync('btrfs', ['subvolume', 'list', top]).toString());
      const id = new RegExp(`^ID (\\d+) .* path @bootenv/b2$`, 'm').exec(ids)?.[1];
      expect(qgroups).toMatch(new RegExp(`^0/${id}\\s+\\d+\\s+${b2?.exclusiveBytes}\\b`, 'm'));
    } finally {
      await sandbox.withTopLevel(async (top) => {
        execFileSync('btrfs', ['quota', 'disable', top]);
      });
    }
  });

  it('mount, unmount and destroy -F of a mounted BE, within one boot', async () => {
    expect((await sandbox.beadm(firstBE.subvolume, ['create', 'b3'])).exitCode).toBe(0);
    const script = [
      'set -u',
      'beadm mount b3 /mnt/b3 >/dev/null; echo "mount=$?"',
      'findmnt -rn -o FSROOT /mnt/b3',
      'beadm list -H | grep "^b3;" | cut -d";" -f4',
      'beadm mount b3 /mnt/other >/dev/null 2>&1; echo "again=$?"',
      'beadm destroy b3 >/dev/null 2>&1; echo "destroy=$?"',
      'beadm unmount b3 >/dev/null; echo "unmount=$?"',
      'findmnt -rn /mnt/b3 >/dev/null; echo "findmnt=$?"',
      'beadm unmount b3 >/dev/null 2>&1; echo "unmount-again=$?"',
      'p=$(beadm mount b3); echo "default=$p"',
      'beadm destroy -F b3 >/dev/null; echo "destroy-F=$?"',
      'findmnt -rn "$p" >/dev/null; echo "findmnt-default=$?"',
      'test -e "$p"; echo "default-left=$?"',
    ].join('\n');
    const result = await sandbox.boot(firstBE.subvolume, ['bash', '-c', script]);
    expect(result.stderr).toBe('');
    expect(result.stdout.split('\n').filter(Boolean)).toEqual([
      'mount=0',
      '/@bootenv/b3',
      '/mnt/b3',
      `again=${EXIT_CODES.BUSY}`,
      `destroy=${EXIT_CODES.BUSY}`,
      'unmount=0',
      'findmnt=1',
      `unmount-again=${EXIT_CODES.NOT_FOUND}`,
      'default=/run/bootenv/mnt/b3',
      'destroy-F=0',
      'findmnt-default=1',
      'default-left=1',
    ]);
    expect(await sandbox.subvolumes()).not.toContain('@bootenv/b3');
    expect(await sandbox.readBootMenu()).not.toContain('bootenv-b3');
  });

  it('rename moves the subvolume, its fstab and its GRUB entry; refuses the booted BE', async () => {
    expect((await sandbox.beadm(firstBE.subvolume, ['create', 'b4'])).exitCode).toBe(0);
    const rename = await sandbox.beadm(firstBE.subvolume, ['rename', 'b4', 'b5']);
    expect(rename.stderr).toBe('');
    expect(rename.exitCode).toBe(0);
    const subvolumes = await sandbox.subvolumes();
    expect(subvolumes).toContain('@bootenv/b5');
    expect(subvolumes).not.toContain('@bootenv/b4');
    expect(await sandbox.readFile('@bootenv/b5/etc/fstab')).toMatch(/subvol=@bootenv\/b5 0 1$/m);
    const grubCfg = await sandbox.readBootMenu();
    grubScriptCheck(grubCfg);
    expect(grubCfg).toContain("--id 'bootenv-b5'");
    expect(grubCfg).not.toContain('bootenv-b4');
    const listed = await list(firstBE.subvolume);
    expect(listed.find((be) => be.name === 'b5')?.created).toBeTruthy();

    const before = await fingerprint();
    const booted = await sandbox.beadm(firstBE.subvolume, ['rename', 'debian-12', 'other']);
    expect(booted.exitCode).toBe(EXIT_CODES.BUSY);
    const taken = await sandbox.beadm(firstBE.subvolume, ['rename', 'b5', 'b2']);
    expect(taken.exitCode).toBe(EXIT_CODES.EXISTS);
    expect(await fingerprint()).toEqual(before);
  });

  it('activate -t boots a BE once: T flag, next_entry in grubenv, cleared after that boot', async () => {
    const activate = await sandbox.beadm(firstBE.subvolume, ['activate', '-t', 'b5']);
    expect(activate.exitCode).toBe(0);
    const listed = await list(firstBE.subvolume);
    expect(listed.map((be) => [be.name, be.active])).toEqual([
      ['debian-12', 'N'],
      ['b2', 'R'],
      ['b5', 'T'],
    ]);
    const grubenv = await sandbox.boot('@', ['grub-editenv', '/boot/grub/grubenv', 'list']);
    expect(grubenv.stdout).toContain('next_entry=bootenv-b5');
    const grubCfg = await sandbox.readBootMenu();
    expect(grubCfg).toMatch(/if \[ "\$\{next_entry\}" \] ; then\n\s+set default="\$\{next_entry\}"/);
    expect(grubCfg).toContain(`if [ -z "\${boot_once}" ]; then set default='bootenv-b2'; fi`);

    const complete = await sandbox.beadm('@bootenv/b5', ['boot-complete']);
    expect(complete.exitCode).toBe(0);
    // The trial came up; the next boot returns to the default BE, b2, which keeps the carry it has
    // pending from its making (a BE with a carry pending is given no other one).
    expect(complete.stdout).toBe('Cleared the one-shot activation of b5.');
    expect((await sandbox.boot('@', ['grub-editenv', '/boot/grub/grubenv', 'list'])).stdout).not.toContain('next_entry');
    expect((await list(firstBE.subvolume)).map((be) => be.active)).toEqual(['N', 'R', '']);
  });

  it('boot-complete in another BE drops a one-shot that did not come up; --good records the boot', async () => {
    expect((await sandbox.beadm(firstBE.subvolume, ['activate', '-t', 'b5'])).exitCode).toBe(0);
    // The b5 boot failed and a person chose debian-12 in GRUB's menu: this boot spends the one-shot.
    const complete = await sandbox.beadm(firstBE.subvolume, ['boot-complete']);
    expect(complete.exitCode).toBe(0);
    expect(complete.stdout).toBe('The one-shot boot environment b5 did not come up; cleared its activation.');
    expect((await sandbox.boot('@', ['grub-editenv', '/boot/grub/grubenv', 'list'])).stdout).not.toContain('next_entry');
    expect((await list(firstBE.subvolume)).map((be) => [be.name, be.active, be.bootedSuccessfully])).toEqual([
      ['debian-12', 'N', false],
      ['b2', 'R', false],
      ['b5', '', false],
    ]);
    const good = await sandbox.beadm(firstBE.subvolume, ['boot-complete', '--good', '--json']);
    expect(JSON.parse(good.stdout)).toEqual({ cleared: null, oneShotBooted: null, markedGood: 'debian-12' });
    expect((await list(firstBE.subvolume)).map((be) => be.bootedSuccessfully)).toEqual([true, false, false]);
    const state = JSON.parse(await sandbox.readFile('@bootenv/.bootenv.json')) as { environments: Record<string, { lastGoodBoot?: { bootId: string } }> };
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    expect(Object.values(state.environments).map((record) => record.lastGoodBoot?.bootId)).toContain(bootId);
  });

  it('boot-complete reads a one-shot the initramfs took (bootenv_tried): came up, or did not', async () => {
    const grubenv = async () => (await sandbox.boot('@', ['grub-editenv', '/boot/grub/grubenv', 'list'])).stdout;
    // What bootenv-one-shot leaves in grubenv: next_entry renamed (one-shot.test.ts runs the real thing).
    const take = async () => {
      expect((await sandbox.beadm(firstBE.subvolume, ['activate', '-t', 'b5'])).exitCode).toBe(0);
      expect(await grubenv()).toContain('next_entry=bootenv-b5');
      await sandbox.boot('@', ['sh', '-c', 'grub-editenv /boot/grub/grubenv unset next_entry && grub-editenv /boot/grub/grubenv set bootenv_tried=bootenv-b5']);
    };
    await take();
    const cameUp = await sandbox.beadm('@bootenv/b5', ['boot-complete', '--json']);
    expect(JSON.parse(cameUp.stdout)).toEqual({ cleared: 'b5', oneShotBooted: true, markedGood: null });
    expect(await grubenv()).not.toMatch(/next_entry|bootenv_tried/);

    await take();
    const failed = await sandbox.beadm(firstBE.subvolume, ['boot-complete']);
    expect(failed.stdout).toBe('The one-shot boot environment b5 did not come up; cleared its activation.');
    expect(await grubenv()).not.toMatch(/next_entry|bootenv_tried/);

    // A new activate -t drops a record of an earlier one that nothing cleared.
    await take();
    expect((await sandbox.beadm(firstBE.subvolume, ['activate', '-t', 'b5'])).exitCode).toBe(0);
    expect((await grubenv()).split('\n').filter((line) => /next_entry|bootenv_tried/.test(line))).toEqual(['next_entry=bootenv-b5']);
    expect((await sandbox.beadm(firstBE.subvolume, ['boot-complete'])).exitCode).toBe(0);
  });

  it.each([
    { missing: 'a kernel', remove: 'rm -f "$1"/boot/vmlinuz-*', temporary: false },
    { missing: 'an initramfs', remove: 'rm -f "$1"/boot/initrd.img-*', temporary: false },
    { missing: 'a modules directory', remove: 'rm -rf "$1"/lib/modules/*', temporary: true },
  ])('activate refuses a BE without $missing and changes nothing', async ({ remove, temporary }) => {
    expect((await sandbox.beadm(firstBE.subvolume, ['create', 'nokernel'])).exitCode).toBe(0);
    await sandbox.withTopLevel(async (top) => {
      execFileSync('sh', ['-c', remove, 'sh', path.join(top, '@bootenv/nokernel')]);
    });
    const before = await fingerprint();
    const result = await sandbox.beadm(firstBE.subvolume, ['activate', ...(temporary ? ['-t'] : []), 'nokernel']);
    expect(result.exitCode).toBe(EXIT_CODES.NOT_BOOTABLE);
    expect(result.stderr).toMatch(/no kernel with a matching initramfs and \/lib\/modules directory/);
    expect(await fingerprint()).toEqual(before);
    expect((await sandbox.beadm(firstBE.subvolume, ['destroy', 'nokernel'])).exitCode).toBe(0);
  });

  it('a second beadm fails clearly while another holds the lock', async () => {
    const before = await fingerprint();
    // The holder keeps the lock until told to let go; beadm runs once the lock is demonstrably held.
    const script = `${WAIT_UNTIL}
      mkdir -p /run/bootenv
      flock /run/bootenv/lock bash -c "$(declare -f wait_until); touch /run/test-lock-held; wait_until test -e /run/test-lock-release" & holder=$!
      wait_until test -e /run/test-lock-held
      flock --nonblock /run/bootenv/lock true || echo "lock-held"
      BOOTENV_LOCK_TIMEOUT=1 beadm create locked; echo "rc=$?"
      touch /run/test-lock-release; wait $holder; echo "holder=$?"`;
    const result = await sandbox.boot(firstBE.subvolume, ['bash', '-c', script]);
    expect(result.stdout).toContain('lock-held\n');
    expect(result.stdout).toContain(`rc=${EXIT_CODES.LOCKED}`);
    expect(result.stdout).toContain('holder=0');
    expect(result.stderr).toMatch(/holds \/run\/bootenv\/lock/);
    expect(await fingerprint()).toEqual(before);
  });

  /** Puts an executable `script` at `relative` (from the top level) for the duration of `body`. */
  async function withExecutable(relative: string, script: string, body: () => Promise<void>): Promise<void> {
    await sandbox.withTopLevel(async (top) => {
      writeFileSync(path.join(top, relative), script, { mode: 0o755 });
    });
    try {
      await body();
    } finally {
      await sandbox.withTopLevel(async (top) => {
        rmSync(path.join(top, relative), { force: true });
      });
    }
  }

  /** Puts an extra script into the installed root's /etc/grub.d for the duration of `body`. */
  const withGrubScript = (name: string, script: string, body: () => Promise<void>) => withExecutable(`@/etc/grub.d/${name}`, script, body);

  /** Puts an extra program into the first BE's /usr/local/sbin (first on beadm's PATH) for the duration of `body`. */
  const withProgram = (name: string, script: string, body: () => Promise<void>) => withExecutable(`${firstBE.subvolume}/usr/local/sbin/${name}`, script, body);

  it('create rewrites entries.cfg alone: grub.cfg, which sources it, stays byte for byte', async () => {
    const grubCfg = await sandbox.readFile('@/boot/grub/grub.cfg');
    expect(grubCfg).toContain(`\n${SOURCING_MARKER}`);
    // A GRUB script that would fail shows that no grub-mkconfig runs.
    await withGrubScript('99_test_fail', '#!/bin/sh\necho "injected failure" >&2\nexit 1\n', async () => {
      const create = await sandbox.beadm(firstBE.subvolume, ['create', 'quick']);
      expect(create.stderr).toBe('');
      expect(create.exitCode).toBe(0);
    });
    expect(await sandbox.readFile('@/boot/grub/grub.cfg')).toBe(grubCfg);
    expect(await sandbox.readFile('@/boot/grub/bootenv/entries.cfg')).toContain("--id 'bootenv-quick'");
    expect((await sandbox.beadm(firstBE.subvolume, ['destroy', 'quick'])).exitCode).toBe(0);
    expect(await sandbox.readFile('@/boot/grub/grub.cfg')).toBe(grubCfg);
    expect(await sandbox.readBootMenu()).not.toContain('bootenv-quick');
  });

  it('entries that fail grub-script-check undo create: no subvolume, state, GRUB change or mount left', async () => {
    const before = await fingerprint();
    await withProgram('grub-script-check', '#!/bin/sh\necho "injected failure" >&2\nexit 1\n', async () => {
      const result = await sandbox.boot(firstBE.subvolume, ['bash', '-c', 'beadm create failing; echo "rc=$?"; findmnt -rn -o TARGET | grep -c /run/bootenv']);
      expect(result.stdout).toContain(`rc=${EXIT_CODES.COMMAND_FAILED}`);
      expect(result.stderr).toMatch(/do not pass grub-script-check: .*injected failure/s);
      expect(result.stdout.trim().split('\n').at(-1)).toBe('0');
    });
    expect(await fingerprint()).toEqual(before);
    expect(await sandbox.subvolumes()).not.toContain('@bootenv/failing');
    const entries = await sandbox.withTopLevel(async (top) => execFileSync('ls', [path.join(top, '@/boot/grub/bootenv')]).toString());
    expect(entries.trim()).toBe('entries.cfg');
  });

  it('a grub.cfg that does not source the entries (an older 09_bootenv wrote it): grub-mkconfig runs, and its failure undoes create', async () => {
    // As an older 09_bootenv leaves it: no stanza; the entries were copied in.
    await sandbox.withTopLevel(async (top) => {
      const file = path.join(top, '@/boot/grub/grub.cfg');
      writeFileSync(file, readFileSync(file, 'utf8').replace(`${SOURCING_MARKER}`, '# (no bootenv stanza)'));
    });
    const before = await fingerprint();
    await withGrubScript('99_test_fail', '#!/bin/sh\necho "injected failure" >&2\nexit 1\n', async () => {
      const result = await sandbox.boot(firstBE.subvolume, ['bash', '-c', 'beadm create failing; echo "rc=$?"; findmnt -rn -o TARGET | grep -c /run/bootenv']);
      expect(result.stdout).toContain(`rc=${EXIT_CODES.COMMAND_FAILED}`);
      expect(result.stderr).toMatch(/grub-mkconfig .*failed: .*injected failure/s);
      expect(result.stdout.trim().split('\n').at(-1)).toBe('0');
    });
    expect(await fingerprint()).toEqual(before);
    expect(await sandbox.subvolumes()).not.toContain('@bootenv/failing');
    // The next change runs grub-mkconfig, and grub.cfg sources the entries again.
    expect((await sandbox.beadm(firstBE.subvolume, ['create', 'healed'])).exitCode).toBe(0);
    expect(await sandbox.readFile('@/boot/grub/grub.cfg')).toContain(`\n${SOURCING_MARKER}`);
    expect(await sandbox.readBootMenu()).toContain("--id 'bootenv-healed'");
    expect((await sandbox.beadm(firstBE.subvolume, ['destroy', 'healed'])).exitCode).toBe(0);
  });

  it('SIGTERM during create unwinds it: INTERRUPTED, nothing half-made or mounted', async () => {
    const before = await fingerprint();
    // grub-script-check (a wrapper first on beadm's PATH in the booted BE) says when create has
    // reached the check of the new entries and holds create there until released; the release
    // waits until the kernel has delivered SIGTERM to beadm (no longer pending in ShdPnd), so beadm
    // learns of the signal before the check ends, mid-operation.
    const marker = '/var/tmp/bootenv-test-slow';
    const program = `#!/bin/bash\n${WAIT_UNTIL}\ntouch ${marker}.started\nwait_until test -e ${marker}.release\nexec /usr/bin/grub-script-check "$@"\n`;
    await withProgram('grub-script-check', program, async () => {
      const script = `${WAIT_UNTIL}
        sigterm_delivered() { [ ! -e /proc/$1 ] || ! (( 0x$(awk '/^ShdPnd:/ { print $2 }' /proc/$1/status) & 1 << (15 - 1) )); }
        beadm create interrupted & pid=$!
        wait_until test -e ${marker}.started
        kill -TERM $pid
        wait_until sigterm_delivered $pid
        touch ${marker}.release
        wait $pid; echo "rc=$?"; rm ${marker}.started ${marker}.release
        findmnt -rn -o TARGET | grep -c /run/bootenv`;
      const result = await sandbox.boot(firstBE.subvolume, ['bash', '-c', script]);
      expect(result.stdout).toContain(`rc=${EXIT_CODES.INTERRUPTED}`);
      expect(result.stderr).toMatch(/interrupted by SIGTERM/);
      expect(result.stdout.trim().split('\n').at(-1)).toBe('0');
    });
    expect(await fingerprint()).toEqual(before);
    expect(await sandbox.subvolumes()).not.toContain('@bootenv/interrupted');
  });

  it('leaves nothing mounted on the host', async () => {
    expect(await sandbox.hostMounts()).toEqual([]);
  });
});
