/**
 * The skip-unchanged benchmark (issue #6): a real upgrade of a sandbox Debian
 * 12, measured side by side in one run. The cached debootstrapped base
 * (bookworm as released, test/harness/base.ts) gets bookworm-updates and
 * bookworm-security as sources, so `apt-get upgrade` has real upgrades; their
 * .debs are downloaded once, then the same upgrade runs, diverted by bootenv,
 * from two identical BEs: one with the skip-unchanged pass, one with
 * `skip-unchanged = no` (stock dpkg). Then, each on a fresh copy of the stock
 * upgrade (the same upgrade run again from the same BE): the pass on demand
 * (`beadm dedupe`), `duperemove -dr` and `duperemove -dr -b 4096` over the BE
 * and its origin, each timed with the bytes it reclaimed (BE exclusive data
 * before − after, `btrfs filesystem du`). Printed:
 *   - BE exclusive bytes ÷ bytes whose content really changed (oracle: xxh64
 *     of every file of both trees), for stock dpkg and with the pass (data
 *     from btrfs filesystem du; quota groups' figure beside it);
 *   - identical bytes left unshared (oracle: files identical to a file of the
 *     origin whose extents are not the origin's);
 *   - pass time ÷ duperemove time (the duperemove run that reclaims about
 *     what the pass does), pass time ÷ apt's own time.
 * Run: npm run bench:upgrade. Needs root, network to deb.debian.org,
 * duperemove, and the cached base (npm test builds it). Removes its sandbox.
 */
