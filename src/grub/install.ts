/**
 * The boot loader inside an apt transaction: what a boot-loader package's
 * maintainer scripts asked of grub-install and update-grub while dpkg ran in
 * a BE being made, and what running those requests at commit will write.
 *
 * The boot loader is the machine's, not a BE's: one core image (the BIOS boot
 * partition's core.img, or EFI/<id>/grubx64.efi behind shim on the ESP) whose
 * prefix names GRUB's home, the installed root's /boot/grub, where its modules
 * and bootenv's menu live. A grub-install run chrooted in a BE writes there
 * only because bootenv binds the home and the ESP into the chroot; it runs
 * once dpkg has succeeded, so a discarded apt run leaves the boot loader as it
 * was. The wrapper scripts that stand in for the two programs while dpkg runs
 * are here (written into the chroot's /run, first on dpkg's PATH), and the
 * pure planning of a request: its target, which ESP files it rewrites, and
 * how many bytes that needs. See README, "The boot loader".
 */

/** The directory of the chroot (its own tmpfs /run) that holds the wrappers and the recorded requests. */
export const DEFERRED_DIRECTORY = '/run/bootenv-boot-loader';
/** Put first on dpkg's PATH in the chroot by bootenv's dpkg wrapper (hooks/apt/apt-hook). */
export const DEFERRED_BIN = `${DEFERRED_DIRECTORY}/bin`;
export const DEFERRED_REQUESTS = `${DEFERRED_DIRECTORY}/requests`;
/** A request file's suffix: grub-install's arguments, NUL-terminated each. */
export const GRUB_INSTALL_REQUEST = '.grub-install';
export const UPDATE_GRUB_REQUEST = 'update-grub';
const MEBIBYTE = 1024 * 1024;
/** Room left over after the files a grub-install writes (its load.cfg, grub.cfg, grubenv, a FAT directory cluster). */
export const MARGIN_BYTES = MEBIBYTE;

/** The wrappers, by program name: each records the call and says so on stderr. */
export function deferredWrappers(): Record<string, string> {
  const header = [
    '#!/bin/sh',
    '# bootenv: dpkg is installing into a boot environment being made. The boot loader is',
    "# the machine's, not the BE's: bootenv runs what was asked here once dpkg has succeeded,",
    "# chrooted in the new BE with GRUB's home and the ESP mounted, after checking their",
    '# free space (see beadm(8), BOOT LOADER).',
    'set -e',
    `mkdir -p ${DEFERRED_REQUESTS}`,
  ];
  return {
    'grub-install': [
      ...header,
      `n=$(ls ${DEFERRED_REQUESTS} | wc -l)`,
      `request=${DEFERRED_REQUESTS}/$(printf '%04d' "$n")${GRUB_INSTALL_REQUEST}`,
      'for argument in "$@"; do printf \'%s\\0\' "$argument"; done >"$request.new"',
      'mv "$request.new" "$request"',
      'echo "bootenv: grub-install $* runs when the new boot environment is committed" >&2',
      '',
    ].join('\n'),
    'update-grub': [
      ...header,
      `: >${DEFERRED_REQUESTS}/${UPDATE_GRUB_REQUEST}`,
      'echo "bootenv: the GRUB menu is written by bootenv when the new boot environment is committed" >&2',
      '',
    ].join('\n'),
  };
}

/**
 * The wrappers for beadm run's clone, by program name: the boot loader is the
 * machine's, and nothing run in a throw-away clone changes it, so
 * grub-install and update-grub only say that they did nothing (and succeed,
 * so that a boot-loader package's maintainer script goes on).
 */
export function inertWrappers(): Record<string, string> {
  const wrapper = (program: string) =>
    [
      '#!/bin/sh',
      "# bootenv: this system is a clone made by beadm run. The boot loader is the machine's,",
      '# and nothing run in the clone changes it (see beadm(8), run).',
      `echo "bootenv: ${program} does nothing in beadm run's clone: the boot loader is the machine's" >&2`,
      'exit 0',
      '',
    ].join('\n');
  return { 'grub-install': wrapper('grub-install'), 'update-grub': wrapper('update-grub') };
}

/** A grub-install request file's arguments. Pure. */
export function parseGrubInstallRequest(content: string): string[] {
  if (content === '') return [];
  if (!content.endsWith('\0')) throw new Error('a grub-install request must end with a NUL');
  return content.slice(0, -1).split('\0');
}

/** The requests in the order they were made (file names from the request directory); identical argument lists once. */
export function orderedRequests(requests: ReadonlyArray<{ name: string; args: string[] }>): string[][] {
  const seen = new Set<string>();
  const ordered: string[][] = [];
  for (const request of [...requests].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const key = JSON.stringify(request.args);
    if (seen.has(key)) continue;
    seen.add(key);
    ordered.push(request.args);
  }
  return ordered;
}

