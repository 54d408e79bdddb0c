// beadm diff and beadm show (src/be/diff.ts, src/be/diff-plan.ts, src/be/show.ts) on real btrfs:
// a Debian 12 booted from its first BE; a plain apt-get run upgrades a package with a conffile,
// installs one whose postinst writes outside its file list and removes another, into a new BE;
// then files no package owns are added, removed, re-moded and rewritten there. What beadm diff
// reports is checked against the real tools: `dpkg-query -W` of both dpkg databases and
// `dpkg --compare-versions` for the packages, and for the files a full walk of both trees (find,
// `diff -rq --no-dereference`) with what `dpkg-query -S` knows taken out. The diff leaves no
// subvolume or mount behind (btrfs subvolume list, findmnt).
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { DiffReport } from '../../src/be/diff-plan.js';
import type { BootEnvironmentStory } from '../../src/be/show.js';
import { EXIT_CODES } from '../../src/errors.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { useSandbox } from '../harness/use-sandbox.js';

const FIRST = '@bootenv/debian-12';
const APT_ENV = 'export DEBIAN_FRONTEND=noninteractive; ';
const sandbox = useSandbox(() => inject('bookwormBase'), 'ubuntu');
let made = '';

async function beadm(args: readonly string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return sandbox().beadm(FIRST, args);
}

