/**
 * Vitest global setup for the integration project: checks that this machine
 * can run the real-parts tests (root, btrfs, loop devices, debootstrap) and
 * builds the cached Debian base once per run. A missing prerequisite fails the
 * run loudly; set BOOTENV_SKIP_INTEGRATION=1 to run unit tests only.
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import type { TestProject } from 'vitest/node';
import path from 'node:path';
import { execa } from 'execa';
import { BOOKWORM, BOOKWORM_FRONTENDS, REPOSITORY, TRIXIE, ensureBase } from './base.js';

const TOOLS = ['debootstrap', 'mkfs.btrfs', 'btrfs', 'losetup', 'unshare', 'chroot', 'zstd', 'blkid', 'findmnt', 'grub-script-check', 'dpkg-buildpackage', 'dh', 'lintian', 'getfattr', 'setfattr', 'getfacl', 'setfacl', 'setcap', 'getcap', 'filefrag'];

function missingPrerequisites(): string[] {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root');
  if (!readFileSync('/proc/filesystems', 'utf8').includes('btrfs')) missing.push('btrfs in the kernel');
  for (const tool of TOOLS) {
    const found = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin')
      .split(':')
      .concat(['/usr/sbin', '/sbin'])
      .some((dir) => {
        try {
          accessSync(`${dir}/${tool}`, constants.X_OK);
          return true;
        } catch {
          return false;
        }
      });
    if (!found) missing.push(tool);
  }
  return missing;
}

declare module 'vitest' {
  export interface ProvidedContext {
    bookwormBase: string;
    bookwormFrontendsBase: string;
    trixieBase: string;
    debPackage: string;
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const missing = missingPrerequisites();
  if (missing.length > 0) {
    throw new Error(`integration tests need: ${missing.join(', ')} (see .ci/run); BOOTENV_SKIP_INTEGRATION=1 skips them`);
  }
  const started = Date.now();
  // Side by side: the two debootstraps mostly wait on the network, the .deb build on the CPU.
  const [bookworm, frontends, trixie, built] = await Promise.all([
    ensureBase(BOOKWORM),
    ensureBase(BOOKWORM_FRONTENDS),
    ensureBase(TRIXIE),
    execa('bash', [path.join(REPOSITORY, 'scripts/build-deb.sh')]),
  ]);
  project.provide('bookwormBase', bookworm);
  project.provide('bookwormFrontendsBase', frontends);
  project.provide('trixieBase', trixie);
  project.provide('debPackage', path.join(REPOSITORY, built.stdout.trim().split('\n').at(-1) as string));
  console.log(`Debian 12 (plain and with the other front ends) and 13 bases and the .deb ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
