/**
 * Scratch btrfs filesystems without a Debian root, for tests and benchmarks
 * of file-level behaviour (extent sharing): a sparse image file on a loop
 * device under /var/tmp, its top level mounted. Everything made here (mount,
 * loop device, directory) is undone however the body ends, newest first.
 * Needs root, mkfs.btrfs and losetup.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';

export interface ScratchBtrfs {
  /** The mounted top level. */
  top: string;
  /** The loop device. */
  loop: string;
  /** The image file. */
  image: string;
}

/** Makes a `sizeGiB` btrfs on a loop device, runs `body` with its top level mounted, and removes it all. */
export async function withScratchBtrfs<T>(sizeGiB: number, body: (scratch: ScratchBtrfs) => Promise<T>): Promise<T> {
  const directory = mkdtempSync('/var/tmp/bootenv-scratch.');
  const image = path.join(directory, 'disk.img');
  const top = path.join(directory, 'top');
  let loop: string | undefined;
  let mounted = false;
  try {
    await execa('truncate', ['-s', `${sizeGiB}G`, image]);
    loop = (await execa('losetup', ['--find', '--show', image])).stdout.trim();
    await execa('mkfs.btrfs', ['-q', loop]);
    mkdirSync(top);
    await execa('mount', ['-t', 'btrfs', loop, top]);
    mounted = true;
    return await body({ top, loop, image });
  } finally {
    if (mounted) await execa('umount', [top]);
    if (loop !== undefined) await execa('losetup', ['-d', loop]);
    rmSync(directory, { recursive: true, force: true });
  }
}