async function json<T>(args: readonly string[]): Promise<T> {
  const result = await beadm([...args, '--json']);
  expect(result.exitCode, `beadm ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return JSON.parse(result.stdout) as T;
}

interface Instance {
  key: string;
  version: string;
}

/** Package instances with files on disk, from dpkg-query on the database of `root`. */
function installed(root: string): Map<string, Instance> {
  const out = execFileSync('dpkg-query', [`--admindir=${root}/var/lib/dpkg`, '-W', '-f', '${Package}:${Architecture}\\t${Version}\\t${db:Status-Status}\\n'], { encoding: 'utf8' });
  const result = new Map<string, Instance>();
  for (const line of out.split('\n').filter(Boolean)) {
    const [key, version, status] = line.split('\t') as [string, string, string];
    if (status !== 'not-installed' && status !== 'config-files') result.set(key, { key, version });
  }
  return result;
}

function dpkgLess(a: string, b: string): boolean {
  return spawnSync('dpkg', ['--compare-versions', a, 'lt', b]).status === 0;
}

/** path → "type mode uid gid" of every entry of the tree at `root`, from find. */
function walk(root: string): Map<string, string> {
  const out = execFileSync('find', [root, '-mindepth', '1', '-printf', '/%P\\t%y %m %U %G\\n'], { encoding: 'utf8', maxBuffer: 1 << 28 });
  return new Map(out.split('\n').filter(Boolean).map((line) => line.split('\t') as [string, string]));
}

/** Paths of `paths` that dpkg knows in either root (its file lists and diversions), by dpkg-query -S. */
function knownToDpkg(roots: readonly string[], paths: readonly string[]): Set<string> {
  const known = new Set<string>();
  for (const root of roots) {
    for (let start = 0; start < paths.length; start += 200) {
      const result = spawnSync('dpkg-query', [`--admindir=${root}/var/lib/dpkg`, '-S', ...paths.slice(start, start + 200)], { encoding: 'utf8' });
      for (const line of result.stdout.split('\n')) {
        const match = /: (\/.*)$/.exec(line);
        if (match !== null) known.add(match[1] as string);
      }
    }
  }
  return known;
}

/** The report's files are exactly those a full walk of both subvolumes (find, diff -rq) finds different, less what dpkg-query -S knows. */
async function expectWhatTheWalkFinds(report: DiffReport, subvolumeA: string, subvolumeB: string): Promise<void> {
  await sandbox().withTopLevel(async (top) => {
    const rootA = path.join(top, subvolumeA);
    const rootB = path.join(top, subvolumeB);
    const a = walk(rootA);
    const b = walk(rootB);
    const added = [...b.keys()].filter((file) => !a.has(file));
    const removed = [...a.keys()].filter((file) => !b.has(file));
    const changed = new Set([...a.keys()].filter((file) => b.has(file) && a.get(file) !== b.get(file)));
    const compared = spawnSync('diff', ['-rq', '--no-dereference', rootA, rootB], { encoding: 'utf8', maxBuffer: 1 << 28 });
    expect(compared.status, compared.stderr).toBe(1);
    for (const line of compared.stdout.split('\n')) {
      const match = /^(?:Files|Symbolic links) (\S+) and \S+ differ$/.exec(line);
      if (match !== null) changed.add(match[1]!.slice(rootA.length));
    }
    const outsideDatabase = (file: string) => file !== '/var/lib/dpkg' && !file.startsWith('/var/lib/dpkg/');
    const known = knownToDpkg([rootA, rootB], [...added, ...removed, ...changed]);
    const unknown = (files: Iterable<string>) => [...files].filter((file) => outsideDatabase(file) && !known.has(file)).sort();
    expect(report.files.added.map((change) => change.path)).toEqual(unknown(added));
    expect(report.files.removed.map((change) => change.path)).toEqual(unknown(removed));
    expect(report.files.changed.map((change) => change.path)).toEqual(unknown(changed));
  });
}

beforeAll(async () => {
  const box = sandbox();
  await box.withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
  const setup = await box.boot('@', ['bash', '-c', `${APT_ENV} set -e; apt-get update -qq; BOOTENV=off apt-get install -y -qq bootenv-t-conf=1.0 bootenv-t-lib > /dev/null`]);
  expect(setup.exitCode, setup.stderr).toBe(0);
  expect((await box.beadm('@', ['init'])).exitCode).toBe(0);
  const run = await box.boot(FIRST, ['bash', '-c', `${APT_ENV} apt-get install -y bootenv-t-conf bootenv-t-marker bootenv-t-lib- 2>&1`]);
  expect(run.exitCode, run.stdout).toBe(0);
  made = /apt's changes are in boot environment (\S+) /.exec(run.stdout)?.[1] ?? '';
  expect(made).not.toBe('');
  // What an admin (or a test) does in the new BE that no package knows of.
  await box.withTopLevel(async (top) => {
    const root = path.join(top, '@bootenv', made);
    writeFileSync(path.join(root, 'srv/report.txt'), 'added\n');
    execFileSync('mkdir', ['-p', path.join(root, 'srv/newdir/sub')]);
    writeFileSync(path.join(root, 'srv/newdir/sub/data'), 'x'.repeat(5000));
    rmSync(path.join(root, 'root/.profile'));
    chmodSync(path.join(root, 'root/.bashrc'), 0o600);
    writeFileSync(path.join(root, 'etc/hostname'), 'renamed-host\n');
    // Rewritten with the same bytes: btrfs sees a write, the content is the same, so no change.
    execFileSync('cp', ['--preserve=all', path.join(root, 'etc/issue'), path.join(root, 'etc/issue.tmp')]);
    execFileSync('mv', [path.join(root, 'etc/issue.tmp'), path.join(root, 'etc/issue')]);
  });
}, 600_000);

describe('beadm diff', () => {
  it('reports the packages as dpkg-query and dpkg --compare-versions tell them, in both directions', async () => {
    const forward = await json<DiffReport>(['diff', 'debian-12', made]);
    const backward = await json<DiffReport>(['diff', made]);
    expect(forward.from).toBe('debian-12');
    expect(backward.to).toBe('debian-12');
    await sandbox().withTopLevel(async (top) => {
      const a = installed(path.join(top, FIRST));
      const b = installed(path.join(top, '@bootenv', made));
      const expected = { added: [] as string[], removed: [] as string[], upgraded: [] as string[], downgraded: [] as string[] };
      for (const [key, entry] of b) {
        const before = a.get(key);
        if (before === undefined) expected.added.push(`${key} ${entry.version}`);
        else if (dpkgLess(before.version, entry.version)) expected.upgraded.push(`${key} ${before.version} ${entry.version}`);
        else if (dpkgLess(entry.version, before.version)) expected.downgraded.push(`${key} ${before.version} ${entry.version}`);
      }
      for (const [key, entry] of a) if (!b.has(key)) expected.removed.push(`${key} ${entry.version}`);
      const got = (report: DiffReport) => ({
        added: report.packages.added.map((p) => `${p.package}:${p.architecture} ${p.version}`),
        removed: report.packages.removed.map((p) => `${p.package}:${p.architecture} ${p.version}`),
        upgraded: report.packages.upgraded.map((p) => `${p.package}:${p.architecture} ${p.from} ${p.to}`),
        downgraded: report.packages.downgraded.map((p) => `${p.package}:${p.architecture} ${p.from} ${p.to}`),
      });
      for (const list of Object.values(expected)) list.sort();
      expect(got(forward)).toEqual(expected);
      expect(expected.added).toEqual(['bootenv-t-marker:all 1.0']);
      expect(expected.upgraded).toEqual(['bootenv-t-conf:all 1.0 1.1']);
      expect(expected.removed).toEqual(['bootenv-t-lib:all 1.0']);
      expect(got(backward)).toEqual({ added: expected.removed, removed: expected.added, upgraded: [], downgraded: ['bootenv-t-conf:all 1.1 1.0'] });
    });
    expect(forward.conffiles).toEqual([{ path: '/etc/bootenv-t-conf.conf', packages: ['bootenv-t-conf'], change: 'modified' }]);
  });

  it('lists exactly the files a full walk of both trees finds different that dpkg does not know of', async () => {
    const report = await json<DiffReport>(['diff', 'debian-12', made]);
    await expectWhatTheWalkFinds(report, FIRST, `@bootenv/${made}`);
    expect(report.files.added.map((change) => change.path)).toEqual(expect.arrayContaining(['/srv/report.txt', '/srv/newdir', '/srv/newdir/sub', '/srv/newdir/sub/data', '/var/lib/bootenv-t-marker/postinst-ran']));
    expect(report.files.removed.map((change) => change.path)).toContain('/root/.profile');
    expect(report.files.changed).toEqual(expect.arrayContaining([{ path: '/root/.bashrc', kind: 'file', content: false, metadata: true }, { path: '/etc/hostname', kind: 'file', content: true, metadata: false }]));
    expect(report.files.changed.map((change) => change.path)).not.toContain('/etc/issue');
  });

  it('leaves no subvolume and no mount behind; an unknown or invalid name changes nothing', async () => {
    const before = await sandbox().subvolumes();
    const text = await beadm(['diff', 'debian-12', made]);
    expect(text.exitCode, text.stderr).toBe(0);
    expect(text.stdout).toContain(`Changes from debian-12 to ${made}:\n`);
    expect(text.stdout).toContain('Packages upgraded (1):\n  bootenv-t-conf:all  1.0  ->  1.1\n');
    expect((await beadm(['diff', 'no-such-be'])).exitCode).toBe(EXIT_CODES.NOT_FOUND);
    expect((await beadm(['diff', 'bad/name'])).exitCode).toBe(EXIT_CODES.INVALID_NAME);
    expect(await sandbox().subvolumes()).toEqual(before);
    expect(before.filter((subvolume) => subvolume.includes('diff-'))).toEqual([]);
    const mounts = execFileSync('findmnt', ['-rn', '-o', 'SOURCE'], { encoding: 'utf8' });
    expect(mounts).not.toContain('diff-');
  });
});

describe('beadm show', () => {
  it("tells the apt run that made a BE with each package's versions, as dpkg-query has them", async () => {
    const story = await json<BootEnvironmentStory>(['show', made]);
    expect(story.name).toBe(made);
    expect(story.aptRuns).toHaveLength(1);
    expect(story.aptRuns[0]!.command).toEqual(expect.arrayContaining(['apt-get', 'install', 'bootenv-t-conf']));
    // Each action is a line (unpack, configure, remove), as apt's hook gave them.
    const byPackage = new Map(story.aptRuns[0]!.packages.map((entry) => [entry.package, entry]));
    expect(byPackage.get('bootenv-t-conf')).toMatchObject({ oldVersion: '1.0', newVersion: '1.1' });
    expect(byPackage.get('bootenv-t-marker')).toMatchObject({ oldVersion: null, newVersion: '1.0' });
    expect(byPackage.get('bootenv-t-lib')).toMatchObject({ oldVersion: '1.0', newVersion: null });
    expect(story.freedByDestroyBytes).toBeGreaterThan(0);
    expect(story.lastGoodBoot).toBeNull();
    const first = await json<BootEnvironmentStory>(['show', 'debian-12']);
    expect(first.aptRuns).toEqual([]);
    const text = await beadm(['show', made]);
    expect(text.stdout).toMatch(new RegExp(`^Name: +${made}\n`));
    expect(text.stdout).toMatch(/apt run 1 of 1: .*apt-get install -y bootenv-t-conf bootenv-t-marker bootenv-t-lib-/);
    expect((await beadm(['show', 'no-such-be'])).exitCode).toBe(EXIT_CODES.NOT_FOUND);
  });

  it('apt runs stacked in one boot into the pending BE: the last BE shows each run, oldest first', async () => {
    const run = await sandbox().boot(FIRST, ['bash', '-c', `${APT_ENV} set -e; apt-get install -y bootenv-t-activator 2>&1; apt-get install -y bootenv-t-trigger 2>&1`]);
    expect(run.exitCode, run.stdout).toBe(0);
    const stacked = [...run.stdout.matchAll(/apt's changes are in boot environment (\S+) /g)].map((match) => match[1]);
    expect(stacked).toHaveLength(2);
    const story = await json<BootEnvironmentStory>(['show', stacked[1]!]);
    expect(story.aptRuns.map((entry) => [...new Set(entry.packages.map((p) => p.package))])).toEqual([['bootenv-t-activator'], ['bootenv-t-trigger']]);
    expect(story.aptRuns.map((entry) => entry.command.at(-1))).toEqual(['bootenv-t-activator', 'bootenv-t-trigger']);
    expect(story.aptRuns.every((entry) => entry.finished !== null)).toBe(true);
  });
});

describe('beadm diff after a boot', () => {
  it('in the booted BE, its carry done and the subvolumes between it and its origin deleted, still reports what a full walk finds', async () => {
    const booted = await sandbox().boot(`@bootenv/${made}`, ['bash', '-c', 'beadm diff debian-12 --json && btrfs subvolume show / | sed -n "s/^\\s*Parent UUID:\\s*//p"']);
    expect(booted.exitCode, booted.stderr).toBe(0);
    const [report, parent] = [JSON.parse(booted.stdout.slice(0, booted.stdout.lastIndexOf('}') + 1)) as DiffReport, booted.stdout.slice(booted.stdout.lastIndexOf('}') + 1).trim()];
    expect(report.to).toBe(made);
    // The carry replaced the BE's subvolume with a snapshot of it, and the replaced one and the carry base are gone:
    // btrfs no longer knows the way to debian-12 (bootenv kept it, src/be/ancestry.ts).
    const listed = await sandbox().withTopLevel(async (top) => execFileSync('btrfs', ['subvolume', 'list', '-u', top], { encoding: 'utf8' }));
    expect(parent).toMatch(/^[0-9a-f-]{36}$/);
    expect(listed).not.toContain(parent);
    await expectWhatTheWalkFinds(report, FIRST, `@bootenv/${made}`);
    expect(report.files.added.map((change) => change.path)).toContain('/srv/report.txt');
  });
});
