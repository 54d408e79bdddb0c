// beadm run and beadm shell (src/be/run.ts, src/be/run-records.ts) on real btrfs: a Debian 12
// booted from its first BE runs commands in throw-away clones of itself. The running root's
// content+metadata manifest, taken from the host, is the same after every run: the README's
// maintainer example (apt-get install ./PACKAGE.deb of a package whose postinst writes outside
// its file list and starts a service, then its self-test), a command that fails, a shell fed on
// stdin, and a run whose beadm is killed with SIGKILL (the next beadm stops what ran in the clone
// and unmounts it; the sweep deletes it). --keep turns the clone into a BE that dpkg-query, read
// on the host, shows the package installed in, with no service started. Nothing is left behind:
// no run subvolume (btrfs subvolume list), mount (findmnt) or record; bad input changes nothing.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { DiffReport } from '../../src/be/diff-plan.js';
import { EXIT_CODES } from '../../src/errors.js';
import { diffManifests, takeManifest, type Manifest } from '../harness/manifest.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { useSandbox } from '../harness/use-sandbox.js';

const FIRST = '@bootenv/debian-12';
const DEB = 'bootenv-t-service_1.0_all.deb';
/** Not package state, and written by apt in the running root on every run (see apt.test.ts), besides the API filesystems. */
const MANIFEST_EXCLUDE = ['/proc', '/sys', '/dev', '/run', '/tmp', '/var/cache/apt', '/var/log/apt'];
const APT_ENV = 'export DEBIAN_FRONTEND=noninteractive; ';
/** Shell lines that print, once beadm is done, what of a run is left in the booted system. */
const LEFT = [
  "rooted() { for p in /proc/[0-9]*; do r=$(readlink \"$p/root\" 2>/dev/null) && case $r in /run/bootenv/run/*) echo \"${p#/proc/}\";; esac; done; }",
  'left() { echo "left: rooted=$(rooted | wc -l) mounts=$(findmnt -rn -o TARGET | grep -c "^/run/bootenv/run" || true) records=$(ls /run/bootenv/run 2>/dev/null | wc -l)"; }',
].join('\n');
const NOTHING_LEFT = 'left: rooted=0 mounts=0 records=0';
/** The README's example, in a working directory on a tmpfs (the clone's /tmp is its own: the directory is bound in). */
const WORK = `mkdir -p /tmp/work && cp /srv/bootenv-test-repo/${DEB} /tmp/work/ && cd /tmp/work`;

const sandbox = useSandbox(() => inject('bookwormBase'), 'ubuntu');
let before: Manifest;

async function manifest(): Promise<Manifest> {
  return sandbox().withTopLevel((top) => takeManifest(path.join(top, FIRST), { exclude: MANIFEST_EXCLUDE }));
}

/** Subvolume paths from the host's btrfs subvolume list. */
async function subvolumes(): Promise<string[]> {
  return sandbox().subvolumes();
}

async function boot(script: string): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return sandbox().boot(FIRST, ['bash', '-c', `${APT_ENV}${LEFT}\n${script}`]);
}

async function expectRunningRootUnchanged(): Promise<void> {
  expect(diffManifests(before, await manifest())).toEqual([]);
  const runs = (await subvolumes()).filter((subvolume) => subvolume.includes('/.carry/run-'));
  expect(runs).toEqual([]);
  await sandbox().withTopLevel(async (top) => {
    const carry = path.join(top, '@bootenv/.carry');
    const entries = existsSync(carry) ? execFileSync('ls', [carry], { encoding: 'utf8' }).split('\n').filter((name) => name.startsWith('run-')) : [];
    expect(entries).toEqual([]);
  });
}

/** dpkg-query's "Version Status-Abbrev" of bootenv-t-service in the subvolume, read on the host; '' when dpkg knows it not. */
async function serviceIn(subvolume: string): Promise<string> {
  return sandbox().withTopLevel(async (top) => {
    const query = spawnSync('dpkg-query', [`--admindir=${path.join(top, subvolume, 'var/lib/dpkg')}`, '-W', '-f', '${Version} ${db:Status-Abbrev}', 'bootenv-t-service'], { encoding: 'utf8' });
    return query.status === 0 ? query.stdout.trim() : '';
  });
}

beforeAll(async () => {
  const box = sandbox();
  await box.withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
  const update = await box.boot('@', ['bash', '-c', `${APT_ENV} BOOTENV=off apt-get update -qq`]);
  expect(update.exitCode, update.stderr).toBe(0);
  expect((await box.beadm('@', ['init'])).exitCode).toBe(0);
  before = await manifest();
}, 600_000);

