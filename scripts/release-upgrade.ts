/**
 * The release upgrade in a BE (issue #18), end to end, outside npm test (it
 * needs deb.debian.org and about a quarter of an hour): Debian 12 → 13 with
 * a plain `apt-get full-upgrade` after switching the sources, diverted by
 * bootenv into a new BE (`beadm upgrade --be-name NAME -- full-upgrade` runs
 * the same apt-get); then a real boot of the Debian 13 BE in qemu and a
 * rollback boot into Debian 12.
 *
 * The machine is the BIOS image of the real-boot test (test/harness/image.ts:
 * GRUB 2.06, Debian 12's kernel, bootenv from this checkout's .deb). qemu
 * has no network and, without KVM, runs the guest about twenty times slower,
 * so the full-upgrade itself runs on the host against the image, chrooted in
 * the booted BE as the sandboxes run one (native speed, the host's network):
 * it is the same apt, dpkg and bootenv that would run in the guest. What is
 * checked, with the real tools from the host: the Debian 12 BE's packages
 * (dpkg-query) and files (a content manifest, apt's own lists and caches and
 * the switched sources.list aside) are what they were; the new BE holds
 * Debian 13; it boots (systemd reaches multi-user.target) with Debian 13's
 * kernel; `beadm activate debian-12` there and a reboot bring Debian 12 back.
 *
 * Run: npm run release-upgrade. Serial logs go to
 * test-artifacts/release-upgrade/, the summary to
 * docs/release-upgrade.log (kept in the repository: the last run's). Exits
 * non-zero at the first check that fails.
 */
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { BOOKWORM, REPOSITORY, ensureBase } from '../test/harness/base.js';
import { BootMachine, ensureBootImage, type BootResult } from '../test/harness/image.js';
import { diffManifests, takeManifest } from '../test/harness/manifest.js';

const FIRST = 'debian-12';
const NEW = 'debian-13';
const TRIXIE_SOURCES = 'deb http://deb.debian.org/debian trixie main\ndeb http://deb.debian.org/debian-security trixie-security main\n';
/** Not the release's files: apt's lists and downloads and its logs, and the sources the admin switched, besides the API filesystems. */
const EXCLUDE = ['/proc', '/sys', '/dev', '/run', '/tmp', '/var/cache/apt', '/var/lib/apt/lists', '/var/log/apt', '/etc/apt/sources.list'];
const LOG = path.join(REPOSITORY, 'docs/release-upgrade.log');

const lines: string[] = [];
function say(line: string): void {
  lines.push(line);
  console.log(line);
}

function check(ok: boolean, what: string, detail = ''): void {
  say(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) throw new Error(`${what}${detail === '' ? '' : `\n${detail}`}`);
}

/** The one probe report of a boot that came up with its step exiting 0. */
function cameUp(result: BootResult, name: string): { subvolume: string; output: string } {
  const report = result.steps[0];
  check(!result.timedOut && result.steps.length === 1 && report?.exitCode === 0, `${name}: came up and ran its step (${result.seconds.toFixed(0)} s in qemu)`, result.log.slice(-4000));
  return { subvolume: report!.subvolume, output: report!.output };
}

async function packagesOf(machine: BootMachine, subvolume: string): Promise<string> {
  return machine.withTopLevel(async (top) => (await execa('dpkg-query', [`--admindir=${path.join(top, subvolume, 'var/lib/dpkg')}`, '-W', '-f', '${Package} ${Version} ${db:Status-Abbrev}\n'])).stdout);
}

