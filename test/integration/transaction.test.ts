// The apt transaction's ways out (src/be/transaction.ts): finalize refuses a BE whose dpkg
// database is unfinished even when the hooks never recorded dpkg's failure; an operation
// that fails after dropping this boot's pending BE puts it back; the cleanup of an
// interrupted transaction stays done, and is reported, when the command that ran it fails.
// Real apt 2.6 and dpkg 1.21 in a debootstrapped Debian 12 booted from a BE; every check
// goes through btrfs subvolume list, dpkg-query --admindir, findmnt and the files on disk.
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { EXIT_CODES } from '../../src/errors.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { WAIT_UNTIL } from '../harness/shell.js';
import { useSandbox } from '../harness/use-sandbox.js';

const APT_ENV = 'export DEBIAN_FRONTEND=noninteractive; ';
const firstBE = '@bootenv/debian-12';

const sandbox = useSandbox(() => inject('bookwormBase'), 'ubuntu');

interface State {
  defaultUuid: string | null;
  environments: Record<string, { transaction?: { open: boolean; subvolume: string } }>;
}

async function readState(): Promise<State> {
  return JSON.parse(await sandbox().readFile('@bootenv/.bootenv.json')) as State;
}

beforeAll(async () => {
  await sandbox().withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
  expect((await sandbox().beadm('@', ['init'])).exitCode).toBe(0);
  expect((await sandbox().boot(firstBE, ['apt-get', 'update', '-qq'])).exitCode).toBe(0);
});