describe('beadm run', () => {
  it("the README's maintainer example: the .deb installs in the clone, its service does not start, its self-test passes; the running root is unchanged", async () => {
    const result = await boot(`${WORK}
beadm run -- sh -c 'apt-get install -y ./${DEB} && bootenv-t-service --self-test && test ! -e /var/lib/bootenv-t-service/started' 2>&1
echo "status=$?"
left`);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain('bootenv-t-service: self-test passed');
    // invoke-rc.d asked policy-rc.d, which said no: the init script never ran.
    expect(result.stdout).toMatch(/policy-rc\.d denied execution of start/);
    expect(result.stdout).toContain('status=0\n');
    expect(result.stdout).toContain(NOTHING_LEFT);
    expect(await serviceIn(FIRST)).toBe('');
    await expectRunningRootUnchanged();
  });

  it('passes on the exit status of a command that fails, and of a shell fed on stdin; what they wrote is gone', async () => {
    const result = await boot(`beadm run -- sh -c 'echo x >/etc/written-in-clone; useradd clone-user; exit 7'
echo "status=$?"
printf 'touch /etc/from-shell\\nexit 3\\n' | beadm shell
echo "shell=$?"
left`);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain('status=7\n');
    expect(result.stdout).toContain('shell=3\n');
    expect(result.stderr).toContain('a shell in a throw-away clone of debian-12');
    expect(result.stdout).toContain(NOTHING_LEFT);
    await expectRunningRootUnchanged();
  });

  it('a beadm run killed with SIGKILL leaves its command running in a mounted clone; the next beadm stops it, unmounts and deletes the clone', async () => {
    const result = await boot(`beadm run -- sh -c 'touch /etc/killed; exec sleep 600' &
pid=$!
for i in $(seq 200); do [ "$(rooted | wc -l)" -gt 0 ] && [ -e /run/bootenv/run/*.json ] && break; sleep 0.1; done
echo "before: rooted=$(rooted | wc -l) mounts=$(findmnt -rn -o TARGET | grep -c '^/run/bootenv/run' || true)"
kill -KILL "$pid"; wait "$pid"; echo "killed=$?"
beadm list >/dev/null; echo "list=$?"
left`);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/before: rooted=[1-9]\d* mounts=[1-9]/);
    expect(result.stdout).toContain('killed=137\n');
    expect(result.stdout).toContain('list=0\n');
    expect(result.stderr).toMatch(/discarded the clone of debian-12 left by beadm run \(pid \d+\)/);
    expect(result.stdout).toContain(NOTHING_LEFT);
    await expectRunningRootUnchanged();
  });

  it('SIGTERM to beadm run is passed on to the command; beadm then cleans up and exits with its status', async () => {
    const result = await boot(`beadm run -- sh -c 'touch /etc/terminated; exec sleep 600' &
pid=$!
for i in $(seq 200); do [ "$(rooted | wc -l)" -gt 0 ] && break; sleep 0.1; done
kill -TERM "$pid"; wait "$pid"; echo "status=$?"
left`);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain('status=143\n');
    expect(result.stdout).toContain(NOTHING_LEFT);
    expect(result.stderr).not.toContain('discarded the clone');
    await expectRunningRootUnchanged();
  });

  it('--keep makes the clone a BE: the package is installed there (dpkg-query), no service started, policy-rc.d gone; beadm diff reports the install', async () => {
    const result = await boot(`${WORK}
beadm run --keep tried -d 'service install test' -- apt-get install -y ./${DEB} >/dev/null 2>&1
echo "status=$?"
beadm diff debian-12 tried --json >/run/diff.json; echo "diff=$?"
left
cat /run/diff.json`);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain('status=0\n');
    expect(result.stdout).toContain('diff=0\n');
    expect(result.stdout).toContain(NOTHING_LEFT);
    expect(await subvolumes()).toContain('@bootenv/tried');
    expect(await serviceIn('@bootenv/tried')).toBe('1.0 ii');
    await sandbox().withTopLevel(async (top) => {
      const tried = path.join(top, '@bootenv/tried');
      expect(readFileSync(path.join(tried, 'var/lib/bootenv-t-service/postinst-ran'), 'utf8')).toBe('configured\n');
      expect(existsSync(path.join(tried, 'var/lib/bootenv-t-service/started'))).toBe(false);
      expect(existsSync(path.join(tried, 'usr/sbin/policy-rc.d'))).toBe(existsSync(path.join(top, FIRST, 'usr/sbin/policy-rc.d')));
      expect(readFileSync(path.join(tried, 'etc/fstab'), 'utf8')).toContain('@bootenv/tried');
    });
    const report = JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as DiffReport;
    expect(report.packages.added.map((entry) => `${entry.package} ${entry.version}`)).toEqual(['bootenv-t-service 1.0']);
    expect(report.conffiles.map((entry) => entry.path)).toContain('/etc/init.d/bootenv-t-service');
    expect(report.files.added.map((entry) => entry.path)).toContain('/var/lib/bootenv-t-service/postinst-ran');
    await expectRunningRootUnchanged();
  });

  it('bad input is refused before anything is made: an invalid --keep name, an unknown source, a --keep name in use, no command', async () => {
    const subvolumesBefore = await subvolumes();
    const result = await boot(`beadm run --keep 'bad/name' -- true; echo "invalid=$?"
beadm run -e no-such-be -- true; echo "unknown=$?"
beadm run --keep debian-12 -- true; echo "exists=$?"
beadm run; echo "usage=$?"
left`);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain(`invalid=${EXIT_CODES.INVALID_NAME}\n`);
    expect(result.stdout).toContain(`unknown=${EXIT_CODES.NOT_FOUND}\n`);
    expect(result.stdout).toContain(`exists=${EXIT_CODES.EXISTS}\n`);
    expect(result.stdout).toContain(`usage=${EXIT_CODES.USAGE}\n`);
    expect(result.stdout).toContain(NOTHING_LEFT);
    expect(await subvolumes()).toEqual(subvolumesBefore);
    await expectRunningRootUnchanged();
  });
});
