// bootenv-changes (src/native/bootenv-changes.c, read by src/btrfs/tree-changes.ts) on a real
// loop-mounted btrfs, against the kernel's own answer: `btrfs send --no-data -p` of the same two
// read-only snapshots (src/btrfs/send-changes.ts). After writes of every kind on both sides of a
// fork (new, rewritten, appended, renamed, re-moded, re-owned and re-xattred files; hard links
// made and dropped; directories moved, removed with what they held, replaced by a file or a
// symlink; a directory of 600 entries thinned and grown), the paths beadm diff would look at and
// what it learns of each must be the same either way. Two snapshots of one subvolume taken at
// different times compare too; subvolumes with no common ancestor (or whose ancestor was
// deleted) get no answer, so that beadm diff asks send.
import { appendFileSync, chmodSync, chownSync, linkSync, lstatSync, mkdirSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { candidatePaths } from '../../src/be/diff.js';
import { subvolumeChanges, treeChanges } from '../../src/btrfs/commands.js';
import type { SubvolumeDelta } from '../../src/btrfs/send-changes.js';
import { withScratchBtrfs } from '../harness/btrfs-image.js';

const HELPER = path.resolve('dist/bootenv-changes');

/** What beadm diff makes of a delta (src/be/diff.ts): the paths it looks at, each with what btrfs said of it. */
function seen(delta: SubvolumeDelta, rootA: string, rootB: string): Map<string, string> {
  const paths = candidatePaths(delta, rootA, rootB);
  const facts = new Map<string, string>();
  for (const relative of paths) {
    const change = delta.changed.get(relative);
    // A time alone is no change (send says it of every touched entry; the tree reader says nothing).
    if (change !== undefined && !change.arrived && !change.content && !change.metadata && change.movedFrom === null) {
      if (!delta.vacated.has(relative)) continue;
    }
    // Where an arrival came from does not matter to beadm diff (a moved directory's subtree is walked either way), and
    // send tells a rename of a file now as a rename, now as a link and an unlink.
    const said = change === undefined ? 'looked at' : change.arrived ? 'arrived' : `${change.content ? 'content ' : ''}${change.metadata ? 'metadata' : ''}`;
    facts.set(relative, `${said}${delta.vacated.has(relative) ? ', vacated' : ''}`);
  }
  return facts;
}

async function snapshot(source: string, target: string): Promise<void> {
  await execa('btrfs', ['subvolume', 'snapshot', '-r', source, target]);
}

async function bothWays(base: string, current: string): Promise<{ tree: Map<string, string>; send: Map<string, string>; raw: SubvolumeDelta }> {
  const raw = await treeChanges(base, current, [], HELPER);
  expect(raw, 'bootenv-changes found no common ancestor').toBeDefined();
  const send = await subvolumeChanges(base, current);
  return { tree: seen(raw as SubvolumeDelta, base, current), send: seen(send, base, current), raw: raw as SubvolumeDelta };
}

function write(file: string, content: string): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, content);
}

