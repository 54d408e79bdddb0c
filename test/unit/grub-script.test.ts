// hooks/grub.d/09_bootenv, the real script run with sh on a temporary root (BOOTENV_ROOT): it
// makes grub.cfg read entries.cfg at boot (or copies an older beadm's entries.cfg in) unless dpkg
// has the bootenv package removed, whatever the path of beadm, and says so on stderr when it
// leaves entries out. dpkg-query is the real one; grub-script-check, where installed, checks
// what it writes.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeEach, describe, expect, it } from 'vitest';
import { SOURCING_MARKER } from '../../src/grub/config.js';
import { generateBootMenu, LINUX_FUNCTION } from '../../src/grub/menu.js';
import { useTemporaryDirectory } from './helpers.js';

const SCRIPT = fileURLToPath(new URL('../../hooks/grub.d/09_bootenv', import.meta.url));
/** The script as bootenv shipped it up to 5e36de8 (it copies entries.cfg into grub.cfg). */
const OLDER_SCRIPT = fileURLToPath(new URL('../../fixtures/grub/09_bootenv.older', import.meta.url));
const HAVE_DPKG_QUERY = spawnSync('sh', ['-c', 'command -v dpkg-query'], { stdio: 'ignore' }).status === 0;
const HAVE_GRUB_SCRIPT_CHECK = spawnSync('sh', ['-c', 'command -v grub-script-check'], { stdio: 'ignore' }).status === 0;
/** entries.cfg as beadm writes it. */
const ENTRIES = generateBootMenu({
  filesystemUuid: '9759ea5f-e03d-4d69-a24a-9d439e386768',
  environments: [{ name: 'b1', subvolume: '@bootenv/b1', osName: 'Debian', bootFiles: { version: '6', kernel: 'vmlinuz-6', initrd: 'initrd.img-6' } }],
  defaultName: 'b1',
});
/** entries.cfg as an older beadm wrote it, for a script that copied it into grub.cfg. */
const OLDER_ENTRIES = "menuentry 'b1' --id bootenv-b1 {\n\tlinux /@bootenv/b1/boot/vmlinuz-6 ro rootflags=subvol=@bootenv/b1 @BOOTENV_CMDLINE@\n}\n";

/** What the script writes into grub.cfg for beadm's entries.cfg, with `cmdline`. */
function stanza(cmdline: string): string {
  return [
    `${SOURCING_MARKER}; beadm rewrites it (see beadm(8)).`,
    'if [ -f "${config_directory}/bootenv/entries.cfg" ]; then',
    '\tsource "${config_directory}/bootenv/entries.cfg"',
    'elif [ -z "${config_directory}" -a -f "${prefix}/bootenv/entries.cfg" ]; then',
    '\tsource "${prefix}/bootenv/entries.cfg"',
    'fi',
    `function ${LINUX_FUNCTION} {`,
    `\tlinux "$@" ${cmdline}`,
    '}',
    '',
  ].join('\n');
}

