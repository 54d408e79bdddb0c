/**
 * Parser for what apt writes to a DPkg::Pre-Install-Pkgs hook that asked for
 * protocol version 3 (DPkg::Tools::Options::CMD::Version "3"): a `VERSION 3`
 * line, apt's configuration as `Key=Value` lines, a blank line, then one line
 * per package action:
 *   `NAME OLDVER OLDARCH OLDMA DIRECTION NEWVER NEWARCH NEWMA ACTION`
 * where a missing version is `-`, DIRECTION is `<` `>` `=` (or `-`), and ACTION
 * is a .deb path, `**CONFIGURE**` or `**REMOVE**`. Pure and strict.
 */
import { BootenvError } from '../errors.js';

export interface PackageAction {
  package: string;
  architecture: string;
  /** null when not installed before. */
  oldVersion: string | null;
  /** null when removed. */
  newVersion: string | null;
  action: 'unpack' | 'configure' | 'remove';
  /** The .deb dpkg unpacks, for 'unpack'; null otherwise. */
  deb: string | null;
}

export interface HookInput {
  config: Map<string, string>;
  actions: PackageAction[];
}

export function parsePreInstallPkgsInput(text: string): HookInput {
  const lines = text.split('\n');
  if (lines[0] !== 'VERSION 3') {
    throw new BootenvError('PARSE', `Pre-Install-Pkgs hook input does not start with "VERSION 3": ${JSON.stringify(lines[0])}`, {
      hint: 'bootenv needs DPkg::Tools::Options::/usr/lib/bootenv/apt-hook::Version "3" (see /etc/apt/apt.conf.d/50bootenv)',
    });
  }
  const config = new Map<string, string>();
  let index = 1;
  for (; index < lines.length && lines[index] !== ''; index += 1) {
    const line = lines[index] as string;
    const separator = line.indexOf('=');
    if (separator <= 0) throw new BootenvError('PARSE', `unexpected configuration line from apt: ${JSON.stringify(line)}`);
    config.set(line.slice(0, separator), line.slice(separator + 1));
  }
  const actions: PackageAction[] = [];
  for (const line of lines.slice(index + 1)) {
    if (line === '') continue;
    const fields = line.split(' ');
    if (fields.length !== 9) throw new BootenvError('PARSE', `unexpected package line from apt: ${JSON.stringify(line)}`);
    const [name, oldVersion, oldArch, , , newVersion, newArch, , action] = fields as string[];
    actions.push({
      package: name as string,
      architecture: newArch !== '-' ? (newArch as string) : (oldArch as string),
      oldVersion: oldVersion === '-' ? null : (oldVersion as string),
      newVersion: newVersion === '-' ? null : (newVersion as string),
      action: action === '**REMOVE**' ? 'remove' : action === '**CONFIGURE**' ? 'configure' : 'unpack',
      deb: action === '**REMOVE**' || action === '**CONFIGURE**' ? null : (action as string),
    });
  }
  return { config, actions };
}
