/**
 * The GRUB menu entries of the BEs. beadm writes this text to GRUB's home
 * (`/boot/grub/bootenv/entries.cfg` of the installed root) whenever BEs change.
 * Each entry boots the kernel and initramfs inside that BE's own /boot with
 * `rootflags=subvol=<BE subvolume>` through LINUX_FUNCTION, which adds the
 * system's GRUB_CMDLINE_LINUX(_DEFAULT). The one text serves both kinds of
 * `/etc/grub.d/09_bootenv` a machine may run (the installed root's is as old
 * as its beadm init, and each BE's update-grub runs its own):
 *   - bootenv's, finding ENTRIES_MARKER, makes grub.cfg `source` the file at
 *     boot and defines LINUX_FUNCTION after it, with the command line, over
 *     the file's own definition;
 *   - an older one copies the file into grub.cfg, replacing
 *     CMDLINE_PLACEHOLDER with the command line: the file's own definition
 *     of LINUX_FUNCTION then holds it.
 * Pure: names and paths are validated before they get here, and every value
 * is single-quoted anyway.
 */
import type { BootFiles } from './kernels.js';

export const CMDLINE_PLACEHOLDER = '@BOOTENV_CMDLINE@';
/** The GRUB function the entries boot through: `linux "$@"` and the system's command line. */
export const LINUX_FUNCTION = 'bootenv_linux';
/** The line by which 09_bootenv knows an entries file it can source. */
export const ENTRIES_MARKER = '# bootenv-entries: 2';
export const ENTRY_ID_PREFIX = 'bootenv-';

export interface MenuBootEnvironment {
  name: string;
  /** Subvolume path from the btrfs top level. */
  subvolume: string;
  /** The BE's PRETTY_NAME from its os-release, for the title. */
  osName: string;
  /** Undefined when the BE holds no bootable kernel: it gets no entry. */
  bootFiles: BootFiles | undefined;
}

export interface BootMenu {
  filesystemUuid: string;
  environments: readonly MenuBootEnvironment[];
  /** The BE booted by default from the next boot on. */
  defaultName: string | undefined;
}

export function menuEntryId(name: string): string {
  return `${ENTRY_ID_PREFIX}${name}`;
}

/** The GRUB script text for `menu`; entries in the order given, default first. */
export function generateBootMenu(menu: BootMenu): string {
  const ordered = [...menu.environments].sort(
    (a, b) => Number(b.name === menu.defaultName) - Number(a.name === menu.defaultName),
  );
  const lines = [
    '# Boot environments, written by beadm: do not edit, run beadm instead.',
    ENTRIES_MARKER,
    `function ${LINUX_FUNCTION} {`,
    `\tlinux "$@" ${CMDLINE_PLACEHOLDER}`,
    '}',
  ];
  for (const environment of ordered) {
    if (environment.bootFiles === undefined) {
      lines.push(`# BE ${environment.name}: no kernel with initramfs and modules in its /boot, no entry`);
      continue;
    }
    const base = `/${environment.subvolume}/boot`;
    const { version, kernel, initrd } = environment.bootFiles;
    lines.push(
      `menuentry ${quote(`${environment.osName} (BE ${environment.name})`)} --class bootenv --class gnu-linux --class os --id ${quote(menuEntryId(environment.name))} {`,
      '\tinsmod part_gpt',
      '\tinsmod part_msdos',
      '\tinsmod btrfs',
      `\tsearch --no-floppy --fs-uuid --set=root ${menu.filesystemUuid}`,
      `\techo ${quote(`Loading Linux ${version} from boot environment ${environment.name} ...`)}`,
      `\t${LINUX_FUNCTION} ${base}/${kernel} root=UUID=${menu.filesystemUuid} ro rootflags=subvol=${environment.subvolume}`,
      `\tinitrd ${base}/${initrd}`,
      '}',
    );
  }
  if (menu.defaultName !== undefined) {
    lines.push(
      '# A one-shot next_entry (beadm activate -t) wins over the default BE.',
      `if [ -z "\${boot_once}" ]; then set default=${quote(menuEntryId(menu.defaultName))}; fi`,
    );
  }
  return `${lines.join('\n')}\n`;
}

function quote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
