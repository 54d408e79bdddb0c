// A mount table longer than a page. Debian 12's nodejs 18.20 returns only the first 4 KiB of
// /proc/self/mountinfo from fs.promises.readFile, so on a system with many mounts (a UEFI machine
// during an apt run, a host with containers or snaps) beadm lost the transaction's own mounts from
// its table at finalize. Here the booted BE has 120 tmpfs mounts before bootenv mounts anything, and
// beadm runs on the distribution's Node 18. Checked with findmnt, btrfs subvolume list and
// dpkg-query --admindir from the host.
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { installRepositoryInRoot } from '../harness/repo.js';
import { useSandbox } from '../harness/use-sandbox.js';

const FIRST = '@bootenv/debian-12';
const sandbox = useSandbox(() => inject('bookwormBase'), 'ubuntu');
/** Extra shell before the chroot: 120 small mounts in the booted system (in the boot's own mount namespace). */
const MANY_MOUNTS = 'for i in $(seq 1 120); do mkdir -p "$NEWROOT/mnt/many/$i"; mount -t tmpfs -o size=64k many "$NEWROOT/mnt/many/$i"; done';

beforeAll(async () => {
  await sandbox().withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
  expect((await sandbox().beadm('@', ['init'])).exitCode).toBe(0);
  expect((await sandbox().boot(FIRST, ['apt-get', 'update', '-qq'])).exitCode).toBe(0);
});

describe('a mount table longer than a page (Node 18 readFile kept only its first 4 KiB)', () => {
  it('a diverted apt run commits and leaves no mount behind; beadm mount and unmount find their mount among 120 others', async () => {
    const script = `export DEBIAN_FRONTEND=noninteractive
      echo "mountinfo bytes: $(wc -c < /proc/self/mountinfo)"
      node --version
      apt-get install -y bootenv-t-marker 2>&1; echo "rc-apt=$?"
      echo "after-apt:"; findmnt -rn -o TARGET | grep '^/run/bootenv' ; echo "end"
      mkdir -p /mnt/be; beadm create spare; echo "rc-create=$?"
      beadm mount spare /mnt/be; echo "rc-mount=$?"
      echo "list:"; beadm list --json; echo "end-list"
      beadm unmount spare; echo "rc-unmount=$?"
      echo "after-unmount:"; findmnt -rn -o TARGET /mnt/be; echo "end"`;
    const before = await sandbox().bootEnvironments();
    const result = await sandbox().boot(FIRST, ['bash', '-c', script], { setup: MANY_MOUNTS });
    const output = result.stdout;
    expect(Number(/^mountinfo bytes: (\d+)$/m.exec(output)?.[1]), output).toBeGreaterThan(8192);
    expect(output).toMatch(/^v18\./m);
    expect(output).toContain('rc-apt=0');
    // Finalize found and released every mount of the transaction (before the fix it left
    // /run/bootenv/txn/root mounted and apt exited 100): what stays is the pending BE's root and
    // the dpkg and apt state this boot's later apt runs use, as after any run.
    const afterApt = output.split('after-apt:\n')[1]?.split('end\n')[0]?.split('\n').filter(Boolean);
    expect(afterApt, output).toEqual(['/run/bootenv/pending/be/root', '/run/bootenv/pending/dpkg', '/run/bootenv/pending/apt']);
    const made = (await sandbox().bootEnvironments()).filter((be) => !before.includes(be) && be !== '@bootenv/spare');
    expect(made).toHaveLength(1);
    expect((await sandbox().packages(made[0] as string))['bootenv-t-marker']).toBe('ii 1.0');
    expect(await sandbox().packages(FIRST)).not.toHaveProperty('bootenv-t-marker');

    expect(output).toContain('rc-create=0');
    expect(output).toContain('rc-mount=0');
    const list = JSON.parse(output.split('list:\n')[1]?.split('end-list')[0] ?? 'null') as Array<{ name: string; mountpoint: string | null }>;
    expect(list.find((be) => be.name === 'spare')?.mountpoint, output).toBe('/mnt/be');
    expect(output).toContain('rc-unmount=0');
    expect(output.split('after-unmount:\n')[1]?.split('end')[0]).toBe('');
  });
});
