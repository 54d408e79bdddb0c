// Ansible drives bootenv unchanged (issue 18): Debian 12's own `ansible` package (community.general
// 6.x, whose beadm module parses `beadm list -H` as illumos prints it and calls create -d, activate,
// mount NAME DIR, unmount, destroy -F) runs playbooks with the local connection inside a booted
// sandbox. The BEs reach present, activated, mounted, unmounted and absent, and a second run of each
// playbook reports no change. What happened is read with the real tools: btrfs subvolume list from the
// host, GRUB's grub.cfg for the default entry, findmnt in the booted system.
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { useSandbox } from '../harness/use-sandbox.js';

const FIRST = '@bootenv/debian-12';
const SOURCES = 'deb http://deb.debian.org/debian bookworm main\n';
// ansible-core refuses a locale that is not UTF-8; its temporary files stay out of the BE.
const ANSIBLE_ENV = 'export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 ANSIBLE_LOCAL_TEMP=/tmp/ansible-local ANSIBLE_REMOTE_TEMP=/tmp/ansible-remote ANSIBLE_NOCOLOR=1\n';

const PRESENT = `- hosts: localhost
  gather_facts: false
  tasks:
    - name: a BE made by Ansible
      community.general.beadm:
        name: ans1
        description: made by ansible
        state: present
    - name: it boots next
      community.general.beadm:
        name: ans1
        state: activated
    - name: mounted for a look
      community.general.beadm:
        name: ans1
        mountpoint: /mnt/ans1
        state: mounted
    - name: a second BE
      community.general.beadm:
        name: ans2
        state: present
`;

const ABSENT = `- hosts: localhost
  gather_facts: false
  tasks:
    - name: unmounted again
      community.general.beadm:
        name: ans1
        state: unmounted
    - name: the second BE goes
      community.general.beadm:
        name: ans2
        state: absent
`;

const sandbox = useSandbox(() => inject('bookwormFrontendsBase'), 'ubuntu');

/** The `changed=N` of a playbook run's recap (for localhost), and its exit status, as `changed=N rc=M`. */
function recap(output: string, label: string): string {
  const line = new RegExp(`^${label}: rc=(\\d+)$`, 'm').exec(output);
  const changed = output.split(`== ${label}`)[1]?.match(/localhost\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)/);
  return `changed=${changed?.[1]} failed=${changed?.[2]} rc=${line?.[1]}`;
}

function playbook(file: string, label: string): string {
  return `echo "== ${label}"; ansible-playbook -i localhost, -c local ${file}; echo "${label}: rc=$?"`;
}

beforeAll(async () => {
  const box = sandbox();
  await box.withTopLevel(async (top) => {
    const { writeFile } = await import('node:fs/promises');
    await writeFile(path.join(top, '@/etc/apt/sources.list'), SOURCES);
    await writeFile(path.join(top, '@/root/present.yml'), PRESENT);
    await writeFile(path.join(top, '@/root/absent.yml'), ABSENT);
  });
  const install = await box.boot('@', ['bash', '-c', `${ANSIBLE_ENV}BOOTENV=off apt-get update -qq && BOOTENV=off apt-get install -y -qq --no-install-recommends ansible >/dev/null && ansible --version | head -1`]);
  expect(install.exitCode, install.stderr).toBe(0);
  expect((await box.beadm('@', ['init'])).exitCode).toBe(0);
}, 900_000);

describe('Ansible community.general.beadm', () => {
  it('brings BEs to present, activated, mounted, unmounted and absent; each playbook run again changes nothing', async () => {
    const box = sandbox();
    const first = await box.boot(FIRST, [
      'bash',
      '-c',
      [ANSIBLE_ENV, 'cd /root', playbook('present.yml', 'present'), playbook('present.yml', 'present-again'), 'echo "mounted: $(findmnt -rn -o FSROOT /mnt/ans1)"', 'beadm list -H'].join('\n'),
    ]);
    expect(first.exitCode, first.stderr).toBe(0);
    expect(recap(first.stdout, 'present'), first.stdout).toBe('changed=4 failed=0 rc=0');
    expect(recap(first.stdout, 'present-again'), first.stdout).toBe('changed=0 failed=0 rc=0');
    expect(first.stdout).toContain('mounted: /@bootenv/ans1\n');
    const subvolumes = await box.subvolumes();
    expect(subvolumes).toEqual(expect.arrayContaining(['@bootenv/ans1', '@bootenv/ans2']));
    expect(await box.readBootMenu()).toContain("set default='bootenv-ans1'");
    const listed = await box.beadm(FIRST, ['list', '--json']);
    expect((JSON.parse(listed.stdout) as Array<{ name: string; description: string }>).find((be) => be.name === 'ans1')?.description).toBe('made by ansible');

    // A new boot of the same BE: what the first boot mounted is gone with it, so mount it again first.
    const second = await box.boot(FIRST, [
      'bash',
      '-c',
      [ANSIBLE_ENV, 'cd /root', 'beadm mount ans1 /mnt/ans1 >/dev/null', playbook('absent.yml', 'absent'), playbook('absent.yml', 'absent-again'), 'echo "mounted: $(findmnt -rn -o FSROOT /mnt/ans1)"'].join('\n'),
    ]);
    expect(second.exitCode, second.stderr).toBe(0);
    expect(recap(second.stdout, 'absent'), second.stdout).toBe('changed=2 failed=0 rc=0');
    expect(recap(second.stdout, 'absent-again'), second.stdout).toBe('changed=0 failed=0 rc=0');
    expect(second.stdout).toMatch(/^mounted: $/m);
    const after = await box.subvolumes();
    expect(after).toContain('@bootenv/ans1');
    expect(after).not.toContain('@bootenv/ans2');
  });
});