async function main(): Promise<void> {
  const begun = Date.now();
  const minutes = (since: number) => `${((Date.now() - since) / 60000).toFixed(1)} min`;
  const deb = path.join(REPOSITORY, (await execa('bash', [path.join(REPOSITORY, 'scripts/build-deb.sh')])).stdout.trim().split('\n').at(-1) as string);
  const image = await ensureBootImage(await ensureBase(BOOKWORM), deb, 'bios');
  say(`release upgrade Debian 12 → 13 in a BE, ${new Date().toISOString()}; image ${path.basename(image)} ready after ${minutes(begun)}`);
  const machine = await BootMachine.create(image, path.join(REPOSITORY, 'test-artifacts/release-upgrade'));
  try {
    const init = cameUp(await machine.boot('installed-root', 'beadm init'), 'boot 1, installed root: beadm init');
    check(init.subvolume === '@', 'boot 1 ran on the installed root');

    // The image has no resolver (qemu gives it no network); the host's, for the downloads, while apt runs on the host.
    const resolver = (top: string, subvolume: string) => path.join(top, '@bootenv', subvolume, 'etc/resolv.conf');
    await machine.withTopLevel(async (top) => copyFileSync('/etc/resolv.conf', resolver(top, FIRST)));
    const before = await machine.withTopLevel((top) => takeManifest(path.join(top, '@bootenv', FIRST), { exclude: EXCLUDE }));
    const packagesBefore = await packagesOf(machine, `@bootenv/${FIRST}`);
    const upgradeBegun = Date.now();
    const upgrade = await machine.chroot(
      `@bootenv/${FIRST}`,
      [
        'export DEBIAN_FRONTEND=noninteractive',
        `printf '${TRIXIE_SOURCES.replace(/\n/g, '\\n')}' > /etc/apt/sources.list`,
        'apt-get update -qq',
        `BOOTENV_BE_NAME=${NEW} apt-get full-upgrade -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold > /run/full-upgrade.log 2>&1; status=$?`,
        'grep -E "upgraded, .* newly installed|apt.s changes are in boot environment|^bootenv:" /run/full-upgrade.log',
        '[ "$status" -eq 0 ] || tail -n 60 /run/full-upgrade.log',
        'echo "full-upgrade exit status $status"',
        'cat /etc/debian_version',
      ].join('\n'),
    );
    say(`full-upgrade on the host, chrooted in ${FIRST}: ${minutes(upgradeBegun)}`);
    for (const line of upgrade.output.trim().split('\n').slice(-12)) say(`  | ${line}`);
    check(!/Failed to fetch|Temporary failure resolving/.test(upgrade.output), 'apt-get update reached the Debian 13 archive', upgrade.output);
    check(upgrade.exitCode === 0 && upgrade.output.includes('full-upgrade exit status 0'), 'apt-get full-upgrade exited 0', upgrade.output);
    check(upgrade.output.includes(`apt's changes are in boot environment ${NEW}`), `apt's changes went into the new BE ${NEW}`, upgrade.output);

    const after = await machine.withTopLevel((top) => takeManifest(path.join(top, '@bootenv', FIRST), { exclude: EXCLUDE }));
    await machine.withTopLevel(async (top) => {
      for (const subvolume of [FIRST, NEW]) rmSync(resolver(top, subvolume), { force: true });
    });
    const changed = diffManifests(before, after);
    check(changed.length === 0, `${FIRST}'s files are as they were (content manifest, apt's lists and caches and sources.list aside)`, changed.slice(0, 40).join('\n'));
    check((await packagesOf(machine, `@bootenv/${FIRST}`)) === packagesBefore, `${FIRST}'s packages are as they were (dpkg-query)`);
    const versions = await machine.withTopLevel(async (top) => ({
      old: (await execa('cat', [path.join(top, '@bootenv', FIRST, 'etc/debian_version')])).stdout.trim(),
      new: (await execa('cat', [path.join(top, '@bootenv', NEW, 'etc/debian_version')])).stdout.trim(),
    }));
    check(versions.old.startsWith('12.') && versions.new.startsWith('13'), `/etc/debian_version: ${FIRST} ${versions.old}, ${NEW} ${versions.new}`);
    const installed = (listing: string) => new Set(listing.split('\n').map((line) => line.trimEnd()).filter((line) => line.endsWith(' ii')));
    const old = installed(packagesBefore);
    const now = installed(await packagesOf(machine, `@bootenv/${NEW}`));
    say(`dpkg-query: ${[...now].filter((line) => !old.has(line)).length} packages of ${NEW} at a version ${FIRST} does not have (${now.size} installed; ${old.size} in ${FIRST})`);

    const thirteen = cameUp(
      await machine.boot('debian-13', ['cat /etc/debian_version', 'uname -r', 'node --version', 'systemctl is-system-running || true', 'beadm list -H', `beadm activate ${FIRST}`].join('\n'), { late: true, timeoutSeconds: 1800 }),
      `boot 2, ${NEW} (the default after the upgrade), fully booted; beadm activate ${FIRST}`,
    );
    check(thirteen.subvolume === `@bootenv/${NEW}`, `boot 2 ran on @bootenv/${NEW}`, thirteen.output);
    check(/^13(\.\d+)?$/m.test(thirteen.output) && /6\.12\./.test(thirteen.output), 'Debian 13 with its own kernel (6.12) is up', thirteen.output);
    for (const line of thirteen.output.trim().split('\n').filter((line) => !line.startsWith('+ '))) say(`  | ${line}`);

    const twelve = cameUp(await machine.boot('rollback', ['cat /etc/debian_version', 'uname -r', 'beadm list -H'].join('\n'), { timeoutSeconds: 1200 }), `boot 3, rollback to ${FIRST}`);
    check(twelve.subvolume === `@bootenv/${FIRST}`, `boot 3 ran on @bootenv/${FIRST}`, twelve.output);
    check(twelve.output.includes(versions.old) && /6\.1\./.test(twelve.output), `Debian ${versions.old} with its own kernel (6.1) is up again`, twelve.output);
    for (const line of twelve.output.trim().split('\n').filter((line) => !line.startsWith('+ '))) say(`  | ${line}`);
    say(`all checks passed in ${minutes(begun)} (full-upgrade ${minutes(upgradeBegun)} ago started)`);
  } finally {
    await machine.close();
    writeFileSync(LOG, `${lines.join('\n')}\n`);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
