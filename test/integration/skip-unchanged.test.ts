// The skip-unchanged pass at the end of a diverted apt transaction (issue #6), with real apt 2.6
// and dpkg 1.21 in a sandbox Debian 12. The same dist-upgrade (bootenv-t-changed 1.0 → 1.1,
// bootenv-t-share 1.0 → 1.1 pulling in bootenv-t-share-extra) runs twice from the same base:
// once with the pass, once with skip-unchanged = no. Checked from the host: identical files share
// the base's extents (filefrag physical blocks), changed ones do not; every file's mode, owner,
// size, mtime and content, hard links, setuid bit and capabilities (set by a postinst with
// setcap) are the same as without the pass. beadm dedupe does for the BE made without the pass what
// the pass did; beadm audit's numbers equal btrfs qgroup show's for every BE (quotas on, rescanned).
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { SpaceAudit } from '../../src/be/space.js';
import { cachedDebianPackage } from '../harness/debian-packages.js';
import { exclusiveBytes, extentsOf, physicalLayout } from '../harness/extents.js';
import { diffManifests, takeManifest } from '../harness/manifest.js';
import { installRepositoryInRoot } from '../harness/repo.js';
import { useSandbox } from '../harness/use-sandbox.js';

const APT = 'export DEBIAN_FRONTEND=noninteractive; ';

/** Level-0 quota groups from `btrfs qgroup show --raw` (btrfs-progs 6.2: with a Path column), by path. */
function parseQgroups(output: string): Map<string, { referenced: number; exclusive: number }> {
  const groups = new Map<string, { referenced: number; exclusive: number }>();
  for (const line of output.split('\n')) {
    const match = /^0\/\d+\s+(\d+)\s+(\d+)\s+(\S+)$/.exec(line.trim());
    if (match !== null) groups.set(match[3] as string, { referenced: Number(match[1]), exclusive: Number(match[2]) });
  }
  return groups;
}
const FIRST = '@bootenv/debian-12';
const BASE = '@bootenv/base';
const WITH_PASS = '@bootenv/upgraded';
const WITHOUT_PASS = '@bootenv/unshared';
const SHARE = 'usr/share/bootenv-t-share';
/** Files of the new versions identical to a file of the base: [path in the new BE, path in the base]. */
const IDENTICAL: Array<[string, string]> = [
  ['usr/share/bootenv-t-changed/same.bin', 'usr/share/bootenv-t-changed/same.bin'],
  [`${SHARE}/same.bin`, `${SHARE}/same.bin`],
  [`${SHARE}/new-place.bin`, `${SHARE}/old-place.bin`],
  ['usr/share/bootenv-t-share-extra/from-share.bin', `${SHARE}/to-extra.bin`],
  [`${SHARE}/hard-a.bin`, `${SHARE}/hard-a.bin`],
  [`${SHARE}/hard-b.bin`, `${SHARE}/hard-b.bin`],
  ['usr/lib/bootenv-t-share/setuid', 'usr/lib/bootenv-t-share/setuid'],
  ['usr/lib/bootenv-t-share/capped', 'usr/lib/bootenv-t-share/capped'],
  [`${SHARE}/sparse.bin`, `${SHARE}/sparse.bin`],
  [`${SHARE}/mid.bin`, `${SHARE}/mid.bin`],
];
const PACKAGE_TREES = ['usr/share/bootenv-t-changed', SHARE, 'usr/lib/bootenv-t-share', 'usr/share/bootenv-t-share-extra'];

