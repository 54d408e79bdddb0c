// The Debian package (issues #4, #10): built from this checkout, lintian-clean, installed with
// apt-get into a debootstrapped Debian 12 (apt 2.6) and Debian 13 (apt 3.0) laid out like an
// Ubuntu install; then the story runs from the installed files only: beadm init, boot the first
// BE, a diverted apt-get from the fixture repository, boot the new BE. Then bootenv goes away
// every way there is — remove and purge, diverted (into a new BE, which is made and activated;
// the running BE keeps bootenv) and in place — each run's exit status asserted, apt working
// afterwards, and after each purge no path of the .deb (dpkg-deb -c) left in that root.
// One sandbox per distribution: the in-place purge runs in a second BE made with beadm create
// before the in-place removal, so that every removal starts from bootenv installed.
import { copyFileSync, lstatSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { installRepositoryInRoot } from '../harness/repo.js';
import { Sandbox, isBootEnvironmentPath, type RunResult } from '../harness/sandbox.js';

const APT_ENV = { DEBIAN_FRONTEND: 'noninteractive' };
const DIVERTED = /apt's changes are in boot environment (\S+) \((@bootenv\/\S+)\)/;

/** Paths bootenv makes or owns besides the .deb's members (the real dpkg while /usr/bin/dpkg is diverted to bootenv). */
const BOOTENV_PATHS = ['/etc/bootenv', '/etc/apt/apt.conf.d/50bootenv', '/etc/apt/apt.conf.d/51bootenv-pending', '/usr/lib/bootenv', '/usr/bin/dpkg.distrib'];
/** The .deb's member at a path another package owns, diverted away while bootenv is installed: after a purge the real file is back. */
const DIVERTED_PATH = '/usr/bin/dpkg';

/**
 * What a `find -name '*bootenv*'` of a root may still show after a purge: the test's own files
 * (the fixture repository, its source and apt's lists of it, the fixture packages' files, the
 * copied .deb) and GRUB's home as snapshotted into the BE (beadm's menu of all BEs, which lives
 * in the installed root and is kept by design).
 */
const NOT_BOOTENV = /^\/(root\/bootenv\.deb|boot\/grub\/bootenv)(\/|$)|bootenv-test|bootenv-t-/;

it('lintian reports no error and no warning', async () => {
  const result = await execa('lintian', ['--fail-on', 'error,warning', inject('debPackage')], { reject: false });
  expect(result.stdout).toBe('');
  expect(result.exitCode).toBe(0);
});

/** Fails with the run's output when its exit status is not 0. */
function expectSuccess(result: RunResult): void {
  expect(result.exitCode, `${result.stdout.slice(-3000)}\n${result.stderr.slice(-3000)}`).toBe(0);
}

/** An apt run that exited 0 and never lost its dpkg: no error, no "Could not exec dpkg!" (apt 2.6), no fallback warning (apt 3.0). */
function expectCleanAptRun(result: RunResult): void {
  expectSuccess(result);
  const output = result.stdout + result.stderr;
  expect(output).not.toMatch(/^E:/m);
  expect(output).not.toContain('Could not exec dpkg');
  expect(output).not.toContain('Dir::Bin::dpkg is missing');
}

async function bootEnvironments(sandbox: Sandbox): Promise<string[]> {
  return (await sandbox.subvolumes()).filter(isBootEnvironmentPath);
}

/** dpkg's abbreviated status and version of `name` in a subvolume, from the host. */
async function statusIn(sandbox: Sandbox, subvolume: string, name: string): Promise<{ status: string; version: string } | undefined> {
  return sandbox.withTopLevel(async (top) => {
    const result = await execa('dpkg-query', [`--admindir=${path.join(top, subvolume, 'var/lib/dpkg')}`, '-f', '${db:Status-Abbrev} ${Version}', '-W', name], { reject: false });
    if (result.exitCode !== 0) return undefined;
    const [status, version] = result.stdout.trim().split(/\s+/);
    return { status: status as string, version: version as string };
  });
}

async function versionIn(sandbox: Sandbox, subvolume: string, name: string): Promise<string | undefined> {
  const found = await statusIn(sandbox, subvolume, name);
  return found?.status === 'ii' ? found.version : undefined;
}

function exists(file: string): boolean {
  return lstatSync(file, { throwIfNoEntry: false }) !== undefined;
}

/** The .deb's members as `dpkg-deb -c` lists them: files (and symlinks) and directories, as absolute paths. */
async function debMembers(deb: string): Promise<{ files: string[]; directories: string[] }> {
  const { stdout } = await execa('dpkg-deb', ['-c', deb]);
  const files: string[] = [];
  const directories: string[] = [];
  for (const line of stdout.split('\n').filter(Boolean)) {
    const match = /^(\S)\S*\s+\S+\s+\d+\s+\S+\s+\S+\s+\.(\/\S*)(?: -> \S+)?$/.exec(line);
    if (match === null) throw new Error(`dpkg-deb -c: unexpected line ${JSON.stringify(line)}`);
    const [, type, member] = match as unknown as [string, string, string];
    if (type === 'd') {
      if (member !== '/') directories.push(member.replace(/\/$/, ''));
    } else files.push(member);
  }
  return { files, directories };
}

/**
 * Checks with dpkg-query, lstat and find that nothing of bootenv is left in `subvolume`'s root:
 * dpkg knows no bootenv; no file of the .deb, none of BOOTENV_PATHS; a directory of the .deb
 * still there holds other packages' files (dpkg removes one once it is empty); no other
 * `*bootenv*` name but NOT_BOOTENV.
 */
async function expectNothingLeft(sandbox: Sandbox, subvolume: string): Promise<void> {
  const { files, directories } = await debMembers(inject('debPackage'));
  await sandbox.withTopLevel(async (top) => {
    const root = path.join(top, subvolume);
    const query = await execa('dpkg-query', [`--admindir=${path.join(root, 'var/lib/dpkg')}`, '-W', 'bootenv'], { reject: false });
    expect(query.stderr).toContain('no packages found matching bootenv');
    expect(query.exitCode).toBe(1);
    expect([...files.filter((file) => file !== DIVERTED_PATH), ...BOOTENV_PATHS].filter((file) => exists(path.join(root, file)))).toEqual([]);
    // dpkg is itself again: no diversion, /usr/bin/dpkg the real program (an ELF file, not bootenv's link).
    const diversions = await execa('chroot', [root, 'dpkg-divert', '--list', DIVERTED_PATH]);
    expect(diversions.stdout).toBe('');
    expect(lstatSync(path.join(root, DIVERTED_PATH)).isFile()).toBe(true);
    expect(readFileSync(path.join(root, DIVERTED_PATH)).subarray(1, 4).toString()).toBe('ELF');
    const emptyDirectories = directories.filter((directory) => exists(path.join(root, directory)) && readdirSync(path.join(root, directory)).length === 0);
    expect(emptyDirectories).toEqual([]);
    const found = await execa('find', [root, '-xdev', '-name', '*bootenv*']);
    const names = found.stdout.split('\n').filter(Boolean).map((name) => name.slice(root.length));
    expect(names.filter((name) => !NOT_BOOTENV.test(name))).toEqual([]);
  });
}

/** A root in which apt works: apt-get update and an install from the fixture repository exit 0; no bootenv hook is left in apt's configuration. */
async function expectAptWorks(sandbox: Sandbox, subvolume: string, fixture: string): Promise<void> {
  const update = await sandbox.boot(subvolume, ['apt-get', 'update', '-qq'], { env: APT_ENV });
  expectSuccess(update);
  const install = await sandbox.boot(subvolume, ['apt-get', 'install', '-y', fixture], { env: APT_ENV });
  expectCleanAptRun(install);
  expect(install.stdout + install.stderr).not.toMatch(/bootenv:|^W:/m);
  expect(await versionIn(sandbox, subvolume, fixture)).toBe('1.0');
  const config = await sandbox.boot(subvolume, ['apt-config', 'dump']);
  expectSuccess(config);
  expect(config.stdout).not.toContain('bootenv');
}

describe.each([
  // The README's in-place purge (BOOTENV=off) on one, divert = never on the other.
  { distribution: 'Debian 12 (apt 2.6, nodejs 18)', base: 'bookwormBase' as const, inPlacePurge: 'BOOTENV=off' },
  { distribution: 'Debian 13 (apt 3.0, nodejs 20)', base: 'trixieBase' as const, inPlacePurge: 'divert = never' },
])('$distribution', ({ base, inPlacePurge }) => {
  let sandbox: Sandbox;
  let first: string;
  let upgraded: string;
  const copy = '@bootenv/in-place-purge';

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
    const install = await sandbox.boot('@', ['apt-get', 'install', '-y', '/root/bootenv.deb'], { env: APT_ENV });
    expectSuccess(install);
    expect(install.stdout).toContain("bootenv: run 'beadm init' to start using boot environments");
    expect(install.stdout).not.toContain("apt's changes are in boot environment");
    const result = await sandbox.boot('@', ['bash', '-c', `man -P cat beadm | head -5; dpkg-divert --list /usr/bin/dpkg; readlink -f /usr/bin/dpkg; dpkg --version | head -1; lsinitramfs /boot/initrd.img-* | grep bootenv`]);
    expectSuccess(result);
    expect(result.stdout).toMatch(/beadm - manage boot environments on btrfs/);
    // Every front end's dpkg reaches bootenv: /usr/bin/dpkg is its wrapper, the real dpkg diverted beside it.
    expect(result.stdout).toContain('diversion of /usr/bin/dpkg to /usr/bin/dpkg.distrib by bootenv\n/usr/lib/bootenv/apt-hook\n');
    expect(result.stdout).toMatch(/Debian 'dpkg' package management program version/);
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
    expectSuccess(init);
    first = (JSON.parse(init.stdout) as { subvolume: string }).subvolume;
    const list = await sandbox.boot(first, ['beadm', 'list', '-H']);
    expectSuccess(list);
    expect([list.stdout.split(';')[0], list.stdout.split(';')[2]]).toEqual([first.replace('@bootenv/', ''), 'NR']);
    expect(await sandbox.readBootMenu()).toContain(`rootflags=subvol=${first}`);
  });

  it('a plain apt-get install is diverted by the installed hooks; the new BE boots with it', async () => {
    expectSuccess(await sandbox.boot(first, ['apt-get', 'update', '-qq'], { env: APT_ENV }));
    const result = await sandbox.boot(first, ['apt-get', 'install', '-y', 'bootenv-t-marker'], { env: APT_ENV });
    expectSuccess(result);
    const match = DIVERTED.exec(result.stdout);
    expect(match).not.toBeNull();
    upgraded = match?.[2] as string;
    expect(await versionIn(sandbox, first, 'bootenv-t-marker')).toBeUndefined();
    expect(await versionIn(sandbox, upgraded, 'bootenv-t-marker')).toBe('1.0');
    const booted = await sandbox.boot(upgraded, ['bash', '-c', 'dpkg-query -W bootenv-t-marker && beadm list -H | cut -d";" -f1,3']);
    expectSuccess(booted);
    expect(booted.stdout).toContain('bootenv-t-marker\t1.0');
    expect(booted.stdout).toContain(`${upgraded.replace('@bootenv/', '')};NR`);
    // The in-place purge starts from this BE as it is now, bootenv installed.
    // Without a carry: its origin removes bootenv in place before it boots, and dpkg run in place in
    // an origin is carried as files, not as packages (README, the carry's limitations).
    expectSuccess(await sandbox.beadm(upgraded, ['create', '--carry', 'none', copy.replace('@bootenv/', '')]));
  });

  it("the maintainer story from the installed files: beadm run installs a .deb in a throw-away clone and passes on its self-test's status; nothing is left", async () => {
    const deb = 'bootenv-t-service_1.0_all.deb';
    const script = [
      `mkdir -p /tmp/work && cp /srv/bootenv-test-repo/${deb} /tmp/work/ && cd /tmp/work`,
      `beadm run -- sh -c 'apt-get install -y ./${deb} && bootenv-t-service --self-test'; echo "status=$?"`,
      `beadm run -- sh -c 'bootenv-t-service --self-test'; echo "absent=$?"`,
      'echo "mounts=$(findmnt -rn -o TARGET | grep -c "^/run/bootenv/run" || true)"',
    ].join('\n');
    const before = await sandbox.subvolumes();
    const result = await sandbox.boot(first, ['bash', '-c', script], { env: APT_ENV });
    expectSuccess(result);
    expect(result.stdout).toContain('bootenv-t-service: self-test passed');
    expect(result.stdout).toContain('status=0\n');
    // A second clone is made from the running BE again: the first one's install is gone with it.
    expect(result.stdout).toContain('absent=127\n');
    expect(result.stdout).toMatch(/^mounts=0$/m);
    expect(await versionIn(sandbox, first, 'bootenv-t-service')).toBeUndefined();
    expect(await sandbox.subvolumes()).toEqual(before);
  });

  /** Runs a diverted apt-get in the `upgraded` BE; returns the BE it made, after checking it is the default and the running BE kept bootenv. */
  async function divertedRun(args: string[]): Promise<string> {
    const before = await bootEnvironments(sandbox);
    const result = await sandbox.boot(upgraded, ['apt-get', ...args], { env: APT_ENV });
    expectCleanAptRun(result);
    const made = DIVERTED.exec(result.stdout)?.[2];
    expect(made).toBeDefined();
    expect((await bootEnvironments(sandbox)).sort()).toEqual([...before, made as string].sort());
    expect(await versionIn(sandbox, upgraded, 'bootenv')).toBe('0.1.0');
    const listed = await sandbox.beadm(upgraded, ['list', '-H']);
    expectSuccess(listed);
    expect(listed.stdout).toMatch(new RegExp(`^${(made as string).replace('@bootenv/', '')};[^;]*;R;`, 'm'));
    expect(await sandbox.readBootMenu()).toContain(`set default='bootenv-${(made as string).replace('@bootenv/', '')}'`);
    return made as string;
  }

  it('apt-get remove bootenv (diverted): a new BE without it, made and activated; apt works there, and a purge there leaves nothing', async () => {
    const removed = await divertedRun(['remove', '-y', 'bootenv']);
    expect(await statusIn(sandbox, removed, 'bootenv')).toEqual({ status: 'rc', version: '0.1.0' });
    await sandbox.withTopLevel(async (top) => {
      const root = path.join(top, removed);
      expect(exists(path.join(root, 'etc/bootenv/bootenv.conf'))).toBe(true);
      expect(exists(path.join(root, 'etc/grub.d/09_bootenv'))).toBe(true);
      expect(BOOTENV_PATHS.slice(1).filter((file) => exists(path.join(root, file)))).toEqual([]);
    });
    await expectAptWorks(sandbox, removed, 'bootenv-t-many-1');
    // The left conffile adds no BE entries there, and says so.
    const grub = await sandbox.boot(removed, ['sh', '-c', 'grub-mkconfig -o /tmp/grub.cfg && grep -c bootenv- /tmp/grub.cfg']);
    expect(grub.stdout.trim()).toBe('0');
    expect(grub.stderr).toContain('bootenv: the bootenv package is removed (dpkg: config-files); leaving out the boot environment entries');
    // apt there has no bootenv hooks any more: a plain purge.
    expectCleanAptRun(await sandbox.boot(removed, ['apt-get', 'purge', '-y', 'bootenv'], { env: APT_ENV }));
    await expectNothingLeft(sandbox, removed);
  });

  it('apt-get purge bootenv (diverted): a new BE without it, made and activated, with nothing of bootenv left; apt works there', async () => {
    const purged = await divertedRun(['purge', '-y', 'bootenv']);
    await expectNothingLeft(sandbox, purged);
    await expectAptWorks(sandbox, purged, 'bootenv-t-many-1');
  });

  it('BOOTENV=off apt-get remove bootenv (in place): exit 0, no BE made, the BE entries leave the menu; apt works; a later purge leaves nothing', async () => {
    const before = await bootEnvironments(sandbox);
    const result = await sandbox.boot(upgraded, ['apt-get', 'remove', '-y', 'bootenv'], { env: { ...APT_ENV, BOOTENV: 'off' } });
    expectCleanAptRun(result);
    expect(result.stdout).not.toContain("apt's changes are in boot environment");
    expect(await bootEnvironments(sandbox)).toEqual(before);
    expect(await statusIn(sandbox, upgraded, 'bootenv')).toEqual({ status: 'rc', version: '0.1.0' });
    // postrm ran update-grub in the BE, which writes GRUB's home through the /boot/grub bind.
    expect(result.stdout + result.stderr).toContain('bootenv: the bootenv package is removed (dpkg: half-installed)');
    const grubCfg = await sandbox.readFile('@/boot/grub/grub.cfg');
    expect(grubCfg).not.toContain("--id 'bootenv-");
    expect(grubCfg).not.toContain('bootenv/entries.cfg');
    // The real dpkg is back at /usr/bin/dpkg for apt's later calls of that run and after.
    await sandbox.withTopLevel(async (top) => {
      expect(BOOTENV_PATHS.slice(1).filter((file) => exists(path.join(top, upgraded, file)))).toEqual([]);
    });
    await expectAptWorks(sandbox, upgraded, 'bootenv-t-many-2');
    expectCleanAptRun(await sandbox.boot(upgraded, ['apt-get', 'purge', '-y', 'bootenv'], { env: APT_ENV }));
    await expectNothingLeft(sandbox, upgraded);
  });

  it(`apt-get purge bootenv in place (${inPlacePurge}): exit 0, no BE made, nothing of bootenv left; apt works`, async () => {
    const before = await bootEnvironments(sandbox);
    expect(await versionIn(sandbox, copy, 'bootenv')).toBe('0.1.0');
    let env: Record<string, string> = APT_ENV;
    if (inPlacePurge === 'BOOTENV=off') env = { ...APT_ENV, BOOTENV: 'off' };
    else {
      await sandbox.withTopLevel(async (top) => {
        writeFileSync(path.join(top, copy, 'etc/bootenv/bootenv.conf'), 'divert = never\n');
      });
    }
    const result = await sandbox.boot(copy, ['apt-get', 'purge', '-y', 'bootenv'], { env });
    expectCleanAptRun(result);
    expect(result.stdout + result.stderr).toContain('bootenv: your boot environments were kept');
    expect(await bootEnvironments(sandbox)).toEqual(before);
    await expectNothingLeft(sandbox, copy);
    await expectAptWorks(sandbox, copy, 'bootenv-t-many-1');
  });
});
