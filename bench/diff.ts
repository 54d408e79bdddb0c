/**
 * The diff benchmark (issue #17): `beadm diff` of two BEs after a real
 * 20-package upgrade, beside a full walk comparing every file of both trees
 * (`diff -rq --no-dereference`, which reads all their data, as cmp does),
 * measured in one run. The cached debootstrapped Debian 12 (as released) gets
 * bookworm-updates and bookworm-security as sources; all its upgradable
 * packages are upgraded (git and its dependencies installed besides when fewer than 20
 * are upgradable) by a plain apt-get, diverted by bootenv into a new BE.
 * beadm diff is timed inside the booted BE (the sandbox's boot is not part of
 * it); the walk runs on the host over the same two subvolumes.
 * Each measurement starts with the deleted subvolumes cleaned and the page
 * cache dropped, alternating diff and walk, three rounds; medians are printed with the ratio and its target
 * (≤ 0.1). Then the same upgrade again, of the same BE holding besides four
 * copies of its /usr under /srv (data apt does not touch): the walk's cost
 * grows with the root, beadm diff's with what changed. Both report which paths differ; the benchmark also prints how many.
 * Run: npm run bench:diff. Needs root, network to deb.debian.org and the
 * cached base (npm test builds it). Removes its sandbox.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { BOOKWORM, ensureBase } from '../test/harness/base.js';
import { Sandbox } from '../test/harness/sandbox.js';
import { BOOKWORM_SOURCES, runBenchmark, dropCaches, secondsSince, median, printTable, stepsIn, type Step } from './measure.js';

const APT = 'export DEBIAN_FRONTEND=noninteractive; ';
const PACKAGES = 20;
const ROUNDS = 3;
const FIRST = '@bootenv/debian-12';
/** Copies of /usr under /srv for the larger root (about 0.75 GB each). */
const BULK_COPIES = 4;


interface PairResult {
  diffRuns: number[];
  walkRuns: number[];
  report: { upgraded: number; files: number; packagedChanges: number };
  walkLines: number;
  rootBytes: number;
}


/**
 * Each run starts on a quiet filesystem with nothing cached: the subvolumes
 * deleted before (the last diff's two snapshots) cleaned by btrfs, whose
 * cleaner would otherwise read and write beside the next run, then the page
 * cache dropped.
 */
async function quietAndCold(sandbox: Sandbox): Promise<void> {
  await sandbox.withTopLevel((top) => execa('btrfs', ['subvolume', 'sync', top]));
  await dropCaches();
}

/** Alternating cold-cache runs of `beadm diff FROM TO` (timed inside the booted BE) and of the walk over the same two subvolumes. */
async function measurePair(sandbox: Sandbox, step: Step, to: string): Promise<PairResult> {
  const result: PairResult = { diffRuns: [], walkRuns: [], report: { upgraded: 0, files: 0, packagedChanges: 0 }, walkLines: 0, rootBytes: 0 };
  for (let round = 0; round < ROUNDS; round++) {
    await quietAndCold(sandbox);
    // Timed inside the booted BE, as a user's `time beadm diff` would: the sandbox's own boot is not beadm's.
    const output = await step(FIRST, `begun=$(date +%s%N); beadm diff debian-12 ${to} --json >/run/diff.json; ended=$(date +%s%N); echo $((ended - begun)); cat /run/diff.json; rm /run/diff.json`);
    const newline = output.indexOf('\n');
    result.diffRuns.push(Number(output.slice(0, newline)) / 1e9);
    const parsed = JSON.parse(output.slice(newline + 1)) as { packages: { upgraded: unknown[] }; files: Record<string, unknown[]>; packagedChanges: number };
    result.report = { upgraded: parsed.packages.upgraded.length, files: Object.values(parsed.files).reduce((sum, list) => sum + list.length, 0), packagedChanges: parsed.packagedChanges };
    await quietAndCold(sandbox);
    result.walkLines = await sandbox.withTopLevel(async (top) => {
      const begun = process.hrtime.bigint();
      const walk = await execa('diff', ['-rq', '--no-dereference', path.join(top, FIRST), path.join(top, '@bootenv', to)], { reject: false, maxBuffer: 1 << 28 });
      result.walkRuns.push(secondsSince(begun));
      if (walk.exitCode !== 1) throw new Error(`diff -rq exited ${walk.exitCode}: ${walk.stderr}`);
      return walk.stdout.split('\n').length;
    });
  }
  result.rootBytes = Number((await step(FIRST, 'du -s --bytes --one-file-system / | cut -f1')).trim());
  return result;
}

async function main(): Promise<void> {
  const sandbox = await Sandbox.create(await ensureBase(BOOKWORM), 'ubuntu', { sizeGiB: 16 });
  try {
    const step = stepsIn(sandbox, APT);
    await step('@', 'beadm init >/dev/null');
    await sandbox.withTopLevel((top) => writeFile(path.join(top, FIRST, 'etc/apt/sources.list'), BOOKWORM_SOURCES));
    const upgradable = (await step(FIRST, 'apt-get update -qq && apt-get -s upgrade | sed -n "s/^Inst \\([^ ]*\\) \\[.*/\\1/p"')).split('\n').filter(Boolean);
    // Debian 12's point releases leave fewer than 20 upgrades some days: git and its dependencies then make up the number.
    const extra = upgradable.length < PACKAGES ? ['git'] : [];
    const install = `apt-get install -y ${[...upgradable, ...extra].join(' ')} 2>&1`;
    const upgrade = await step(FIRST, `BOOTENV_BE_NAME=upgraded ${install}`);
    const upgraded = /(\d+) upgraded, (\d+) newly installed/.exec(upgrade);
    const plain = await measurePair(sandbox, step, 'upgraded');
    // The same upgrade of a root that also holds BULK_COPIES copies of its /usr under /srv (a server's data: files apt
    // does not touch, of the sizes a system has): the walk reads them all, beadm diff should not notice them.
    await step(FIRST, `for n in $(seq ${BULK_COPIES}); do mkdir -p /srv/bulk/$n && cp -a --reflink=never /usr /srv/bulk/$n/; done; sync`);
    await step(FIRST, `BOOTENV_BE_NAME=upgraded-large ${install}`);
    const large = await measurePair(sandbox, step, 'upgraded-large');

    const gb = (bytes: number) => `${(bytes / 1e9).toFixed(2)} GB`;
    const rows = [['', 'median (s)', 'runs (s)', 'found']];
    for (const [label, pair] of [['root', plain], ['larger root', large]] as const) {
      const ratio = median(pair.diffRuns) / median(pair.walkRuns);
      rows.push(
        [`${label} (${gb(pair.rootBytes)}): beadm diff`, median(pair.diffRuns).toFixed(2), pair.diffRuns.map((x) => x.toFixed(2)).join(' '), `${pair.report.upgraded} upgraded, ${pair.report.files} unowned files, ${pair.report.packagedChanges} package paths`],
        [`${label} (${gb(pair.rootBytes)}): full walk`, median(pair.walkRuns).toFixed(2), pair.walkRuns.map((x) => x.toFixed(2)).join(' '), `${pair.walkLines} lines`],
        [`${label}: beadm diff ÷ full walk (target ≤ 0.1)`, ratio.toFixed(3), ratio <= 0.1 ? 'PASS' : 'MISS', ''],
      );
    }
    console.log(`apt-get install of ${upgradable.length} upgradable packages${extra.length > 0 ? ` and ${extra.join(' ')}` : ''}: ${upgraded?.[0] ?? '?'}; page cache dropped before each run`);
    printTable(rows);
  } finally {
    await sandbox.close();
  }
}

runBenchmark(main);
