// Issue #15: a boot-loader package upgraded in a diverted apt run. Its postinst's grub-install and
// update-grub (fixture bootenv-t-grub, as grub-pc's postinst on an upgrade: the real grub-install of
// Debian 12's grub-pc-bin, without writing a boot sector since the sandbox's disk is a loop device)
// run at commit, once dpkg succeeded: into GRUB's home in the installed root, with a core.img whose
// prefix names that home and never the BE; the menu written by bootenv. An apt run that fails writes
// no boot loader. (One that would not fit on the ESP is refused in uefi.test.ts: this host's kernel
// mounts no vfat.)
// Checked from the host with stat, strings, dpkg-query and btrfs subvolume list. (The real-boot
// tests, boot.test.ts and uefi.test.ts, do the same with Debian's own GRUB packages on BIOS and UEFI.)
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { readBootMenu } from '../harness/grub-menu.js';
import { corePrefixes } from '../harness/grub-core.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { isBootEnvironmentPath } from '../harness/sandbox.js';
import { useSandbox } from '../harness/use-sandbox.js';

const APT = 'export DEBIAN_FRONTEND=noninteractive;';
const CORE = 'boot/grub/i386-pc/core.img';
const sandbox = useSandbox(() => inject('bookwormBase'), 'ubuntu');

describe('GRUB upgraded inside a boot environment', () => {
  let first: string;

  beforeAll(async () => {
    await sandbox().withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
    const init = await sandbox().boot('@', ['beadm', 'init', '--json']);
    expect(init.exitCode, init.stderr).toBe(0);
    first = (JSON.parse(init.stdout) as { subvolume: string }).subvolume;
    const update = await sandbox().boot(first, ['sh', '-c', `${APT} apt-get update -qq`]);
    expect(update.exitCode, update.stderr).toBe(0);
  });

  async function apt(command: string): Promise<{ rc: number; output: string }> {
    const result = await sandbox().boot(first, ['sh', '-c', `${APT} ${command} 2>&1; echo "rc=$?"`]);
    const rc = Number(/^rc=(\d+)$/m.exec(result.stdout)?.[1]);
    return { rc, output: result.stdout };
  }

  async function environments(): Promise<string[]> {
    return sandbox().withTopLevel(async (top) =>
      (await execa('btrfs', ['subvolume', 'list', '-o', path.join(top, '@bootenv')])).stdout
        .split('\n')
        .map((line) => line.replace(/^.* path /, ''))
        .filter(isBootEnvironmentPath),
    );
  }

  /** core.img in GRUB's home (the installed root's /boot/grub): its hash and mtime, or undefined. */
  async function homeCore(): Promise<{ sha: string; mtimeMs: number } | undefined> {
    return sandbox().withTopLevel(async (top) => {
      const file = path.join(top, '@', CORE);
      if (!existsSync(file)) return undefined;
      return { sha: createHash('sha256').update(readFileSync(file)).digest('hex'), mtimeMs: statSync(file).mtimeMs };
    });
  }

  it("runs the postinst's grub-install at commit, into GRUB's home, with a prefix naming the installed root; bootenv writes the menu", async () => {
    expect(await homeCore()).toBeUndefined();
    const { rc, output } = await apt('apt-get install -y bootenv-t-grub');
    expect(rc, output).toBe(0);
    expect(output).toMatch(/bootenv: grub-install --target=i386-pc --grub-setup=\/bin\/true \S+ runs when the new boot environment is committed/);
    expect(output).toContain('bootenv: the GRUB menu is written by bootenv when the new boot environment is committed');
    const made = /apt's changes are in boot environment (\S+) \((@bootenv\/\S+)\)/.exec(output);
    expect(made, output).not.toBeNull();
    const [, name, subvolume] = made as RegExpExecArray;
    expect(output).toContain(`ran grub-install --target=i386-pc --grub-setup=/bin/true`);
    expect(output).toContain(`for boot environment ${name}, into GRUB's home in the installed root`);
    expect(output).toContain(`the GRUB menu that a package asked update-grub for was written by bootenv, from the installed root: it boots ${name} by default`);
    await sandbox().withTopLevel(async (top) => {
      // The home has the new core.img; its prefix (embedded in the image) names @/boot/grub, not the BE.
      const prefixes = await corePrefixes(readFileSync(path.join(top, '@', CORE)), statSync(path.join(top, subvolume as string, 'usr/lib/grub/i386-pc/lzma_decompress.img')).size);
      expect(prefixes.length, prefixes.join('\n')).toBeGreaterThan(0);
      for (const prefix of prefixes) expect(prefix).toMatch(/^(\([^)]*\))?\/@\/boot\/grub$/);
      // Nothing of it in the BE's own /boot/grub, which the chroot's bind of the home covered.
      expect(existsSync(path.join(top, subvolume as string, CORE))).toBe(false);
      expect(existsSync(path.join(top, subvolume as string, 'boot/grub/i386-pc/normal.mod'))).toBe(false);
      expect(existsSync(path.join(top, '@/boot/grub/i386-pc/normal.mod'))).toBe(true);
      const status = (admindir: string) =>
        execa('dpkg-query', [`--admindir=${path.join(top, admindir, 'var/lib/dpkg')}`, '-f', '${db:Status-Abbrev}', '-W', 'bootenv-t-grub'], { reject: false });
      expect((await status(subvolume as string)).stdout.trim()).toBe('ii');
      expect((await status(first)).stdout.trim()).not.toBe('ii');
      const menu = readBootMenu(path.join(top, '@'));
      expect(menu).toContain(`rootflags=subvol=${subvolume}\n`);
      expect(menu).toContain(`rootflags=subvol=${first}\n`);
    });
  });

  it('an apt run whose dpkg fails writes no boot loader', async () => {
    const before = await homeCore();
    expect(before).toBeDefined();
    const environmentsBefore = await environments();
    const { rc, output } = await apt('apt-get install -y --reinstall bootenv-t-grub bootenv-t-fails');
    expect(rc, output).toBe(100);
    expect(output).toMatch(/bootenv: dpkg failed .*was discarded/);
    expect(output).not.toContain('ran grub-install');
    expect(await homeCore()).toEqual(before);
    expect(await environments()).toEqual(environmentsBefore);
  });
});
