/**
 * The carry benchmark (issue #13): in a sandbox Debian 12 booted from a BE,
 * a BE is made (beadm create, as apt makes one), the running system then
 * changes (A) 10,000 files of 8 KiB, or (B) one file of 1 GiB, and the new
 * BE boots: its boot runs the carry as the initramfs does (bootenv-boot-carry
 * chrooted in the BE, beadm carry --boot). Side by side in the same run, the
 * same bytes copied by `cp -a --reflink=never` (what a carry without reflinks
 * would cost). Printed, per scenario:
 *   - the carry's wall time as beadm measures it, and the initramfs step's
 *     (Node's start, the mounts, the carry, mounting the root again);
 *   - data written ÷ bytes carried: the filesystem's data in use before and
 *     after (btrfs filesystem usage), target ≤ 1 %; and everything the loop
 *     device was asked to write (data, metadata, superblocks) ÷ bytes
 *     carried, for the record;
 *   - the same for the plain copy.
 * Run: npm run bench:carry. Needs root and the cached base (npm test builds
 * it). Removes its sandbox.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { BOOKWORM, ensureBase } from '../test/harness/base.js';
import { Sandbox } from '../test/harness/sandbox.js';
import { secondsSince } from './measure.js';

const ORIGIN = '@bootenv/debian-12';

/** Bytes the loop device was asked to write so far (/sys/block/loopN/stat, sectors written × 512). */
function deviceBytesWritten(loop: string): number {
  const fields = readFileSync(`/sys/block/${path.basename(loop)}/stat`, 'utf8').trim().split(/\s+/);
  return Number(fields[6]) * 512;
}

/** Data bytes in use on the filesystem, after a commit. */
async function dataUsed(top: string): Promise<number> {
  await execa('btrfs', ['filesystem', 'sync', top]);
  const { stdout } = await execa('btrfs', ['filesystem', 'df', '-b', top]);
  const line = stdout.split('\n').find((row) => row.startsWith('Data,'));
  const used = /used=(\d+)/.exec(line ?? '')?.[1];
  if (used === undefined) throw new Error(`no data line in btrfs filesystem df:\n${stdout}`);
  return Number(used);
}

interface Measured {
  seconds: number;
  dataWritten: number;
  deviceWritten: number;
}

async function measure(sandbox: Sandbox, body: () => Promise<void>): Promise<Measured> {
  const dataBefore = await sandbox.withTopLevel(dataUsed);
  const deviceBefore = deviceBytesWritten(sandbox.loop);
  const started = process.hrtime.bigint();
  await body();
  const seconds = secondsSince(started);
  const dataAfter = await sandbox.withTopLevel(dataUsed);
  return { seconds, dataWritten: dataAfter - dataBefore, deviceWritten: deviceBytesWritten(sandbox.loop) - deviceBefore };
}

const percent = (part: number, whole: number) => `${((100 * part) / whole).toFixed(2)} %`;
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

async function scenario(sandbox: Sandbox, name: string, label: string, writes: string, directory: string): Promise<void> {
  const run = async (booted: string, script: string) => {
    const result = await sandbox.boot(booted, ['bash', '-c', script]);
    if (result.exitCode !== 0) throw new Error(`${script}\n${result.stdout}\n${result.stderr}`);
    return result;
  };
  await run(ORIGIN, `beadm create ${name} >/dev/null`);
  await run(ORIGIN, `set -e; ${writes}; sync`);
  let bootConsole = '';
  const carry = await measure(sandbox, async () => {
    bootConsole = (await run(`@bootenv/${name}`, 'true')).console;
  });
  const line = bootConsole.split('\n').find((text) => text.startsWith(`bootenv: carried into ${name} `)) ?? '';
  const carrySeconds = Number(/\((\d+\.\d+) s\)\.$/.exec(line)?.[1]);
  const carried = await sandbox.withTopLevel(async (top) => Number((await execa('du', ['-sb', '--apparent-size', path.join(top, `@bootenv/${name}`, directory)])).stdout.split('\t')[0]));
  if (!Number.isFinite(carrySeconds) || !(await sandbox.withTopLevel(async (top) => (await execa('test', ['-d', path.join(top, `@bootenv/${name}`, directory)], { reject: false })).exitCode === 0))) {
    throw new Error(`the carry into ${name} did not run as expected:\n${bootConsole}`);
  }
  const copy = await measure(sandbox, () =>
    sandbox.withTopLevel(async (top) => {
      await execa('cp', ['-a', '--reflink=never', path.join(top, ORIGIN, directory), path.join(top, `@bootenv/${name}`, `${directory}.plain-copy`)]);
      await execa('sync');
    }),
  );
  console.log(`\n${label}: ${mib(carried)} carried`);
  console.log(`  carry (beadm's measure)            ${carrySeconds.toFixed(2)} s   (target ≤ 2 s)`);
  console.log(`  initramfs step, whole boot         ${carry.seconds.toFixed(2)} s   (Node's start, mounts, carry, root mounted again, the test's chroot)`);
  console.log(`  data written ÷ carried             ${percent(carry.dataWritten, carried)}   (${mib(carry.dataWritten)}; target ≤ 1 %)`);
  console.log(`  device writes ÷ carried            ${percent(carry.deviceWritten, carried)}   (${mib(carry.deviceWritten)}: data, metadata, superblocks)`);
  console.log(`  cp -a --reflink=never, same bytes  ${copy.seconds.toFixed(2)} s, data written ÷ carried ${percent(copy.dataWritten, carried)}, device ${percent(copy.deviceWritten, carried)}`);
  console.log(`  carry time ÷ plain copy time       ${(carrySeconds / copy.seconds).toFixed(3)}`);
}

async function main(): Promise<void> {
  const sandbox = await Sandbox.create(await ensureBase(BOOKWORM), 'ubuntu', { sizeGiB: 10 });
  try {
    if ((await sandbox.beadm('@', ['init'])).exitCode !== 0) throw new Error('beadm init failed');
    // The first BE's own first boot (a carry from the installed root of nothing).
    await sandbox.boot(ORIGIN, ['true']);
    await scenario(sandbox, 'files', 'A: 10,000 changed files of 8 KiB', 'mkdir -p /srv/many; cd /srv/many; head -c 81920000 /dev/urandom | split -b 8192 -a 5 -d - f', 'srv/many');
    await scenario(sandbox, 'large', 'B: one changed file of 1 GiB', 'mkdir -p /var/lib/big; dd if=/dev/urandom of=/var/lib/big/table.db bs=1M count=1024 status=none', 'var/lib/big');
  } finally {
    await sandbox.close();
  }
}

await main();