describe('the apt transaction fails closed and undoes in one way', () => {
  it("recording dpkg's failure is made impossible: finalize finds the BE unfinished, discards it and activates nothing; a failed activate keeps the pending BE", async () => {
    // In one boot (the pending BE lives in /run): a good run makes a pending BE; then a run whose
    // postinst fails while bootenv's `dpkg-failed` record is refused; then an activate that fails
    // after it has dropped the pending BE (a grub-script-check that fails the new menu entries).
    const script = `${APT_ENV}
      apt-get install -y bootenv-t-marker > /dev/null; echo "rc-first=$?"
      cat /run/bootenv/pending/pending.json; echo
      printf '%s\\n' '#!/bin/sh' 'if [ "$2" = dpkg-failed ]; then echo refused >> /tmp/record-refused; exit 1; fi' 'exec /usr/sbin/beadm "$@"' > /tmp/beadm-no-record
      chmod 755 /tmp/beadm-no-record
      BOOTENV_BEADM=/tmp/beadm-no-record apt-get install -y bootenv-t-fails 2>&1; echo "rc-fail=$?"
      echo "refusals=$(wc -l < /tmp/record-refused)"
      ls /run/bootenv; echo "mounts:"; findmnt -rn -o TARGET | grep bootenv
      printf '#!/bin/sh\\necho "injected failure" >&2\\nexit 1\\n' > /usr/local/sbin/grub-script-check; chmod 755 /usr/local/sbin/grub-script-check
      beadm activate debian-12; echo "rc-activate=$?"
      rm /usr/local/sbin/grub-script-check
      echo "after-activate:"; cat /run/bootenv/pending/pending.json; echo
      findmnt -rn -o TARGET,FSROOT /run/bootenv/pending/be/root
      apt-config dump | grep '^Dir::State::status'`;
    const before = await sandbox().bootEnvironments();
    const result = await sandbox().boot(firstBE, ['bash', '-c', script]);
    expect(result.stdout).toContain('rc-first=0');
    const pending = JSON.parse(/^\{[^}]*\}$/m.exec(result.stdout)?.[0] ?? 'null') as { name: string; uuid: string; subvolume: string };
    expect(pending.subvolume).toBe(`@bootenv/${pending.name}`);

    // dpkg failed and its record was refused: the hooks never learnt of it.
    expect(result.stdout).toMatch(/Setting up bootenv-t-fails \(1\.0\)/);
    expect(result.stdout).toMatch(/refusals=[1-9]/);
    expect(result.stdout).toContain('rc-fail=100');
    expect(result.stdout).not.toMatch(/^txn$/m);
    expect(result.stdout.split('mounts:')[1]?.split('rc-activate=')[0]?.split('\n').filter((line) => line.startsWith('/run/bootenv/'))).toEqual([
      '/run/bootenv/pending/be/root',
      '/run/bootenv/pending/dpkg',
      '/run/bootenv/pending/apt',
    ]);

    // Nothing was activated: the one new BE is the good run's, the default and the menu name it.
    expect(await sandbox().bootEnvironments()).toEqual([...before, pending.subvolume]);
    const state = await readState();
    expect(state.defaultUuid).toBe(pending.uuid);
    expect(Object.values(state.environments).filter((record) => record.transaction?.open)).toEqual([]);
    expect(await sandbox().readBootMenu()).toContain(`set default='bootenv-${pending.name}'`);
    expect(await sandbox().packages(pending.subvolume)).toEqual({ 'bootenv-t-marker': 'ii 1.0' });
    expect(await sandbox().packages(firstBE)).toEqual({});
    // apt was told: Post-Invoke failed with the reason.
    expect(result.stdout).toMatch(/beadm: dpkg left packages unfinished in boot environment apt-\S+, so it was discarded and nothing else changed/);

    // The failed activate (COMMAND_FAILED) left the pending BE pending and mounted, and apt pointed at it.
    expect(result.stdout).toContain(`rc-activate=${EXIT_CODES.COMMAND_FAILED}`);
    expect(result.stderr).toMatch(/do not pass grub-script-check: .*injected failure/s);
    const after = result.stdout.split('after-activate:')[1] ?? '';
    expect(JSON.parse(/^\{[^}]*\}$/m.exec(after)?.[0] ?? 'null')).toEqual(pending);
    expect(after).toContain(`/run/bootenv/pending/be/root /${pending.subvolume}`);
    expect(after).toContain('Dir::State::status "/run/bootenv/pending/dpkg/status";');
    expect((await readState()).defaultUuid).toBe(pending.uuid);
    expect(await sandbox().hostMounts()).toEqual([]);
  });

  it('the cleanup of an interrupted transaction stays done, and is reported, when the command that ran it fails', async () => {
    const environments = await sandbox().bootEnvironments();
    // set -m: apt gets a process group of its own, so killing it (apt, dpkg, the maintainer
    // script) cannot reach the test runner; the boot then ends and its mounts and /run vanish.
    const script = `${APT_ENV} set -m
      apt-get install -y bootenv-t-slow-unpack > /dev/null 2>&1 &
      apt=$!
      ${WAIT_UNTIL}
      wait_until test -e /tmp/bootenv-t-slow-unpack.started
      ls /run/bootenv/txn >/dev/null && echo "in-transaction"
      kill -KILL -- -$apt`;
    const crashed = await sandbox().boot(firstBE, ['bash', '-c', script]);
    expect(crashed.stdout).toContain('in-transaction');
    const halfMade = (await sandbox().bootEnvironments()).filter((subvolume) => !environments.includes(subvolume));
    expect(halfMade).toHaveLength(1);
    expect(Object.values((await readState()).environments).filter((record) => record.transaction?.open)).toHaveLength(1);

    // The next command fails (the running BE cannot be destroyed), after the cleanup ran.
    const refused = await sandbox().beadm(firstBE, ['destroy', 'debian-12']);
    expect(refused.exitCode).toBe(EXIT_CODES.BUSY);
    expect(refused.stderr).toContain(`beadm: note: deleted ${halfMade[0]}, left half-made by an interrupted apt run`);
    expect(refused.stderr).toMatch(/debian-12 is the running BE/);
    expect(await sandbox().bootEnvironments()).toEqual(environments);
    expect(Object.values((await readState()).environments).filter((record) => record.transaction?.open)).toEqual([]);
    expect(await sandbox().hostMounts()).toEqual([]);
  });
});
