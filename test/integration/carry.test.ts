// The carry (issue #13): what the running system writes after a diverted apt run (or beadm
// create) is in the new BE when it boots. Real apt 2.6, dpkg 1.21, useradd, btrfs: a Debian 12
// booted from a BE; apt upgrades a package (conffile and data file changed, a system user added by
// its postinst) into a new BE; the running system then writes data, logs, pages, a user, edits a
// conffile and the data file, deletes, renames, links; the initramfs's carry runs (the real
// bootenv-boot-carry, chrooting into the BE and running its beadm carry --boot); the new BE is
// booted. Everything is checked from the host with find, stat, getfattr, getfacl, getcap,
// filefrag and dpkg-query --admindir, not with bootenv; kills (SIGKILL) at each step of a carry
// leave the BE without it or with all of it, and the next run completes it.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { EXIT_CODES } from '../../src/errors.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { Sandbox } from '../harness/sandbox.js';

const APT_ENV = 'export DEBIAN_FRONTEND=noninteractive; ';
const ORIGIN = '@bootenv/debian-12';

let sandbox: Sandbox;

interface State {
  defaultUuid: string | null;
  environments: Record<string, { carry?: { id: string; mode: string; exchange?: unknown }; lastCarry?: { conflicts: unknown[]; reported: boolean } }>;
}

async function readState(): Promise<State> {
  return JSON.parse(await sandbox.readFile('@bootenv/.bootenv.json')) as State;
}

/** A shell script run on the host with the top level mounted at $TOP. */
async function onHost(script: string): Promise<string> {
  return sandbox.withTopLevel(async (top) => (await execa('bash', ['-euc', script], { env: { TOP: top, LC_ALL: 'C' } })).stdout);
}

/** Per path (relative to a subvolume): type, mode, owner, size, atime and mtime to the ns, inode, xattrs, ACL, capabilities. */
async function metadataOf(subvolume: string, paths: readonly string[]): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  for (const relative of paths) {
    result[relative] = await onHost(
      `f="$TOP/${subvolume}/${relative}"
       stat -c '%F %a %u %g %s %x %y' "$f"
       getfattr --absolute-names -h -d -m - -e hex "$f" 2>/dev/null | grep -v '^#' | sort
       [ -L "$f" ] || { getfacl -cp "$f" 2>/dev/null; getcap "$f" | awk '{ print $NF }'; }`,
    );
  }
  return result;
}

/** What `find` lists below a directory of a subvolume (relative names, sorted), or null when it is not there. */
async function listing(subvolume: string, directory: string): Promise<string[] | null> {
  const output = await onHost(`d="$TOP/${subvolume}/${directory}"; if [ -d "$d" ]; then cd "$d" && find . -mindepth 1 | sort; else echo '<none>'; fi`);
  return output === '<none>' ? null : output.split('\n').filter(Boolean);
}

/** Physical start of each extent (filefrag -v), to see two files share their data. */
async function extents(subvolume: string, relative: string): Promise<string[]> {
  const output = await onHost(`sync; filefrag -v "$TOP/${subvolume}/${relative}"`);
  return output.split('\n').filter((line) => /^\s*\d+:/.test(line)).map((line) => line.split(':')[2]?.trim() ?? '');
}

async function versionIn(subvolume: string, pkg: string): Promise<string> {
  return sandbox.withTopLevel(async (top) => execFileSync('dpkg-query', [`--admindir=${path.join(top, subvolume, 'var/lib/dpkg')}`, '-f', '${db:Status-Abbrev}${Version}', '-W', pkg], { encoding: 'utf8' }).trim());
}

async function pendingOf(stdout: string): Promise<string> {
  const match = /apt's changes are in boot environment (\S+) \((@bootenv\/\S+)\)/.exec(stdout);
  if (match === null) throw new Error(`no new BE in apt's output:\n${stdout}`);
  return match[1] as string;
}

