// takeManifest and diffManifests on small trees in a temporary directory: identical trees
// compare equal, and each kind of change (content, mode, mtime, added, removed, symlink target)
// is reported alone, while changes under an excluded path are not.
import { createHash } from 'node:crypto';
import { chmodSync, lutimesSync, mkdirSync, readdirSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { diffManifests, takeManifest } from '../harness/manifest.js';
import { useTemporaryDirectory } from './helpers.js';

const directory = useTemporaryDirectory('bootenv-manifest.');
const EXCLUDE = ['/var/cache'];
const TIME = 1704067200;
let trees = 0;

/** Sets the mtime of every directory in the tree to TIME, so a change shows only where it was made. */
function pinDirectoryTimes(directoryPath: string): void {
  for (const entry of readdirSync(directoryPath, { withFileTypes: true })) {
    if (entry.isDirectory()) pinDirectoryTimes(path.join(directoryPath, entry.name));
  }
  utimesSync(directoryPath, TIME, TIME);
}

/** A fresh tree with a file, an executable, a symlink, an excluded directory and its look-alike neighbour. */
function makeTree(): string {
  const root = path.join(directory(), `tree-${++trees}`);
  for (const sub of ['etc', 'usr/bin', 'var/cache/apt', 'var/cache-other']) mkdirSync(path.join(root, sub), { recursive: true });
  const files: [string, string, number][] = [
    ['etc/conf', 'setting = one\n', 0o644],
    ['usr/bin/tool', '#!/bin/sh\n', 0o755],
    ['var/cache/apt/pkgcache.bin', 'cache\n', 0o644],
    ['var/cache-other/kept', 'kept\n', 0o644],
  ];
  for (const [relative, content, mode] of files) {
    writeFileSync(path.join(root, relative), content);
    chmodSync(path.join(root, relative), mode);
    utimesSync(path.join(root, relative), TIME, TIME);
  }
  symlinkSync('conf', path.join(root, 'etc/link'));
  lutimesSync(path.join(root, 'etc/link'), TIME, TIME);
  pinDirectoryTimes(root);
  return root;
}

describe('takeManifest', () => {
  it('describes a file by type, mode, owner, size, mtime and content hash', async () => {
    const manifest = await takeManifest(makeTree(), { exclude: EXCLUDE });
    const sha256 = createHash('sha256').update('setting = one\n').digest('hex');
    const owner = `uid=${process.getuid?.()} gid=${process.getgid?.()}`;
    expect(manifest.get('/etc/conf')).toBe(`file mode=0644 ${owner} size=14 mtime=${TIME}.000000000 sha256=${sha256}`);
    expect(manifest.get('/etc/link')).toBe(`symlink mode=0777 ${owner} size=4 mtime=${TIME}.000000000 target="conf"`);
    expect(manifest.get('/usr/bin')).toBe(`directory mode=0755 ${owner} mtime=${TIME}.000000000`);
    expect([...manifest.keys()]).toEqual(['/', '/etc', '/etc/conf', '/etc/link', '/usr', '/usr/bin', '/usr/bin/tool', '/var', '/var/cache-other', '/var/cache-other/kept']);
  });

  it('finds no difference between two trees built alike', async () => {
    const first = await takeManifest(makeTree(), { exclude: EXCLUDE });
    const second = await takeManifest(makeTree(), { exclude: EXCLUDE });
    expect(diffManifests(first, second)).toEqual([]);
  });

  it('refuses an exclusion that is not root-relative', async () => {
    await expect(takeManifest(makeTree(), { exclude: ['var/cache'] })).rejects.toThrow(/start with '\/'/);
  });
});

describe('diffManifests reports each change alone', () => {
  it.each<[string, (root: string) => void, RegExp[]]>([
    [
      'content change of the same size with the mtime kept',
      (root) => {
        writeFileSync(path.join(root, 'etc/conf'), 'setting = two\n');
        utimesSync(path.join(root, 'etc/conf'), TIME, TIME);
      },
      [/^changed \/etc\/conf: file .* size=14 .*sha256=\w+ => file .* size=14 .*sha256=\w+$/],
    ],
    ['mode change', (root) => chmodSync(path.join(root, 'etc/conf'), 0o600), [/^changed \/etc\/conf: file mode=0644 .* => file mode=0600 /]],
    ['mtime change', (root) => utimesSync(path.join(root, 'etc/conf'), TIME, TIME + 1), [/^changed \/etc\/conf: .*mtime=1704067200\.0+ .* => .*mtime=1704067201\.0+ /]],
    ['new file', (root) => writeFileSync(path.join(root, 'etc/new'), 'new\n'), [/^added \/etc\/new: file mode=\d+ .*size=4 /]],
    ['removed file', (root) => unlinkSync(path.join(root, 'usr/bin/tool')), [/^removed \/usr\/bin\/tool: file mode=0755 /]],
    [
      'symlink retarget with the mtime kept',
      (root) => {
        unlinkSync(path.join(root, 'etc/link'));
        symlinkSync('elsewhere', path.join(root, 'etc/link'));
        lutimesSync(path.join(root, 'etc/link'), TIME, TIME);
      },
      [/^changed \/etc\/link: symlink .*target="conf" => symlink .*target="elsewhere"$/],
    ],
    ['removed directory tree', (root) => rmSync(path.join(root, 'usr'), { recursive: true }), [/^removed \/usr: directory /, /^removed \/usr\/bin: /, /^removed \/usr\/bin\/tool: /]],
    ['change beside an excluded path', (root) => writeFileSync(path.join(root, 'var/cache-other/kept'), 'changed\n'), [/^changed \/var\/cache-other\/kept: /]],
    [
      'changes under an excluded path',
      (root) => {
        writeFileSync(path.join(root, 'var/cache/apt/pkgcache.bin'), 'other cache\n');
        writeFileSync(path.join(root, 'var/cache/apt/srcpkgcache.bin'), 'more\n');
      },
      [],
    ],
  ])('%s', async (_name, change, expected) => {
    const root = makeTree();
    const before = await takeManifest(root, { exclude: EXCLUDE });
    change(root);
    pinDirectoryTimes(root);
    const differences = diffManifests(before, await takeManifest(root, { exclude: EXCLUDE }));
    expect(differences).toHaveLength(expected.length);
    expected.forEach((pattern, index) => expect(differences[index]).toMatch(pattern));
  });
});