describe('skip-unchanged at the end of a diverted apt transaction', () => {
  const sandbox = useSandbox(() => inject('bookwormBase'), 'ubuntu');
  let withPassOutput = '';
  let withoutPassOutput = '';

  beforeAll(async () => {
    const libcap = await cachedDebianPackage('libcap2-bin');
    await sandbox().withTopLevel((top) => installRepositoryInRoot(path.join(top, '@'), undefined, { extraDebs: [libcap] }));
    expect((await sandbox().beadm('@', ['init'])).exitCode).toBe(0);
    const install = await sandbox().boot(FIRST, ['bash', '-c', `${APT} apt-get update -qq && BOOTENV_BE_NAME=base apt-get install -y bootenv-t-changed=1.0 bootenv-t-share=1.0 2>&1; echo "rc=$?"; beadm create nopass -e base`]);
    expect(install.stdout).toContain('rc=0');
    // The same base, told not to run the pass.
    await sandbox().withTopLevel(async (top) => {
      const conf = path.join(top, '@bootenv/nopass/etc/bootenv/bootenv.conf');
      writeFileSync(conf, readFileSync(conf, 'utf8').replace(/^skip-unchanged = yes$/m, 'skip-unchanged = no'));
    });
    const upgrade = (booted: string, name: string) => sandbox().boot(booted, ['bash', '-c', `${APT} BOOTENV_BE_NAME=${name} apt-get dist-upgrade -y 2>&1; echo "rc=$?"`]);
    withPassOutput = (await upgrade(BASE, 'upgraded')).stdout;
    withoutPassOutput = (await upgrade('@bootenv/nopass', 'unshared')).stdout;
    expect(withPassOutput).toContain('rc=0');
    expect(withoutPassOutput).toContain('rc=0');
  });

  it('says in apt\'s output how many files and bytes now share extents', () => {
    // 128 KiB + 200000 + 90000 + 80000 + 70000 (two hard links, one inode) + 60000 + 50000 + 400000 + 3000 bytes.
    // Inline: small.txt and the conffile (dpkg's own md5sums list it when the package ships none).
    expect(withPassOutput.split('\n').filter((line) => line.includes('skip-unchanged'))).toEqual([
      expect.stringMatching(/^bootenv: skip-unchanged: 9 files \(1\.0M\) identical to the previous BE's share its extents; 0 were shared already; 2 of at most 2048 bytes are stored inline \(\d+\.\d\d s\)\.$/),
    ]);
    expect(withoutPassOutput).not.toContain('skip-unchanged');
    expect(withPassOutput).toContain("bootenv: apt's changes are in boot environment upgraded");
  });

  it('dpkg writes md5sums for a package that ships none (the planner relies on them)', async () => {
    await sandbox().withTopLevel(async (top) => {
      // bootenv-t-changed is built without DEBIAN/md5sums; dpkg 1.21 hashes while unpacking.
      const md5sums = readFileSync(path.join(top, WITH_PASS, 'var/lib/dpkg/info/bootenv-t-changed.md5sums'), 'utf8');
      expect(md5sums).toMatch(/^[0-9a-f]{32}  usr\/share\/bootenv-t-changed\/same\.bin$/m);
    });
  });

  it('identical files share the base\'s extents; changed files do not; without the pass nothing is shared', async () => {
    await sandbox().withTopLevel(async (top) => {
      for (const [file, inBase] of IDENTICAL) {
        const base = await physicalLayout(path.join(top, BASE, inBase));
        expect(await physicalLayout(path.join(top, WITH_PASS, file)), file).toEqual(base);
        expect(await physicalLayout(path.join(top, WITHOUT_PASS, file)), file).not.toEqual(base);
      }
      expect(await physicalLayout(path.join(top, WITH_PASS, SHARE, 'changed.bin'))).not.toEqual(await physicalLayout(path.join(top, BASE, SHARE, 'changed.bin')));
      // Tiny files live inline in the metadata, with or without the pass.
      for (const file of ['usr/share/bootenv-t-changed/changed.txt', `${SHARE}/small.txt`]) {
        expect((await extentsOf(path.join(top, WITH_PASS, file)))[0]?.flags, file).toContain('inline');
      }
      // Of the package files, only changed.bin (150000 bytes: 37 blocks) stays the new BE's own.
      const exclusive = await Promise.all(PACKAGE_TREES.map((tree) => exclusiveBytes(path.join(top, WITH_PASS, tree))));
      expect(exclusive.reduce((sum, bytes) => sum + bytes, 0)).toBe(37 * 4096);
      const exclusiveWithout = await Promise.all(PACKAGE_TREES.map((tree) => exclusiveBytes(path.join(top, WITHOUT_PASS, tree))));
      expect(exclusiveWithout.reduce((sum, bytes) => sum + bytes, 0)).toBeGreaterThan(1_000_000);
    });
  });

  it('leaves every file as stock dpkg left it: content, mode (setuid), owner, mtime, hard links, capabilities', async () => {
    await sandbox().withTopLevel(async (top) => {
      for (const tree of [...PACKAGE_TREES, 'etc']) {
        const files = async (root: string) => {
          const manifest = await takeManifest(path.join(top, root, tree), { exclude: [] });
          // Directory mtimes say when dpkg created them, which differs between the two runs; in /etc only the conffile is the package's.
          return new Map([...manifest].filter(([file, line]) => !line.startsWith('directory ') && (tree !== 'etc' || file === '/bootenv-t-share.conf')));
        };
        expect(diffManifests(await files(WITHOUT_PASS), await files(WITH_PASS)), tree).toEqual([]);
      }
      for (const root of [WITH_PASS, WITHOUT_PASS, BASE]) {
        const capped = path.join(top, root, 'usr/lib/bootenv-t-share/capped');
        expect(execFileSync('getcap', [capped]).toString(), root).toMatch(/cap_net_raw[=+]ep/);
        expect(statSync(path.join(top, root, 'usr/lib/bootenv-t-share/setuid')).mode & 0o7777).toBe(0o4755);
        const hardA = statSync(path.join(top, root, SHARE, 'hard-a.bin'));
        expect(hardA.nlink).toBe(2);
        expect(statSync(path.join(top, root, SHARE, 'hard-b.bin')).ino).toBe(hardA.ino);
      }
      expect(readFileSync(path.join(top, WITH_PASS, 'etc/bootenv-t-share.conf'), 'utf8')).toBe(readFileSync(path.join(top, WITHOUT_PASS, 'etc/bootenv-t-share.conf'), 'utf8'));
    });
  });

  it('beadm dedupe shares what the pass would have, for a BE made without it; a second run finds nothing left', async () => {
    const dryRun = await sandbox().beadm(BASE, ['dedupe', 'unshared', '--against', 'base', '--dry-run']);
    expect(dryRun.exitCode, dryRun.stderr).toBe(0);
    expect(dryRun.stdout).toMatch(/^beadm: unshared against base: skip-unchanged: 9 files \(1\.0M\) identical to the previous BE's would share its extents;/);
    await sandbox().withTopLevel(async (top) => {
      expect(await physicalLayout(path.join(top, WITHOUT_PASS, SHARE, 'same.bin'))).not.toEqual(await physicalLayout(path.join(top, BASE, SHARE, 'same.bin')));
    });
    const run = await sandbox().beadm(BASE, ['dedupe', 'unshared', '--against', 'base']);
    expect(run.stdout).toMatch(/^beadm: unshared against base: skip-unchanged: 9 files \(1\.0M\) identical to the previous BE's share its extents;/);
    await sandbox().withTopLevel(async (top) => {
      for (const [file, inBase] of IDENTICAL) expect(await physicalLayout(path.join(top, WITHOUT_PASS, file)), file).toEqual(await physicalLayout(path.join(top, BASE, inBase)));
    });
    const again = await sandbox().beadm(BASE, ['dedupe', 'unshared', '--against', 'base', '--json']);
    expect(JSON.parse(again.stdout).report.shared).toEqual({ files: 0, bytes: 0 });
  });

  it('beadm audit: referenced, exclusive (data and tree blocks), shared with the origin, identical but unshared; without quotas', async () => {
    const [base, upgraded] = await audit(['base', 'upgraded']);
    expect(upgraded).toMatchObject({ name: 'upgraded', origin: 'base', identicalUnsharedBytes: 0, quota: null });
    expect(base?.origin).toBe('debian-12');
    // btrfs filesystem du counts the data bytes files use; the audit whole extents, and the tree blocks the BE owns alone too.
    const duExclusive = await sandbox().withTopLevel((top) => exclusiveBytes(path.join(top, WITH_PASS)));
    expect(upgraded?.metadataExclusiveBytes).toBeGreaterThan(0);
    expect((upgraded?.exclusiveBytes ?? 0) - (upgraded?.metadataExclusiveBytes ?? 0)).toBeGreaterThanOrEqual(duExclusive);
    // Destroying it frees its exclusive bytes and those of its pending carry's snapshot (the origin as of its making).
    expect(upgraded?.carrySnapshotBytes).toBeGreaterThan(0);
    expect(upgraded?.freedByDestroyBytes).toBe((upgraded?.exclusiveBytes ?? 0) + (upgraded?.carrySnapshotBytes ?? 0));
    expect((upgraded?.sharedWithOriginBytes ?? 0) + (upgraded?.exclusiveBytes ?? 0)).toBeLessThanOrEqual(upgraded?.referencedBytes ?? 0);
    expect(upgraded?.sharedWithOriginBytes).toBeGreaterThan((upgraded?.referencedBytes ?? 0) * 0.95);
  });

  it('beadm audit agrees with btrfs qgroup show (quotas on, after quota rescan -w) within 1 %, for every BE', async () => {
    await sandbox().withTopLevel(async (top) => {
      // Nothing left pending: deleted subvolumes cleaned, every change committed; then quota groups counted afresh.
      execFileSync('btrfs', ['subvolume', 'sync', top]);
      execFileSync('btrfs', ['filesystem', 'sync', top]);
      execFileSync('btrfs', ['quota', 'enable', top]);
      execFileSync('btrfs', ['quota', 'rescan', '-w', top]);
    });
    try {
      const audits = await audit([]);
      expect(audits.map(({ name }) => name).sort()).toEqual(['base', 'debian-12', 'nopass', 'unshared', 'upgraded']);
      const qgroups = await sandbox().withTopLevel(async (top) => {
        execFileSync('btrfs', ['filesystem', 'sync', top]);
        return parseQgroups(execFileSync('btrfs', ['qgroup', 'show', '--raw', top]).toString());
      });
      for (const environment of audits) {
        const quota = qgroups.get(environment.subvolume);
        expect(quota, environment.subvolume).toBeDefined();
        const difference = (counted: number, byQuota: number) => Math.abs(counted - byQuota) / byQuota;
        expect(difference(environment.referencedBytes, quota?.referenced ?? 0), `${environment.name} referenced`).toBeLessThanOrEqual(0.01);
        expect(difference(environment.exclusiveBytes, quota?.exclusive ?? 0), `${environment.name} exclusive`).toBeLessThanOrEqual(0.01);
        expect(environment.quota).toEqual({ referencedBytes: quota?.referenced, exclusiveBytes: quota?.exclusive, agrees: true });
        console.log(`audit ${environment.name}: referenced ${environment.referencedBytes} (quota ${quota?.referenced}), exclusive ${environment.exclusiveBytes} (quota ${quota?.exclusive})`);
      }
      const upgraded = audits.find(({ name }) => name === 'upgraded');
      expect(upgraded?.freedByDestroyBytes).toBe((qgroups.get(WITH_PASS)?.exclusive ?? 0) + (upgraded?.carrySnapshotBytes ?? 0));
    } finally {
      await sandbox().withTopLevel(async (top) => execFileSync('btrfs', ['quota', 'disable', top]));
    }
  });

  async function audit(names: string[]): Promise<SpaceAudit[]> {
    const result = await sandbox().beadm(BASE, ['audit', ...names, '--json']);
    expect(result.exitCode, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as SpaceAudit[];
  }
});
