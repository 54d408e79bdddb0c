/**
 * dpkg's status database (/var/lib/dpkg/status, deb822 stanzas): which
 * packages a root has installed, at which version, with which conffiles.
 * Read from the file itself, so that two BEs' databases can be compared
 * without running dpkg-query in either. Pure.
 */

export interface InstalledPackage {
  package: string;
  architecture: string;
  version: string;
  /** The third word of Status: installed, unpacked, half-configured, …; never not-installed or config-files. */
  state: string;
  /** Conffiles dpkg knows of (absolute paths) with the md5sum of the version shipped; obsolete ones left out. */
  conffiles: Array<{ path: string; md5: string }>;
}

/** `name:arch`, the key of a package instance (arch `all` included, as dpkg-query's ${binary:Package} is not). */
export function packageKey(entry: Pick<InstalledPackage, 'package' | 'architecture'>): string {
  return `${entry.package}:${entry.architecture}`;
}

/** The package instances of a status file that have files on disk (not `not-installed`, not `config-files`), by packageKey. */
export function parseDpkgStatus(text: string): Map<string, InstalledPackage> {
  const packages = new Map<string, InstalledPackage>();
  for (const stanza of text.split(/\n(?:[ \t]*\n)+/)) {
    const fields = new Map<string, string>();
    let current: string | undefined;
    for (const line of stanza.split('\n')) {
      if (line === '') continue;
      if ((line.startsWith(' ') || line.startsWith('\t')) && current !== undefined) {
        fields.set(current, `${fields.get(current) ?? ''}\n${line.trim()}`);
        continue;
      }
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      current = line.slice(0, colon).toLowerCase();
      fields.set(current, line.slice(colon + 1).trim());
    }
    const name = fields.get('package');
    const version = fields.get('version');
    const state = fields.get('status')?.split(/\s+/)[2];
    if (name === undefined || version === undefined || state === undefined || state === 'not-installed' || state === 'config-files') continue;
    const conffiles = (fields.get('conffiles') ?? '')
      .split('\n')
      .map((line) => line.trim().split(/\s+/))
      .filter((words) => words[0]?.startsWith('/') === true && words[1] !== undefined && !words.slice(2).includes('obsolete'))
      .map((words) => ({ path: words[0]!, md5: words[1]! }));
    const entry = { package: name, architecture: fields.get('architecture') ?? 'all', version, state, conffiles };
    packages.set(packageKey(entry), entry);
  }
  return packages;
}
