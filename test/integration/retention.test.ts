// Retention and the free-space guard (issue 16) on real btrfs: 60 successive "weeks" on a small
// filesystem. Each week a new version of a held-out package (a part of its content new, a part
// the same as every week's) is installed by a diverted apt run; then the new BE boots and is
// recorded good, or (some weeks) the admin rolls back to the BE before it, or (other weeks) the
// new BE gets a one-shot trial boot that never reaches multi-user and the old default boots
// again. One BE is pinned early and stays pinned. bootenv.conf keeps the default policy (keep =
// 10, 7 daily, 4 weekly) and sets min-free, so that in the first half the filesystem holds
// fewer BEs than the policy would keep: the guard must prune BEs only the policy keeps. In the
// second half keep = 6, and auto-prune after each apt run does the pruning. After every step, checked with the host's `btrfs subvolume list` and `btrfs filesystem
// usage`, never with beadm: every apt run exited 0, the running, default, one-shot, last good
// and pinned BEs exist, and free space stays above min-free. At the end, `prune --dry-run
// --json` names exactly what `prune` then removes; and with min-free above what is left, apt
// is refused with NO_SPACE before dpkg runs, having destroyed only unprotected BEs.
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { PruneResult } from '../../src/be/prune.js';
import { EXIT_CODES } from '../../src/errors.js';
import { writeAptRepository } from '../harness/repo.js';
import { useSandbox } from '../harness/use-sandbox.js';

const WEEKS = Number(process.env.BOOTENV_RETENTION_WEEKS ?? 60);
const SIZE_GIB = 3;
const MiB = 1024 ** 2;
/** The package: this much new content each week, and this much that every version shares. */
const CHANGING_BYTES = 40 * MiB;
const STABLE_BYTES = 8 * MiB;
const MIN_FREE = '1300M';
const MIN_FREE_BYTES = 1300 * MiB;
/** The repository lives in @home, outside every BE, as a mirror would be elsewhere. */
const REPOSITORY_IN_ROOT = '/home/bootenv-weekly';
const PACKAGE = 'bootenv-t-weekly';
/** After this week, bootenv.conf says keep = 6. */
const HALFTIME = Math.floor(WEEKS / 2);

const FIRST = '@bootenv/debian-12';
const sandbox = useSandbox(() => inject('bookwormBase'), 'ubuntu', { sizeGiB: SIZE_GIB });

type Scenario = 'good' | 'rollback' | 'failed-trial';

/** Week `week`'s fate: a rollback every 7th week from week 5, a failed trial boot every 9th from week 4. */
function scenarioOf(week: number): Scenario {
  if (week >= 4 && week % 9 === 4) return 'failed-trial';
  if (week >= 5 && week % 7 === 5) return 'rollback';
  return 'good';
}

/** What the test knows must be protected, by its own bookkeeping (BE names). */
interface Known {
  running: string;
  default: string;
  oneShot: string | null;
  lastGood: string;
  pinned: string | null;
}

