// The APT test fixtures on a real sandbox: the packages under fixtures/packages build with every
// dpkg-deb compression and install through apt from the flat file: repository with no network;
// one apt-get call of eleven packages makes apt unpack them with dpkg --recursive; the maintainer
// scripts, triggers and upgrades behave as fixtures/README.md says. Checked from the host with
// dpkg-query --admindir and manifests of the root, not with apt's own word.
import { chmodSync, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { diffManifests, takeManifest } from '../harness/manifest.js';
import { buildFixturePackages, COMPRESSIONS, installRepositoryInRoot, REPOSITORY_IN_ROOT, SOURCES_LIST, type Compression } from '../harness/repo.js';
import { Sandbox, type RunResult } from '../harness/sandbox.js';

const MANY = Array.from({ length: 8 }, (_, index) => `bootenv-t-many-${index + 1}`);
/** The packages fixtures/README.md promises (it may list more). */
const FIXTURE_DEBS = [
  'bootenv-t-activator_1.0',
  'bootenv-t-app_1.0',
  'bootenv-t-app_1.1',
  'bootenv-t-carry_1.0',
  'bootenv-t-carry_1.1',
  'bootenv-t-changed_1.0',
  'bootenv-t-changed_1.1',
  'bootenv-t-conf_1.0',
  'bootenv-t-conf_1.1',
  'bootenv-t-fails_1.0',
  'bootenv-t-lib_1.0',
  'bootenv-t-marker_1.0',
  'bootenv-t-newdep_1.0',
  'bootenv-t-trigger_1.0',
  ...MANY.map((name) => `${name}_1.0`),
].map((stem) => `${stem}_all.deb`);
/** What dpkg-preconfigure (debconf's APT hook) prints to stderr on every install in a root without apt-utils. */
const DEBCONF_NOTICE = /^debconf: delaying package configuration, since apt-utils is not installed$/gm;
/** A dpkg that logs its argv (and the content of a --recursive directory) to DPKG_LOG, then runs the real one. */
const DPKG_LOGGER = '/usr/local/sbin/bootenv-test-dpkg-logger';
const DPKG_LOG = '/var/log/bootenv-test-dpkg-argv.log';
/** What apt and dpkg keep for themselves: left out of manifests that compare a root before and after apt. */
const APT_STATE = ['/var/lib/dpkg', '/var/lib/apt', '/var/cache/apt', '/var/cache/debconf', '/var/log'];

let sandbox: Sandbox;
/** BOOTENV=off when bootenv's APT hooks are installed in the root, so apt acts on @ itself. */
let aptEnvironment: Record<string, string>;

beforeAll(async () => {
  sandbox = await Sandbox.create(inject('bookwormBase'), 'ubuntu');
  // lstat, not exists: 50bootenv is an absolute symlink, which the host would resolve against its own root.
  const hooked = await sandbox.withTopLevel(async (top) => lstatSync(path.join(top, '@/etc/apt/apt.conf.d/50bootenv'), { throwIfNoEntry: false }) !== undefined);
  aptEnvironment = { DEBIAN_FRONTEND: 'noninteractive', ...(hooked ? { BOOTENV: 'off' } : {}) };
});

afterAll(async () => {
  if (sandbox === undefined) return;
  await sandbox.close();
  await sandbox.assertNothingLeft();
});

/** apt-get ARGS in the booted @; fails the test unless it exits 0 with nothing on stderr but debconf's notice. */
async function aptGet(args: readonly string[]): Promise<RunResult> {
  const result = await sandbox.boot('@', ['apt-get', ...args], { env: aptEnvironment });
  expect(result.exitCode, `apt-get ${args.join(' ')}\n${result.stdout}\n${result.stderr}`).toBe(0);
  expect(result.stderr.replaceAll(DEBCONF_NOTICE, '').trim()).toBe('');
  return result;
}

/** `Package -> "Version Status-Abbrev"` for the bootenv-t-* packages dpkg knows in @, read from the host. */
async function installedFixtures(): Promise<Record<string, string>> {
  return sandbox.withTopLevel(async (top) => {
    const { stdout, exitCode } = await execa(
      'dpkg-query',
      ['--admindir', path.join(top, '@/var/lib/dpkg'), '-W', '-f', '${Package} ${Version} ${db:Status-Abbrev}\n', 'bootenv-t-*'],
      { reject: false, env: { LC_ALL: 'C' } },
    );
    // dpkg-query -W exits 1 when no package matches the pattern.
    if (exitCode !== 0 && stdout !== '') throw new Error(`dpkg-query exited ${exitCode}`);
    return Object.fromEntries(
      stdout
        .split('\n')
        .filter(Boolean)
        .map((line) => {
          const [name = '', ...rest] = line.trim().split(' ');
          return [name, rest.join(' ')];
        }),
    );
  });
}

/** The member names of an ar archive (a .deb). */
function arMembers(archive: Buffer): string[] {
  if (archive.toString('latin1', 0, 8) !== '!<arch>\n') throw new Error('not an ar archive');
  const members: string[] = [];
  for (let offset = 8; offset < archive.length; ) {
    const size = Number(archive.toString('latin1', offset + 48, offset + 58).trim());
    members.push(archive.toString('latin1', offset, offset + 16).trim().replace(/\/$/, ''));
    offset += 60 + size + (size % 2);
  }
  return members;
}

/**
 * Runs apt-get ARGS with Dir::Bin::dpkg set to the logging wrapper; returns the logged dpkg
 * calls other than queries, with the --status-fd number replaced by N.
 */
async function dpkgCallsOf(args: readonly string[]): Promise<string[]> {
  await sandbox.withTopLevel(async (top) => {
    const script = [
      '#!/bin/sh',
      `printf '%s\\n' "$*" >>${DPKG_LOG}`,
      `for argument; do case "$argument" in /tmp/apt-dpkg-install-*) ls "$argument" | sed 's/^/  /' >>${DPKG_LOG} ;; esac; done`,
      'exec /usr/bin/dpkg "$@"',
      '',
    ].join('\n');
    writeFileSync(path.join(top, '@', DPKG_LOGGER), script);
    chmodSync(path.join(top, '@', DPKG_LOGGER), 0o755);
  });
  try {
    await aptGet(['-o', `Dir::Bin::dpkg=${DPKG_LOGGER}`, ...args]);
    const log = await sandbox.readFile(path.join('@', DPKG_LOG));
    return log
      .split('\n')
      .filter((line) => line !== '' && !/^--(print|assert)-/.test(line))
      .map((line) => line.replace(/^--status-fd \d+ /, '--status-fd N '));
  } finally {
    await sandbox.withTopLevel(async (top) => {
      rmSync(path.join(top, '@', DPKG_LOGGER), { force: true });
      rmSync(path.join(top, '@', DPKG_LOG), { force: true });
    });
  }
}

describe('fixture packages through apt in a sandbox', () => {
  it.each(COMPRESSIONS)('built with %s compression, they install from the local repository alone', async (compression: Compression) => {
    const built = mkdtempSync(path.join(tmpdir(), 'bootenv-debs.'));
    try {
      const debs = await buildFixturePackages(built, { compression });
      expect(debs.map((deb) => path.basename(deb))).toEqual(expect.arrayContaining(FIXTURE_DEBS));
      const suffix = { xz: '.xz', gzip: '.gz', zstd: '.zst', none: '' }[compression];
      for (const deb of debs) expect(arMembers(readFileSync(deb))).toEqual(['debian-binary', `control.tar${suffix}`, `data.tar${suffix}`]);
    } finally {
      rmSync(built, { recursive: true, force: true });
    }

    await sandbox.withTopLevel(async (top) => {
      await installRepositoryInRoot(path.join(top, '@'), REPOSITORY_IN_ROOT, { compression });
      expect(readFileSync(path.join(top, '@/etc/apt/sources.list'), 'utf8')).toBe('');
      expect(readFileSync(path.join(top, '@', SOURCES_LIST), 'utf8')).toBe(`deb [trusted=yes] file:${REPOSITORY_IN_ROOT} ./\n`);
    });
    const update = await aptGet(['update']);
    expect(update.stdout).not.toMatch(/https?:/);
    expect(update.stdout).toContain(`file:${REPOSITORY_IN_ROOT} ./ Packages`);

    await aptGet(['install', '-y', 'bootenv-t-changed=1.0']);
    expect(await installedFixtures()).toEqual({ 'bootenv-t-changed': '1.0 ii' });
    const installed = await sandbox.withTopLevel(async (top) => takeManifest(path.join(top, '@/usr/share/bootenv-t-changed'), { exclude: [] }));
    expect(installed.get('/same.bin')).toMatch(/^file mode=0644 uid=0 gid=0 size=131072 mtime=1704067200\.0+ sha256=/);
    expect(installed.get('/version')).toMatch(/ size=4 /);

    await aptGet(['purge', '-y', 'bootenv-t-changed']);
    expect(await installedFixtures()).toEqual({});
  });

  it('five packages go on the dpkg command line, as paths into the repository', async () => {
    const calls = await dpkgCallsOf(['install', '-y', ...MANY.slice(0, 5)]);
    expect(calls).toEqual([
      `--status-fd N --no-triggers --unpack --auto-deconfigure ${MANY.slice(0, 5).map((name) => `${REPOSITORY_IN_ROOT}/./${name}_1.0_all.deb`).join(' ')}`,
      '--status-fd N --configure --pending',
    ]);
    await aptGet(['purge', '-y', ...MANY.slice(0, 5)]);
  });

  it('eleven packages in one apt-get call are unpacked with dpkg --recursive', async () => {
    const calls = await dpkgCallsOf(['install', '-y', 'bootenv-t-changed=1.0', 'bootenv-t-app=1.0', ...MANY]);
    expect(calls[0]).toMatch(/^--status-fd N --no-triggers --unpack --auto-deconfigure --recursive \/tmp\/apt-dpkg-install-\w+$/);
    // The directory holds a numbered symlink a package, in apt's unpack order.
    const linked = calls.slice(1, 12).map((line) => /^  (\d\d)-(\S+)_1\.0_all\.deb$/.exec(line));
    expect(linked.map((match) => match?.[1])).toEqual(Array.from({ length: 11 }, (_, index) => String(index).padStart(2, '0')));
    expect(linked.map((match) => match?.[2]).sort()).toEqual(['bootenv-t-app', 'bootenv-t-changed', 'bootenv-t-lib', ...MANY].sort());
    expect(calls.slice(12)).toEqual(['--status-fd N --configure --pending']);

    expect(await installedFixtures()).toEqual({
      'bootenv-t-app': '1.0 ii',
      'bootenv-t-changed': '1.0 ii',
      'bootenv-t-lib': '1.0 ii',
      ...Object.fromEntries(MANY.map((name) => [name, '1.0 ii'])),
    });
  });

  it('upgrading changed and app: changed.txt differs, same.bin does not, app 1.1 brings newdep', async () => {
    const manifestOfRoot = () => sandbox.withTopLevel(async (top) => takeManifest(path.join(top, '@'), { exclude: APT_STATE }));
    const before = await manifestOfRoot();
    await aptGet(['install', '-y', 'bootenv-t-changed', 'bootenv-t-app']);
    const differences = diffManifests(before, await manifestOfRoot());
    expect(differences.map((line) => line.replace(/:.*/, ''))).toEqual([
      'changed /usr/share',
      'changed /usr/share/bootenv-t-app',
      'changed /usr/share/bootenv-t-app/version',
      'changed /usr/share/bootenv-t-changed',
      'changed /usr/share/bootenv-t-changed/changed.txt',
      'changed /usr/share/bootenv-t-changed/version',
      'added /usr/share/bootenv-t-newdep',
      'added /usr/share/bootenv-t-newdep/version',
    ]);
    const installed = await installedFixtures();
    expect(installed).toMatchObject({ 'bootenv-t-app': '1.1 ii', 'bootenv-t-changed': '1.1 ii', 'bootenv-t-newdep': '1.0 ii' });
  });

  it('an unmodified conffile follows the package from 1.0 to 1.1', async () => {
    await aptGet(['install', '-y', 'bootenv-t-conf=1.0']);
    expect(await sandbox.readFile('@/etc/bootenv-t-conf.conf')).toBe('# bootenv-t-conf 1.0\nsetting = one\n');
    await aptGet(['install', '-y', 'bootenv-t-conf']);
    expect(await sandbox.readFile('@/etc/bootenv-t-conf.conf')).toBe('# bootenv-t-conf 1.1\nsetting = two\n');
    expect((await installedFixtures())['bootenv-t-conf']).toBe('1.1 ii');
  });

  it('postinst gets its arguments, a file trigger fires, postrm purge cleans up', async () => {
    await aptGet(['install', '-y', 'bootenv-t-marker', 'bootenv-t-trigger']);
    expect(await sandbox.readFile('@/var/lib/bootenv-t-marker/postinst-ran')).toBe('configure \n');
    await aptGet(['install', '-y', 'bootenv-t-activator']);
    expect(await sandbox.readFile('@/var/lib/bootenv-t-trigger/triggered')).toBe('triggered /usr/share/bootenv-t-watched\n');
    await aptGet(['purge', '-y', 'bootenv-t-marker', 'bootenv-t-trigger', 'bootenv-t-activator']);
    const left = await sandbox.withTopLevel(async (top) => ['bootenv-t-marker', 'bootenv-t-trigger'].filter((name) => existsSync(path.join(top, '@/var/lib', name))));
    expect(left).toEqual([]);
  });

  it('a failing postinst leaves bootenv-t-fails unpacked but half-configured, and apt-get fails', async () => {
    const result = await sandbox.boot('@', ['apt-get', 'install', '-y', 'bootenv-t-fails'], { env: aptEnvironment });
    expect(result.exitCode).toBe(100);
    // dpkg's output, maintainer scripts' stderr included, reaches apt's stdout through its pty.
    expect(result.stdout).toContain('bootenv-t-fails: postinst configure fails on purpose');
    expect(result.stderr).toMatch(/^E: Sub-process \S+ returned an error code \(1\)$/m);
    expect((await installedFixtures())['bootenv-t-fails']).toBe('1.0 iF');
    expect(await sandbox.readFile('@/usr/share/bootenv-t-fails/unpacked')).toBe('bootenv-t-fails 1.0\n');
    const purge = await sandbox.boot('@', ['dpkg', '--purge', 'bootenv-t-fails']);
    expect(purge.exitCode).toBe(0);
    expect((await installedFixtures())['bootenv-t-fails']).toBeUndefined();
  });

  it('a manifest does not enter a nested subvolume', async () => {
    await sandbox.withTopLevel(async (top) => {
      const nested = path.join(top, '@/srv/nested');
      await execa('btrfs', ['subvolume', 'create', nested]);
      try {
        writeFileSync(path.join(nested, 'inside'), 'inside\n');
        const manifest = await takeManifest(path.join(top, '@'), { exclude: APT_STATE });
        expect(manifest.get('/srv/nested')).toBe('other-filesystem');
        expect(manifest.has('/srv/nested/inside')).toBe(false);
        expect(manifest.get('/srv')).toMatch(/^directory /);
      } finally {
        await execa('btrfs', ['subvolume', 'delete', nested]);
      }
    });
  });
});
