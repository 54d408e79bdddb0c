// Unit tests for src/grub/menu.ts: the GRUB menu entries of the BEs, checked with the real grub-script-check.
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CMDLINE_PLACEHOLDER, ENTRIES_MARKER, generateBootMenu, LINUX_FUNCTION, menuEntryId, type BootMenu, type MenuBootEnvironment } from '../../src/grub/menu.js';
import { useTemporaryDirectory } from './helpers.js';

const UUID = '9759ea5f-e03d-4d69-a24a-9d439e386768';
const GRUB_SCRIPT_CHECK = '/usr/bin/grub-script-check';

function environment(name: string, version: string | undefined, osName = 'Debian GNU/Linux 12 (bookworm)'): MenuBootEnvironment {
  return {
    name,
    subvolume: `@bootenv/${name}`,
    osName,
    bootFiles: version === undefined ? undefined : { version, kernel: `vmlinuz-${version}`, initrd: `initrd.img-${version}` },
  };
}

const MENU: BootMenu = {
  filesystemUuid: UUID,
  environments: [environment('b1', '6.1.0-9-amd64'), environment('broken', undefined), environment('b2', '6.1.0-10-amd64')],
  defaultName: 'b2',
};

function linesOf(text: string): string[] {
  return text.split('\n');
}

describe('menuEntryId', () => {
  it.each([
    ['b2', 'bootenv-b2'],
    ['ubuntu-24.04', 'bootenv-ubuntu-24.04'],
  ])('%s → %s', (name, id) => {
    expect(menuEntryId(name)).toBe(id);
  });
});

describe('generateBootMenu', () => {
  const text = generateBootMenu(MENU);
  const lines = linesOf(text);

  it('writes one menuentry per BE with boot files, the default BE first', () => {
    const entries = lines.filter((line) => line.startsWith('menuentry '));
    expect(entries).toEqual([
      "menuentry 'Debian GNU/Linux 12 (bookworm) (BE b2)' --class bootenv --class gnu-linux --class os --id 'bootenv-b2' {",
      "menuentry 'Debian GNU/Linux 12 (bookworm) (BE b1)' --class bootenv --class gnu-linux --class os --id 'bootenv-b1' {",
    ]);
  });

  it.each([
    ['b1', '6.1.0-9-amd64'],
    ['b2', '6.1.0-10-amd64'],
  ])('boots BE %s from its own /boot with rootflags=subvol=', (name, version) => {
    const start = lines.findIndex((line) => line.includes(`--id 'bootenv-${name}'`));
    const end = lines.indexOf('}', start);
    expect(lines.slice(start + 1, end)).toEqual([
      '\tinsmod part_gpt',
      '\tinsmod part_msdos',
      '\tinsmod btrfs',
      `\tsearch --no-floppy --fs-uuid --set=root ${UUID}`,
      `\techo 'Loading Linux ${version} from boot environment ${name} ...'`,
      `\t${LINUX_FUNCTION} /@bootenv/${name}/boot/vmlinuz-${version} root=UUID=${UUID} ro rootflags=subvol=@bootenv/${name}`,
      `\tinitrd /@bootenv/${name}/boot/initrd.img-${version}`,
    ]);
  });

  it('opens with the marker 09_bootenv looks for and its own bootenv_linux, the command line left to 09_bootenv', () => {
    expect(lines.slice(0, 5)).toEqual([
      '# Boot environments, written by beadm: do not edit, run beadm instead.',
      ENTRIES_MARKER,
      `function ${LINUX_FUNCTION} {`,
      `\tlinux "$@" ${CMDLINE_PLACEHOLDER}`,
      '}',
    ]);
    expect(text.split(CMDLINE_PLACEHOLDER)).toHaveLength(2);
  });

  it('gives a BE without boot files only a comment', () => {
    expect(lines.filter((line) => line.includes('broken'))).toEqual([
      '# BE broken: no kernel with initramfs and modules in its /boot, no entry',
    ]);
  });

  it('sets the default BE unless a one-shot boot_once is pending, after the entries', () => {
    const setDefault = `if [ -z "\${boot_once}" ]; then set default='bootenv-b2'; fi`;
    expect(lines.filter((line) => line.includes('set default'))).toEqual([setDefault]);
    expect(lines.indexOf(setDefault)).toBeGreaterThan(lines.lastIndexOf('}'));
    expect(text.endsWith(`${setDefault}\n`)).toBe(true);
  });

  it('sets no default when there is no default BE', () => {
    const withoutDefault = generateBootMenu({ ...MENU, defaultName: undefined });
    expect(withoutDefault).not.toContain('set default');
    expect(linesOf(withoutDefault).filter((line) => line.startsWith('menuentry ')).map((line) => /--id '([^']+)'/.exec(line)?.[1])).toEqual([
      'bootenv-b1',
      'bootenv-b2',
    ]);
  });

  it('writes only the heading and the function when there are no BEs', () => {
    expect(generateBootMenu({ filesystemUuid: UUID, environments: [], defaultName: undefined })).toBe(`${lines.slice(0, 5).join('\n')}\n`);
  });

  it("quotes an os-release name holding ' and $", () => {
    const menu = generateBootMenu({ ...MENU, environments: [environment('b3', '6.1.0-9-amd64', "Bob's $OS")], defaultName: 'b3' });
    expect(menu).toContain(`menuentry 'Bob'\\''s $OS (BE b3)' --class bootenv`);
  });
});

describe.skipIf(!existsSync(GRUB_SCRIPT_CHECK))('generated menus pass the real grub-script-check', () => {
  const directory = useTemporaryDirectory('bootenv-menu-');

  function scriptCheck(name: string, text: string): void {
    const file = path.join(directory(), `${name}.cfg`);
    writeFileSync(file, text);
    execFileSync(GRUB_SCRIPT_CHECK, [file], { stdio: 'pipe' });
  }

  it.each<[string, BootMenu]>([
    ['the default-first menu', MENU],
    ['a menu without default', { ...MENU, defaultName: undefined }],
    ['a menu whose only BE has no kernel', { filesystemUuid: UUID, environments: [environment('broken', undefined)], defaultName: 'broken' }],
    [
      'os-release names with quotes, $ and ;',
      {
        filesystemUuid: UUID,
        environments: [environment('b1', '6.1.0-9-amd64', "Bob's $OS; reboot"), environment('a_b+c', '6.8.0-31-generic', 'Ubuntu "Noble" 24.04')],
        defaultName: 'a_b+c',
      },
    ],
  ])('%s', (name, menu) => {
    expect(() => scriptCheck(name.replace(/\W+/g, '-'), generateBootMenu(menu))).not.toThrow();
  });

  it('a menu without BEs, and inside the grub.cfg that an older 09_bootenv writes', () => {
    const menu = generateBootMenu({ filesystemUuid: UUID, environments: [], defaultName: undefined });
    // Only a function: the check says it does nothing, which beadm accepts (src/grub/config.ts).
    expect(() => scriptCheck('no-environments', menu)).toThrow(/contains no commands and will do nothing/);
    const grubCfg = `set timeout=5\n### BEGIN /etc/grub.d/09_bootenv ###\n${menu.replace(CMDLINE_PLACEHOLDER, 'console=ttyS0 quiet')}### END /etc/grub.d/09_bootenv ###\n`;
    expect(() => scriptCheck('no-environments-inlined', grubCfg)).not.toThrow();
  });

  it('rejects a broken script, so the check above means something', () => {
    expect(() => scriptCheck('broken', "menuentry 'x' {\n\tlinux /vmlinuz\n")).toThrow();
  });
});
