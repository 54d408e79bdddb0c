/**
 * Which way into FIDEDUPERANGE (Node has no ioctl): measured side by side on
 * one throw-away btrfs. A tree of real files (default: the host's Python
 * 3.11 and Perl libraries and /usr/lib/gcc, many small files and a few large
 * ones; files over the 2048-byte inline limit) is copied into a subvolume `origin`; for each way a snapshot `new`
 * is made and every file in it rewritten with fresh extents (what dpkg does),
 * then each (origin file, new file) pair is deduped and timed:
 *   xfs_io      `xfs_io -r -c "dedupe SRC 0 0 LEN" DST`, one process a pair,
 *               spawned from Node as the real pass would;
 *   xfs_io x2   the same, two at a time (this machine's two cores);
 *   helper      dist/bootenv-dedupe, one process for all pairs on stdin.
 * Run: npm run bench:ways [-- --cold] [-- --tree DIR ...]. Needs root, xfs_io
 * (xfsprogs) and `npm run build` first. Prints a table; changes nothing
 * outside its image, which it removes.
 */
import { execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { execa } from 'execa';
import { withScratchBtrfs } from '../test/harness/btrfs-image.js';
import { exclusiveBytes } from '../test/harness/extents.js';
import { dropCaches, regularFiles, rewriteFile, secondsSince, type FileEntry, printTable } from './measure.js';

const execFileAsync = promisify(execFile);
const INLINE_LIMIT = 2048;
const HELPER = path.resolve('dist/bootenv-dedupe');

interface Way {
  name: string;
  dedupe: (pairs: ReadonlyArray<[string, string, number]>) => Promise<number>;
}

async function xfsIoPair([source, destination, size]: [string, string, number]): Promise<number> {
  const { stdout } = await execFileAsync('xfs_io', ['-r', '-c', `dedupe ${source} 0 0 ${size}`, destination]);
  const match = /^deduped (\d+)\/(\d+) bytes/m.exec(stdout);
  if (match === null) throw new Error(`xfs_io did not dedupe ${destination}: ${stdout}`);
  return Number(match[1]);
}

const WAYS: Way[] = [
  {
    name: 'xfs_io, one process a pair',
    dedupe: async (pairs) => {
      let shared = 0;
      for (const pair of pairs) shared += await xfsIoPair(pair);
      return shared;
    },
  },
  {
    name: 'xfs_io, two at a time',
    dedupe: async (pairs) => {
      let shared = 0;
      let next = 0;
      const worker = async () => {
        while (next < pairs.length) {
          const bytes = await xfsIoPair(pairs[next++] as [string, string, number]);
          shared += bytes;
        }
      };
      await Promise.all([worker(), worker()]);
      return shared;
    },
  },
  {
    name: 'bootenv-dedupe helper',
    dedupe: (pairs) =>
      new Promise((resolve, reject) => {
        const child = spawn(HELPER, [], { stdio: ['pipe', 'pipe', 'inherit'] });
        let output = '';
        child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
        child.on('error', reject);
        child.on('close', (code) => {
          if (code !== 0) return reject(new Error(`bootenv-dedupe exited ${code}`));
          const lines = output.trim().split('\n');
          if (lines.length !== pairs.length || lines.some((line) => !line.startsWith('same '))) return reject(new Error(`unexpected helper output: ${output.slice(0, 500)}`));
          resolve(lines.reduce((sum, line) => sum + Number(line.split(' ')[1]), 0));
        });
        for (const [source, destination] of pairs) child.stdin.write(`${source}\0${destination}\0`);
        child.stdin.end();
      }),
  },
];

function parseArguments(argv: readonly string[]): { cold: boolean; trees: string[] } {
  const trees: string[] = [];
  let cold = false;
  for (let index = 0; index < argv.length; index++) {
    if (argv[index] === '--cold') cold = true;
    else if (argv[index] === '--tree' && argv[index + 1] !== undefined) trees.push(argv[++index] as string);
    else throw new Error(`usage: dedupe-ways [--cold] [--tree DIR ...]`);
  }
  return { cold, trees: trees.length > 0 ? trees : ['/usr/lib/python3.11', '/usr/share/perl', '/usr/lib/x86_64-linux-gnu/perl', '/usr/lib/gcc'] };
}

function mebibytes(bytes: number): string {
  return (bytes / 1048576).toFixed(1);
}

async function main(): Promise<void> {
  const { cold, trees } = parseArguments(process.argv.slice(2));
  await withScratchBtrfs(4, async ({ top }) => {
    const origin = path.join(top, 'origin');
    await execa('btrfs', ['subvolume', 'create', origin]);
    for (const [index, tree] of trees.entries()) {
      await execa('mkdir', [path.join(origin, String(index))]);
      await execa('cp', ['-a', '--reflink=never', `${tree}/.`, path.join(origin, String(index))]);
    }
    const files: FileEntry[] = regularFiles(origin).filter((file) => file.size > INLINE_LIMIT);
    const total = files.reduce((sum, file) => sum + file.size, 0);
    console.log(`${files.length} files over ${INLINE_LIMIT} bytes, ${mebibytes(total)} MiB, from ${trees.join(' ')}; ${cold ? 'cold' : 'warm'} page cache`);
    const rows: string[][] = [['way', 'seconds', 'ms a pair', 'MiB shared', 'new BE exclusive after (MiB)']];
    for (const way of WAYS) {
      const snapshot = path.join(top, 'new');
      await execa('btrfs', ['subvolume', 'snapshot', origin, snapshot]);
      for (const file of files) rewriteFile(path.join(snapshot, file.relative));
      const before = await exclusiveBytes(snapshot);
      if (cold) await dropCaches();
      const pairs = files.map((file): [string, string, number] => [path.join(origin, file.relative), path.join(snapshot, file.relative), file.size]);
      const start = process.hrtime.bigint();
      const shared = await way.dedupe(pairs);
      const seconds = secondsSince(start);
      const after = await exclusiveBytes(snapshot);
      rows.push([way.name, seconds.toFixed(2), ((seconds * 1000) / files.length).toFixed(2), mebibytes(shared), `${mebibytes(after)} (before: ${mebibytes(before)})`]);
      await execa('btrfs', ['subvolume', 'delete', '--commit-after', snapshot]);
    }
    printTable(rows);
  });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
