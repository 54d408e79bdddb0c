/**
 * The APT side of the integration tests: builds the fixture packages under
 * fixtures/packages with dpkg-deb and serves them to a sandbox root as a flat
 * `file:` repository marked [trusted=yes], so that apt in the sandbox installs
 * and upgrades them with no network and no signatures. fixtures/README.md
 * says what each package exercises and how GENERATED files and `@N@`
 * templates work.
 */
import { createHash } from 'node:crypto';
import { appendFile, chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { REPOSITORY } from './base.js';

export type Compression = 'xz' | 'gzip' | 'zstd' | 'none';

export const COMPRESSIONS: readonly Compression[] = ['xz', 'gzip', 'zstd', 'none'];

export const FIXTURE_PACKAGES = path.join(REPOSITORY, 'fixtures/packages');

/** Where installRepositoryInRoot puts the repository unless told otherwise, as seen inside the root. */
export const REPOSITORY_IN_ROOT = '/srv/bootenv-test-repo';

/** The one APT source installRepositoryInRoot leaves in a root. */
export const SOURCES_LIST = '/etc/apt/sources.list.d/bootenv-test.list';

/** A source directory whose name holds this mark is a template, built once for each of 1…TEMPLATE_INSTANCES. */
const TEMPLATE_MARK = '@N@';
const TEMPLATE_INSTANCES = 8;

/** dpkg-deb clamps every mtime to this (2024-01-01T00:00:00Z), so a rebuild gives byte-identical .deb files. */
const SOURCE_DATE_EPOCH = '1704067200';

interface PackageSource {
  /** The directory under fixtures/packages. */
  directory: string;
  name: string;
  version: string;
  /** Replaces TEMPLATE_MARK in file names and contents ('' for a plain package). */
  instance: string;
}

/**
 * Builds every fixture package into `outDir` (created if missing) as
 * `<name>_<version>_all.deb`, compressed with `compression` (default xz), and
 * returns their paths. Each source is staged in a temporary directory first:
 * modes normalised (0755 directories and executables, 0644 other files),
 * GENERATED files written, templates instantiated; the staging directory is
 * removed whatever happens. Needs dpkg-deb, not root. Throws when a source is
 * malformed (its control file disagrees with its directory name, an unknown
 * file type, a bad GENERATED line) or dpkg-deb fails.
 */
export async function buildFixturePackages(outDir: string, options: { compression?: Compression } = {}): Promise<string[]> {
  const compression = options.compression ?? 'xz';
  await mkdir(outDir, { recursive: true });
  const staging = await mkdtemp(path.join(tmpdir(), 'bootenv-fixture.'));
  try {
    const debs: string[] = [];
    for (const source of await packageSources()) {
      const stage = path.join(staging, `${source.name}_${source.version}`);
      await stagePackage(source, stage);
      const deb = path.join(outDir, `${source.name}_${source.version}_all.deb`);
      await execa('dpkg-deb', [`-Z${compression}`, '--root-owner-group', '--build', stage, deb], {
        env: { SOURCE_DATE_EPOCH, LC_ALL: 'C' },
        stdout: 'ignore',
      });
      debs.push(deb);
    }
    return debs;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/**
 * Makes `repoDir` (created if missing) a flat APT repository holding `debs`:
 * copies each .deb in and writes `Packages` (one stanza a package: the
 * control fields as `dpkg-deb -f` prints them, then Filename, Size, MD5sum and
 * SHA256) and a `Release` file listing the index's hashes, which keeps apt
 * from warning that the repository has none; its Origin and Label are
 * `origin` (default bootenv-tests, the origin unattended-upgrades is allowed
 * in the images). Files end up 0644, directories 0755, so apt's unprivileged
 * _apt user can read them. Throws on two .deb files with the same name or a
 * deb whose control data dpkg-deb cannot read.
 */
export async function writeAptRepository(repoDir: string, debs: readonly string[], options: { origin?: string } = {}): Promise<void> {
  const origin = options.origin ?? 'bootenv-tests';
  await mkdir(repoDir, { recursive: true });
  await chmod(repoDir, 0o755);
  const files = debs.map((deb) => path.basename(deb));
  const duplicate = files.find((file, index) => files.indexOf(file) !== index);
  if (duplicate !== undefined) throw new Error(`two packages named ${duplicate}`);
  const stanzas: string[] = [];
  for (const deb of [...debs].sort((a, b) => byCodeUnits(path.basename(a), path.basename(b)))) {
    const file = path.basename(deb);
    const target = path.join(repoDir, file);
    await copyFile(deb, target);
    await chmod(target, 0o644);
    const { stdout: control } = await execa('dpkg-deb', ['-f', target], { env: { LC_ALL: 'C' } });
    if (!control.startsWith('Package: ')) throw new Error(`${deb}: dpkg-deb -f printed no Package field`);
    stanzas.push([control.trimEnd(), `Filename: ./${file}`, ...hashFields(await readFile(target))].join('\n'));
  }
  const packages = Buffer.from(`${stanzas.join('\n\n')}\n`);
  const release = [
    `Origin: ${origin}`,
    `Label: ${origin}`,
    `Date: ${new Date(Number(SOURCE_DATE_EPOCH) * 1000).toUTCString()}`,
    'SHA256:',
    ` ${createHash('sha256').update(packages).digest('hex')} ${packages.length} Packages`,
    '',
  ].join('\n');
  await writeReadable(path.join(repoDir, 'Packages'), packages);
  await writeReadable(path.join(repoDir, 'Release'), release);
}

/**
 * Points the APT of the system at `rootDir` at the fixture repository and at
 * nothing else: builds the packages (`compression`, default xz), adds
 * `extraDebs` (real Debian packages a fixture depends on), replaces
 * whatever is at `rootDir + repoDirInsideRoot` with the repository, writes
 * SOURCES_LIST with `deb [trusted=yes] file:<repoDirInsideRoot> ./`, empties
 * /etc/apt/sources.list and deletes every other entry of sources.list.d.
 * Run `apt-get update` in the root afterwards. Needs write access to the root
 * (root, for a sandbox); mounts nothing. Throws as buildFixturePackages.
 */
export async function installRepositoryInRoot(
  rootDir: string,
  repoDirInsideRoot = REPOSITORY_IN_ROOT,
  options: { compression?: Compression; extraDebs?: readonly string[] } = {},
): Promise<void> {
  if (!path.isAbsolute(repoDirInsideRoot)) throw new Error(`the repository path in the root must be absolute: ${repoDirInsideRoot}`);
  const built = await mkdtemp(path.join(tmpdir(), 'bootenv-debs.'));
  try {
    const debs = await buildFixturePackages(built, options);
    const repoDir = path.join(rootDir, repoDirInsideRoot);
    await rm(repoDir, { recursive: true, force: true });
    await writeAptRepository(repoDir, [...debs, ...(options.extraDebs ?? [])]);
  } finally {
    await rm(built, { recursive: true, force: true });
  }
  const sourcesDirectory = path.join(rootDir, path.dirname(SOURCES_LIST));
  await mkdir(sourcesDirectory, { recursive: true });
  for (const entry of await readdir(sourcesDirectory)) await rm(path.join(sourcesDirectory, entry), { recursive: true, force: true });
  await writeReadable(path.join(rootDir, 'etc/apt/sources.list'), '');
  await writeReadable(path.join(rootDir, SOURCES_LIST), `deb [trusted=yes] file:${repoDirInsideRoot} ./\n`);
}

/** The fixture sources, templates expanded, in name order. */
async function packageSources(): Promise<PackageSource[]> {
  const sources: PackageSource[] = [];
  for (const entry of (await readdir(FIXTURE_PACKAGES, { withFileTypes: true })).sort((a, b) => byCodeUnits(a.name, b.name))) {
    if (!entry.isDirectory()) continue;
    const match = /^([^_]+)_([^_]+)$/.exec(entry.name);
    if (match === null) throw new Error(`${entry.name}: a fixture package directory is named <name>_<version>`);
    const [, name = '', version = ''] = match;
    const directory = path.join(FIXTURE_PACKAGES, entry.name);
    if (!name.includes(TEMPLATE_MARK)) {
      sources.push({ directory, name, version, instance: '' });
      continue;
    }
    for (let n = 1; n <= TEMPLATE_INSTANCES; n++) {
      sources.push({ directory, name: name.replaceAll(TEMPLATE_MARK, String(n)), version, instance: String(n) });
    }
  }
  return sources;
}

/** Copies `source` to `stage` ready for dpkg-deb --build, and checks its control file against its directory name. */
async function stagePackage(source: PackageSource, stage: string): Promise<void> {
  await copyTree(source.directory, stage, (text) => text.replaceAll(TEMPLATE_MARK, source.instance));
  await writeGeneratedFiles(stage);
  const control = await readFile(path.join(stage, 'DEBIAN/control'), 'utf8');
  const field = (name: string): string | undefined => new RegExp(`^${name}: (.*)$`, 'm').exec(control)?.[1];
  if (field('Package') !== source.name || field('Version') !== source.version) {
    throw new Error(`${source.directory}: DEBIAN/control says ${field('Package')} ${field('Version')}, the directory ${source.name} ${source.version}`);
  }
}

/** Copies a tree of directories and text files, renaming and rewriting each through `substitute`, with normalised modes. */
async function copyTree(from: string, to: string, substitute: (text: string) => string): Promise<void> {
  await mkdir(to);
  await chmod(to, 0o755);
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, substitute(entry.name));
    if (entry.isDirectory()) {
      await copyTree(source, target, substitute);
    } else if (entry.isFile()) {
      const executable = ((await stat(source)).mode & 0o111) !== 0;
      await writeFile(target, substitute(await readFile(source, 'utf8')));
      await chmod(target, executable ? 0o755 : 0o644);
    } else {
      throw new Error(`${source}: fixture sources hold only directories and regular files`);
    }
  }
}

/**
 * Reads and removes `<stage>/GENERATED` if there is one. Each of its lines,
 * `<path> <bytes> [seed=NAME] [mode=OCTAL] [hole=BYTES]`, asks for a file of
 * that size at that path (relative to the package root) filled with a pattern
 * that depends on the seed only (default: the path), so the same seed gives
 * the same bytes in every version and package; `hole=` leaves the first
 * BYTES as a hole (a sparse file in the build tree), `mode=` sets the mode
 * (e.g. 4755). A line `<path> link=<target>` makes a hard link to an earlier
 * file of the list.
 */
async function writeGeneratedFiles(stage: string): Promise<void> {
  const list = path.join(stage, 'GENERATED');
  let text: string;
  try {
    text = await readFile(list, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  await rm(list);
  for (const line of text.split('\n').filter((l) => l !== '')) {
    const link = /^([^\s/][^\s]*) link=([^\s/][^\s]*)$/.exec(line);
    if (link !== null) {
      const [, relative = '', target = ''] = link;
      await mkdir(path.dirname(path.join(stage, relative)), { recursive: true });
      await execa('ln', [path.join(stage, target), path.join(stage, relative)]);
      continue;
    }
    const match = /^([^\s/][^\s]*) (\d+)((?: (?:seed=\S+|mode=[0-7]{3,4}|hole=\d+))*)$/.exec(line);
    if (match === null) throw new Error(`${list}: expected "<relative path> <bytes> [seed=NAME] [mode=OCTAL] [hole=BYTES]" or "<path> link=<target>", got ${JSON.stringify(line)}`);
    const [, relative = '', bytes = '', options = ''] = match;
    const option = (name: string) => new RegExp(` ${name}=(\\S+)`).exec(options)?.[1];
    const target = path.join(stage, relative);
    const size = Number(bytes);
    const hole = Number(option('hole') ?? 0);
    await mkdir(path.dirname(target), { recursive: true });
    const content = deterministicBytes(option('seed') ?? relative, size);
    await writeFile(target, '');
    await truncate(target, hole);
    await appendFile(target, content.subarray(hole));
    await chmod(target, parseInt(option('mode') ?? '644', 8));
  }
}

/** `size` bytes of SHA-256 in counter mode, seeded by `seed`: incompressible and the same on every build. */
function deterministicBytes(seed: string, size: number): Buffer {
  const blocks: Buffer[] = [];
  for (let counter = 0; blocks.length * 32 < size; counter++) blocks.push(createHash('sha256').update(`${seed}\n${counter}`).digest());
  return Buffer.concat(blocks).subarray(0, size);
}

/** Locale-independent order, so the index reads the same on every machine. */
function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function hashFields(content: Buffer): string[] {
  return [
    `Size: ${content.length}`,
    `MD5sum: ${createHash('md5').update(content).digest('hex')}`,
    `SHA256: ${createHash('sha256').update(content).digest('hex')}`,
  ];
}

async function writeReadable(file: string, content: string | Buffer): Promise<void> {
  await writeFile(file, content);
  await chmod(file, 0o644);
}
