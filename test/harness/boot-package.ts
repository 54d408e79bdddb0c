/**
 * The package the real-boot test upgrades in a running BE (issue #14), read
 * from its fixture sources so that another package of the same shape can take
 * its place (BOOTENV_TEST_BOOT_PACKAGE): two versions under fixtures/packages,
 * a conffile the upgrade changes, and a system user the newer version's
 * postinst adds with useradd --system. The boot image installs the older
 * version; unattended-upgrades is told to leave this package to apt-get.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { FIXTURE_PACKAGES } from './repo.js';

export interface BootPackage {
  name: string;
  oldVersion: string;
  newVersion: string;
  /** Absolute path of the conffile, e.g. /etc/bootenv-t-carry.conf. */
  conffile: string;
  /** The newer version's conffile content. */
  newConffile: string;
  /** The system user the newer version's postinst adds. */
  systemUser: string;
}

export const BOOT_PACKAGE_NAME = process.env.BOOTENV_TEST_BOOT_PACKAGE ?? 'bootenv-t-carry';

/** The fixture directories of the boot package (every version). */
export function bootPackageSources(name = BOOT_PACKAGE_NAME): string[] {
  return readdirSync(FIXTURE_PACKAGES)
    .filter((entry) => entry.startsWith(`${name}_`))
    .map((entry) => path.join(FIXTURE_PACKAGES, entry));
}

export function bootPackage(name = BOOT_PACKAGE_NAME): BootPackage {
  const versions = bootPackageSources(name).map((directory) => {
    const control = readFileSync(path.join(directory, 'DEBIAN/control'), 'utf8');
    const version = /^Version: (\S+)$/m.exec(control)?.[1];
    if (version === undefined) throw new Error(`${directory}: no Version in DEBIAN/control`);
    return { directory, version };
  });
  if (versions.length !== 2) throw new Error(`${name}: the boot test needs exactly two versions under fixtures/packages, found ${versions.length}`);
  versions.sort((a, b) => a.version.localeCompare(b.version, 'en', { numeric: true }));
  const [older, newer] = versions as [{ directory: string; version: string }, { directory: string; version: string }];
  const conffile = readFileSync(path.join(newer.directory, 'DEBIAN/conffiles'), 'utf8').split('\n').find((line) => line.startsWith('/'));
  if (conffile === undefined) throw new Error(`${newer.directory}: no conffile`);
  const postinst = readFileSync(path.join(newer.directory, 'DEBIAN/postinst'), 'utf8');
  const systemUser = /useradd --system\b[^\n]*[ \t](\S+)[ \t]*$/m.exec(postinst)?.[1];
  if (systemUser === undefined) throw new Error(`${newer.directory}: its postinst adds no system user (useradd --system … NAME)`);
  return {
    name,
    oldVersion: older.version,
    newVersion: newer.version,
    conffile,
    newConffile: readFileSync(path.join(newer.directory, conffile.slice(1)), 'utf8'),
    systemUser,
  };
}
