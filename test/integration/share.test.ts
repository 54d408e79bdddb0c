// Shared subvolumes (issue #14): beadm init --share and beadm share move a directory of the running
// system into a top-level subvolume of its own, which every BE's fstab mounts. On a real btrfs loop
// image laid out like Ubuntu (@, @home) with a debootstrapped Debian 12. Everything is checked from
// the host with getfattr, getfacl, getcap, stat, find, sha256sum, btrfs subvolume list, the fstab
// files read from the image and findmnt inside simulated boots; refusals change nothing; a beadm
// killed (SIGKILL) at each step of a share is finished or rolled back by the next one.
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { EXIT_CODES } from '../../src/errors.js';
import { Sandbox } from '../harness/sandbox.js';
import { WAIT_UNTIL } from '../harness/shell.js';

const ROOT = '@';
const FIRST = '@bootenv/debian-12';

let sandbox: Sandbox;

/** A shell script run on the host with the top level mounted at $TOP. */
async function onHost(script: string): Promise<string> {
  return sandbox.withTopLevel(async (top) => (await execa('bash', ['-euc', script], { env: { TOP: top, LC_ALL: 'C' } })).stdout);
}

/** Fills $TOP/$1 (a directory of a subvolume) with every kind of entry and attribute a directory can hold. */
const FILL = String.raw`
d="$TOP/$1"
mkdir -p "$d/sub/deeper"
echo hello >"$d/plain"
ln "$d/plain" "$d/hard link"
ln -s plain "$d/symlink"
ln -s /nonexistent "$d/dangling"
truncate -s 64M "$d/sparse"
printf data | dd of="$d/sparse" bs=1 seek=$((32 * 1024 * 1024)) conv=notrunc status=none
mkfifo "$d/fifo"
cp "$TOP/@/usr/bin/true" "$d/setuid"
chmod 4755 "$d/setuid"
cp "$TOP/@/usr/bin/true" "$d/capable"
setcap cap_net_raw+ep "$d/capable"
printf 'odd' >"$d/name with spaces"
printf 'odd' >"$d/$(printf 'tab\tand\nnewline')"
printf 'odd' >"$d/ünïcödé"
printf 'odd' >"$d/-leading-dash"
head -c 1048576 /dev/urandom >"$d/sub/deeper/random"
setfattr -n user.colour -v blue "$d/plain"
setfattr -n user.binary -v 0x00ff00 "$d/sub"
setfacl -m u:1234:rw,g:100:r "$d/plain"
setfacl -d -m u:1234:rwx "$d/sub"
setfacl -m u:1234:rwx "$d/sub"
chown 1234:100 "$d/sub/deeper/random" "$d/sub"
chmod 0640 "$d/sub/deeper/random"
touch -h -d '2001-02-03 04:05:06.123456789' "$d/plain" "$d/symlink" "$d/sub/deeper"
chown 1000:1000 "$d"
chmod 2770 "$d"
setfattr -n user.top -v yes "$d"
setfacl -m g:100:rx "$d"
touch -d '2002-03-04 05:06:07.987654321' "$d"
`;

/**
 * Everything of a directory tree but what a copy cannot keep (inode numbers, ctime, atime):
 * per entry type, mode, owner, links, size, blocks, mtime to the ns, symlink target; xattrs (all
 * namespaces: ACLs and capabilities are xattrs), ACLs, capabilities; which names are one inode;
 * the data's sha256. Names are relative ("." the directory itself).
 */
async function treeFacts(directory: string): Promise<string> {
  return onHost(String.raw`
cd "$TOP/${directory}"
find . -printf '%p|%y|%m|%U|%G|%n|%s|%b|%T@|%l\n' | LC_ALL=C sort
getfattr -h -R -d -m - -e hex . 2>/dev/null
getfacl -R -P . 2>/dev/null
getcap -r . 2>/dev/null | LC_ALL=C sort
find . -type f -links +1 -printf '%i|%p\n' | LC_ALL=C sort | awk -F'|' '{ if ($1 == last) print prev " = " $2; last = $1; prev = $2 }'
find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
`);
}

/** Owner, mode, mtime, xattrs and ACL of one directory (the mount point a share leaves). */
async function directoryFacts(directory: string): Promise<string> {
  return onHost(String.raw`
cd "$TOP/${directory}"
stat -c '%u %g %a %y' .
getfattr -h -d -m - -e hex . 2>/dev/null
getfacl -P . 2>/dev/null
`);
}

async function fstabOf(subvolume: string): Promise<string> {
  return sandbox.readFile(`${subvolume}/etc/fstab`);
}

