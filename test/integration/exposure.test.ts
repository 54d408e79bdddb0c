// What bootenv exposes to local users (issue #12), tried as uid 65534 (nobody, through
// setpriv) in a booted Debian 12 sandbox: a mounted BE gives nobody its setuid programs or
// its device nodes, and is out of reach unless mounted where DIR says; bootenv's state,
// runtime record, pre-images and lock are root's alone; the pending BE shows other users only
// its dpkg and apt state, which their apt reads; beadm run by a non-root user says so and
// writes nothing. Meanwhile the apt transaction still runs maintainer scripts and triggers.
// Every check goes through the real tools (setpriv, findmnt, stat, dpkg-query, apt).
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { EXIT_CODES } from '../../src/errors.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { useSandbox } from '../harness/use-sandbox.js';

const APT_ENV = 'export DEBIAN_FRONTEND=noninteractive; ';
const firstBE = '@bootenv/debian-12';
/**
 * Runs the rest of a shell line as nobody, without supplementary groups, through a shell of
 * nobody's: setpriv itself still reaches paths that only root may (measured: it execs a program
 * below a 0700 directory), so the command is looked up by a process that is nobody's only.
 */
const AS_NOBODY = 'setpriv --reuid=65534 --regid=65534 --clear-groups --';
function asNobody(command: string): string {
  return `${AS_NOBODY} sh -c '${command.replaceAll("'", "'\\''")}'`;
}

const sandbox = useSandbox(() => inject('bookwormBase'), 'ubuntu');

beforeAll(async () => {
  await sandbox().withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
  expect((await sandbox().beadm('@', ['init'])).exitCode).toBe(0);
  expect((await sandbox().boot(firstBE, ['apt-get', 'update', '-qq'])).exitCode).toBe(0);
  expect((await sandbox().beadm(firstBE, ['create', 'old'])).exitCode).toBe(0);
  // In BE old: a setuid-root program that prints its effective uid, and a device node anyone may write.
  await sandbox().withTopLevel(async (top) => {
    const old = path.join(top, '@bootenv/old');
    copyFileSync(path.join(old, 'usr/bin/id'), path.join(old, 'usr/local/bin/id-suid'));
    chmodSync(path.join(old, 'usr/local/bin/id-suid'), 0o4755);
    execFileSync('mknod', ['-m', '666', path.join(old, 'srv/null-device'), 'c', '1', '3']);
  });
});

/** The value printed after `key=` in a script's output. */
function field(output: string, key: string): string | undefined {
  return new RegExp(`^${key}=(.*)$`, 'm').exec(output)?.[1];
}

