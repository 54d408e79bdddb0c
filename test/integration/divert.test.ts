// divert in /etc/bootenv/bootenv.conf, end to end (issue #10), on Debian 12 with bootenv from
// this checkout: never runs apt's dpkg in place without starting beadm; auto still diverts on a
// system booted into a BE, and runs in place with a note when booted from the installed root
// (@), where always fails closed. Checked with btrfs subvolume list, dpkg-query --admindir of
// each root and every apt run's exit status.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { REPOSITORY } from '../harness/base.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { Sandbox, type RunResult } from '../harness/sandbox.js';

const APT_ENV = { DEBIAN_FRONTEND: 'noninteractive' };
const SHIPPED_CONFIG = readFileSync(path.join(REPOSITORY, 'hooks/bootenv.conf'), 'utf8');

let sandbox: Sandbox;
let first: string;

function expectExit(result: RunResult, code: number): void {
  expect(result.exitCode, `${result.stdout.slice(-3000)}\n${result.stderr.slice(-3000)}`).toBe(code);
}

/** The shipped bootenv.conf with `divert = MODE`, written into `subvolume`. */
async function setDivert(subvolume: string, mode: 'always' | 'never' | 'auto'): Promise<void> {
  const text = SHIPPED_CONFIG.replace(/^divert = always$/m, `divert = ${mode}`);
  expect(text).toContain(`\ndivert = ${mode}\n`);
  await sandbox.withTopLevel(async (top) => writeFileSync(path.join(top, subvolume, 'etc/bootenv/bootenv.conf'), text));
}

async function versionIn(subvolume: string, name: string): Promise<string | undefined> {
  return sandbox.withTopLevel(async (top) => {
    const result = await execa('dpkg-query', [`--admindir=${path.join(top, subvolume, 'var/lib/dpkg')}`, '-f', '${db:Status-Abbrev} ${Version}', '-W', name], { reject: false });
    const [status, version] = result.stdout.trim().split(/\s+/);
    return result.exitCode === 0 && status === 'ii' ? version : undefined;
  });
}

function aptGet(subvolume: string, args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return sandbox.boot(subvolume, ['apt-get', ...args], { env: { ...APT_ENV, ...env } });
}

/** apt-get install of `fixture` in the first BE exits 0 and lands in one new BE; the running BE does not get it. */
async function expectDivertedInstall(fixture: string): Promise<void> {
  const before = await sandbox.bootEnvironments();
  const result = await aptGet(first, ['install', '-y', fixture]);
  expectExit(result, 0);
  const made = /apt's changes are in boot environment \S+ \((@bootenv\/\S+)\)/.exec(result.stdout)?.[1];
  expect(made).toBeDefined();
  expect(await sandbox.bootEnvironments()).toEqual([...before, made]);
  expect(await versionIn(first, fixture)).toBeUndefined();
  expect(await versionIn(made as string, fixture)).toBe('1.0');
}

beforeAll(async () => {
  sandbox = await Sandbox.create(inject('bookwormBase'), 'ubuntu');
  await sandbox.withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
  const init = await sandbox.beadm('@', ['init', '--json']);
  expectExit(init, 0);
  first = (JSON.parse(init.stdout) as { subvolume: string }).subvolume;
  expectExit(await aptGet(first, ['update', '-qq']), 0);
  expectExit(await aptGet('@', ['update', '-qq']), 0);
});

afterAll(async () => {
  if (sandbox === undefined) return;
  await sandbox.close();
  await sandbox.assertNothingLeft();
});

describe('divert = never', () => {
  it('booted into a BE, apt-get install changes the running root in place; no BE, no beadm', async () => {
    await setDivert(first, 'never');
    const before = await sandbox.bootEnvironments();
    // With beadm unreachable, any call into it would fail the apt run.
    const result = await aptGet(first, ['install', '-y', 'bootenv-t-marker'], { BOOTENV_BEADM: '/nonexistent' });
    expectExit(result, 0);
    expect(result.stdout + result.stderr).not.toContain('bootenv:');
    expect(result.stdout + result.stderr).not.toContain('beadm:');
    expect(await sandbox.bootEnvironments()).toEqual(before);
    expect(await versionIn(first, 'bootenv-t-marker')).toBe('1.0');
  });

  it('overridden by a later divert = always line, as beadm reads the file: diverted', async () => {
    await sandbox.withTopLevel(async (top) => writeFileSync(path.join(top, first, 'etc/bootenv/bootenv.conf'), 'divert = never\ndivert = always\n'));
    await expectDivertedInstall('bootenv-t-many-4');
  });
});

describe('divert = auto', () => {
  it('booted into a BE, apt-get install still lands in a new BE', async () => {
    await setDivert(first, 'auto');
    await expectDivertedInstall('bootenv-t-many-1');
  });

  it('booted from the installed root (@), apt-get install runs in place and says so', async () => {
    await setDivert('@', 'auto');
    const before = await sandbox.bootEnvironments();
    const result = await aptGet('@', ['install', '-y', 'bootenv-t-many-2']);
    expectExit(result, 0);
    expect(result.stderr).toContain('beadm: note: / is @, not a boot environment (divert = auto): dpkg runs in place, without a boot environment');
    expect(result.stdout).not.toContain("apt's changes are in boot environment");
    expect(await sandbox.bootEnvironments()).toEqual(before);
    expect(await versionIn('@', 'bootenv-t-many-2')).toBe('1.0');
  });
});

describe('divert = always', () => {
  it('booted from the installed root (@), apt-get install fails closed: exit 100, @ unchanged, no BE', async () => {
    await setDivert('@', 'always');
    const before = await sandbox.bootEnvironments();
    const result = await aptGet('@', ['install', '-y', 'bootenv-t-many-3']);
    expectExit(result, 100);
    expect(result.stdout + result.stderr).toContain('the running system is not a boot environment');
    expect(result.stdout).not.toContain('Unpacking bootenv-t-many-3');
    expect(await sandbox.bootEnvironments()).toEqual(before);
    expect(await versionIn('@', 'bootenv-t-many-3')).toBeUndefined();
  });
});
