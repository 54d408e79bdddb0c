/**
 * Higher versions of real Debian packages for the boot-loader and kernel
 * upgrade tests (issue #15): a .deb is unpacked with dpkg-deb -R, its Version
 * gets UPGRADE_SUFFIX, its exact-version relations to the other packages of
 * the set follow them to their new versions, and it is packed again (gzip -1:
 * the kernel's modules make xz slow). The content is the old package's, byte
 * for byte: what the tests exercise is dpkg, apt and the packages' own
 * maintainer scripts (grub-install, update-grub, update-initramfs) running an
 * upgrade.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';

/** Appended to each package's Version. */
export const UPGRADE_SUFFIX = '+bootenvtest1';

/** One package of an upgrade set. */
export interface UpgradePackage {
  name: string;
  /** The version installed in the image. */
  oldVersion: string;
  /** oldVersion + UPGRADE_SUFFIX, in the upgrades repository. */
  newVersion: string;
}

/** The control fields that hold package relations (deb-control(5)). */
const RELATION_FIELDS = ['Depends', 'Pre-Depends', 'Recommends', 'Suggests', 'Enhances', 'Breaks', 'Conflicts', 'Replaces', 'Provides'];

/**
 * The control file of the upgraded package: `Version` with UPGRADE_SUFFIX,
 * and each `name (= version)` relation whose name is a key of `oldVersions`
 * and whose version is that package's old one rewritten to its new version
 * (other relations, and the other fields, are left as they are). Pure. Throws
 * when the control file has no Version field.
 */
export function upgradeControl(control: string, oldVersions: ReadonlyMap<string, string>): string {
  let sawVersion = false;
  const lines = control.split('\n');
  let field = '';
  const rewritten = lines.map((line) => {
    const start = /^([A-Za-z0-9][A-Za-z0-9-]*):(.*)$/.exec(line);
    if (start !== null) field = start[1] as string;
    if (start !== null && field === 'Version') {
      sawVersion = true;
      return `Version: ${(start[2] as string).trim()}${UPGRADE_SUFFIX}`;
    }
    if (!RELATION_FIELDS.includes(field)) return line;
    return line.replace(/([a-z0-9][a-z0-9+.-]+)(:[a-z0-9-]+)?(\s*)\(\s*=\s*([^\s)]+)\s*\)/g, (whole, name: string, arch: string | undefined, space: string, version: string) =>
      oldVersions.get(name) === version ? `${name}${arch ?? ''}${space}(= ${version}${UPGRADE_SUFFIX})` : whole,
    );
  });
  if (!sawVersion) throw new Error(`a control file without Version:\n${control}`);
  return rewritten.join('\n');
}

/**
 * Rebuilds each of `debs` as its upgrade (see upgradeControl) into `outDir`
 * as `<name>_<new version>_<arch>.deb`, the old versions being the debs' own.
 * Unpacks each in a temporary directory under `outDir`, removed whatever
 * happens. Needs dpkg-deb, and root to keep the files' owners. Throws when
 * dpkg-deb fails.
 */
export async function buildUpgrades(debs: readonly string[], outDir: string): Promise<{ debs: string[]; packages: UpgradePackage[] }> {
  const fields = async (deb: string) => {
    const { stdout } = await execa('dpkg-deb', ['--showformat', '${Package}\t${Version}\t${Architecture}', '--show', deb], { env: { LC_ALL: 'C' } });
    const [name = '', version = '', architecture = ''] = stdout.split('\t');
    return { deb, name, version, architecture };
  };
  const sources = await Promise.all(debs.map(fields));
  const oldVersions = new Map(sources.map((source) => [source.name, source.version]));
  const built: string[] = [];
  const packages: UpgradePackage[] = [];
  for (const source of sources) {
    const tree = await mkdtemp(path.join(outDir, `${source.name}.`));
    try {
      await execa('dpkg-deb', ['-R', source.deb, tree]);
      const control = path.join(tree, 'DEBIAN/control');
      await writeFile(control, upgradeControl(await readFile(control, 'utf8'), oldVersions));
      const newVersion = `${source.version}${UPGRADE_SUFFIX}`;
      const deb = path.join(outDir, `${source.name}_${newVersion.replace(/^\d+:/, '')}_${source.architecture}.deb`);
      await execa('dpkg-deb', ['-Zgzip', '-z1', '--build', tree, deb], { stdout: 'ignore', env: { LC_ALL: 'C' } });
      built.push(deb);
      packages.push({ name: source.name, oldVersion: source.version, newVersion });
    } finally {
      await rm(tree, { recursive: true, force: true });
    }
  }
  return { debs: built, packages };
}
