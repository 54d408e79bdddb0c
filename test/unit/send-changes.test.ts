// What changed since a snapshot, replayed from a send stream (src/btrfs/send-changes.ts): on the
// real stream of test/fixtures-captured/send-stream-scenario.sh every change of the scenario is
// found, with nothing else; then on hand-made command lists, the replay's strictness.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { deltaOf } from '../../src/btrfs/send-changes.js';
import { SendStreamParser, type SendCommand } from '../../src/btrfs/send-stream.js';

function capturedCommands(): SendCommand[] {
  const parser = new SendStreamParser();
  const commands = parser.push(readFileSync(new URL('../fixtures-captured/send-no-data.btrfs-progs-6.2.stream', import.meta.url)));
  parser.end();
  return commands;
}

const snapshot: SendCommand = { type: 'snapshot', path: 'current', uuid: 'u', ctransid: 1n, parentUuid: 'p', parentCtransid: 1n };
const end: SendCommand = { type: 'end' };

describe('deltaOf a real stream', () => {
  const delta = deltaOf(capturedCommands());
  const change = (path: string) => delta.changed.get(path);

  it('lists new entries as arrived, wherever the stream first made them (orphan names, a directory filled before it was renamed into place)', () => {
    for (const path of ['srv', 'srv/www', 'srv/www/index.html', 'srv/with space', 'srv/new\nline', 'srv/link', 'srv/fifo', 'srv/null', 'srv/keep-link', 'etc/type-change', 'etc/type-change/f']) {
      expect(change(path), path).toMatchObject({ arrived: true, movedFrom: null });
    }
    expect([...delta.changed.keys()].filter((path) => /(^|\/)o\d+-\d+-\d+/.test(path))).toEqual([]);
  });

  it('lists content, metadata and times changes of existing entries as such', () => {
    for (const path of ['etc/modify', 'etc/truncate-me', 'var/lib/db/table', 'etc/pair-a']) expect(change(path), path).toMatchObject({ arrived: false, content: true });
    for (const path of ['etc/chmod-me', 'etc/chown-me', 'etc/xattr-me', 'etc/rmxattr-me', 'etc/capped']) expect(change(path), path).toMatchObject({ arrived: false, content: false, metadata: true });
    // touch -m and a read (atime) both come as utimes alone: the planner tells them apart by mtime and ctime.
    for (const path of ['etc/touch-me', 'etc/read-me', 'etc/keep']) expect(change(path), path).toMatchObject({ arrived: false, content: false, metadata: false });
    expect(change('etc/read-me')?.times?.mtime.seconds).toBe(BigInt(Date.UTC(2024, 0, 1) / 1000));
  });

  it('gives removals and moves away as vacated paths of the base, and a renamed directory once', () => {
    expect([...delta.vacated].sort()).toEqual(['dir-delete', 'dir-delete/c', 'dir-delete/sub', 'dir-delete/sub/d', 'dir-rename', 'dir-rename/a', 'etc/delete-me', 'etc/rename-me', 'etc/type-change']);
    expect(delta.moved).toEqual([{ from: 'dir-rename', to: 'dir-renamed' }]);
    expect(change('dir-renamed')).toMatchObject({ arrived: true, movedFrom: 'dir-rename' });
    // A file renamed comes as link + unlink: a new name of an existing inode.
    expect(change('etc/renamed')).toMatchObject({ arrived: true });
    // The other name of a hard-linked file whose content changed is not named by the stream.
    expect(change('etc/pair-b')).toBeUndefined();
  });
});

describe('deltaOf is strict', () => {
  it.each<[string, SendCommand[], RegExp]>([
    ['a full stream', [{ type: 'subvol', path: 'x', uuid: 'u', ctransid: 1n }, end], /expected an incremental stream/],
    ['no END', [snapshot], /no END command/],
    ['a name used after its removal', [snapshot, { type: 'unlink', path: 'a' }, { type: 'chmod', path: 'a', mode: 0o600 }, end], /used after it was removed/],
    ['an entry looked up inside a new directory', [snapshot, { type: 'mkdir', path: 'o1-1-0', inode: 257n }, { type: 'chmod', path: 'o1-1-0/x', mode: 0o600 }, end], /a new directory on its way holds no such entry/],
    ['a non-empty directory removed', [snapshot, { type: 'mkfile', path: 'd/f', inode: 300n }, { type: 'rmdir', path: 'd' }, end], /not empty/],
    ['an entry made over one', [snapshot, { type: 'mkfile', path: 'o1-1-0', inode: 257n }, { type: 'mkfile', path: 'o1-1-0', inode: 258n }, end], /already is/],
  ])('refuses %s', (_, commands, message) => {
    expect(() => deltaOf(commands)).toThrow(message);
  });

  it('a rename onto a name removed earlier in the stream is an arrival there, and the old entry is vacated', () => {
    const delta = deltaOf([snapshot, { type: 'unlink', path: 'etc/a' }, { type: 'rename', path: 'etc/b', to: 'etc/a' }, end]);
    expect(delta.changed.get('etc/a')).toMatchObject({ arrived: true, movedFrom: 'etc/b' });
    expect([...delta.vacated].sort()).toEqual(['etc/a', 'etc/b']);
  });
});
