// bootenv-one-shot, what the initramfs runs once the root is mounted read-only: on a real btrfs, with
// a BE mounted read-only as the initramfs mounts it (in a private mount namespace, so nothing shows
// outside this test), it mounts the installed root read-write beside it and turns GRUB's next_entry
// into bootenv_tried, read back with the real grub-editenv; it leaves grubenv alone where there is
// nothing to take or the root is not a BE. The real boot of a failing trial BE is in boot.test.ts.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { withScratchBtrfs } from '../harness/btrfs-image.js';

const HELPER = path.resolve('dist/bootenv-one-shot');

interface Layout {
  grubenv: string;
  /** The helper's work directory (it makes and removes it). */
  work: string;
  /** Runs the helper as the initramfs would: `subvolume` mounted read-only at a private root. */
  take(subvolume: string): Promise<{ stderr: string; exitCode: number }>;
}

async function withLayout(body: (layout: Layout) => Promise<void>): Promise<void> {
  await withScratchBtrfs(1, async ({ top, loop }) => {
    const uuid = (await execa('blkid', ['-s', 'UUID', '-o', 'value', loop])).stdout.trim();
    await execa('btrfs', ['subvolume', 'create', path.join(top, '@')]);
    mkdirSync(path.join(top, '@/boot/grub'), { recursive: true });
    mkdirSync(path.join(top, '@/etc'));
    writeFileSync(path.join(top, '@/etc/fstab'), `UUID=${uuid} / btrfs defaults,subvol=@ 0 0\n`);
    const grubenv = path.join(top, '@/boot/grub/grubenv');
    await execa('grub-editenv', [grubenv, 'create']);
    await execa('btrfs', ['subvolume', 'create', path.join(top, '@bootenv')]);
    for (const name of ['trial', 'other']) {
      await execa('btrfs', ['subvolume', 'create', path.join(top, '@bootenv', name)]);
      mkdirSync(path.join(top, '@bootenv', name, 'etc'));
      writeFileSync(
        path.join(top, '@bootenv', name, 'etc/fstab'),
        [
          '# written by beadm',
          `UUID=${uuid} / btrfs defaults,subvol=@bootenv/${name} 0 0`,
          `UUID=${uuid} /.rootbe btrfs defaults,subvol=@ 0 0`,
          `/.rootbe/boot/grub /boot/grub none bind 0 0`,
          '',
        ].join('\n'),
      );
    }
    const scratch = path.dirname(top);
    const work = path.join(scratch, 'one-shot');
    await body({
      grubenv,
      work,
      async take(subvolume) {
        const root = path.join(scratch, 'root');
        mkdirSync(root, { recursive: true });
        const script = `mount -o ro,subvol="$3" "$1" "$2" && exec "$4" take "$2" "$5"`;
        const result = await execa('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', loop, root, subvolume, HELPER, work], { reject: false });
        return { stderr: result.stderr, exitCode: result.exitCode ?? -1 };
      },
    });
  });
}

async function variables(grubenv: string): Promise<string> {
  return (await execa('grub-editenv', [grubenv, 'list'])).stdout;
}

describe('bootenv-one-shot take (the initramfs side of beadm activate -t)', () => {
  it('turns next_entry into bootenv_tried from a read-only BE root, keeping the other variables and the block size', async () => {
    await withLayout(async ({ grubenv, work, take }) => {
      await execa('grub-editenv', [grubenv, 'set', 'saved_entry=bootenv-other', 'next_entry=bootenv-trial', 'bootenv_tried=bootenv-stale']);
      const result = await take('@bootenv/trial');
      expect(result.exitCode).toBe(0);
      expect(result.stderr).toContain('took the one-shot boot entry bootenv-trial');
      expect((await variables(grubenv)).split('\n').sort()).toEqual(['bootenv_tried=bootenv-trial', 'saved_entry=bootenv-other']);
      expect(readFileSync(grubenv).length).toBe(1024);
      // Its work directory is gone (the mounts went with the namespace).
      expect(existsSync(work)).toBe(false);

      // Nothing more to take: grubenv stays byte for byte.
      const before = readFileSync(grubenv);
      const again = await take('@bootenv/other');
      expect(again).toEqual({ stderr: '', exitCode: 0 });
      expect(readFileSync(grubenv)).toEqual(before);
    });
  });

  it('leaves grubenv alone when the root is not a BE (no /.rootbe in its fstab)', async () => {
    await withLayout(async ({ grubenv, take }) => {
      await execa('grub-editenv', [grubenv, 'set', 'next_entry=bootenv-trial']);
      const before = readFileSync(grubenv);
      expect(await take('@')).toEqual({ stderr: '', exitCode: 0 });
      expect(readFileSync(grubenv)).toEqual(before);
    });
  });

  it('says why and still exits 0 when grubenv is not a GRUB environment block', async () => {
    await withLayout(async ({ grubenv, take }) => {
      writeFileSync(grubenv, 'not an environment block\n');
      const result = await take('@bootenv/trial');
      expect(result.exitCode).toBe(0);
      expect(result.stderr).toMatch(/cannot take a one-shot activation: grubenv: Invalid argument/);
      expect(readFileSync(grubenv, 'utf8')).toBe('not an environment block\n');
    });
  });
});