describe('09_bootenv', () => {
  const temporary = useTemporaryDirectory('bootenv-grub-script.');
  let root: string;

  beforeEach(() => {
    root = path.join(temporary(), 'root');
    rmSync(root, { recursive: true, force: true });
    mkdirSync(path.join(root, 'var/lib/dpkg'), { recursive: true });
    mkdirSync(path.join(root, 'boot/grub/bootenv'), { recursive: true });
    writeFileSync(path.join(root, 'boot/grub/bootenv/entries.cfg'), ENTRIES);
  });

  /** A dpkg status database holding bootenv in `status` (or not at all). */
  function dpkgStatus(status: string | undefined): void {
    const stanza = status === undefined ? '' : `Package: bootenv\nStatus: ${status}\nVersion: 0.1.0\nArchitecture: amd64\nMaintainer: bootenv <b@example.org>\nDescription: test\n\n`;
    writeFileSync(path.join(root, 'var/lib/dpkg/status'), `Package: dpkg\nStatus: install ok installed\nVersion: 1.21\nArchitecture: amd64\nMaintainer: dpkg <d@example.org>\nDescription: test\n\n${stanza}`);
  }

  function runScript(env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
    const result = spawnSync('/bin/sh', [SCRIPT], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', BOOTENV_ROOT: root, GRUB_CMDLINE_LINUX: 'console=ttyS0', GRUB_CMDLINE_LINUX_DEFAULT: 'quiet', ...env },
    });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  const withCmdline = stanza('console=ttyS0 quiet');

  it.skipIf(!HAVE_DPKG_QUERY).each([
    ['install ok installed'],
    ['install ok unpacked'],
    ['install ok half-configured'],
    ['install ok triggers-pending'],
    ['install ok triggers-awaited'],
  ])('bootenv %s: the entries, with the command line', (status) => {
    dpkgStatus(status);
    expect(runScript()).toEqual({ status: 0, stdout: withCmdline, stderr: '' });
  });

  it.skipIf(!HAVE_DPKG_QUERY).each([
    // After apt-get remove (the conffile stays), while dpkg removes it (postrm remove's update-grub), after a purge.
    ['deinstall ok config-files', 'config-files'],
    ['deinstall ok half-installed', 'half-installed'],
    ['purge ok not-installed', 'not-installed'],
  ])('bootenv %s: no entries, and a note on stderr', (status, state) => {
    dpkgStatus(status);
    const result = runScript();
    expect(result.status).toBe(0);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe(`bootenv: the bootenv package is removed (dpkg: ${state}); leaving out the boot environment entries of ${root}/boot/grub/bootenv/entries.cfg\n`);
  });

  it.skipIf(!HAVE_DPKG_QUERY)('bootenv unknown to dpkg (installed without the package, beadm anywhere): the entries', () => {
    dpkgStatus(undefined);
    expect(runScript()).toEqual({ status: 0, stdout: withCmdline, stderr: '' });
  });

  it('no dpkg-query on PATH: the entries', () => {
    const bin = path.join(temporary(), 'bin');
    rmSync(bin, { recursive: true, force: true });
    mkdirSync(bin);
    for (const tool of ['sed', 'grep']) symlinkSync(spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim(), path.join(bin, tool));
    dpkgStatus('deinstall ok config-files');
    expect(runScript({ PATH: bin })).toEqual({ status: 0, stdout: withCmdline, stderr: '' });
  });

  it('no entries.cfg: nothing, silently', () => {
    rmSync(path.join(root, 'boot/grub/bootenv/entries.cfg'));
    dpkgStatus('deinstall ok config-files');
    expect(runScript()).toEqual({ status: 0, stdout: '', stderr: '' });
  });

  it.skipIf(!HAVE_DPKG_QUERY)("the command line goes in verbatim, sed's and printf's special characters included", () => {
    dpkgStatus('install ok installed');
    const result = runScript({ GRUB_CMDLINE_LINUX: 'a=1|b & c\\d %s "x y"', GRUB_CMDLINE_LINUX_DEFAULT: '' });
    expect(result).toEqual({ status: 0, stdout: stanza('a=1|b & c\\d %s "x y" '), stderr: '' });
  });

  it.skipIf(!HAVE_DPKG_QUERY)("an older beadm's entries.cfg: copied in, the command line in place of its placeholder", () => {
    writeFileSync(path.join(root, 'boot/grub/bootenv/entries.cfg'), OLDER_ENTRIES);
    dpkgStatus('install ok installed');
    expect(runScript()).toEqual({ status: 0, stdout: OLDER_ENTRIES.replace('@BOOTENV_CMDLINE@', 'console=ttyS0 quiet'), stderr: '' });
    const special = runScript({ GRUB_CMDLINE_LINUX: 'a=1|b & c\\d', GRUB_CMDLINE_LINUX_DEFAULT: '' });
    expect(special.stdout).toBe(OLDER_ENTRIES.replace('@BOOTENV_CMDLINE@', 'a=1|b & c\\d '));
  });

  // A BE of an older bootenv runs its older 09_bootenv at its update-grub: it copies this
  // entries.cfg in, and the file's own bootenv_linux gets the command line there.
  it('the 09_bootenv of an older bootenv copies these entries in, its bootenv_linux with the command line', () => {
    dpkgStatus(undefined);
    const result = spawnSync('/bin/sh', [OLDER_SCRIPT], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', BOOTENV_ROOT: root, GRUB_CMDLINE_LINUX: 'console=ttyS0', GRUB_CMDLINE_LINUX_DEFAULT: 'quiet' } });
    expect(result.status).toBe(0);
    expect(result.stdout).toBe(ENTRIES.replace('@BOOTENV_CMDLINE@', 'console=ttyS0 quiet'));
    expect(result.stdout).toContain(`function ${LINUX_FUNCTION} {\n\tlinux "$@" console=ttyS0 quiet\n}\n`);
  });

  it.skipIf(!HAVE_DPKG_QUERY || !HAVE_GRUB_SCRIPT_CHECK)('what it writes, and the entries it sources, pass grub-script-check', () => {
    dpkgStatus('install ok installed');
    const written = path.join(temporary(), 'grub.cfg');
    writeFileSync(written, runScript().stdout);
    expect(spawnSync('grub-script-check', [written], { encoding: 'utf8' }).status).toBe(0);
    expect(spawnSync('grub-script-check', [path.join(root, 'boot/grub/bootenv/entries.cfg')], { encoding: 'utf8' }).status).toBe(0);
  });
});
