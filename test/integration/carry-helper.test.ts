// bootenv-carry (src/native/bootenv-carry.c) through src/sys/carry.ts on a real btrfs: copies keep
// owner, mode (setuid), times to the nanosecond, xattrs, ACLs, file capabilities and inode flags,
// and share the source's extents (FICLONE) instead of writing data; links, removals, directory
// metadata and content writes; paths are never followed through symlinks; and the exchange of two
// subvolumes is one atomic rename. Asserted with stat, getfattr, getfacl, getcap, lsattr, filefrag.
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { applyCarryRecords, exchangePaths, setModificationTimes, type HelperRecord } from '../../src/sys/carry.js';
import { withScratchBtrfs } from '../harness/btrfs-image.js';

const HELPER = path.resolve('dist/bootenv-carry');

async function sh(script: string, ...args: string[]): Promise<string> {
  return (await execa('bash', ['-c', script, 'bash', ...args])).stdout;
}

/** What the tests compare of an entry: `stat` fields (times to the ns), xattrs (hex), ACL, capabilities, inode flags. */
async function metadata(file: string): Promise<string> {
  return sh(
    `stat -c '%F %a %u %g %s %x %y' "$1"
     getfattr --absolute-names -h -d -m - -e hex "$1" 2>/dev/null | grep -v '^#' | sort
     if [ ! -L "$1" ]; then getfacl -cp "$1" 2>/dev/null; getcap "$1" | awk '{ print $NF }'; fi
     if [ -f "$1" ] || [ -d "$1" ]; then lsattr -d "$1" | cut -d' ' -f1; fi`,
    file,
  );
}

/** Physical offsets of a file's extents, from filefrag -v. */
async function physicalExtents(file: string): Promise<string[]> {
  const output = await sh('sync; filefrag -v "$1"', file);
  return output.split('\n').filter((line) => /^\s*\d+:/.test(line)).map((line) => line.split(':')[2]?.trim().split('..')[0] ?? '');
}

