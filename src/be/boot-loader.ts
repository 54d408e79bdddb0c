/**
 * The machine's boot loader while an apt run installs into a new BE (see
 * ../grub/install.ts for the design). Owns two steps of the transaction:
 *   - when the chroot is made: GRUB's home (the installed root's /boot/grub)
 *     bound at its /boot/grub, the ESP at its /boot/efi (bound from the
 *     running system, or mounted from the BE's fstab line), efivarfs for
 *     efibootmgr, and the wrappers that record what grub-install and
 *     update-grub were asked while dpkg runs;
 *   - at commit, once dpkg has succeeded: the free space of the ESP and of
 *     GRUB's home checked against what the recorded grub-install runs write,
 *     then those runs, chrooted in the new BE. A refusal or a failure throws,
 *     and the transaction is aborted like any failed finalize.
 * The menu itself is never left to update-grub in the chroot: bootenv writes
 * it from the installed root at commit, as at every change of the BEs.
 */
import { isMountPoint, mountAt, readMountTable } from '../sys/mountinfo.js';
import { BootenvError } from '../errors.js';
import { GRUB_HOME } from '../grub/config.js';
import {
  DEFERRED_BIN,
  DEFERRED_REQUESTS,
  GRUB_INSTALL_REQUEST,
  UPDATE_GRUB_REQUEST,
  deferredWrappers,
  espBytesNeeded,
  espWrites,
  homeBytesNeeded,
  orderedRequests,
  parseGrubInstallRequest,
  planGrubInstall,
  type InstallPlan,
} from '../grub/install.js';
import { run } from '../sys/exec.js';
import { fileSize, filesystemSpace, listDirectory, makeDirectory, pathExists, readText, readTextIfExists, treeBytes, writeFileAtomic } from '../sys/fs.js';
import { bindMount, mountFilesystem } from '../sys/mount.js';
import type { Scope } from '../sys/scope.js';
import { fstabEntry } from './fstab.js';
import { installedRootPath, type Session } from './session.js';
import type { BootenvState } from './state.js';

export const ESP_MOUNTPOINT = '/boot/efi';
const EFIVARS = '/sys/firmware/efi/efivars';

/**
 * Mounts GRUB's home, the ESP and efivarfs into the chroot at `root` (kept
 * mounts, undone if `scope` aborts) and writes the deferring wrappers into its
 * /run. Returns the mount points made, in order. Throws COMMAND_FAILED when
 * the ESP named in the BE's fstab cannot be mounted: dpkg then does not run.
 */
export async function prepareBootLoader(scope: Scope, session: Session, state: BootenvState, root: string): Promise<string[]> {
  const made: string[] = [];
  const home = `${installedRootPath(session, state)}${GRUB_HOME}`;
  if (await pathExists(home)) {
    await makeDirectory(`${root}${GRUB_HOME}`);
    await bindMount(scope, home, `${root}${GRUB_HOME}`, 'kept');
    made.push(`${root}${GRUB_HOME}`);
  }
  const mounts = await readMountTable();
  const esp = `${root}${ESP_MOUNTPOINT}`;
  if (mountAt(mounts, ESP_MOUNTPOINT) !== undefined) {
    await makeDirectory(esp);
    await bindMount(scope, ESP_MOUNTPOINT, esp, 'kept');
    made.push(esp);
  } else {
    const entry = fstabEntry((await readTextIfExists(`${root}/etc/fstab`)) ?? '', ESP_MOUNTPOINT);
    if (entry !== undefined && !entry.options.split(',').includes('noauto')) {
      await makeDirectory(esp);
      try {
        await mountFilesystem(scope, entry.spec, esp, entry.type, entry.options, 'kept');
      } catch (error) {
        throw new BootenvError('COMMAND_FAILED', `the ESP (${entry.spec}, ${ESP_MOUNTPOINT} in /etc/fstab) cannot be mounted for the apt run, so dpkg does not run: ${(error as Error).message}`, {
          cause: error,
          hint: `mount ${ESP_MOUNTPOINT} and run apt again`,
        });
      }
      made.push(esp);
    }
  }
  if (mountAt(mounts, EFIVARS) !== undefined && (await pathExists(`${root}${EFIVARS}`))) {
    await bindMount(scope, EFIVARS, `${root}${EFIVARS}`, 'kept');
    made.push(`${root}${EFIVARS}`);
  }
  await makeDirectory(`${root}${DEFERRED_BIN}`);
  for (const [program, text] of Object.entries(deferredWrappers())) await writeFileAtomic(`${root}${DEFERRED_BIN}/${program}`, text, 0o755);
  return made;
}

export interface BootLoaderReport {
  /** The grub-install runs made at commit, by their arguments. */
  grubInstall: string[][];
  /** A maintainer script asked for update-grub (bootenv wrote the menu instead). */
  menuRequested: boolean;
}

/** What the wrappers in the chroot at `root` recorded. */
async function recordedRequests(root: string): Promise<{ grubInstall: string[][]; menuRequested: boolean }> {
  const directory = `${root}${DEFERRED_REQUESTS}`;
  const names = await listDirectory(directory);
  const requests: Array<{ name: string; args: string[] }> = [];
  for (const name of names.filter((entry) => entry.endsWith(GRUB_INSTALL_REQUEST))) {
    requests.push({ name, args: parseGrubInstallRequest(await readText(`${directory}/${name}`)) });
  }
  return { grubInstall: orderedRequests(requests), menuRequested: names.includes(UPDATE_GRUB_REQUEST) };
}