/** The BE names, from the host's `btrfs subvolume list`. */
async function names(): Promise<string[]> {
  return (await sandbox().bootEnvironments()).map((subvolume) => subvolume.replace(/^@bootenv\//, '')).sort();
}

/** `btrfs filesystem usage -b` of the sandbox's filesystem: device size and free (estimated) bytes. */
async function usage(): Promise<{ size: number; free: number }> {
  return sandbox().withTopLevel(async (top) => {
    const { stdout } = await execa('btrfs', ['filesystem', 'usage', '-b', top], { env: { LC_ALL: 'C' } });
    const field = (name: string) => Number(new RegExp(`^\\s*${name}:\\s+(\\d+)`, 'm').exec(stdout)?.[1] ?? NaN);
    return { size: field('Device size'), free: field('Free \\(estimated\\)') };
  });
}

async function bootOk(subvolume: string, script: string): Promise<string> {
  const result = await sandbox().boot(subvolume, ['bash', '-c', script]);
  expect(result.exitCode, `${script}\n${result.stdout}\n${result.stderr}`).toBe(0);
  return result.stdout + result.stderr;
}

/** Builds version 1.`week` of PACKAGE into the repository in @home (replacing the previous one). */
async function publishWeek(week: number, stable: Buffer): Promise<void> {
  const staging = await mkdtemp(path.join(tmpdir(), 'bootenv-weekly.'));
  try {
    const stage = path.join(staging, 'stage');
    const share = path.join(stage, 'usr/share', PACKAGE);
    await mkdir(path.join(stage, 'DEBIAN'), { recursive: true });
    await mkdir(share, { recursive: true });
    await writeFile(path.join(share, 'changing.bin'), randomBytes(CHANGING_BYTES));
    await writeFile(path.join(share, 'stable.bin'), stable);
    await writeFile(path.join(share, 'version'), `1.${week}\n`);
    const installedKiB = Math.ceil((CHANGING_BYTES + STABLE_BYTES) / 1024) + 4;
    await writeFile(
      path.join(stage, 'DEBIAN/control'),
      [`Package: ${PACKAGE}`, `Version: 1.${week}`, 'Architecture: all', 'Maintainer: bootenv tests <tests@bootenv.invalid>', `Installed-Size: ${installedKiB}`, 'Description: bootenv test package: a new version every week', ''].join('\n'),
    );
    const deb = path.join(staging, `${PACKAGE}_1.${week}_all.deb`);
    await execa('dpkg-deb', ['-Znone', '--root-owner-group', '--build', stage, deb], { env: { LC_ALL: 'C' }, stdout: 'ignore' });
    await sandbox().withTopLevel(async (top) => {
      const repository = path.join(top, '@home', path.basename(REPOSITORY_IN_ROOT));
      await rm(repository, { recursive: true, force: true });
      await writeAptRepository(repository, [deb]);
    });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Every protected BE exists (btrfs subvolume list) and free space is above min-free (btrfs filesystem usage). */
async function checkInvariants(known: Known, step: string): Promise<string[]> {
  const present = await names();
  for (const [role, name] of Object.entries(known)) {
    if (name !== null) expect(present, `${step}: the ${role} BE ${name}`).toContain(name);
  }
  const { free } = await usage();
  expect(free, `${step}: free space ${free} above min-free ${MIN_FREE_BYTES}`).toBeGreaterThanOrEqual(MIN_FREE_BYTES);
  return present;
}

beforeAll(async () => {
  const init = await sandbox().beadm('@', ['init']);
  expect(init.exitCode, init.stderr).toBe(0);
  await sandbox().withTopLevel(async (top) => {
    const root = path.join(top, FIRST);
    appendFileSync(path.join(root, 'etc/bootenv/bootenv.conf'), `min-free = ${MIN_FREE}\n`);
    // Only the weekly repository: nothing else to fetch or upgrade.
    await rm(path.join(root, 'etc/apt/sources.list.d'), { recursive: true, force: true });
    await mkdir(path.join(root, 'etc/apt/sources.list.d'));
    await writeFile(path.join(root, 'etc/apt/sources.list'), `deb [trusted=yes] file:${REPOSITORY_IN_ROOT} ./\n`);
  });
});

describe(`${WEEKS} weeks of upgrades on a ${SIZE_GIB} GiB filesystem`, () => {
  const known: Known = { running: 'debian-12', default: 'debian-12', oneShot: null, lastGood: 'debian-12', pinned: null };
  const figures = { guardDestroyed: 0, autoPruned: 0, maxBootEnvironments: 0, minFree: Infinity, refusals: 0 };

  it('every apt run succeeds, the protected BEs stay and free space stays above min-free', { timeout: 900_000 }, async () => {
    const stable = randomBytes(STABLE_BYTES);
    await checkInvariants(known, 'before week 1');
    for (let week = 1; week <= WEEKS; week++) {
      await publishWeek(week, stable);
      const previous = known.running;
      const apt = await sandbox().boot(`@bootenv/${previous}`, [
        'bash',
        '-c',
        `export DEBIAN_FRONTEND=noninteractive; apt-get update -qq >/dev/null && apt-get install -y -q ${PACKAGE}; echo "apt-rc=$?"`,
      ]);
      const output = apt.stdout + apt.stderr;
      expect(apt.stdout, `week ${week}: ${output}`).toContain('apt-rc=0');
      const made = /^bootenv: apt's changes are in boot environment (\S+) /m.exec(apt.stdout)?.[1];
      expect(made, `week ${week}: ${output}`).toBeDefined();
      const fresh = made as string;
      figures.guardDestroyed += [...output.matchAll(/destroyed boot environment \S+ to make room/g)].length;
      figures.autoPruned += Number(/^bootenv: pruned (\d+) boot environment/m.exec(apt.stdout)?.[1] ?? 0);
      known.default = fresh;
      await checkInvariants(known, `week ${week}, after apt`);

      const scenario = scenarioOf(week);
      if (scenario === 'failed-trial') {
        // The admin keeps the old default and gives the new BE one trial boot, which never reaches multi-user.
        await bootOk(`@bootenv/${previous}`, `beadm activate ${previous} >/dev/null && beadm activate -t ${fresh} >/dev/null`);
        known.default = previous;
        known.oneShot = fresh;
        await checkInvariants(known, `week ${week}, trial pending`);
        await bootOk(`@bootenv/${fresh}`, 'beadm boot-complete');
        known.oneShot = null;
        known.running = fresh;
        await checkInvariants(known, `week ${week}, in the failed trial`);
        await bootOk(`@bootenv/${previous}`, 'beadm boot-complete && beadm boot-complete --good');
        known.running = previous;
      } else {
        await bootOk(`@bootenv/${fresh}`, 'beadm boot-complete && beadm boot-complete --good');
        known.running = fresh;
        known.lastGood = fresh;
        if (scenario === 'rollback') {
          await checkInvariants(known, `week ${week}, booted`);
          await bootOk(`@bootenv/${fresh}`, `beadm activate ${previous} >/dev/null`);
          known.default = previous;
          await bootOk(`@bootenv/${previous}`, 'beadm boot-complete && beadm boot-complete --good');
          known.running = previous;
          known.lastGood = previous;
        }
      }
      if (week === HALFTIME) {
        // From here on keep = 6: the filesystem holds more than the policy keeps, and auto-prune does the pruning.
        await sandbox().withTopLevel(async (top) => appendFileSync(path.join(top, '@bootenv', known.running, 'etc/bootenv/bootenv.conf'), 'keep = 6\n'));
      }
      if (week === 3) {
        await bootOk(`@bootenv/${known.running}`, `beadm pin ${known.running} >/dev/null`);
        known.pinned = known.running;
      }
      const present = await checkInvariants(known, `week ${week}, end`);
      figures.maxBootEnvironments = Math.max(figures.maxBootEnvironments, present.length);
      figures.minFree = Math.min(figures.minFree, (await usage()).free);
    }
    console.log(`retention: ${WEEKS} weeks; guard destroyed ${figures.guardDestroyed} BEs, auto-prune ${figures.autoPruned}; at most ${figures.maxBootEnvironments} BEs; lowest free ${(figures.minFree / MiB).toFixed(0)} MiB (min-free ${MIN_FREE})`);
    // The filesystem holds fewer BEs than keep = 10: the guard had to make room; with keep = 6, auto-prune did.
    expect(figures.guardDestroyed).toBeGreaterThan(0);
    expect(figures.autoPruned).toBeGreaterThan(0);
  });

  it('prune --dry-run --json names exactly what prune then removes (btrfs subvolume list)', async () => {
    const before = await names();
    const planned = JSON.parse((await sandbox().beadm(`@bootenv/${known.running}`, ['prune', '--dry-run', '--json', '--keep', '1', '--keep-daily', '0', '--keep-weekly', '0'])).stdout) as PruneResult;
    expect(await names()).toEqual(before);
    expect(planned.destroyed.length).toBeGreaterThan(0);
    const pruned = await sandbox().beadm(`@bootenv/${known.running}`, ['prune', '--json', '--keep', '1', '--keep-daily', '0', '--keep-weekly', '0']);
    expect(pruned.exitCode, pruned.stderr).toBe(0);
    const after = await names();
    expect(before.filter((name) => !after.includes(name))).toEqual(planned.destroyed.map((be) => be.name).sort());
    await checkInvariants(known, 'after prune');
  });

  it('with min-free above what pruning can free, apt is refused with NO_SPACE before dpkg runs; only unprotected BEs went', async () => {
    await publishWeek(WEEKS + 1, randomBytes(STABLE_BYTES));
    await sandbox().withTopLevel(async (top) => appendFileSync(path.join(top, '@bootenv', known.running, 'etc/bootenv/bootenv.conf'), 'min-free = 95%\n'));
    const packagesBefore = await sandbox().packages(`@bootenv/${known.running}`);
    const before = await names();
    const result = await sandbox().boot(`@bootenv/${known.running}`, ['bash', '-c', `export DEBIAN_FRONTEND=noninteractive; apt-get update -qq >/dev/null; apt-get install -y -q ${PACKAGE}; echo "apt-rc=$?"`]);
    expect(result.stdout).toContain('apt-rc=100');
    expect(result.stderr).toMatch(/not enough space for this apt run/);
    console.log(`retention: the refusal: ${result.stderr}`);
    // apt passes on the hook's exit status: NO_SPACE.
    expect(result.stderr).toMatch(new RegExp(`returned an error code \\(${EXIT_CODES.NO_SPACE}\\)`));
    expect(result.stderr).toMatch(new RegExp(`${known.pinned}[^;]*pinned: beadm unpin`));
    const after = await names();
    for (const name of Object.values(known)) if (name !== null) expect(after).toContain(name);
    // No BE was made, and the running BE's packages are as they were.
    expect(after.filter((name) => !before.includes(name))).toEqual([]);
    expect(await sandbox().packages(`@bootenv/${known.running}`)).toEqual(packagesBefore);
  });
});
