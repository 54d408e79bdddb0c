// Plain apt-get, diverted into boot environments (issue #3): real apt 2.6 and dpkg 1.21 in a
// debootstrapped Debian 12 booted from a BE, fixture packages from a local file: repository.
// Every check goes through dpkg-query --admindir, btrfs subvolume list, findmnt and a
// content+metadata manifest of the running root taken from the host.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { EXIT_CODES } from '../../src/errors.js';
import { diffManifests, takeManifest } from '../harness/manifest.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { Sandbox, isBootEnvironmentPath } from '../harness/sandbox.js';
import { WAIT_UNTIL } from '../harness/shell.js';

/**
 * Left out of the running root's manifest, besides the API filesystems and the
 * empty /run and /tmp mount points: /var/cache/apt (apt's .deb downloads and
 * binary caches, which apt itself rebuilds in the running root on every run;
 * not package state) and /var/log/apt (apt's own logs of the run, written by
 * apt in the running root; bootenv copies this run's part into the BE).
 */
const MANIFEST_EXCLUDE = ['/proc', '/sys', '/dev', '/run', '/tmp', '/var/cache/apt', '/var/log/apt'];
const APT_ENV = 'export DEBIAN_FRONTEND=noninteractive; ';
/**
 * The tail of `findmnt -rn -o TARGET | grep bootenv; ls /run/bootenv` once apt is done: only
 * the pending BE (root's alone) and its dpkg and apt state (for apt run by any user) stay
 * mounted, and no transaction is left.
 */
const ONLY_PENDING_LEFT = /\/run\/bootenv\/pending\/be\/root\n\/run\/bootenv\/pending\/dpkg\n\/run\/bootenv\/pending\/apt\n(lock\n)?pending(\nprivate)?\n?$/;

let sandbox: Sandbox;
const firstBE = '@bootenv/debian-12';

async function manifestOf(subvolume: string) {
  return sandbox.withTopLevel((top) => takeManifest(path.join(top, subvolume), { exclude: MANIFEST_EXCLUDE }));
}

async function expectUnchanged(subvolume: string, before: Awaited<ReturnType<typeof manifestOf>>): Promise<void> {
  expect(diffManifests(before, await manifestOf(subvolume))).toEqual([]);
}

/**
 * `dpkg-query -W` of the bootenv-t-* packages in a subvolume, from the host: version when
 * installed, the status abbreviation otherwise; {} when dpkg knows none. Throws when the
 * subvolume has no dpkg database or dpkg-query fails for any other reason.
 */
async function versionsIn(subvolume: string): Promise<Record<string, string>> {
  return sandbox.withTopLevel(async (top) => {
    const adminDirectory = path.join(top, subvolume, 'var/lib/dpkg');
    // dpkg-query treats a missing status file as an empty database: check that it is there.
    if (!existsSync(path.join(adminDirectory, 'status'))) throw new Error(`${subvolume} has no dpkg database (var/lib/dpkg/status)`);
    const query = spawnSync('dpkg-query', [`--admindir=${adminDirectory}`, '-f', '${Package} ${db:Status-Abbrev} ${Version}\n', '-W', 'bootenv-t-*'], {
      encoding: 'utf8',
      env: { ...process.env, LC_ALL: 'C' },
    });
    // -W exits 1 when no package matches the pattern, and says so; any other failure is a failure.
    const noneKnown = query.status === 1 && query.stdout === '' && query.stderr === 'dpkg-query: no packages found matching bootenv-t-*\n';
    if (query.status !== 0 && !noneKnown) {
      throw new Error(`dpkg-query in ${subvolume} failed (exit status ${query.status ?? query.signal}): ${query.error?.message ?? query.stderr}`);
    }
    const versions: Record<string, string> = {};
    for (const line of query.stdout.split('\n').filter(Boolean)) {
      const [name, status, version] = line.split(/\s+/);
      if (status === 'ii') versions[name as string] = version as string;
      else if (status !== 'un') versions[name as string] = `${status}`;
    }
    return versions;
  });
}

async function bootEnvironments(): Promise<string[]> {
  return (await sandbox.subvolumes()).filter(isBootEnvironmentPath);
}

async function pendingOf(booted: string): Promise<{ name: string; subvolume: string; active: string }> {
  const listed = JSON.parse((await sandbox.beadm(booted, ['list', '--json'])).stdout) as Array<{ name: string; subvolume: string; active: string }>;
  const pending = listed.filter((be) => be.active.includes('R'));
  expect(pending).toHaveLength(1);
  return pending[0] as { name: string; subvolume: string; active: string };
}