describe('bootenv-carry apply', () => {
  it('copies every kind of entry with all its metadata, sharing the data', async () => {
    await withScratchBtrfs(1, async ({ top }) => {
      await execa('btrfs', ['subvolume', 'create', path.join(top, 'writable')]);
      await execa('btrfs', ['subvolume', 'create', path.join(top, 'work')]);
      const writable = path.join(top, 'writable');
      const origin = path.join(top, 'origin');
      const work = path.join(top, 'work');
      mkdirSync(path.join(writable, 'srv/data'), { recursive: true });
      mkdirSync(path.join(work, 'srv'), { recursive: true });
      await sh(
        `cd "$1"
         head -c 8388608 /dev/urandom > srv/data/big.db
         printf 'x' > srv/data/attrs; setfattr -n user.note -v "two
lines" srv/data/attrs; setfacl -m u:1000:rw,g:1000:r srv/data/attrs
         printf 'cap' > srv/data/ping; setcap cap_net_raw+ep srv/data/ping
         printf 'suid' > srv/data/tool; chown 1000:1000 srv/data/tool; chmod 4755 srv/data/tool
         touch -h -d '2024-05-06 07:08:09.123456789' srv/data/attrs srv/data/tool
         printf 'pair' > srv/data/a; ln srv/data/a srv/data/b
         ln -s ../data/big.db srv/data/link; chown -h 1000:1000 srv/data/link
         mkfifo srv/data/fifo; mknod srv/data/null c 1 3
         touch srv/data/nocow; chattr +C srv/data/nocow; head -c 65536 /dev/urandom >> srv/data/nocow
         printf 'frozen' > srv/data/frozen; chattr +i srv/data/frozen
         printf 'new\\nline' > 'srv/data/new
name'
         chmod 2750 srv/data; setfattr -n user.dir -v d srv/data; setfacl -d -m u:1000:rwx srv/data
         touch -d '2023-01-02 03:04:05.5' srv/data`,
        writable,
      );
      // As a carry reads the origin: from a read-only snapshot (reading it moves no atime).
      await execa('btrfs', ['subvolume', 'snapshot', '-r', writable, origin]);
      const files = ['big.db', 'attrs', 'ping', 'tool', 'a', 'link', 'fifo', 'null', 'nocow', 'frozen', 'new\nname'];
      const records: HelperRecord[] = [
        { op: 'mkdir', first: 'srv/data', second: 'srv/data' },
        ...files.map((name): HelperRecord => ({ op: 'copy', first: `srv/data/${name}`, second: `srv/data/${name}` })),
        { op: 'link', first: 'srv/data/a', second: 'srv/data/b' },
        { op: 'times', first: 'srv/data', second: 'srv/data' },
      ];
      const outcomes = await applyCarryRecords(origin, work, records, HELPER);
      expect(outcomes).toEqual(records.map(() => ({ status: 'ok' })));
      for (const name of [...files, '']) {
        expect(await metadata(path.join(work, 'srv/data', name)), name).toBe(await metadata(path.join(origin, 'srv/data', name)));
      }
      expect(await sh('getcap "$1"', path.join(work, 'srv/data/ping'))).toMatch(/cap_net_raw=ep/);
      expect(await sh('stat -c %i "$1" "$2"', path.join(work, 'srv/data/a'), path.join(work, 'srv/data/b'))).toMatch(/^(\d+)\n\1$/);
      expect(await physicalExtents(path.join(work, 'srv/data/big.db'))).toEqual(await physicalExtents(path.join(origin, 'srv/data/big.db')));
      expect(await physicalExtents(path.join(work, 'srv/data/nocow'))).toEqual(await physicalExtents(path.join(origin, 'srv/data/nocow')));
      expect(readFileSync(path.join(work, 'srv/data/new\nname'), 'utf8')).toBe('new\nline');
      // No temporary names are left behind.
      expect((await sh('ls -A "$1"', path.join(work, 'srv/data'))).split('\n').filter((name) => name.includes('bootenv-carry'))).toEqual([]);
      await sh('chattr -i "$1" "$2"', path.join(writable, 'srv/data/frozen'), path.join(work, 'srv/data/frozen'));
    });
  });

  it('replaces, removes, rewrites content keeping metadata, prunes directory xattrs, and reports each failure in its place', async () => {
    await withScratchBtrfs(1, async ({ top }) => {
      const origin = path.join(top, 'origin');
      const work = path.join(top, 'work');
      mkdirSync(path.join(origin, 'etc'), { recursive: true });
      mkdirSync(path.join(work, 'etc/gone-dir'), { recursive: true });
      writeFileSync(path.join(origin, 'etc/replaced'), 'origin');
      writeFileSync(path.join(origin, 'etc/tool'), 'old setuid tool');
      await sh('chmod 4755 "$1"; setcap cap_net_raw+ep "$1"; chmod 4755 "$1"', path.join(origin, 'etc/tool'));
      writeFileSync(path.join(work, 'etc/replaced'), 'work');
      writeFileSync(path.join(work, 'etc/gone'), 'x');
      writeFileSync(path.join(work, 'etc/shadow'), 'old\n');
      await sh('chown 0:42 "$1"; chmod 640 "$1"; setfattr -n user.label -v keep "$1"', path.join(work, 'etc/shadow'));
      await sh('setfattr -n user.stale -v x "$1"; chmod 700 "$1"', path.join(work, 'etc'));
      await sh('chmod 755 "$1"', path.join(origin, 'etc'));
      symlinkSync('/etc', path.join(work, 'escape'));
      const records: HelperRecord[] = [
        { op: 'copy', first: 'etc/replaced', second: 'etc/replaced' },
        { op: 'remove', first: '', second: 'etc/gone' },
        { op: 'remove', first: '', second: 'etc/gone-dir' },
        { op: 'remove', first: '', second: 'etc/never-there' },
        { op: 'write', first: Buffer.from('root:*:19000::::::\n'), second: 'etc/shadow' },
        { op: 'meta', first: 'etc', second: 'etc' },
        { op: 'copy', first: 'etc/replaced', second: 'escape/passwd' },
        { op: 'copy', first: 'etc/missing', second: 'etc/missing' },
        { op: 'save', first: 'etc/tool', second: 'etc/tool.bootenv-origin' },
      ];
      const outcomes = await applyCarryRecords(origin, work, records, HELPER);
      expect(outcomes.slice(0, 6)).toEqual(Array(6).fill({ status: 'ok' }));
      expect(outcomes[6]).toMatchObject({ status: 'error', errno: 'ELOOP' });
      expect(outcomes[7]).toMatchObject({ status: 'error', errno: 'ENOENT', message: expect.stringMatching(/^stat source/) });
      // A saved copy is for reading: no setuid bit, no capabilities.
      expect(outcomes[8]).toEqual({ status: 'ok' });
      expect(await sh('stat -c %a "$1"; getcap "$1"', path.join(work, 'etc/tool.bootenv-origin'))).toBe('755');
      expect(readFileSync(path.join(work, 'etc/replaced'), 'utf8')).toBe('origin');
      expect(await sh('ls -A "$1"', path.join(work, 'etc'))).toBe('replaced\nshadow\ntool.bootenv-origin');
      expect(readFileSync(path.join(work, 'etc/shadow'), 'utf8')).toBe('root:*:19000::::::\n');
      expect(await sh('stat -c "%a %u %g" "$1"; getfattr --absolute-names -n user.label --only-values "$1"', path.join(work, 'etc/shadow'))).toBe('640 0 42\nkeep');
      expect(await sh('stat -c %a "$1"; getfattr --absolute-names -d "$1"', path.join(work, 'etc'))).toBe('755');
    });
  });
});