describe('what a mounted BE and bootenv expose to other users', () => {
  it("beadm mount: read-only, setuid bits and device nodes ignored, root's alone by default; --writable and --suid only behind a root-only directory", async () => {
    // Control: where setuid is honoured (the running root), the same program does give root.
    await sandbox().withTopLevel(async (top) => {
      copyFileSync(path.join(top, '@bootenv/old/usr/local/bin/id-suid'), path.join(top, firstBE, 'usr/local/bin/id-suid-control'));
      chmodSync(path.join(top, firstBE, 'usr/local/bin/id-suid-control'), 0o4755);
    });
    const script = `
      echo "control-euid=$(${asNobody('/usr/local/bin/id-suid-control -u')})"
      beadm mount old; echo "rc-default=$?"
      echo "options-default=$(findmnt -no OPTIONS /run/bootenv/mnt/old)"
      ${asNobody('ls /run/bootenv/mnt/old/usr/local/bin')} 2>&1; echo "nobody-reaches-default=$?"
      touch /run/bootenv/mnt/old/srv/written 2>&1; echo "root-writes-default=$?"
      beadm unmount old; echo "rc-unmount=$?"; test -e /run/bootenv/mnt/old; echo "dir-left=$?"
      mkdir /tmp/public; chmod 755 /tmp/public
      beadm mount old /tmp/public; echo "rc-public=$?"
      echo "public-euid=$(${asNobody('/tmp/public/usr/local/bin/id-suid -u')})"
      ${asNobody('echo x > /tmp/public/srv/null-device')} 2>&1; echo "nobody-opens-device=$?"
      beadm unmount old
      beadm mount --writable old /tmp/public 2>&1; echo "rc-writable-public=$?"
      beadm mount --suid old /tmp/public 2>&1; echo "rc-suid-public=$?"
      beadm list -H | cut -d';' -f1,4 | grep '^old'
      beadm mount --writable --suid old; echo "rc-suid-private=$?"
      echo "options-suid=$(findmnt -no OPTIONS /run/bootenv/mnt/old)"
      ${asNobody('/run/bootenv/mnt/old/usr/local/bin/id-suid -u')} 2>&1; echo "nobody-runs-private=$?"
      beadm unmount old; echo "mnt-mode=$(stat -c '%a %U' /run/bootenv/mnt)"`;
    const result = await sandbox().boot(firstBE, ['bash', '-c', script]);
    await sandbox().withTopLevel(async (top) => rmSync(path.join(top, firstBE, 'usr/local/bin/id-suid-control')));
    expect(field(result.stdout, 'control-euid')).toBe('0');
    expect(field(result.stdout, 'rc-default')).toBe('0');
    expect(field(result.stdout, 'options-default')?.split(',')).toEqual(expect.arrayContaining(['ro', 'nosuid', 'nodev']));
    expect(result.stdout).toMatch(/Permission denied\nnobody-reaches-default=2/);
    expect(field(result.stdout, 'root-writes-default')).not.toBe('0');
    expect(field(result.stdout, 'rc-unmount')).toBe('0');
    expect(field(result.stdout, 'dir-left')).toBe('1');
    expect(field(result.stdout, 'rc-public')).toBe('0');
    expect(field(result.stdout, 'public-euid')).toBe('65534');
    expect(result.stdout).toMatch(/Permission denied\nnobody-opens-device=[1-9]/);
    expect(field(result.stdout, 'rc-writable-public')).toBe(String(EXIT_CODES.USAGE));
    expect(field(result.stdout, 'rc-suid-public')).toBe(String(EXIT_CODES.USAGE));
    expect(result.stdout).toContain('/tmp/public can be reached by users other than root: a setuid-honouring mount of a BE is only made behind a directory only root can enter');
    expect(result.stdout).toMatch(/^old;$/m);
    expect(field(result.stdout, 'rc-suid-private')).toBe('0');
    expect(field(result.stdout, 'options-suid')?.split(',')).toEqual(expect.arrayContaining(['rw']));
    expect(field(result.stdout, 'options-suid')?.split(',')).not.toContain('nosuid');
    expect(result.stdout).toMatch(/Permission denied\nnobody-runs-private=[1-9]/);
    expect(field(result.stdout, 'mnt-mode')).toBe('700 root');
    expect(await sandbox().hostMounts()).toEqual([]);
  });

  it("the state, the runtime record, the pre-images and the lock are root's; the pending BE shows others only its dpkg and apt state; the transaction still runs scripts and triggers", async () => {
    // A second Pre-Install-Pkgs hook runs after bootenv's, which has written the runtime record and pre-images by then.
    const probe = [
      'cat > /dev/null',
      'stat -c "%n %a %U" /run/bootenv/txn /run/bootenv/txn/txn.json /run/bootenv/txn/preimage /run/bootenv/private /run/bootenv/lock > /tmp/modes',
      `${asNobody('cat /run/bootenv/txn/txn.json')} > /tmp/nobody-record 2>&1; echo "rc=$?" >> /tmp/nobody-record`,
      `${asNobody('flock -n /run/bootenv/lock true')} > /tmp/nobody-lock 2>&1; echo "rc=$?" >> /tmp/nobody-lock`,
    ].join('; ');
    const script = `${APT_ENV}
      apt-get install -y -o 'DPkg::Pre-Install-Pkgs::=${probe.replaceAll("'", "'\\''")}' bootenv-t-trigger bootenv-t-marker > /tmp/apt.log 2>&1; echo "rc-apt=$?"
      apt-get install -y bootenv-t-activator > /tmp/apt-activator.log 2>&1; echo "rc-activator=$?"
      echo "modes:"; cat /tmp/modes; echo "record:"; cat /tmp/nobody-record; echo "lock:"; cat /tmp/nobody-lock
      echo "pending-be=$(stat -c '%a %U' /run/bootenv/pending/be)"
      echo "views=$(findmnt -no OPTIONS /run/bootenv/pending/dpkg)"
      ${asNobody('ls /run/bootenv/pending/be/root')} 2>&1; echo "nobody-reaches-pending=$?"
      echo "nobody-apt=$(${asNobody('apt-cache policy bootenv-t-marker')} | grep Installed)"
      ${asNobody('dpkg-query --admindir=/run/bootenv/pending/dpkg -W bootenv-t-marker')}; echo "nobody-dpkg-query=$?"`;
    const result = await sandbox().boot(firstBE, ['bash', '-c', script]);
    expect(field(result.stdout, 'rc-apt')).toBe('0');
    expect(field(result.stdout, 'rc-activator')).toBe('0');
    const modes = result.stdout.split('modes:\n')[1]?.split('record:')[0] ?? '';
    expect(modes.trim().split('\n')).toEqual([
      '/run/bootenv/txn 700 root',
      '/run/bootenv/txn/txn.json 600 root',
      '/run/bootenv/txn/preimage 700 root',
      '/run/bootenv/private 700 root',
      '/run/bootenv/lock 600 root',
    ]);
    expect(result.stdout).toMatch(/record:\ncat: \/run\/bootenv\/txn\/txn\.json: Permission denied\nrc=1/);
    expect(result.stdout).toMatch(/lock:\nflock: cannot open lock file \/run\/bootenv\/lock: Permission denied\nrc=[1-9]/);
    expect(field(result.stdout, 'pending-be')).toBe('700 root');
    expect(field(result.stdout, 'views')?.split(',')).toEqual(expect.arrayContaining(['nosuid', 'nodev', 'noexec']));
    expect(result.stdout).toMatch(/Permission denied\nnobody-reaches-pending=2/);
    expect(field(result.stdout, 'nobody-apt')?.trim()).toBe('Installed: 1.0');
    expect(result.stdout).toMatch(/^bootenv-t-marker\t1\.0\nnobody-dpkg-query=0$/m);

    const listed = JSON.parse((await sandbox().beadm(firstBE, ['list', '--json'])).stdout) as Array<{ subvolume: string; active: string }>;
    const pending = listed.find((environment) => environment.active === 'R')?.subvolume as string;
    await sandbox().withTopLevel(async (top) => {
      const root = path.join(top, pending);
      // Maintainer scripts ran and the file trigger fired (the activator came in the second run), in the new BE.
      expect(readFileSync(path.join(root, 'var/lib/bootenv-t-marker/postinst-ran'), 'utf8')).toMatch(/^configure/);
      expect(readFileSync(path.join(root, 'var/lib/bootenv-t-trigger/triggered'), 'utf8')).not.toBe('');
      expect(execFileSync('stat', ['-c', '%a %U', path.join(top, '@bootenv/.bootenv.json')]).toString().trim()).toBe('600 root');
      expect(execFileSync('stat', ['-c', '%a %U', path.join(top, '@bootenv')]).toString().trim()).toBe('700 root');
    });
    expect(await sandbox().hostMounts()).toEqual([]);
  });

  it('beadm run by a non-root user: a clear message, NOT_ROOT, nothing written; check works for anyone', async () => {
    const before = await sandbox().subvolumes();
    const snapshot = 'find /run/bootenv -printf "%p %m %s %T@\\n" 2>/dev/null | sort';
    const script = `${snapshot} > /tmp/before
      for command in "list" "create intruder" "destroy old" "activate old" "mount old" "audit"; do
        ${AS_NOBODY} sh -c "beadm $command" 2>&1; echo "rc-$command=$?"
      done
      ${asNobody('beadm check')}; echo "rc-check=$?"
      ${snapshot} > /tmp/after; cmp /tmp/before /tmp/after && echo "runtime-unchanged"`;
    const result = await sandbox().boot(firstBE, ['bash', '-c', script]);
    for (const command of ['list', 'create intruder', 'destroy old', 'activate old', 'mount old', 'audit']) {
      expect(field(result.stdout, `rc-${command}`)).toBe(String(EXIT_CODES.NOT_ROOT));
    }
    expect(result.stdout).toContain('beadm: beadm needs root for this: it mounts the btrfs top level, takes the global lock and writes bootenv state');
    expect(field(result.stdout, 'rc-check')).toBe('0');
    expect(result.stdout).toContain('runtime-unchanged');
    expect(await sandbox().subvolumes()).toEqual(before);
  });
});