/** The value of `--name=value` or `--name value` in grub-install's arguments. */
function option(args: readonly string[], name: string): string | undefined {
  for (let index = 0; index < args.length; index += 1) {
    const argument = args[index] as string;
    if (argument.startsWith(`${name}=`)) return argument.slice(name.length + 1);
    if (argument === name) return args[index + 1];
  }
  return undefined;
}

export interface InstallPlan {
  /** GRUB platform, e.g. i386-pc, x86_64-efi. */
  target: string;
  efi: boolean;
  /** EFI only: the directories under the ESP's EFI/ it writes (e.g. debian, BOOT). */
  espDirectories: string[];
  /** EFI only: whether the signed shim + GRUB images are installed (Secure Boot chain). */
  signed: boolean;
}

export interface InstallContext {
  /** The firmware the machine runs (/sys/firmware/efi exists): grub-install's default target. */
  firmwareEfi: boolean;
  /** GRUB_DISTRIBUTOR of the BE's /etc/default/grub, for the default bootloader id. */
  distributor: string | undefined;
  /** The BE holds grub-efi-amd64-signed's image (grub-install then installs shim and the signed GRUB). */
  signedImageAvailable: boolean;
}

/** What a grub-install with `args` writes, as Debian's grub-install decides it (GRUB 2.06/2.12). Pure. */
export function planGrubInstall(args: readonly string[], context: InstallContext): InstallPlan {
  const target = option(args, '--target') ?? (context.firmwareEfi ? 'x86_64-efi' : 'i386-pc');
  const efi = target.endsWith('-efi');
  if (!efi) return { target, efi, espDirectories: [], signed: false };
  const id = (option(args, '--bootloader-id') ?? context.distributor?.toLowerCase().split(/\s+/)[0] ?? 'grub') || 'grub';
  const removable = args.includes('--removable');
  const directories = removable ? ['BOOT'] : args.includes('--force-extra-removable') ? [id, 'BOOT'] : [id];
  const signed = context.signedImageAvailable && !args.includes('--no-uefi-secure-boot');
  return { target, efi, espDirectories: directories, signed };
}

/** One file grub-install writes on the ESP: its new size (when known beforehand) and the size it has now. */
export interface EspFile {
  path: string;
  newBytes: number | undefined;
  currentBytes: number;
}

/**
 * Bytes the ESP must have free: what the rewritten files grow by (FAT frees a
 * file's clusters when it is truncated and rewritten), an image of unknown
 * size counted at its current size again, plus the margin. Pure.
 */
export function espBytesNeeded(files: readonly EspFile[]): number {
  let bytes = MARGIN_BYTES;
  for (const file of files) bytes += file.newBytes === undefined ? file.currentBytes : Math.max(0, file.newBytes - file.currentBytes);
  return bytes;
}

/**
 * Bytes GRUB's home must have free: the platform's modules copied whole (on
 * btrfs the old copies may still be shared with snapshots, so overwriting
 * frees nothing), the font, and the margin. Pure.
 */
export function homeBytesNeeded(moduleBytes: number, fontBytes: number): number {
  return moduleBytes + fontBytes + MARGIN_BYTES;
}

/**
 * The ESP files a plan writes, with the BE's source of each where it is a
 * plain copy: the signed chain is shim (shimx64, mmx64, fbx64) and the signed
 * GRUB; the removable path gets shim as BOOTX64.EFI. Sources are paths inside
 * the BE. Pure.
 */
export function espWrites(plan: InstallPlan): Array<{ path: string; source: string | undefined }> {
  const writes: Array<{ path: string; source: string | undefined }> = [];
  for (const directory of plan.espDirectories) {
    const removable = directory === 'BOOT';
    if (plan.signed) {
      writes.push({ path: `EFI/${directory}/${removable ? 'BOOTX64.EFI' : 'shimx64.efi'}`, source: '/usr/lib/shim/shimx64.efi.signed' });
      writes.push({ path: `EFI/${directory}/grubx64.efi`, source: '/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed' });
      writes.push({ path: `EFI/${directory}/mmx64.efi`, source: '/usr/lib/shim/mmx64.efi.signed' });
      if (!removable) writes.push({ path: `EFI/${directory}/fbx64.efi`, source: '/usr/lib/shim/fbx64.efi.signed' });
    } else {
      writes.push({ path: `EFI/${directory}/${removable ? 'BOOTX64.EFI' : 'grubx64.efi'}`, source: undefined });
    }
  }
  return writes;
}