async function carryLeftovers(): Promise<string[]> {
  return (await sandbox.subvolumes()).filter((subvolume) => subvolume.startsWith('@bootenv/.carry/'));
}

beforeAll(async () => {
  sandbox = await Sandbox.create(inject('bookwormBase'), 'ubuntu');
  await sandbox.withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
  // The installed system as the admin left it: the package's 1.0, an application's database, a page, a log.
  const setup = `${APT_ENV} set -e
    apt-get update -qq; apt-get install -y -qq bootenv-t-carry=1.0 > /dev/null
    mkdir -p /var/lib/appdb /srv/www; echo 'record 1' > /var/lib/appdb/existing.db
    echo '<h1>old</h1>' > /srv/www/old.html; echo 'old' > /var/log/to-delete.log
    printf 'kernel.printk = 3 4 1 3\\n' > /etc/sysctl.conf`;
  const prepared = await sandbox.boot('@', ['bash', '-c', setup]);
  expect(prepared.exitCode, prepared.stderr).toBe(0);
  expect((await sandbox.beadm('@', ['init'])).exitCode).toBe(0);
});

afterAll(async () => {
  if (sandbox === undefined) return;
  await sandbox.close();
  await sandbox.assertNothingLeft();
});

describe('the carry at the first boot of the BE apt made', () => {
  /** What the running system wrote after the upgrade, besides the conflicts: carried with all their metadata. */
  const CARRIED = [
    'var/lib/appdb/existing.db',
    'var/lib/appdb/records.db',
    'var/lib/appdb/records.link',
    'var/lib/appdb/big.db',
    'var/lib/appdb/alice',
    'var/lib/appdb/alice/data',
    'etc/sysctl.conf',
    'var/log/syslog',
    'srv/www/index.html',
    'srv/www/renamed.html',
    'root/notes.txt',
    'usr/local/bin/tool',
  ];
  let be = '';

  it('apt upgrades into a new BE while the running system goes on writing', async () => {
    const upgrade = await sandbox.boot(ORIGIN, ['bash', '-c', `${APT_ENV} apt-get install -y bootenv-t-carry 2>&1`]);
    expect(upgrade.exitCode, upgrade.stdout).toBe(0);
    be = await pendingOf(upgrade.stdout);
    expect(await versionIn(`@bootenv/${be}`, 'bootenv-t-carry')).toBe('ii 1.1');
    // A later boot of the same running system (the sandbox's boots end; the BE's data lives on).
    const writes = `set -e
      echo 'record 2' >> /var/lib/appdb/existing.db
      useradd -m alice
      printf 'row\\n' > /var/lib/appdb/records.db; ln /var/lib/appdb/records.db /var/lib/appdb/records.link
      install -d -o alice -g alice -m 750 /var/lib/appdb/alice; echo mine > /var/lib/appdb/alice/data; chown alice: /var/lib/appdb/alice/data
      dd if=/dev/urandom of=/var/lib/appdb/big.db bs=1M count=64 status=none
      echo 'net.ipv4.ip_forward = 1' >> /etc/sysctl.conf
      echo 'Dec  1 12:00:00 sandbox app[42]: hello' >> /var/log/syslog
      echo '<h1>new</h1>' > /srv/www/index.html; mv /srv/www/old.html /srv/www/renamed.html
      echo note > /root/notes.txt; chmod 600 /root/notes.txt
      printf '#!/bin/sh\\necho tool\\n' > /usr/local/bin/tool; chmod 755 /usr/local/bin/tool
      echo 'local = yes' >> /etc/bootenv-t-carry.conf
      echo 'edited by the admin' >> /usr/share/bootenv-t-carry/data.txt
      rm /var/log/to-delete.log
      touch -d '2020-02-02 02:02:02.123456789' /srv/www/index.html`;
    const wrote = await sandbox.boot(ORIGIN, ['bash', '-c', writes]);
    expect(wrote.exitCode, wrote.stderr).toBe(0);
    // xattrs, an ACL and a file capability, set from the host (the base has no attr, acl or libcap2-bin).
    await onHost(`o="$TOP/${ORIGIN}"
      setfattr -n user.app -v v1 "$o/var/lib/appdb/records.db"
      setfacl -m u:1000:r "$o/srv/www/index.html"
      setcap cap_net_bind_service+ep "$o/usr/local/bin/tool"`);
  });

  it('beadm carry --dry-run lists what the boot will carry and the conflicts, changing nothing', async () => {
    const before = await readState();
    const subvolumes = await sandbox.subvolumes();
    const dry = await sandbox.beadm(ORIGIN, ['carry', '--dry-run', '--json', be]);
    expect(dry.exitCode, dry.stderr).toBe(0);
    const report = JSON.parse(dry.stdout) as { pending: boolean; origin: string; changes: { created: number; modified: number; removed: number }; conflicts: Array<{ path: string; kind: string; savedAs: string }>; accounts: { added: string[] } };
    expect(report).toMatchObject({ pending: true, origin: 'debian-12' });
    expect(report.conflicts).toEqual(
      expect.arrayContaining([
        { path: '/etc/bootenv-t-carry.conf', kind: 'changed-both', savedAs: '/etc/bootenv-t-carry.conf.bootenv-origin' },
        { path: '/usr/share/bootenv-t-carry/data.txt', kind: 'changed-both', savedAs: '/usr/share/bootenv-t-carry/data.txt.bootenv-origin' },
      ]),
    );
    expect(report.accounts.added).toEqual(expect.arrayContaining(['passwd:alice', 'group:alice', 'shadow:alice', 'gshadow:alice']));
    expect(report.changes.created).toBeGreaterThanOrEqual(8);
    expect(report.changes.removed).toBeGreaterThanOrEqual(2);
    expect(await readState()).toEqual(before);
    expect(await sandbox.subvolumes()).toEqual(subvolumes);
    const text = await sandbox.beadm(ORIGIN, ['carry', '--dry-run', be]);
    expect(text.stdout).toMatch(new RegExp(`^beadm: would carry into ${be} what debian-12 changed since `));
    expect(text.stdout).toContain("beadm: conflict: /etc/bootenv-t-carry.conf: changed in both: " + be + " keeps its version; debian-12's is saved as /etc/bootenv-t-carry.conf.bootenv-origin");
  });

  it('its first boot carries it all in from the initramfs: every change with its metadata, the conflicts saved and reported, both users, the upgrade’s package files', async () => {
    const origin = await metadataOf(ORIGIN, CARRIED);
    const target = `@bootenv/${be}`;
    const checks = [
      'findmnt -no FSROOT /',
      'getent passwd alice _bootenv-t-carry | cut -d: -f1,3,6; getent group alice _bootenv-t-carry | cut -d: -f1; getent shadow alice | cut -d: -f1',
      'id -un alice; stat -c %U /var/lib/appdb/alice/data',
      'cd / && md5sum -c --quiet /var/lib/dpkg/info/bootenv-t-carry.md5sums; echo md5=$?',
      'beadm boot-complete',
      'beadm list --json',
    ].join('\n');
    const booted = await sandbox.boot(target, ['bash', '-c', checks]);
    expect(booted.exitCode, booted.stderr).toBe(0);
    // The console: the initramfs's carry, chrooted in the BE (bootenv-boot-carry, then the BE's own beadm).
    expect(booted.console).toContain(`bootenv: carrying into ${be} what changed in its origin since it was made`);
    expect(booted.console).toMatch(new RegExp(`bootenv: carried into ${be} what debian-12 changed since \\S+: \\d+ created`));
    expect(booted.console).toContain('bootenv: conflict: /etc/bootenv-t-carry.conf: changed in both');
    expect(booted.stdout.split('\n')[0]).toBe(`/@bootenv/${be}`);
    expect(booted.stdout).toMatch(/\nalice:1000:\/home\/alice\n_bootenv-t-carry:\d+:\/nonexistent\nalice\n_bootenv-t-carry\nalice\nalice\nalice\n/);
    expect(booted.stdout).toContain('md5=0');
    // What the booted system's journal gets (bootenv-boot-complete.service's output): the carry and its conflicts.
    expect(booted.stdout).toMatch(new RegExp(`Carried into ${be} what debian-12 changed until this boot: \\d+ created, \\d+ changed, \\d+ removed \\([^)]*\\); 2 conflicts\\.`));
    expect(booted.stdout).toContain(`bootenv: conflict: /usr/share/bootenv-t-carry/data.txt: changed in both: ${be} keeps its version; debian-12's is saved as /usr/share/bootenv-t-carry/data.txt.bootenv-origin`);
    const list = JSON.parse(booted.stdout.slice(booted.stdout.indexOf('\n['))) as Array<{ name: string; carry: unknown; lastCarry: { final: boolean; conflictCount: number } | null }>;
    expect(list.find((entry) => entry.name === be)).toMatchObject({ carry: null, lastCarry: { final: true, conflictCount: 2 } });

    expect(await metadataOf(target, CARRIED)).toEqual(origin);
    expect(await listing(target, 'srv/www')).toEqual(['./index.html', './renamed.html']);
    expect(await listing(target, 'var/log')).not.toContain('./to-delete.log');
    expect(await onHost(`stat -c %i "$TOP/${target}/var/lib/appdb/records.db" "$TOP/${target}/var/lib/appdb/records.link" | uniq | wc -l`)).toBe('1');
    // 64 MiB carried as shared extents: the same physical blocks as the origin's.
    expect(await extents(target, 'var/lib/appdb/big.db')).toEqual(await extents(ORIGIN, 'var/lib/appdb/big.db'));
    // Both changed: the upgrade's version stays, the admin's is beside it.
    expect(await sandbox.readFile(`${target}/etc/bootenv-t-carry.conf`)).toBe('# bootenv-t-carry settings (version 1.1)\nsetting = 2\n');
    expect(await sandbox.readFile(`${target}/etc/bootenv-t-carry.conf.bootenv-origin`)).toBe('# bootenv-t-carry settings (version 1.0)\nsetting = 1\nlocal = yes\n');
    expect(await sandbox.readFile(`${target}/usr/share/bootenv-t-carry/data.txt`)).toBe('data of bootenv-t-carry 1.1\n');
    expect(await sandbox.readFile(`${target}/usr/share/bootenv-t-carry/data.txt.bootenv-origin`)).toBe('data of bootenv-t-carry 1.0\nedited by the admin\n');
    // Package state is the new BE's; the origin was only read.
    expect(await versionIn(target, 'bootenv-t-carry')).toBe('ii 1.1');
    expect(await sandbox.readFile(`${ORIGIN}/etc/bootenv-t-carry.conf`)).toContain('local = yes');
    // Done: no marker, no record, no snapshot left once the booted system's first beadm ran.
    expect(await onHost(`ls "$TOP/${target}/etc/bootenv"`)).not.toContain('carry-pending');
    expect(await carryLeftovers()).toEqual([]);
    expect(await sandbox.hostMounts()).toEqual([]);
  });

  it('a boot of a BE with nothing pending does not start beadm at all', async () => {
    const again = await sandbox.boot(`@bootenv/${be}`, ['findmnt', '-no', 'FSROOT', '/']);
    expect(again).toMatchObject({ exitCode: 0, stdout: `/@bootenv/${be}`, console: '' });
  });

  it('refuses to carry into the running BE, and --boot anywhere but the initramfs', async () => {
    const running = await sandbox.beadm(`@bootenv/${be}`, ['carry', be]);
    expect(running.exitCode).toBe(EXIT_CODES.BUSY);
    expect(running.stderr).toMatch(/is the running BE: a carry goes into a BE before it is used/);
    const boot = await sandbox.beadm(ORIGIN, ['carry', '--boot', be]);
    expect(boot.exitCode).toBe(EXIT_CODES.USAGE);
  });
});