describe('bootenv-changes against btrfs send', () => {
  it('finds what send finds after writes of every kind on both sides of a fork', async () => {
    await withScratchBtrfs(1, async ({ top }) => {
      const origin = path.join(top, 'origin');
      const next = path.join(top, 'next');
      await execa('btrfs', ['subvolume', 'create', origin]);
      const at = (root: string, relative: string) => path.join(root, relative);
      for (const name of ['kept', 'rewritten', 'appended', 'renamed', 'moded', 'owned', 'xattred', 'linked', 'unlinked-link', 'replaced-by-dir', 'touched', 'same-bytes']) {
        write(at(origin, `etc/${name}`), `${name}\n`);
      }
      write(at(origin, 'usr/lib/big.bin'), 'x'.repeat(300_000));
      linkSync(at(origin, 'etc/unlinked-link'), at(origin, 'etc/unlinked-link.2'));
      for (let n = 0; n < 600; n++) write(at(origin, `usr/share/doc/entry-${n}`), `doc ${n}\n`);
      write(at(origin, 'opt/moved/deep/file'), 'deep\n');
      write(at(origin, 'opt/removed/deep/file'), 'gone\n');
      write(at(origin, 'opt/removed/other'), 'gone too\n');
      write(at(origin, 'opt/to-symlink/file'), 'x\n');
      write(at(origin, 'var/log/running.log'), 'start\n');
      await execa('btrfs', ['subvolume', 'snapshot', origin, next]);

      // The new side: what dpkg and a maintainer's test do.
      write(at(next, 'etc/rewritten.new'), 'rewritten, new\n');
      renameSync(at(next, 'etc/rewritten.new'), at(next, 'etc/rewritten'));
      appendFileSync(at(next, 'etc/appended'), 'more\n');
      renameSync(at(next, 'etc/renamed'), at(next, 'etc/renamed-now'));
      chmodSync(at(next, 'etc/moded'), 0o600);
      chownSync(at(next, 'etc/owned'), 12, 34);
      await execa('setfattr', ['-n', 'user.bootenv', '-v', 'yes', at(next, 'etc/xattred')]);
      linkSync(at(next, 'etc/linked'), at(next, 'etc/linked.2'));
      unlinkSync(at(next, 'etc/unlinked-link.2'));
      unlinkSync(at(next, 'etc/replaced-by-dir'));
      write(at(next, 'etc/replaced-by-dir/inside'), 'now a directory\n');
      await execa('touch', ['-d', '2020-01-01', at(next, 'etc/touched')]);
      await execa('dd', ['if=/dev/zero', `of=${at(next, 'usr/lib/big.bin')}`, 'bs=4096', 'count=1', 'seek=10', 'conv=notrunc'], { stderr: 'ignore' });
      writeFileSync(at(next, 'etc/same-bytes'), 'same-bytes\n');
      for (let n = 0; n < 600; n += 7) unlinkSync(at(next, `usr/share/doc/entry-${n}`));
      for (let n = 600; n < 700; n++) write(at(next, `usr/share/doc/entry-${n}`), `doc ${n}\n`);
      mkdirSync(at(next, 'srv'));
      renameSync(at(next, 'opt/moved'), at(next, 'srv/moved-here'));
      rmSync(at(next, 'opt/removed'), { recursive: true });
      rmSync(at(next, 'opt/to-symlink'), { recursive: true });
      symlinkSync('/elsewhere', at(next, 'opt/to-symlink'));
      write(at(next, 'usr/bin/new-tool'), '#!/bin/sh\n');
      await execa('mkfifo', [at(next, 'run-fifo')]);

      // The running side goes on writing after the fork, in a later transaction: new inodes of both
      // sides made in one transaction can share a number and a generation, which send mistakes for
      // one inode (the last test).
      await execa('btrfs', ['filesystem', 'sync', top]);
      appendFileSync(at(origin, 'var/log/running.log'), 'later\n');
      write(at(origin, 'var/lib/new-state'), 'state\n');
      unlinkSync(at(origin, 'etc/kept'));

      await snapshot(origin, at(top, 'a'));
      await snapshot(next, at(top, 'b'));
      const { tree, send, raw } = await bothWays(at(top, 'a'), at(top, 'b'));
      expect(tree).toEqual(send);
      // Not an empty comparison: each kind of change is there.
      expect(send.get('etc/rewritten')).toBe('arrived, vacated');
      expect(send.get('etc/renamed-now')).toBe('arrived');
      expect(send.get('etc/renamed')).toBe('looked at, vacated');
      expect(send.get('etc/moded')).toBe('metadata');
      expect(send.get('usr/lib/big.bin')).toBe('content ');
      expect(send.get('opt/removed/deep/file')).toBe('looked at, vacated');
      expect(send.get('srv/moved-here')).toBe('arrived');
      expect(raw.moved).toEqual(expect.arrayContaining([{ from: 'opt/moved', to: 'srv/moved-here' }]));
      expect(tree.get('srv/moved-here/deep/file')).toBe('looked at');
      expect(send.get('etc/kept')).toBe('arrived');
      // Directories of A that B has not (var/lib is the running side's new one), walked in A by the caller.
      expect([...(raw.removedDirectories ?? [])]).toEqual(expect.arrayContaining(['opt/removed', 'opt/to-symlink', 'var/lib']));
      expect(tree.has('etc/touched')).toBe(false);
    });
  });

  it('compares two snapshots of one subvolume taken at different times, either way round', async () => {
    await withScratchBtrfs(1, async ({ top }) => {
      const origin = path.join(top, 'origin');
      await execa('btrfs', ['subvolume', 'create', origin]);
      for (let n = 0; n < 200; n++) write(path.join(origin, `d${n % 10}/f${n}`), `${n}\n`);
      await snapshot(origin, path.join(top, 'early'));
      for (let n = 0; n < 200; n += 3) unlinkSync(path.join(origin, `d${n % 10}/f${n}`));
      write(path.join(origin, 'd3/new'), 'new\n');
      rmSync(path.join(origin, 'd7'), { recursive: true });
      await snapshot(origin, path.join(top, 'late'));
      for (const [base, current] of [['early', 'late'], ['late', 'early']] as const) {
        const { tree, send } = await bothWays(path.join(top, base), path.join(top, current));
        expect(tree).toEqual(send);
        expect(tree.size).toBeGreaterThan(70);
      }
    });
  });

  it('tells apart new inodes of both sides that got one number in one transaction, which send takes for one', async () => {
    await withScratchBtrfs(1, async ({ top }) => {
      const origin = path.join(top, 'origin');
      const next = path.join(top, 'next');
      await execa('btrfs', ['subvolume', 'create', origin]);
      write(path.join(origin, 'etc/rewritten'), 'old\n');
      await execa('btrfs', ['subvolume', 'snapshot', origin, next]);
      write(path.join(next, 'etc/rewritten.new'), 'new\n');
      renameSync(path.join(next, 'etc/rewritten.new'), path.join(next, 'etc/rewritten'));
      write(path.join(origin, 'var/lib/new-state'), 'state\n');
      await snapshot(origin, path.join(top, 'a'));
      await snapshot(next, path.join(top, 'b'));
      const number = (file: string) => lstatSync(path.join(top, file)).ino;
      expect(number('b/etc/rewritten')).toBe(number('a/var'));
      // Send's stream links the new file to the running side's new directory ("link etc/rewritten dest=var").
      await expect(subvolumeChanges(path.join(top, 'a'), path.join(top, 'b'))).rejects.toThrow(/send stream/);
      const delta = await treeChanges(path.join(top, 'a'), path.join(top, 'b'), [], HELPER);
      expect(delta).toBeDefined();
      expect(seen(delta as SubvolumeDelta, path.join(top, 'a'), path.join(top, 'b'))).toEqual(
        new Map([
          ['etc/rewritten', 'arrived, vacated'],
          ['var', 'looked at, vacated'],
          ['var/lib', 'looked at, vacated'],
          ['var/lib/new-state', 'looked at, vacated'],
        ]),
      );
    });
  });

  it('gives no answer for subvolumes without a common ancestor, or whose ancestor is gone, unless a link stands for it', async () => {
    await withScratchBtrfs(1, async ({ top }) => {
      const first = path.join(top, 'first');
      const second = path.join(top, 'second');
      await execa('btrfs', ['subvolume', 'create', first]);
      await execa('btrfs', ['subvolume', 'create', second]);
      write(path.join(first, 'a'), 'a\n');
      await snapshot(first, path.join(top, 'first-ro'));
      await snapshot(second, path.join(top, 'second-ro'));
      expect(await treeChanges(path.join(top, 'first-ro'), path.join(top, 'second-ro'), [], HELPER)).toBeUndefined();

      const middle = path.join(top, 'middle');
      await execa('btrfs', ['subvolume', 'snapshot', first, middle]);
      write(path.join(middle, 'b'), 'b\n');
      await snapshot(middle, path.join(top, 'leaf-ro'));
      // What bootenv keeps of a subvolume it deletes (src/be/ancestry.ts), from btrfs's own account of it.
      const shown = (await execa('btrfs', ['subvolume', 'show', middle])).stdout;
      const field = (name: string) => new RegExp(`^\\s*${name}:\\s*(\\S+)`, 'm').exec(shown)?.[1] ?? '';
      const link = { uuid: field('UUID'), parentUuid: field('Parent UUID'), generation: Number(field('Gen at creation')) };
      await execa('btrfs', ['subvolume', 'delete', '--commit-after', middle]);
      await execa('btrfs', ['subvolume', 'sync', top]);
      expect(await treeChanges(path.join(top, 'first-ro'), path.join(top, 'leaf-ro'), [], HELPER)).toBeUndefined();
      // With the link, the way goes on through the deleted subvolume, and finds what send finds.
      const linked = await treeChanges(path.join(top, 'first-ro'), path.join(top, 'leaf-ro'), [link], HELPER);
      expect(linked).toBeDefined();
      const sent = await subvolumeChanges(path.join(top, 'first-ro'), path.join(top, 'leaf-ro'));
      expect(seen(linked as SubvolumeDelta, path.join(top, 'first-ro'), path.join(top, 'leaf-ro'))).toEqual(seen(sent, path.join(top, 'first-ro'), path.join(top, 'leaf-ro')));
      expect([...(linked as SubvolumeDelta).changed.keys()]).toEqual(['b']);
      await expect(treeChanges(path.join(top, 'first-ro'), path.join(top, 'leaf-ro'), [{ ...link, uuid: 'not-a-uuid' }], HELPER)).rejects.toThrow(/not a link/);
      // The helper's own exit codes, as its header gives them: 2 for a malformed link or usage, 1 for a path it cannot read.
      const malformed = await execa(HELPER, [path.join(top, 'first-ro'), path.join(top, 'leaf-ro'), 'not-a-link'], { reject: false });
      expect([malformed.exitCode, malformed.stdout]).toEqual([2, '']);
      expect((await execa(HELPER, [path.join(top, 'first-ro')], { reject: false })).exitCode).toBe(2);
      const unreadable = await execa(HELPER, [path.join(top, 'first-ro'), path.join(top, 'missing')], { reject: false });
      expect(unreadable.exitCode).toBe(1);
      expect(unreadable.stderr).toMatch(/bootenv-changes: .*missing: No such file or directory/);
      await expect(treeChanges(path.join(top, 'first-ro'), path.join(top, 'missing'), [], HELPER)).rejects.toThrow(/bootenv-changes/);
    });
  });
});