/** The subvolumes, the state file and every fstab (installed root and BEs): what a refused share must leave as it was. */
async function fingerprint(): Promise<Record<string, string>> {
  const subvolumes = await sandbox.subvolumes();
  const result: Record<string, string> = { subvolumes: subvolumes.join('\n'), state: await sandbox.readFile('@bootenv/.bootenv.json') };
  for (const subvolume of [ROOT, ...(await sandbox.bootEnvironments())]) result[subvolume] = await fstabOf(subvolume);
  return result;
}

function line(sharePath: string, subvolume: string): string {
  return `UUID=${sandbox.uuid} ${sharePath} btrfs defaults,subvol=${subvolume} 0 0`;
}

interface Listed {
  path: string;
  subvolume: string;
  uuid: string;
  mounted: boolean;
}

async function listShared(booted = ROOT): Promise<Listed[]> {
  const result = await sandbox.beadm(booted, ['share', '--json']);
  expect(result.exitCode, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as Listed[];
}

/** What a share leaves behind when it is done or undone: none of its temporaries, no directory moved aside. */
async function leftovers(): Promise<string[]> {
  const temporaries = (await sandbox.subvolumes()).filter((subvolume) => subvolume.startsWith('@bootenv/.share'));
  const aside = (await onHost('find "$TOP/@" -xdev -name "*.bootenv-share-old-*" -prune -print')).split('\n').filter(Boolean);
  return [...temporaries, ...aside];
}

beforeAll(async () => {
  sandbox = await Sandbox.create(inject('bookwormBase'), 'ubuntu');
  await onHost(`${FILL.replace(/\$1/g, '@/srv/data')}`);
});

afterAll(async () => {
  if (sandbox === undefined) return;
  await sandbox.close();
  await sandbox.assertNothingLeft();
});

describe('beadm init --share', () => {
  let original: string;
  let originalTop: string;

  it('moves /srv/data into @srv_data keeping every byte and attribute, and every fstab mounts it', async () => {
    original = await treeFacts('@/srv/data');
    originalTop = await directoryFacts('@/srv/data');
    // The fixture holds what it should: a sparse file, a fifo, a setuid file, a capability, ACLs.
    expect(original).toMatch(/^\.\/sparse\|f\|644\|0\|0\|1\|67108864\|8\|/m);
    expect(original).toMatch(/^\.\/fifo\|p\|/m);
    expect(original).toMatch(/^\.\/setuid\|f\|4755\|/m);
    expect(original).toContain('./capable cap_net_raw=ep');
    expect(original).toContain('user:1234:rwx');
    expect(original).toContain('./hard link = ./plain');

    const init = await sandbox.beadm(ROOT, ['init', '--share', '/srv/data', '--json']);
    expect(init.exitCode, init.stderr).toBe(0);
    expect(init.stderr).toBe('');
    const result = JSON.parse(init.stdout) as { name: string; shared: Listed[] };
    expect(result.name).toBe('debian-12');
    expect(result.shared).toEqual([expect.objectContaining({ path: '/srv/data', subvolume: '@srv_data' })]);

    expect(await sandbox.subvolumes()).toEqual(expect.arrayContaining(['@', '@home', '@srv_data', FIRST]));
    expect(await treeFacts('@srv_data')).toBe(original);
    // The running root keeps an empty mount point with the directory's owner, mode, times, xattrs and ACL.
    expect(await onHost('ls -A "$TOP/@/srv/data"')).toBe('');
    expect(await directoryFacts('@/srv/data')).toBe(originalTop);
    expect(await directoryFacts('@srv_data')).toBe(originalTop);
    for (const subvolume of [ROOT, FIRST]) {
      const fstab = await fstabOf(subvolume);
      expect(fstab.split('\n').filter((entry) => entry === line('/srv/data', '@srv_data'))).toHaveLength(1);
      expect(fstab).toContain(`UUID=${sandbox.uuid} /home btrfs defaults,subvol=@home 0 2`);
    }
    // The first BE was made before: it keeps its own copy, hidden under the mount.
    expect(await treeFacts(`${FIRST}/srv/data`)).toBe(original);
    expect(await leftovers()).toEqual([]);
    expect(await listShared()).toEqual([expect.objectContaining({ path: '/srv/data', subvolume: '@srv_data' })]);
    expect(JSON.parse(await sandbox.readFile('@bootenv/.bootenv.json')).share).toBeUndefined();
  });

  it('a boot of any BE mounts @srv_data at /srv/data; what the running system writes there is in it exactly once, nothing of it carried', async () => {
    const mounted = await sandbox.boot(ROOT, ['findmnt', '-rn', '-o', 'TARGET,FSROOT', '/srv/data']);
    expect(mounted.stdout.trim()).toBe('/srv/data /@srv_data');
    // The running system (the installed root) writes below /srv/data after the first BE was made from it.
    const write = await sandbox.boot(ROOT, ['bash', '-c', 'echo written-later >/srv/data/after.txt && rm /srv/data/plain']);
    expect(write.exitCode, write.stderr).toBe(0);

    // The first BE boots: its carry (pending since init) runs; /srv/data is the shared subvolume.
    const boot = await sandbox.boot(FIRST, ['bash', '-c', 'findmnt -rn -o TARGET,FSROOT /srv/data; cat /srv/data/after.txt; ls /srv/data/plain 2>&1 || true']);
    expect(boot.exitCode, boot.stderr).toBe(0);
    expect(boot.stdout.split('\n').slice(0, 2)).toEqual(['/srv/data /@srv_data', 'written-later']);
    expect(boot.stdout).toContain('No such file');
    // Exactly once: in @srv_data, not in any BE or the installed root.
    const copies = await onHost('cd "$TOP" && find . -name after.txt -printf "%P\\n"');
    expect(copies.split('\n').filter(Boolean)).toEqual(['@srv_data/after.txt']);
    // Nothing of /srv/data was carried: the BE's hidden copy is as it was (the root's empty directory did not empty it).
    expect(await treeFacts(`${FIRST}/srv/data`)).toBe(original);
  });

  it('a BE made later (in the booted first BE) inherits the line through its snapshot and mounts the same subvolume', async () => {
    const create = await sandbox.beadm(FIRST, ['create', 'later']);
    expect(create.exitCode, create.stderr).toBe(0);
    const fstab = await fstabOf('@bootenv/later');
    expect(fstab).toMatch(new RegExp(`^UUID=${sandbox.uuid} / btrfs defaults,subvol=@bootenv/later 0 1$`, 'm'));
    expect(fstab.split('\n').filter((entry) => entry === line('/srv/data', '@srv_data'))).toHaveLength(1);
    const boot = await sandbox.boot('@bootenv/later', ['bash', '-c', 'findmnt -rn -o TARGET,FSROOT /srv/data; cat /srv/data/after.txt']);
    expect(boot.stdout.split('\n')).toEqual(['/srv/data /@srv_data', 'written-later']);
    expect(await listShared('@bootenv/later')).toEqual([expect.objectContaining({ path: '/srv/data', mounted: true })]);
  });
});

describe('refusals change nothing', () => {
  it.each([
    ['srv/x', EXIT_CODES.USAGE, /not an absolute path/],
    ['/srv/../etc', EXIT_CODES.USAGE, /not a plain path/],
    ['/', EXIT_CODES.USAGE, /cannot be shared/],
    ['/etc', EXIT_CODES.USAGE, /\/etc is part of the system/],
    ['/usr/share/doc', EXIT_CODES.USAGE, /\/usr is part of the system/],
    ['/var/lib/dpkg', EXIT_CODES.USAGE, /package state/],
    ['/tmp', EXIT_CODES.USAGE, /\/tmp is part of the system/],
    ['/srv/missing', EXIT_CODES.USAGE, /does not exist/],
    ['/etc/hostname', EXIT_CODES.USAGE, /part of the system/],
    ['/var/run', EXIT_CODES.USAGE, /not a directory \(it is a symlink\)/],
    ['/home', EXIT_CODES.BUSY, /\/home is a mount point already/],
    ['/srv/data', EXIT_CODES.EXISTS, /\/srv\/data is already shared/],
  ])('share %s: exit %i', async (sharePath, status, message) => {
    const before = await fingerprint();
    const result = await sandbox.beadm(ROOT, ['share', sharePath]);
    expect(result.stderr).toMatch(message);
    expect(result.exitCode).toBe(status);
    expect(await fingerprint()).toEqual(before);
  });

  it('a path holding files of a package (installed with dpkg), as dpkg -S says', async () => {
    const deb = await onHost(String.raw`
      build=$(mktemp -d /tmp/bootenv-share-deb.XXXXXX)
      mkdir -p "$build/DEBIAN" "$build/srv/pkgdata/sub"
      printf 'Package: bootenv-t-share
Version: 1.0
Architecture: all
Maintainer: test <test@example.org>
Description: owns a file below /srv/pkgdata
' >"$build/DEBIAN/control"
      echo owned >"$build/srv/pkgdata/sub/owned"
      dpkg-deb --root-owner-group -b "$build" "$TOP/@/root/bootenv-t-share.deb" >/dev/null
      rm -r "$build"
      echo /root/bootenv-t-share.deb`);
    const install = await sandbox.boot(ROOT, ['dpkg.distrib', '-i', deb]);
    expect(install.exitCode, install.stderr).toBe(0);
    const owner = await sandbox.boot(ROOT, ['dpkg', '-S', '/srv/pkgdata/sub/owned']);
    expect(owner.stdout.trim()).toBe('bootenv-t-share: /srv/pkgdata/sub/owned');
    const before = await fingerprint();
    const result = await sandbox.beadm(ROOT, ['share', '/srv/pkgdata']);
    expect(result.exitCode).toBe(EXIT_CODES.UNSUPPORTED);
    expect(result.stderr).toContain('/srv/pkgdata holds files of a package: bootenv-t-share (/srv/pkgdata/sub/owned)');
    expect(await fingerprint()).toEqual(before);
  });

  it('a path a process holds a file open in: named with its pid and command, not signalled', async () => {
    await onHost('mkdir -p "$TOP/@/srv/held" && echo x >"$TOP/@/srv/held/file"');
    const before = await fingerprint();
    const script = `${WAIT_UNTIL}
      sleep 600 </srv/held/file & pid=$!
      wait_until test -e /proc/$pid/fd/0
      beadm share /srv/held; echo "status=$?"
      kill -0 $pid && echo "still-running"
      kill $pid; wait $pid || true`;
    const result = await sandbox.boot(ROOT, ['bash', '-c', script]);
    expect(result.stdout).toContain(`status=${EXIT_CODES.BUSY}`);
    expect(result.stdout).toContain('still-running');
    expect(result.stderr).toMatch(/\/srv\/held is in use: pid \d+ \(sleep: fd 0 \/srv\/held\/file\)/);
    expect(await fingerprint()).toEqual(before);
    expect(await leftovers()).toEqual([]);
  });
});

describe('a share killed (SIGKILL) at each of its steps', () => {
  const POINTS = ['share-recorded', 'share-snapshot', 'share-copied', 'share-renamed', 'share-aside', 'share-mounted', 'share-fstabs', 'share-committed', 'share-old-deleted'];
  const CASES = [...POINTS.map((point) => [point, 'the same boot'] as const), ['share-mounted', 'the next boot'] as const, ['share-committed', 'the next boot'] as const];
  it.each(CASES)('at %s: the next beadm, in %s, rolls it back (before the commit) or finishes it (after), nothing lost', async (point, when) => {
    const sharePath = `/srv/k-${point.slice('share-'.length)}${when === 'the same boot' ? '' : '-reboot'}`;
    const subvolume = `@srv_${sharePath.slice('/srv/'.length)}`;
    await onHost(FILL.replace(/\$1/g, `@${sharePath}`));
    const original = await treeFacts(`@${sharePath}`);
    const before = await fingerprint();

    // Killed; then the next beadm recovers, in the same boot (the mount made still there) or in the next one.
    const next = `unset BOOTENV_TEST_CRASH_AT; beadm share --json >/dev/null; echo "next=$?"; findmnt -rn -o FSROOT ${sharePath} || echo unmounted`;
    const kill = `beadm share ${sharePath}; echo "status=$?"`;
    let killed;
    if (when === 'the same boot') {
      killed = await sandbox.boot(ROOT, ['bash', '-c', `${kill}; ${next}`], { env: { BOOTENV_TEST_CRASH_AT: point } });
    } else {
      const first = await sandbox.boot(ROOT, ['bash', '-c', kill], { env: { BOOTENV_TEST_CRASH_AT: point } });
      const second = await sandbox.boot(ROOT, ['bash', '-c', next]);
      killed = { stdout: `${first.stdout}\n${second.stdout}`, stderr: `${first.stderr}${second.stderr}` };
    }
    expect(killed.stdout.split('\n').slice(0, 2), killed.stderr).toEqual(['status=137', 'next=0']);
    const done = point === 'share-committed' || point === 'share-old-deleted';
    expect(killed.stderr).toContain(done ? `beadm: note: finished sharing ${sharePath}` : `beadm: note: rolled back the sharing of ${sharePath}`);
    expect(killed.stdout.split('\n')[2]).toBe(done ? `/${subvolume}` : 'unmounted');

    const state = JSON.parse(await sandbox.readFile('@bootenv/.bootenv.json')) as { share?: unknown; shared: Listed[] };
    expect(state.share).toBeUndefined();
    expect(await leftovers()).toEqual([]);
    if (done) {
      expect(state.shared.map((entry) => entry.path)).toContain(sharePath);
      expect(await treeFacts(subvolume)).toBe(original);
      for (const environment of [ROOT, ...(await sandbox.bootEnvironments())]) expect(await fstabOf(environment)).toContain(line(sharePath, subvolume));
      expect(await onHost(`ls -A "$TOP/@${sharePath}"`)).toBe('');
    } else {
      expect(state.shared.map((entry) => entry.path)).not.toContain(sharePath);
      expect(await treeFacts(`@${sharePath}`)).toBe(original);
      expect(await fingerprint()).toEqual(before);
    }
    expect(await sandbox.hostMounts()).toEqual([]);
  });
});
