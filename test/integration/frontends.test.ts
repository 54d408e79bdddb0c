// Every program that drives apt's package manager lands in a BE (issue #11): Debian's own
// unattended-upgrades (python-apt; with MinimalSteps several commits in one process, planning
// against the running root's dpkg status), aptitude and PackageKit (pkcon, through packagekitd on
// a D-Bus system bus), stacking onto one pending BE in one boot, in a Debian 12 with those
// packages and the other apt hooks that look at the running root (needrestart, apt-listchanges,
// etckeeper) installed. Checked from the host with dpkg-query --admindir, btrfs subvolume list
// and a manifest of the running root; the front ends' own reports and exit statuses are asserted.
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { diffManifests, takeManifest } from '../harness/manifest.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { useSandbox } from '../harness/use-sandbox.js';

/** The front ends' per-user caches (pkcon's, aptitude's) go to /tmp, out of the running root's manifest. */
const APT_ENV = 'export DEBIAN_FRONTEND=noninteractive XDG_CACHE_HOME=/tmp/cache; ';
const firstBE = '@bootenv/debian-12';
/**
 * Left out of the running root's manifest, besides what apt.test.ts leaves out: the front
 * ends' and hooks' own records, which they write in the running root as they always do, not
 * through dpkg (logs under /var/log; aptitude's package states; PackageKit's transaction
 * database; unattended-upgrades' kept-back list and apt's periodic stamp; etckeeper's commit of
 * the admin's /etc changes before each run and its metadata). dpkg's database, the rest of /etc
 * and every package file are in.
 */
const MANIFEST_EXCLUDE = [
  '/proc', '/sys', '/dev', '/run', '/tmp', '/var/cache/apt', '/var/log',
  '/var/lib/aptitude', '/var/lib/PackageKit', '/var/cache/PackageKit',
  '/var/lib/unattended-upgrades', '/var/lib/apt/periodic',
  '/etc/.git', '/etc/.etckeeper', '/var/cache/etckeeper',
];
const UNATTENDED_CONFIG = 'etc/apt/apt.conf.d/51bootenv-test-unattended';
const BLACKLIST_CONFIG = 'etc/apt/apt.conf.d/52bootenv-test-blacklist';
/** The packages installed at 1.0 before beadm init; unattended-upgrade upgrades the first three. */
const UPGRADABLE = ['bootenv-t-uu-base', 'bootenv-t-uu-user', 'bootenv-t-changed'];

const sandbox = useSandbox(() => inject('bookwormFrontendsBase'), 'ubuntu');

async function manifestOf(subvolume: string) {
  return sandbox().withTopLevel((top) => takeManifest(path.join(top, subvolume), { exclude: MANIFEST_EXCLUDE }));
}

/**
 * The running root's manifest is as `before`, but for one thing the front ends do themselves:
 * after their commit (aptitude, PackageKit) or a failed one (python-apt) they write apt's
 * extended_states once more, with the same content (new mtime, renamed into /var/lib/apt).
 */
async function expectRunningRootUnchanged(before: Awaited<ReturnType<typeof manifestOf>>): Promise<void> {
  const rewritten = /^changed \/var\/lib\/apt(: directory .* mtime=\S+ => directory .* mtime=\S+|\/extended_states: file .* sha256=(\w+) => file .* sha256=\2)$/;
  expect(diffManifests(before, await manifestOf(firstBE)).filter((difference) => !rewritten.test(difference))).toEqual([]);
}

/** The one BE flagged R (the next boot's default). */
async function defaultBootEnvironment(booted: string): Promise<string> {
  const listed = JSON.parse((await sandbox().beadm(booted, ['list', '--json'])).stdout) as Array<{ subvolume: string; active: string }>;
  const defaults = listed.filter((environment) => environment.active.includes('R'));
  expect(defaults).toHaveLength(1);
  return (defaults[0] as { subvolume: string }).subvolume;
}

function field(output: string, key: string): string | undefined {
  return new RegExp(`^${key}=(.*)$`, 'm').exec(output)?.[1];
}

const INSTALLED_BEFORE = {
  'bootenv-t-changed': 'ii 1.0',
  'bootenv-t-uu-base': 'ii 1.0',
  'bootenv-t-uu-fails': 'ii 1.0',
  'bootenv-t-uu-user': 'ii 1.0',
};

