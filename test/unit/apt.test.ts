// Pure APT-side code: dpkg argument classification (its copy in the shell wrapper: apt-hook.test.ts),
// the Pre-Install-Pkgs v3 hook input parser, bootenv.conf and BE name templates.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { classifyDpkgArguments } from '../../src/apt/dpkg-args.js';
import { parsePreInstallPkgsInput } from '../../src/apt/hook-input.js';
import { DEFAULT_CONFIG, nameFromTemplate, parseConfig } from '../../src/be/config.js';
import { BootenvError } from '../../src/errors.js';

describe('classifyDpkgArguments', () => {
  it.each([
    // What apt 2.6 passes (captured): read-only queries ...
    [['--print-foreign-architectures'], false],
    [['--assert-multi-arch'], false],
    [['--assert-protected-field'], false],
    [['--version'], false],
    [['-l', 'apt'], false],
    // ... and state changes.
    [['--status-fd', '13', '--no-triggers', '--unpack', '--auto-deconfigure', '/var/cache/apt/archives/a_1_all.deb'], true],
    [['--status-fd', '13', '--no-triggers', '--unpack', '--auto-deconfigure', '--recursive', '/tmp/apt-dpkg-install-abc'], true],
    [['--status-fd', '13', '--configure', '--pending'], true],
    [['--status-fd', '13', '--force-depends', '--abort-after=1', '--remove', 'a:all'], true],
    [['--set-selections'], true],
    [['-i', 'x.deb'], true],
  ])('%j changes state: %s', (args, changes) => {
    expect(classifyDpkgArguments(args).changesState).toBe(changes);
  });

  it('collects .deb operands and --recursive directories', () => {
    expect(classifyDpkgArguments(['--unpack', '/srv/repo/./a_1_all.deb', '/var/cache/apt/archives/b_2_all.deb'])).toEqual({
      changesState: true,
      debs: ['/srv/repo/./a_1_all.deb', '/var/cache/apt/archives/b_2_all.deb'],
      recursiveDirectories: [],
    });
    expect(classifyDpkgArguments(['--unpack', '--recursive', '/tmp/apt-dpkg-install-x']).recursiveDirectories).toEqual(['/tmp/apt-dpkg-install-x']);
  });
});

describe('parsePreInstallPkgsInput', () => {
  const input = [
    'VERSION 3',
    'APT::Architecture=amd64',
    'Dir::Bin::dpkg=/usr/lib/bootenv/dpkg',
    '',
    'bootenv-t-changed 1.0 all none < 1.1 all none /var/cache/apt/archives/bootenv-t-changed_1.1_all.deb',
    'bootenv-t-new - - none < 1.0 amd64 same /srv/repo/./bootenv-t-new_1.0_amd64.deb',
    'bootenv-t-old 2.0 all none > - - none **REMOVE**',
    'bootenv-t-changed 1.0 all none < 1.1 all none **CONFIGURE**',
    '',
  ].join('\n');

  it('reads the configuration and the actions', () => {
    const parsed = parsePreInstallPkgsInput(input);
    expect(parsed.config.get('Dir::Bin::dpkg')).toBe('/usr/lib/bootenv/dpkg');
    expect(parsed.actions).toEqual([
      { package: 'bootenv-t-changed', architecture: 'all', oldVersion: '1.0', newVersion: '1.1', action: 'unpack', deb: '/var/cache/apt/archives/bootenv-t-changed_1.1_all.deb' },
      { package: 'bootenv-t-new', architecture: 'amd64', oldVersion: null, newVersion: '1.0', action: 'unpack', deb: '/srv/repo/./bootenv-t-new_1.0_amd64.deb' },
      { package: 'bootenv-t-old', architecture: 'all', oldVersion: '2.0', newVersion: null, action: 'remove', deb: null },
      { package: 'bootenv-t-changed', architecture: 'all', oldVersion: '1.0', newVersion: '1.1', action: 'configure', deb: null },
    ]);
  });

  it.each([
    ['VERSION 2\n\n', /VERSION 3/],
    ['VERSION 3\nnot a config line\n\n', /configuration line/],
    ['VERSION 3\n\ntoo few fields\n', /package line/],
  ])('rejects %j', (text, message) => {
    expect(() => parsePreInstallPkgsInput(text)).toThrow(message);
    try {
      parsePreInstallPkgsInput(text);
    } catch (error) {
      expect((error as BootenvError).code).toBe('PARSE');
    }
  });
});

