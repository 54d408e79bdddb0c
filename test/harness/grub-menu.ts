/**
 * The boot menu as GRUB reads it from its home: grub.cfg, and the BE entries
 * file that bootenv's stanza in it sources at boot. Tests assert on this text
 * where they used to read grub.cfg alone; the stanza's presence (the source
 * lines and the bootenv_linux function with the kernel command line) is
 * checked on the way, so a grub.cfg that no longer reads the entries fails.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

const SOURCE_LINE = '\tsource "${config_directory}/bootenv/entries.cfg"';

/** grub.cfg followed by the entries.cfg it sources; throws when grub.cfg does not source it. */
export function bootMenuOf(grubCfg: string, entries: string): string {
  if (!grubCfg.includes(`\n${SOURCE_LINE}\n`) || bootenvCommandLine(grubCfg) === undefined) {
    throw new Error(`grub.cfg does not source bootenv/entries.cfg with the bootenv_linux function:\n${grubCfg}`);
  }
  return `${grubCfg}\n${entries}`;
}

/** The menu under GRUB's home in the subvolume mounted at `root` (the top level joined with the installed root). */
export function readBootMenu(root: string): string {
  const home = path.join(root, 'boot/grub');
  return bootMenuOf(readFileSync(path.join(home, 'grub.cfg'), 'utf8'), readFileSync(path.join(home, 'bootenv/entries.cfg'), 'utf8'));
}

/** The kernel command line grub.cfg's bootenv_linux function adds to every BE entry. */
export function bootenvCommandLine(grubCfg: string): string | undefined {
  return /\nfunction bootenv_linux \{\n\tlinux "\$@" ([^\n]*)\n\}\n/.exec(grubCfg)?.[1];
}