beforeAll(async () => {
  await sandbox().withTopLevel(async (top) => {
    await installRepositoryInRoot(path.join(top, '@'));
    writeFileSync(path.join(top, '@', UNATTENDED_CONFIG), 'Unattended-Upgrade::Origins-Pattern { "origin=bootenv-tests"; };\nUnattended-Upgrade::MinimalSteps "true";\n');
    writeFileSync(path.join(top, '@', BLACKLIST_CONFIG), 'Unattended-Upgrade::Package-Blacklist { "bootenv-t-uu-fails"; };\n');
    // needrestart lists, never restarts, and asks nothing.
    writeFileSync(path.join(top, '@/etc/needrestart/conf.d/bootenv-test.conf'), "$nrconf{restart} = 'l';\n");
  });
  // Before beadm init, dpkg runs in place: the installed root gets the packages to upgrade later.
  const setup = await sandbox().boot('@', ['bash', '-c', `${APT_ENV} apt-get update -qq && apt-get install -y ${Object.keys(INSTALLED_BEFORE).map((name) => `${name}=1.0`).join(' ')}`]);
  expect(setup.exitCode, setup.stdout + setup.stderr).toBe(0);
  expect((await sandbox().beadm('@', ['init'])).exitCode).toBe(0);
  expect((await sandbox().boot(firstBE, ['apt-get', 'update', '-qq'])).exitCode).toBe(0);
});

