// beadm pin, unpin and prune (src/be/prune.ts, src/be/prune-plan.ts) on real btrfs: a Debian 12
// booted from its first BE with BEs made by beadm create, one pinned, one that booted
// successfully, one activated for the next boot and one for the next boot only. The dry run names
// what prune then removes, and the host's `btrfs subvolume list` shows exactly those gone and
// every protected BE still there; GRUB's menu loses the removed BEs' entries. The refusals exit
// with their codes: a pinned BE's destroy PINNED, a bad --keep USAGE.
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { PruneResult } from '../../src/be/prune.js';
import { EXIT_CODES } from '../../src/errors.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { useSandbox } from '../harness/use-sandbox.js';

const FIRST = '@bootenv/debian-12';
const sandbox = useSandbox(() => inject('bookwormBase'), 'ubuntu');
/** Made in this order, oldest first; the names say what protects each. */
const MADE = ['old-1', 'old-2', 'pinned', 'good', 'default', 'trial', 'new-1', 'new-2'];
const PROTECTED = ['debian-12', 'pinned', 'good', 'default', 'trial'];

async function beadm(args: readonly string[], subvolume = FIRST): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return sandbox().beadm(subvolume, args);
}

async function beadmOk(args: readonly string[], subvolume = FIRST): Promise<string> {
  const result = await beadm(args, subvolume);
  expect(result.exitCode, `beadm ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

/** The BE names, from the host's `btrfs subvolume list`. */
async function names(): Promise<string[]> {
  return (await sandbox().bootEnvironments()).map((subvolume) => subvolume.replace(/^@bootenv\//, '')).sort();
}

beforeAll(async () => {
  await beadmOk(['init'], '@');
  for (const name of MADE) await beadmOk(['create', '--carry', 'none', name]);
  // A boot of `good` that reached multi-user.target, as bootenv-boot-good.service records it.
  await beadmOk(['boot-complete', '--good'], '@bootenv/good');
  await beadmOk(['activate', 'default']);
  await beadmOk(['activate', '-t', 'trial']);
  expect(await beadmOk(['pin', 'pinned'])).toBe('Boot environment pinned is pinned: destroy refuses it and prune keeps it.');
});

describe('beadm pin and unpin', () => {
  it('list --json shows pinned; -H keeps its 7 fields; the table marks it', async () => {
    const listed = JSON.parse(await beadmOk(['list', '--json'])) as Array<{ name: string; pinned: boolean; active: string }>;
    expect(listed.filter((be) => be.pinned).map((be) => be.name)).toEqual(['pinned']);
    expect(Object.fromEntries(listed.filter((be) => be.active !== '').map((be) => [be.name, be.active]))).toEqual({ 'debian-12': 'N', default: 'R', trial: 'T' });
    for (const line of (await beadmOk(['list', '-H'])).trimEnd().split('\n')) expect(line.split(';')).toHaveLength(7);
    expect(await beadmOk(['list'])).toMatch(/^pinned\s.*\(pinned\)$/m);
  });

  it('destroy refuses a pinned BE with PINNED; unpin drops the flag, pin sets it again', async () => {
    const refused = await beadm(['destroy', 'pinned']);
    expect(refused.exitCode).toBe(EXIT_CODES.PINNED);
    expect(refused.stderr).toMatch(/pinned is pinned[\s\S]*beadm unpin pinned/);
    expect(await names()).toContain('pinned');
    // Unpin, and pin again: the flag goes and comes back; destroy is refused only while it is set.
    await beadmOk(['unpin', 'pinned']);
    expect((JSON.parse(await beadmOk(['list', '--json'])) as Array<{ name: string; pinned: boolean }>).find((be) => be.name === 'pinned')?.pinned).toBe(false);
    await beadmOk(['pin', 'pinned']);
    expect((await beadm(['destroy', 'pinned'])).exitCode).toBe(EXIT_CODES.PINNED);
    expect((await beadm(['pin', 'no-such-be'])).exitCode).toBe(EXIT_CODES.NOT_FOUND);
  });
});

describe('beadm prune', () => {
  it('refuses a --keep that is not a number with USAGE, changing nothing', async () => {
    const before = await names();
    for (const keep of ['two', '-1', '2.5', '']) {
      const result = await beadm(['prune', '--keep', keep]);
      expect(result.exitCode, `--keep ${JSON.stringify(keep)}: ${result.stderr}`).toBe(EXIT_CODES.USAGE);
    }
    expect(await names()).toEqual(before);
  });

  it('keeps 10 by default and keep = N from bootenv.conf: nothing to prune with 9 BEs, then the BEs beyond the newest 1', async () => {
    const nothing = JSON.parse(await beadmOk(['prune', '--dry-run', '--json'])) as PruneResult;
    expect(nothing).toMatchObject({ dryRun: true, keep: 10, keepDaily: 7, keepWeekly: 4, destroyed: [], freedBytes: 0 });
    expect(nothing.kept).toHaveLength(MADE.length + 1);
    await sandbox().withTopLevel(async (top) => {
      const { appendFileSync } = await import('node:fs');
      appendFileSync(`${top}/${FIRST}/etc/bootenv/bootenv.conf`, 'keep = 1\n');
    });
    const fromConfig = JSON.parse(await beadmOk(['prune', '--dry-run', '--json'])) as PruneResult;
    expect(fromConfig.keep).toBe(1);
    expect(fromConfig.destroyed.map((be) => be.name)).toEqual(['old-1', 'old-2', 'new-1']);
  });

  it('--dry-run says what would go, what it frees and why each other BE stays; prune then removes exactly that, and every protected BE stays', async () => {
    const before = await names();
    const text = await beadmOk(['prune', '--dry-run', '--keep', '2']);
    expect(text).toMatch(/^Would destroy 2 boot environments, freeing \S+ \(keep = 2, keep-daily = 7, keep-weekly = 4\):$/m);
    const planned = JSON.parse(await beadmOk(['prune', '--dry-run', '--keep', '2', '--json'])) as PruneResult;
    expect(await names()).toEqual(before);
    expect(planned.destroyed.map((be) => be.name)).toEqual(['old-1', 'old-2']);
    for (const be of planned.destroyed) expect(be.freedByDestroyBytes).toBeGreaterThan(0);
    expect(planned.freedBytes).toBeGreaterThanOrEqual(planned.destroyed.reduce((sum, be) => sum + (be.freedByDestroyBytes ?? Number.NaN), 0));
    expect(Object.fromEntries(planned.kept.map((be) => [be.name, be.reasons]))).toEqual({
      // Made today, the newest: also the newest of its day and of its week.
      'new-2': ['newest', 'daily', 'weekly'],
      'new-1': ['newest'],
      trial: ['one-shot'],
      default: ['default'],
      good: ['last-good'],
      pinned: ['pinned'],
      // activate and activate -t set up the rollback carry from the running BE into default and trial.
      'debian-12': ['running', 'carry-origin'],
    });

    const pruned = JSON.parse(await beadmOk(['prune', '--keep', '2', '--json'])) as PruneResult;
    expect(pruned.dryRun).toBe(false);
    expect(pruned.destroyed.map((be) => be.name)).toEqual(planned.destroyed.map((be) => be.name));
    const after = await names();
    expect(before.filter((name) => !after.includes(name))).toEqual(planned.destroyed.map((be) => be.name));
    for (const name of PROTECTED) expect(after).toContain(name);
    const menu = await sandbox().readBootMenu();
    for (const { name } of pruned.destroyed) expect(menu).not.toContain(`--id 'bootenv-${name}'`);
    expect(menu).toContain("--id 'bootenv-pinned'");

    // Nothing left to prune: exit 0, nothing destroyed.
    const again = await beadm(['prune', '--keep', '2']);
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toMatch(/^Nothing to prune \(keep = 2, keep-daily = 7, keep-weekly = 4\)\.$/m);
    expect(await names()).toEqual(after);
  });
});

describe('a pinned pending BE', () => {
  it("moves its pin to the BE of the next apt run that includes and replaces it", async () => {
    await sandbox().withTopLevel((top) => installRepositoryInRoot(path.join(top, FIRST)));
    // One boot: the pending BE of the first apt run lives in this boot's /run.
    const script = `export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq; apt-get install -y bootenv-t-marker > /dev/null; echo "rc-first=$?"
      first=$(sed -n 's/^ *"name": "\\(.*\\)",$/\\1/p' /run/bootenv/pending/pending.json); echo "first=$first"
      beadm pin "$first"; echo "rc-pin=$?"
      apt-get install -y bootenv-t-conf 2>&1; echo "rc-second=$?"
      echo "list:"; beadm list --json`;
    const result = await sandbox().boot(FIRST, ['bash', '-c', script]);
    expect(result.stdout).toContain('rc-first=0');
    expect(result.stdout).toContain('rc-pin=0');
    expect(result.stdout).toContain('rc-second=0');
    const first = /^first=(\S+)$/m.exec(result.stdout)?.[1] as string;
    const replacement = /^bootenv: (\S+) includes and replaces (\S+), /m.exec(result.stdout);
    expect(replacement?.[2], result.stdout).toBe(first);
    const second = replacement?.[1] as string;
    const listed = JSON.parse(result.stdout.split('list:\n')[1] ?? 'null') as Array<{ name: string; pinned: boolean }>;
    expect(listed.filter((be) => be.pinned).map((be) => be.name).sort()).toEqual([second, 'pinned'].sort());
    const after = await names();
    expect(after).not.toContain(first);
    expect(after).toContain(second);
  });
});