describe('bootenv.conf', () => {
  it('the shipped file is the default', () => {
    expect(parseConfig(readFileSync(new URL('../../hooks/bootenv.conf', import.meta.url), 'utf8'))).toEqual(DEFAULT_CONFIG);
  });

  it.each([
    ['divert = never\n', { divert: 'never' }],
    ['  divert=auto   # comment\n', { divert: 'auto' }],
    ['name-template = upgrade-{date}-{time}\n', { nameTemplate: 'upgrade-{date}-{time}' }],
    ['carry = data\n', { carry: 'data' }],
    ['keep = 3\n', { keep: 3 }],
    ['keep = 0\n', { keep: 0 }],
    ['keep=25 # a month of weekly upgrades\n', { keep: 25 }],
    ['keep = 5\nkeep = 007\n', { keep: 7 }],
    ['keep-daily = 3\nkeep-weekly = 0\n', { keepDaily: 3, keepWeekly: 0 }],
    ['auto-prune = no\n', { autoPrune: false }],
    ['min-free = 5%\n', { minFree: { percent: 5, bytes: 0 } }],
    ['min-free = 2.5%\n', { minFree: { percent: 2.5, bytes: 0 } }],
    ['min-free = 100%\n', { minFree: { percent: 100, bytes: 0 } }],
    ['min-free = 1G\n', { minFree: { percent: 0, bytes: 1024 ** 3 } }],
    ['min-free = 300M\n', { minFree: { percent: 0, bytes: 300 * 1024 ** 2 } }],
    ['min-free = 4096\n', { minFree: { percent: 0, bytes: 4096 } }],
    ['min-free = 0\n', { minFree: { percent: 0, bytes: 0 } }],
    ['carry = none\ncarry-exclude = /srv/scratch /var/cache/big/\ncarry-exclude = /opt/tmp\n', { carry: 'none', carryExclude: ['/srv/scratch', '/var/cache/big', '/opt/tmp'] }],
  ])('%j', (text, expected) => {
    expect(parseConfig(text)).toEqual({ ...DEFAULT_CONFIG, ...expected });
  });

  it.each([['divert = sometimes\n'], ['colour = blue\n'], ['divert\n'], ['name-template = fixed\n'], ['carry = some\n'], ['carry-exclude = srv\n'], ['carry-exclude = /\n'], ['carry-exclude = /srv/../etc\n'], ['keep = -1\n'], ['keep = 2.5\n'], ['keep = ten\n'], ['keep =\n'], ['keep = 1 0\n'], ['keep = +3\n'], ['keep-daily = -1\n'], ['keep-weekly = a\n'], ['auto-prune = maybe\n'], ['min-free = 101%\n'], ['min-free = 5 %\n'], ['min-free = .5%\n'], ['min-free = 1g\n'], ['min-free = 1GiB\n'], ['min-free = -1\n'], ['min-free =\n'], ['min-free = 1.5G\n']])('rejects %j', (text) => {
    expect(() => parseConfig(text)).toThrow(BootenvError);
  });
});

describe('nameFromTemplate', () => {
  const now = new Date(2026, 10, 23, 9, 5, 7);
  it.each([
    ['apt-{date}-{n}', [], 'apt-20261123-1'],
    ['apt-{date}-{n}', ['apt-20261123-1', 'apt-20261123-2'], 'apt-20261123-3'],
    // Never reuses a number, even when a lower one is free again.
    ['apt-{date}-{n}', ['apt-20261123-3'], 'apt-20261123-4'],
    ['apt-{date}-{n}', ['apt-20261122-7', 'other-9'], 'apt-20261123-1'],
    ['{date}T{time}', [], '20261123T090507'],
  ])('%s with %j → %s', (template, taken, expected) => {
    expect(nameFromTemplate(template, now, new Set(taken))).toBe(expected);
  });
});