beforeAll(async () => {
  sandbox = await Sandbox.create(inject('bookwormBase'), 'ubuntu');
  await sandbox.withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
  expect((await sandbox.beadm('@', ['init'])).exitCode).toBe(0);
  const update = await sandbox.boot(firstBE, ['apt-get', 'update', '-qq']);
  expect(update.exitCode).toBe(0);
});

afterAll(async () => {
  if (sandbox === undefined) return;
  await sandbox.close();
  await sandbox.assertNothingLeft();
});

describe('apt-get diverted into a new BE', () => {
  let pending: { name: string; subvolume: string; active: string };

  it('apt-get update and a no-op install run no bootenv code and create no BE', async () => {
    const before = await bootEnvironments();
    // With beadm unreachable, any call into it would fail the apt run.
    const script = `${APT_ENV} export BOOTENV_BEADM=/nonexistent; apt-get update -qq && apt-get install -y apt && echo ok`;
    const result = await sandbox.boot(firstBE, ['bash', '-c', script]);
    expect(result.stdout).toContain('ok');
    expect(result.stdout).toContain('apt is already the newest version');
    expect(await bootEnvironments()).toEqual(before);
  });

  it('install, upgrade and a new dependency stack into one pending BE; the running root is untouched', async () => {
    const before = await manifestOf(firstBE);
    const script = `${APT_ENV}
      apt-get install -y bootenv-t-changed=1.0 bootenv-t-marker bootenv-t-app=1.0 bootenv-t-trigger; echo "rc1=$?"
      apt-get upgrade -y; echo "rc2=$?"
      apt-get install -y bootenv-t-app; echo "rc3=$?"
      apt-get install -y $(seq -f 'bootenv-t-many-%g' 1 8); echo "rc4=$?"
      apt-get install -y bootenv-t-activator; echo "rc5=$?"
      apt-get upgrade -y; echo "rc6=$?"
      findmnt -rn -o TARGET | grep bootenv; ls /run/bootenv`;
    const result = await sandbox.boot(firstBE, ['bash', '-c', script]);
    for (const rc of ['rc1', 'rc2', 'rc3', 'rc4', 'rc5', 'rc6']) expect(result.stdout).toContain(`${rc}=0`);
    expect(result.stdout).toMatch(/bootenv: apt's changes are in boot environment apt-\d{8}-\d+ \(@bootenv\/apt-\d{8}-\d+\); the running system is unchanged\. Reboot to use it\./);
    expect(result.stdout).toMatch(/includes and replaces apt-/);
    // The second upgrade had nothing to do: apt planned against the pending BE.
    expect(result.stdout.split('rc5=0')[1]).toContain('0 upgraded, 0 newly installed');
    // Only the pending BE stays mounted (for apt to plan against); no transaction left.
    expect(result.stdout.slice(-200)).toMatch(ONLY_PENDING_LEFT);

    await expectUnchanged(firstBE, before);
    expect(await versionsIn(firstBE)).toEqual({});
    const environments = await bootEnvironments();
    expect(environments).toHaveLength(2);
    pending = await pendingOf(firstBE);
    expect(pending.active).toBe('R');
    // Stacked runs replaced each other; the survivor descends from the running BE.
    const listed = JSON.parse((await sandbox.beadm(firstBE, ['list', '--json'])).stdout) as Array<{ name: string; origin: string | null }>;
    expect(listed.find((be) => be.name === pending.name)?.origin).toBe('debian-12');
    expect(await versionsIn(pending.subvolume)).toEqual({
      'bootenv-t-activator': '1.0',
      'bootenv-t-app': '1.1',
      'bootenv-t-changed': '1.1',
      'bootenv-t-lib': '1.0',
      'bootenv-t-marker': '1.0',
      'bootenv-t-newdep': '1.0',
      'bootenv-t-trigger': '1.0',
      ...Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`bootenv-t-many-${i + 1}`, '1.0'])),
    });
    const state = JSON.parse(await sandbox.readFile('@bootenv/.bootenv.json'));
    const record = Object.values(state.environments as Record<string, { transaction?: { open: boolean; command: string[] } }>).find((r) => r.transaction);
    expect(record?.transaction?.open).toBe(false);
    expect(record?.transaction?.command).toEqual(['apt-get', 'install', '-y', 'bootenv-t-activator']);
    await sandbox.withTopLevel(async (top) => {
      const root = path.join(top, pending.subvolume);
      expect(readFileSync(path.join(root, 'var/lib/bootenv-t-marker/postinst-ran'), 'utf8')).toMatch(/^configure/);
      expect(readFileSync(path.join(root, 'var/lib/bootenv-t-trigger/triggered'), 'utf8')).not.toBe('');
      expect(execFileSync('ls', [path.join(root, 'var/cache/apt')]).toString()).not.toMatch(/\.bin/);
      expect(execFileSync('find', [path.join(root, 'var/cache/apt/archives'), '-name', '*.deb']).toString()).toBe('');
      expect(() => execFileSync('test', ['-e', path.join(root, 'usr/sbin/policy-rc.d')])).toThrow();
      expect(readFileSync(path.join(root, 'var/log/apt/history.log'), 'utf8')).toContain('Commandline: apt-get install -y bootenv-t-activator');
    });
    expect(await sandbox.readBootMenu()).toContain(`set default='bootenv-${pending.name}'`);
    expect(await sandbox.hostMounts()).toEqual([]);
  });

  it('booting the pending BE shows the packages installed; the pending state is gone', async () => {
    const script = 'dpkg-query -W bootenv-t-changed bootenv-t-app; cat /usr/share/bootenv-t-changed/version; apt-config dump | grep "^Dir::State::status"; beadm list -H | cut -d\';\' -f1,3';
    const result = await sandbox.boot(pending.subvolume, ['bash', '-c', script]);
    expect(result.stdout).toContain('bootenv-t-app\t1.1\nbootenv-t-changed\t1.1\n');
    expect(result.stdout).toContain('Dir::State::status "/var/lib/dpkg/status";');
    expect(result.stdout).toContain(`${pending.name};NR`);
  });

  it('an admin-edited conffile is kept through an upgrade in a BE, with the new one beside it', async () => {
    const install = await sandbox.boot(pending.subvolume, ['bash', '-c', `${APT_ENV} apt-get install -y bootenv-t-conf=1.0`]);
    expect(install.exitCode).toBe(0);
    const withConf = await pendingOf(pending.subvolume);
    const script = `${APT_ENV} echo "admin was here" >> /etc/bootenv-t-conf.conf
      apt-get install -y -o Dpkg::Options::=--force-confold bootenv-t-conf; echo "rc=$?"`;
    const upgrade = await sandbox.boot(withConf.subvolume, ['bash', '-c', script]);
    expect(upgrade.stdout).toContain('rc=0');
    const upgraded = await pendingOf(withConf.subvolume);
    expect((await versionsIn(upgraded.subvolume))['bootenv-t-conf']).toBe('1.1');
    await sandbox.withTopLevel(async (top) => {
      expect(readFileSync(path.join(top, upgraded.subvolume, 'etc/bootenv-t-conf.conf'), 'utf8')).toContain('admin was here');
      expect(readFileSync(path.join(top, upgraded.subvolume, 'etc/bootenv-t-conf.conf.dpkg-dist'), 'utf8')).not.toContain('admin was here');
      // The running BE (where the admin edited it) still has its own edited 1.0 file.
      expect(readFileSync(path.join(top, withConf.subvolume, 'etc/bootenv-t-conf.conf'), 'utf8')).toContain('admin was here');
    });
    pending = upgraded;
  });

  it('a failing postinst: apt fails, the new BE is discarded, the pending BE and the running root are unchanged', async () => {
    const running = firstBE;
    const beforeRunning = await manifestOf(running);
    const environments = await bootEnvironments();
    // Make a pending BE in this boot first, then fail on top of it.
    const script = `${APT_ENV}
      apt-get install -y bootenv-t-many-1- ; echo "rc-remove=$?"
      cat /run/bootenv/pending/pending.json
      apt-get install -y bootenv-t-fails; echo "rc-fail=$?"
      findmnt -rn -o TARGET | grep bootenv; ls /run/bootenv`;
    // Boot the BE that is pending now: it has bootenv-t-many-1 to remove.
    const before = await manifestOf(pending.subvolume);
    const result = await sandbox.boot(pending.subvolume, ['bash', '-c', script]);
    expect(result.stdout).toContain('rc-remove=0');
    expect(result.stdout).toContain('rc-fail=100');
    expect(result.stdout).toMatch(/bootenv: dpkg failed \(exit status 1\); boot environment apt-\S+ was discarded\. Nothing else changed\./);
    expect(result.stdout).toMatch(ONLY_PENDING_LEFT);
    const after = await bootEnvironments();
    expect(after).toHaveLength(environments.length + 1);
    const stacked = await pendingOf(pending.subvolume);
    expect(await versionsIn(stacked.subvolume)).not.toHaveProperty('bootenv-t-fails');
    expect(await versionsIn(stacked.subvolume)).not.toHaveProperty('bootenv-t-many-1');
    await expectUnchanged(pending.subvolume, before);
    await expectUnchanged(running, beforeRunning);
    expect(await sandbox.hostMounts()).toEqual([]);
    pending = stacked;
  });

  it('removal and purge land in the new BE', async () => {
    const before = await manifestOf(pending.subvolume);
    const script = `${APT_ENV} apt-get remove -y bootenv-t-marker && apt-get purge -y bootenv-t-conf && echo ok`;
    const result = await sandbox.boot(pending.subvolume, ['bash', '-c', script]);
    expect(result.stdout).toContain('ok');
    await expectUnchanged(pending.subvolume, before);
    const next = await pendingOf(pending.subvolume);
    const versions = await versionsIn(next.subvolume);
    expect(versions['bootenv-t-marker']).toBe('rc');
    expect(versions).not.toHaveProperty('bootenv-t-conf');
    await sandbox.withTopLevel(async (top) => {
      expect(() => execFileSync('test', ['-e', path.join(top, next.subvolume, 'etc/bootenv-t-conf.conf')])).toThrow();
    });
    pending = next;
  });

  it('apt killed during unpack and during configure: the next run cleans up; beadm refuses meanwhile', async () => {
    const before = await manifestOf(pending.subvolume);
    const environments = await bootEnvironments();
    // The run after each kill installs something not yet installed, so that it reaches bootenv.
    const nextPackage: Record<string, string> = { unpack: 'bootenv-t-many-1', configure: 'bootenv-t-marker' };
    const killDuring = (phase: string) => `
      rm -f /tmp/bootenv-t-slow-${phase}.started
      apt-get install -y bootenv-t-slow-${phase} > /tmp/apt-${phase}.log 2>&1 &
      apt=$!
      wait_until test -e /tmp/bootenv-t-slow-${phase}.started
      beadm create meanwhile-${phase} >/dev/null 2>&1; echo "beadm-during-${phase}=$?"
      kill -KILL $apt; wait $apt 2>/dev/null
      echo "killed-${phase}"; ls /run/bootenv
      apt-get install -y ${nextPackage[phase]} 2>&1 | grep -E '^(beadm|bootenv):'; echo "next-${phase}=\${PIPESTATUS[0]}"`;
    const script = `${APT_ENV} ${WAIT_UNTIL}
      ${killDuring('unpack')}
      ${killDuring('configure')}
      findmnt -rn -o TARGET | grep bootenv; ls /run/bootenv`;
    const result = await sandbox.boot(pending.subvolume, ['bash', '-c', script]);
    for (const phase of ['unpack', 'configure']) {
      expect(result.stdout).toContain(`beadm-during-${phase}=${EXIT_CODES.BUSY}`);
      expect(result.stdout).toMatch(new RegExp(`killed-${phase}\\n(lock\\n)?(pending\\n)?(private\\n)?txn\\n`));
      expect(result.stdout).toContain(`next-${phase}=0`);
    }
    expect(result.stdout.match(/beadm: note: aborted the transaction of apt-get \(pid \d+\), which ended without finishing it/g)).toHaveLength(2);
    expect(result.stdout).toMatch(ONLY_PENDING_LEFT);
    await expectUnchanged(pending.subvolume, before);
    // One new pending BE (with what the two later runs installed), nothing of the killed runs.
    expect(await bootEnvironments()).toHaveLength(environments.length + 1);
    const next = await pendingOf(pending.subvolume);
    const versions = await versionsIn(next.subvolume);
    expect(versions['bootenv-t-many-1']).toBe('1.0');
    expect(versions['bootenv-t-marker']).toBe('1.0');
    expect(versions).not.toHaveProperty('bootenv-t-slow-unpack');
    expect(versions).not.toHaveProperty('bootenv-t-slow-configure');
    expect(await sandbox.hostMounts()).toEqual([]);
    pending = next;
  });

  it('the machine dies mid-transaction: the next boot deletes the half-made BE', async () => {
    const environments = await bootEnvironments();
    // set -m: apt gets a process group of its own, so killing it (apt, dpkg, the maintainer
    // script) cannot reach the test runner; the boot then ends and its mounts and /run vanish.
    const script = `${APT_ENV} ${WAIT_UNTIL}
      set -m
      apt-get install -y bootenv-t-slow-unpack > /dev/null 2>&1 &
      apt=$!
      wait_until test -e /tmp/bootenv-t-slow-unpack.started
      ls /run/bootenv/txn >/dev/null && echo "in-transaction"
      kill -KILL -- -$apt`;
    const crashed = await sandbox.boot(pending.subvolume, ['bash', '-c', script]);
    expect(crashed.stdout).toContain('in-transaction');
    expect(await bootEnvironments()).toHaveLength(environments.length + 1);
    const state = JSON.parse(await sandbox.readFile('@bootenv/.bootenv.json'));
    expect(Object.values(state.environments as Record<string, { transaction?: { open: boolean } }>).some((r) => r.transaction?.open)).toBe(true);

    const next = await sandbox.beadm(pending.subvolume, ['list']);
    expect(next.exitCode).toBe(0);
    expect(next.stderr).toMatch(/beadm: note: deleted @bootenv\/apt-\S+, left half-made by an interrupted apt run/);
    expect(await bootEnvironments()).toEqual(environments);
  });

  it('beadm upgrade --be-name runs apt into a BE of that name', async () => {
    const result = await sandbox.beadm(pending.subvolume, ['upgrade', '--be-name', 'named', '--', 'install', '-y', 'bootenv-t-conf'], {
      env: { DEBIAN_FRONTEND: 'noninteractive' },
    });
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toContain("apt's changes are in boot environment named (@bootenv/named)");
    expect((await pendingOf(pending.subvolume)).name).toBe('named');
    expect((await versionsIn('@bootenv/named'))['bootenv-t-conf']).toBe('1.1');
  });

  it('fails closed: when no BE can be made, apt fails and dpkg never touches the running root', async () => {
    const before = await manifestOf(pending.subvolume);
    const environments = await bootEnvironments();
    // An invalid BE name makes the snapshot impossible, deterministically.
    const script = `${APT_ENV} BOOTENV_BE_NAME='no good' apt-get install -y bootenv-t-fails 2>&1; echo "rc=$?"; ls /run/bootenv`;
    const result = await sandbox.boot(pending.subvolume, ['bash', '-c', script]);
    expect(result.stdout).toContain('beadm: invalid BE name "no good"');
    expect(result.stdout).toMatch(/E: Sub-process \/usr\/bin\/dpkg returned an error code/);
    expect(result.stdout).toContain('rc=100');
    expect(result.stdout).not.toContain('Unpacking bootenv-t-fails');
    expect(result.stdout).not.toMatch(/^txn$/m);
    await expectUnchanged(pending.subvolume, before);
    expect(await bootEnvironments()).toEqual(environments);
  });

  it('BOOTENV=off runs dpkg in place, as without bootenv', async () => {
    const environments = await bootEnvironments();
    expect((await versionsIn(pending.subvolume))['bootenv-t-many-4']).toBe('1.0');
    const result = await sandbox.boot(pending.subvolume, ['bash', '-c', `${APT_ENV} BOOTENV=off apt-get remove -y bootenv-t-many-4; echo "rc=$?"`]);
    expect(result.stdout).toContain('rc=0');
    expect(result.stdout).not.toContain('bootenv:');
    expect(await bootEnvironments()).toEqual(environments);
    expect(await versionsIn(pending.subvolume)).not.toHaveProperty('bootenv-t-many-4');
  });

  it('a later dpkg call that names no package file (--configure) takes the wrapper shortcut into the BE: beadm is not started for it', async () => {
    const before = await manifestOf(pending.subvolume);
    // Every beadm start the hooks and the wrapper make, logged (BOOTENV_BEADM: the beadm they run).
    const script = `${APT_ENV}
      printf '%s\\n' '#!/bin/sh' 'echo "$1 $2" >> /run/beadm-calls' 'exec /usr/sbin/beadm "$@"' > /run/beadm-logged; chmod 0755 /run/beadm-logged
      BOOTENV_BEADM=/run/beadm-logged apt-get install -y bootenv-t-carry; echo "rc=$?"
      cat /run/beadm-calls; rm /run/beadm-logged /run/beadm-calls
      findmnt -rn -o TARGET | grep bootenv; ls /run/bootenv`;
    const result = await sandbox.boot(pending.subvolume, ['bash', '-c', script]);
    expect(result.stdout).toContain('rc=0');
    expect(result.stdout).toMatch(/^Setting up bootenv-t-carry \(1\.1\)/m);
    // apt ran dpkg twice (--unpack, then --configure): beadm was started for the first only.
    expect(result.stdout).toMatch(/^apt-hook pre-install-pkgs\napt-hook enter\napt-hook post-invoke\n/m);
    expect(result.stdout.slice(-200)).toMatch(ONLY_PENDING_LEFT);
    await expectUnchanged(pending.subvolume, before);
    const made = await pendingOf(pending.subvolume);
    expect(made.subvolume).not.toBe(pending.subvolume);
    expect((await versionsIn(made.subvolume))['bootenv-t-carry']).toBe('1.1');
  });
});