import { readdir, lstat, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { xxh64OfFile } from '../src/deb/payload.js';
import { sameExtents } from '../src/dedupe/space.js';
import { fileExtents } from '../src/sys/dedupe.js';
import { BOOKWORM, ensureBase } from '../test/harness/base.js';
import { Sandbox } from '../test/harness/sandbox.js';
import { exclusiveBytes } from '../test/harness/extents.js';
import { BOOKWORM_SOURCES, secondsSince, printTable } from './measure.js';

const INLINE_LIMIT = 2048;
const BLOCK = 4096;
const APT = 'export DEBIAN_FRONTEND=noninteractive; ';
const HELPER = path.resolve('dist/bootenv-dedupe');

interface TreeFile {
  relative: string;
  size: number;
  ino: bigint;
}

/** Regular files of a BE root, one per inode, leaving out what apt and bootenv keep for themselves. */
async function treeFiles(root: string): Promise<TreeFile[]> {
  const files: TreeFile[] = [];
  const seen = new Set<bigint>();
  const rootDevice = (await lstat(root, { bigint: true })).dev;
  const visit = async (relative: string): Promise<void> => {
    for (const entry of await readdir(path.join(root, relative), { withFileTypes: true })) {
      const child = relative === '' ? entry.name : `${relative}/${entry.name}`;
      const stats = await lstat(path.join(root, child), { bigint: true });
      if (stats.dev !== rootDevice) continue;
      if (entry.isDirectory()) await visit(child);
      else if (entry.isFile() && !seen.has(stats.ino)) {
        seen.add(stats.ino);
        files.push({ relative: child, size: Number(stats.size), ino: stats.ino });
      }
    }
  };
  await visit('');
  return files;
}

const blocks = (size: number) => (size <= INLINE_LIMIT ? 0 : Math.ceil(size / BLOCK) * BLOCK);

interface Oracle {
  changedBytes: number;
  identicalBytes: number;
  identicalUnsharedBytes: number;
}

/**
 * Compares a BE with its origin file by file: content found nowhere in the
 * origin is "really changed" (its blocks); content found there is identical,
 * and unshared when its extents are not those of an origin file with that
 * content (the same path when it has it).
 */
async function oracle(originRoot: string, beRoot: string): Promise<Oracle> {
  const originFiles = await treeFiles(originRoot);
  const originByHash = new Map<string, string>();
  const originHashByPath = new Map<string, string>();
  for (const file of originFiles) {
    const hash = `${file.size}:${await xxh64OfFile(path.join(originRoot, file.relative))}`;
    originHashByPath.set(file.relative, hash);
    if (!originByHash.has(hash)) originByHash.set(hash, file.relative);
  }
  const result: Oracle = { changedBytes: 0, identicalBytes: 0, identicalUnsharedBytes: 0 };
  const identical: Array<{ file: TreeFile; origin: string }> = [];
  for (const file of await treeFiles(beRoot)) {
    const hash = `${file.size}:${await xxh64OfFile(path.join(beRoot, file.relative))}`;
    const origin = originHashByPath.get(file.relative) === hash ? file.relative : originByHash.get(hash);
    if (origin === undefined) result.changedBytes += blocks(file.size);
    else if (blocks(file.size) > 0) identical.push({ file, origin });
  }
  const extents = await fileExtents(identical.flatMap(({ file, origin }) => [path.join(beRoot, file.relative), path.join(originRoot, origin)]), HELPER);
  identical.forEach(({ file }, index) => {
    result.identicalBytes += blocks(file.size);
    const [mine, theirs] = [extents[2 * index], extents[2 * index + 1]];
    if (!(Array.isArray(mine) && Array.isArray(theirs) && sameExtents(mine, theirs))) result.identicalUnsharedBytes += blocks(file.size);
  });
  return result;
}

async function qgroupExclusive(top: string, subvolume: string): Promise<number> {
  const { stdout: list } = await execa('btrfs', ['subvolume', 'show', path.join(top, subvolume)]);
  const id = /Subvolume ID:\s+(\d+)/.exec(list)?.[1];
  const { stdout } = await execa('btrfs', ['qgroup', 'show', '--raw', top]);
  const line = stdout.split('\n').find((row) => row.startsWith(`0/${id} `));
  return Number(line?.trim().split(/\s+/)[2]);
}

function mb(bytes: number): string {
  return (bytes / 1e6).toFixed(1);
}

async function main(): Promise<void> {
  const sandbox = await Sandbox.create(await ensureBase(BOOKWORM), 'ubuntu', { sizeGiB: 8 });
  try {
    const step = async (booted: string, script: string) => {
      const result = await sandbox.boot(booted, ['bash', '-c', `${APT}${script}`]);
      if (result.exitCode !== 0) throw new Error(`${script}\n${result.stdout}\n${result.stderr}`);
      return result.stdout;
    };
    await step('@', 'beadm init >/dev/null');
    const first = '@bootenv/debian-12';
    await sandbox.withTopLevel((top) => writeFile(path.join(top, first, 'etc/apt/sources.list'), BOOKWORM_SOURCES));
    await step(first, 'apt-get update -qq && apt-get upgrade -y --download-only -qq >/dev/null && beadm create stock-base -e debian-12 >/dev/null');
    await sandbox.withTopLevel(async (top) => {
      const conf = path.join(top, '@bootenv/stock-base/etc/bootenv/bootenv.conf');
      await writeFile(conf, (await readFile(conf, 'utf8')).replace(/^skip-unchanged = yes$/m, 'skip-unchanged = no'));
    });
    const timedUpgrade = async (booted: string, name: string) => {
      const started = process.hrtime.bigint();
      const output = await step(booted, `BOOTENV_BE_NAME=${name} apt-get upgrade -y`);
      return { seconds: secondsSince(started), output };
    };
    const withPass = await timedUpgrade(first, 'with-pass');
    const stock = await timedUpgrade('@bootenv/stock-base', 'stock');
    const packages = /(\d+) upgraded, (\d+) newly installed/.exec(stock.output);
    const passLine = withPass.output.split('\n').find((line) => line.startsWith('bootenv: skip-unchanged:')) ?? '';
    const passSeconds = Number(/\((\d+\.\d+) s\)\.$/.exec(passLine)?.[1]);

    const results = await sandbox.withTopLevel(async (top) => {
      const at = (subvolume: string) => path.join(top, subvolume);
      const withPassOracle = await oracle(at(first), at('@bootenv/with-pass'));
      const stockOracle = await oracle(at('@bootenv/stock-base'), at('@bootenv/stock'));
      const exclusive = { withPass: await exclusiveBytes(at('@bootenv/with-pass')), stock: await exclusiveBytes(at('@bootenv/stock')) };
      await execa('btrfs', ['quota', 'enable', top]);
      await execa('btrfs', ['quota', 'rescan', '-w', top]);
      const quota = { withPass: await qgroupExclusive(top, '@bootenv/with-pass'), stock: await qgroupExclusive(top, '@bootenv/stock') };
      await execa('btrfs', ['quota', 'disable', top]);
      return { withPassOracle, stockOracle, exclusive, quota };
    });

    const { withPassOracle, stockOracle, exclusive, quota } = results;
    // Like for like: the pass and duperemove, each on its own fresh copy of the stock upgrade, caches warm from apt.
    const sharers: Array<{ label: string; run: (be: string, top: string) => Promise<{ seconds: number; detail: string }> }> = [
      {
        label: 'skip-unchanged pass, on demand (beadm dedupe)',
        run: async (be) => {
          const output = await step('@bootenv/stock-base', `beadm dedupe ${path.basename(be)} --against stock-base --json`);
          const report = (JSON.parse(output) as { report: { seconds: number; phaseSeconds: Record<string, number> } }).report;
          const phases = Object.entries(report.phaseSeconds).map(([phase, seconds]) => `${phase} ${seconds.toFixed(2)}`).join(', ');
          return { seconds: report.seconds, detail: phases };
        },
      },
      ...[['-dr'], ['-dr', '-b', '4096']].map((options) => ({
        label: `duperemove ${options.join(' ')}`,
        run: async (be: string, top: string) => {
          await execa('sync');
          const started = process.hrtime.bigint();
          await execa('duperemove', [...options, '-q', path.join(top, be), path.join(top, '@bootenv/stock-base')]);
          return { seconds: secondsSince(started), detail: '' };
        },
      })),
    ];
    const sharing: Array<{ label: string; seconds: number; reclaimed: number; detail: string }> = [];
    for (const [index, sharer] of sharers.entries()) {
      await timedUpgrade('@bootenv/stock-base', `copy-${index}`);
      const be = `@bootenv/copy-${index}`;
      const before = await sandbox.withTopLevel((top) => exclusiveBytes(path.join(top, be)));
      const { seconds, detail } = await sandbox.withTopLevel((top) => sharer.run(be, top));
      const after = await sandbox.withTopLevel((top) => exclusiveBytes(path.join(top, be)));
      sharing.push({ label: sharer.label, seconds, reclaimed: before - after, detail });
    }
    const passReclaimed = exclusive.stock - exclusive.withPass;
    // The duperemove run whose reclaimed bytes come closest to the pass's.
    const duperemoves = sharing.filter(({ label }) => label.startsWith('duperemove'));
    const likeForLike = duperemoves.reduce((best, run) => (Math.abs(run.reclaimed - passReclaimed) < Math.abs(best.reclaimed - passReclaimed) ? run : best));

    const rows = [
      ['', 'stock dpkg', 'with skip-unchanged', 'target'],
      ['packages upgraded (apt-get upgrade)', packages?.[1] ?? '?', packages?.[1] ?? '?', ''],
      ['content really changed (MB, oracle)', mb(stockOracle.changedBytes), mb(withPassOracle.changedBytes), ''],
      ['BE exclusive, data (MB, btrfs fi du)', mb(exclusive.stock), mb(exclusive.withPass), ''],
      ['BE exclusive ÷ really changed', (exclusive.stock / stockOracle.changedBytes).toFixed(3), (exclusive.withPass / withPassOracle.changedBytes).toFixed(3), '≤ 1.05'],
      ['BE exclusive, quota group (MB, data + metadata)', mb(quota.stock), mb(quota.withPass), ''],
      ['quota exclusive ÷ really changed', (quota.stock / stockOracle.changedBytes).toFixed(3), (quota.withPass / withPassOracle.changedBytes).toFixed(3), ''],
      ['identical content (MB, files > 2048 bytes)', mb(stockOracle.identicalBytes), mb(withPassOracle.identicalBytes), ''],
      ['identical left unshared (MB)', mb(stockOracle.identicalUnsharedBytes), mb(withPassOracle.identicalUnsharedBytes), ''],
      ['identical left unshared ÷ identical', (stockOracle.identicalUnsharedBytes / stockOracle.identicalBytes).toFixed(4), (withPassOracle.identicalUnsharedBytes / withPassOracle.identicalBytes).toFixed(4), '≤ 0.01'],
      ['apt-get upgrade wall time (s)', stock.seconds.toFixed(1), withPass.seconds.toFixed(1), ''],
      ['skip-unchanged pass (s)', '', passSeconds.toFixed(2), ''],
      ['pass ÷ apt time (stock run)', '', (passSeconds / stock.seconds).toFixed(3), '≤ 0.05'],
    ];
    const likeForLikeRows = [
      ['each on its own copy of the stock upgrade, right after apt', 'seconds', 'MB reclaimed', 'phases'],
      ['skip-unchanged pass in apt (the with-pass run; stock − with-pass exclusive)', passSeconds.toFixed(2), mb(passReclaimed), ''],
      ...sharing.map(({ label, seconds, reclaimed, detail }) => [label, seconds.toFixed(2), mb(reclaimed), detail]),
      [`pass in apt ÷ ${likeForLike.label} (closest in bytes reclaimed; target ≤ 0.2)`, (passSeconds / likeForLike.seconds).toFixed(3), '', ''],
      [`pass on demand ÷ ${likeForLike.label}`, ((sharing[0]?.seconds ?? NaN) / likeForLike.seconds).toFixed(3), '', ''],
    ];
    console.log(passLine);
    for (const table of [rows, likeForLikeRows]) {
      printTable(table);
      console.log('');
    }
  } finally {
    await sandbox.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