describe('every front end of apt lands in a BE', () => {
  it('unattended-upgrade with MinimalSteps, then apt-get, aptitude and pkcon in the same boot: one pending BE holds it all; the running root is untouched', async () => {
    const before = await manifestOf(firstBE);
    const environments = await sandbox().bootEnvironments();
    const script = `${APT_ENV}
      unattended-upgrade -d > /tmp/uu.log 2>&1; echo "rc-uu=$?"
      echo "steps=$(grep -c '^applying set' /tmp/uu.log)"
      grep '^bootenv:' /var/log/unattended-upgrades/unattended-upgrades-dpkg.log
      grep -E 'All upgrades installed|Installing the upgrades failed' /tmp/uu.log
      echo "reboot-required=$(cat /run/reboot-required)"; echo "reboot-packages=$(sort /run/reboot-required.pkgs | tr '\\n' ' ')"
      apt-get install -y bootenv-t-marker > /tmp/apt.log 2>&1; echo "rc-apt=$?"; grep '^bootenv:' /tmp/apt.log
      aptitude -y install bootenv-t-lib > /tmp/aptitude.log 2>&1; echo "rc-aptitude=$?"; grep '^bootenv:' /tmp/aptitude.log
      mkdir -p /run/dbus && dbus-daemon --system --fork
      pkcon -y install bootenv-t-newdep > /tmp/pkcon.log 2>&1; echo "rc-pkcon=$?"; grep -A1 '^Installed' /tmp/pkcon.log
      echo "pending=$(sed -n 's/.*"subvolume": "\\(.*\\)".*/\\1/p' /run/bootenv/pending/pending.json)"`;
    const result = await sandbox().boot(firstBE, ['bash', '-c', script]);
    const out = result.stdout;
    expect(field(out, 'rc-uu'), out).toBe('0');
    expect(Number(field(out, 'steps'))).toBeGreaterThanOrEqual(2);
    expect(out).toContain('All upgrades installed');
    expect(out).toMatch(/^bootenv: apt's changes are in boot environment apt-\S+ \(@bootenv\/apt-\S+\); the running system is unchanged\. Reboot to use it\.$/m);
    expect(out).toMatch(/^bootenv: apt-\S+ includes and replaces apt-\S+, which held this boot's earlier apt changes\.$/m);
    expect(field(out, 'reboot-required')).toBe('*** System restart required ***');
    expect(field(out, 'reboot-packages')?.split(' ')).toEqual(expect.arrayContaining(UPGRADABLE));
    for (const frontEnd of ['apt', 'aptitude', 'pkcon']) expect(field(out, `rc-${frontEnd}`), out).toBe('0');
    expect(out).toMatch(/^Installed\s+bootenv-t-newdep-1\.0/m);

    // One new BE, the default, with every front end's changes; the running root as it was.
    const pending = field(out, 'pending') as string;
    expect(await sandbox().bootEnvironments()).toEqual([...environments, pending]);
    expect(await defaultBootEnvironment(firstBE)).toBe(pending);
    expect(await sandbox().packages(pending)).toEqual({
      'bootenv-t-changed': 'ii 1.1',
      'bootenv-t-lib': 'ii 1.0',
      'bootenv-t-marker': 'ii 1.0',
      'bootenv-t-newdep': 'ii 1.0',
      'bootenv-t-uu-base': 'ii 1.1',
      'bootenv-t-uu-fails': 'ii 1.0',
      'bootenv-t-uu-user': 'ii 1.1',
    });
    expect(await sandbox().packages(firstBE)).toEqual(INSTALLED_BEFORE);
    await expectRunningRootUnchanged(before);
    expect(await sandbox().hostMounts()).toEqual([]);
  });

  it('unattended-upgrade without MinimalSteps: one commit, one BE, the default; the running root is untouched', async () => {
    await sandbox().withTopLevel(async (top) => {
      writeFileSync(path.join(top, firstBE, 'etc/apt/apt.conf.d/53bootenv-test-one-step'), 'Unattended-Upgrade::MinimalSteps "false";\n');
    });
    try {
      const before = await manifestOf(firstBE);
      const environments = await sandbox().bootEnvironments();
      const result = await sandbox().boot(firstBE, ['bash', '-c', `${APT_ENV} unattended-upgrade -d > /tmp/uu.log 2>&1; echo "rc-uu=$?"; echo "steps=$(grep -c '^applying set' /tmp/uu.log)"; grep 'All upgrades installed' /tmp/uu.log`]);
      expect(field(result.stdout, 'steps')).toBe('0');
      expect(field(result.stdout, 'rc-uu'), result.stdout).toBe('0');
      expect(result.stdout).toContain('All upgrades installed');
      const made = (await sandbox().bootEnvironments()).filter((subvolume) => !environments.includes(subvolume));
      expect(made).toHaveLength(1);
      expect(await defaultBootEnvironment(firstBE)).toBe(made[0]);
      const packages = await sandbox().packages(made[0] as string);
      for (const name of UPGRADABLE) expect(packages[name]).toBe('ii 1.1');
      expect(await sandbox().packages(firstBE)).toEqual(INSTALLED_BEFORE);
      await expectRunningRootUnchanged(before);
    } finally {
      await sandbox().withTopLevel(async (top) => rmSync(path.join(top, firstBE, 'etc/apt/apt.conf.d/53bootenv-test-one-step')));
    }
  });

  it('a failing postinst under unattended-upgrade: it reports the failure and exits non-zero; no BE holds the failed upgrade; the running root is untouched', async () => {
    await sandbox().withTopLevel(async (top) => rmSync(path.join(top, firstBE, BLACKLIST_CONFIG)));
    try {
      const before = await manifestOf(firstBE);
      const script = `${APT_ENV} unattended-upgrade -v > /tmp/uu.log 2>&1; echo "rc-uu=$?"
        grep -E 'Installing the upgrades failed|All upgrades installed' /tmp/uu.log
        grep '^bootenv:' /var/log/unattended-upgrades/unattended-upgrades-dpkg.log`;
      const result = await sandbox().boot(firstBE, ['bash', '-c', script]);
      expect(field(result.stdout, 'rc-uu'), result.stdout).not.toBe('0');
      expect(result.stdout).toContain('Installing the upgrades failed!');
      expect(result.stdout).not.toContain('All upgrades installed');
      expect(result.stdout).toMatch(/^bootenv: dpkg failed \(exit status 1\); boot environment \S+ was discarded\. Nothing else changed\.$/m);
      for (const subvolume of await sandbox().bootEnvironments()) {
        expect((await sandbox().packages(subvolume))['bootenv-t-uu-fails'], subvolume).toBe('ii 1.0');
      }
      expect(await sandbox().packages(firstBE)).toEqual(INSTALLED_BEFORE);
      await expectRunningRootUnchanged(before);
    } finally {
      await sandbox().withTopLevel(async (top) => {
        writeFileSync(path.join(top, firstBE, BLACKLIST_CONFIG), 'Unattended-Upgrade::Package-Blacklist { "bootenv-t-uu-fails"; };\n');
      });
    }
  });
});