describe('bootenv-carry exchange', () => {
  it('swaps two subvolumes in one rename, even with one of them mounted elsewhere', async () => {
    await withScratchBtrfs(1, async ({ top, loop }) => {
      await execa('btrfs', ['subvolume', 'create', path.join(top, 'be')]);
      mkdirSync(path.join(top, 'carry'));
      await execa('btrfs', ['subvolume', 'snapshot', path.join(top, 'be'), path.join(top, 'carry/work')]);
      writeFileSync(path.join(top, 'carry/work/carried'), 'yes');
      const uuid = async (subvolume: string) => (await sh('btrfs subvolume show "$1" | sed -n "s/^\\s*UUID:\\s*//p"', subvolume)).trim();
      const [before, work] = [await uuid(path.join(top, 'be')), await uuid(path.join(top, 'carry/work'))];
      // Mounted as the initramfs mounts the BE it boots, in a namespace of its own.
      const script = `mkdir -p "$3"; mount -o ro,subvol=be "$1" "$3"; "$2" exchange "$4/carry/work" "$4/be"; rc=$?; ls "$3"; umount "$3"; exit $rc`;
      const result = await execa('unshare', ['--mount', '--propagation', 'private', 'bash', '-c', script, 'bash', loop, HELPER, path.join(path.dirname(top), 'mnt'), top], { reject: false });
      expect(result.exitCode).toBe(0);
      expect(await uuid(path.join(top, 'be'))).toBe(work);
      expect(await uuid(path.join(top, 'carry/work'))).toBe(before);
      expect(readFileSync(path.join(top, 'be/carried'), 'utf8')).toBe('yes');
      await exchangePaths(path.join(top, 'be'), path.join(top, 'carry/work'), HELPER);
      expect(await uuid(path.join(top, 'be'))).toBe(before);
      await expect(exchangePaths(path.join(top, 'be'), path.join(top, 'nothing'), HELPER)).rejects.toThrow(/No such file or directory/);
    });
  });
});

describe('bootenv-carry mtimes', () => {
  it('sets modification times to the nanosecond, leaving access times, not following symlinks; a missing path fails the call, a malformed record exits 2', async () => {
    await withScratchBtrfs(1, async ({ top }) => {
      const file = path.join(top, 'file');
      const link = path.join(top, 'link');
      const directory = path.join(top, 'directory');
      writeFileSync(file, 'x');
      symlinkSync('file', link);
      mkdirSync(directory);
      await sh('touch -a -d "2023-01-02 03:04:05.987654321" "$1"', file);
      const accessBefore = await sh('stat -c "%x" "$1"', file);
      expect(accessBefore).toMatch(/^2023-01-02 03:04:05\.987654321 /);
      await setModificationTimes(
        [
          { path: file, mtime: '1796406700.057453016' },
          { path: link, mtime: '1600000000.000000001' },
          { path: directory, mtime: '1700000000.123456789' },
        ],
        HELPER,
      );
      expect(await sh('stat -c "%Y %y" "$1"', file)).toMatch(/^1796406700 \S+ \d\d:\d\d:\d\d\.057453016 /);
      expect(await sh('stat -c "%x" "$1"', file)).toBe(accessBefore);
      expect(await sh('stat -c "%Y %y" "$1"', link)).toMatch(/^1600000000 \S+ \d\d:\d\d:\d\d\.000000001 /);
      expect(await sh('stat -c "%Y %y" "$1"', directory)).toMatch(/^1700000000 \S+ \d\d:\d\d:\d\d\.123456789 /);
      await expect(setModificationTimes([{ path: path.join(top, 'missing'), mtime: '1.000000000' }], HELPER)).rejects.toThrow(/missing: error ENOENT/);
      const malformed = await execa(HELPER, ['mtimes'], { input: `${file}\u00001.5\u0000`, reject: false });
      expect(malformed.exitCode).toBe(2);
      expect(await sh('stat -c "%Y" "$1"', file)).toBe('1796406700');
    });
  });
});