/** grub-install's plan for `args` in the BE at `root`. */
async function planIn(root: string, args: readonly string[]): Promise<InstallPlan> {
  const distributor = (await run(['chroot', root, 'sh', '-c', '[ -r /etc/default/grub ] && . /etc/default/grub; printf %s "${GRUB_DISTRIBUTOR:-}"'], { anyExitCode: true })).stdout.trim();
  return planGrubInstall(args, {
    firmwareEfi: await pathExists('/sys/firmware/efi'),
    distributor: distributor === '' ? undefined : distributor,
    signedImageAvailable: await pathExists(`${root}/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed`),
  });
}

function mebibytes(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Throws NO_SPACE unless GRUB's home and the ESP have room for every plan; writes nothing. */
async function requireSpace(root: string, plans: readonly InstallPlan[], beName: string): Promise<void> {
  if (plans.length === 0) return;
  let homeNeeded = 0;
  for (const target of new Set(plans.map((plan) => plan.target))) {
    homeNeeded += homeBytesNeeded(await treeBytes(`${root}/usr/lib/grub/${target}`), await fileSize(`${root}/usr/share/grub/unicode.pf2`));
  }
  const homeFree = (await filesystemSpace(`${root}${GRUB_HOME}`)).freeBytes;
  if (homeNeeded > homeFree) {
    throw new BootenvError('NO_SPACE', `GRUB's home (${GRUB_HOME} of the installed root) has ${mebibytes(homeFree)} free, and the boot loader that boot environment ${beName} installs needs ${mebibytes(homeNeeded)}: nothing was written, and the BE was discarded`, {
      hint: 'free space on the btrfs filesystem (beadm destroy an old BE) and run apt again',
    });
  }
  const efiPlans = plans.filter((plan) => plan.efi);
  if (efiPlans.length === 0) return;
  const esp = `${root}${ESP_MOUNTPOINT}`;
  if (!(await isMountPoint(esp))) {
    throw new BootenvError('UNSUPPORTED', `a package installs GRUB for EFI, but no ESP is mounted at ${ESP_MOUNTPOINT} and /etc/fstab names none: nothing was written, and boot environment ${beName} was discarded`, {
      hint: `mount the EFI system partition at ${ESP_MOUNTPOINT} (and list it in /etc/fstab) and run apt again`,
    });
  }
  const files = [];
  for (const write of efiPlans.flatMap(espWrites)) {
    const source = write.source === undefined ? undefined : `${root}${write.source}`;
    files.push({
      path: write.path,
      newBytes: source !== undefined && (await pathExists(source)) ? await fileSize(source) : undefined,
      currentBytes: await fileSize(`${esp}/${write.path}`),
    });
  }
  const espNeeded = espBytesNeeded(files);
  const espFree = (await filesystemSpace(esp)).freeBytes;
  if (espNeeded > espFree) {
    throw new BootenvError('NO_SPACE', `the ESP (${ESP_MOUNTPOINT}) has ${mebibytes(espFree)} free, and writing ${files.map((file) => file.path).join(', ')} needs ${mebibytes(espNeeded)}: nothing was written, and boot environment ${beName} was discarded`, {
      hint: `remove what is not needed from ${ESP_MOUNTPOINT} (old boot loaders under EFI/) and run apt again`,
    });
  }
}

/**
 * At commit: checks space, then runs the recorded grub-install calls
 * chrooted in the BE at `root` (with the real grub-install: the wrappers are
 * only on dpkg's PATH). Throws NO_SPACE or UNSUPPORTED before writing
 * anything, COMMAND_FAILED when a grub-install fails.
 */
export async function runDeferredBootLoader(root: string, beName: string, notify: (sentence: string) => void): Promise<BootLoaderReport> {
  const requests = await recordedRequests(root);
  const plans: InstallPlan[] = [];
  for (const args of requests.grubInstall) plans.push(await planIn(root, args));
  await requireSpace(root, plans, beName);
  for (const args of requests.grubInstall) {
    const result = await run(['chroot', root, 'grub-install', ...args], { anyExitCode: true });
    const output = `${result.stdout}${result.stderr}`.trim();
    if (result.exitCode !== 0) {
      throw new BootenvError('COMMAND_FAILED', `grub-install ${args.join(' ')}, which a package asked for, failed in boot environment ${beName} (exit ${result.exitCode}), so the BE was discarded: ${output}`, {
        hint: `the boot loader may be half-written: fix the cause and run grub-install ${args.join(' ')} on the running system before rebooting`,
      });
    }
    notify(`ran grub-install ${args.join(' ')} for boot environment ${beName}, into GRUB's home in the installed root${plans.some((plan) => plan.efi) ? ` and the ESP at ${ESP_MOUNTPOINT}` : ''}${output === '' ? '' : `: ${output.split('\n').at(-1)}`}`);
  }
  return requests;
}
