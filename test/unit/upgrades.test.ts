// The upgrade rebuild's control rewriting (test/harness/upgrades.ts) on Debian 12's real control
// fields (grub-pc 2.06-13+deb12u2, grub-efi-amd64-signed 1+2.06+13+deb12u2).
import { describe, expect, it } from 'vitest';
import { UPGRADE_SUFFIX, upgradeControl } from '../harness/upgrades.js';

const SET = new Map([
  ['grub-pc', '2.06-13+deb12u2'],
  ['grub-pc-bin', '2.06-13+deb12u2'],
  ['grub-common', '2.06-13+deb12u2'],
  ['grub2-common', '2.06-13+deb12u2'],
  ['grub-efi-amd64-signed', '1+2.06+13+deb12u2'],
  ['grub-efi-amd64-bin', '2.06-13+deb12u2'],
]);

const GRUB_PC = [
  'Package: grub-pc',
  'Source: grub2',
  'Version: 2.06-13+deb12u2',
  'Architecture: amd64',
  'Depends: debconf (>= 0.5) | debconf-2.0, grub-common (= 2.06-13+deb12u2), grub2-common (= 2.06-13+deb12u2), grub-pc-bin (= 2.06-13+deb12u2), ucf',
  'Conflicts: grub (<< 0.97-54), grub-coreboot, grub-efi-amd64, grub-efi-ia32, grub-ieee1275, grub-legacy, grub-xen',
  'Replaces: grub, grub-common (<= 1.97~beta2-1), grub-coreboot, grub-efi-amd64, grub2 (<< 2.06-13+deb12u2)',
  'Built-Using: grub2 (= 2.06-13+deb12u2)',
  'Description: GRand Unified Bootloader, version 2 (PC/BIOS version)',
  ' grub-pc (= 2.06-13+deb12u2) in a description stays as it is.',
  '',
].join('\n');

describe('upgradeControl', () => {
  it('raises Version and the exact relations to the set, and nothing else', () => {
    const upgraded = upgradeControl(GRUB_PC, SET);
    expect(upgraded.split('\n')).toEqual([
      'Package: grub-pc',
      'Source: grub2',
      `Version: 2.06-13+deb12u2${UPGRADE_SUFFIX}`,
      'Architecture: amd64',
      `Depends: debconf (>= 0.5) | debconf-2.0, grub-common (= 2.06-13+deb12u2${UPGRADE_SUFFIX}), grub2-common (= 2.06-13+deb12u2${UPGRADE_SUFFIX}), grub-pc-bin (= 2.06-13+deb12u2${UPGRADE_SUFFIX}), ucf`,
      'Conflicts: grub (<< 0.97-54), grub-coreboot, grub-efi-amd64, grub-efi-ia32, grub-ieee1275, grub-legacy, grub-xen',
      'Replaces: grub, grub-common (<= 1.97~beta2-1), grub-coreboot, grub-efi-amd64, grub2 (<< 2.06-13+deb12u2)',
      'Built-Using: grub2 (= 2.06-13+deb12u2)',
      'Description: GRand Unified Bootloader, version 2 (PC/BIOS version)',
      ' grub-pc (= 2.06-13+deb12u2) in a description stays as it is.',
      '',
    ]);
  });

  it.each([
    { name: 'a relation to a package outside the set', relation: 'shim-signed (= 1.51)', expected: 'shim-signed (= 1.51)' },
    { name: 'another version than the installed one', relation: 'grub-common (= 2.06-13+deb12u1)', expected: 'grub-common (= 2.06-13+deb12u1)' },
    { name: 'an arch qualifier, no space', relation: 'grub-efi-amd64-bin:amd64(= 2.06-13+deb12u2)', expected: `grub-efi-amd64-bin:amd64(= 2.06-13+deb12u2${UPGRADE_SUFFIX})` },
    { name: 'a continuation line', relation: '\n grub-efi-amd64-bin (= 2.06-13+deb12u2)', expected: `\n grub-efi-amd64-bin (= 2.06-13+deb12u2${UPGRADE_SUFFIX})` },
    { name: 'a lower bound', relation: 'grub-common (>= 2.06-13+deb12u2)', expected: 'grub-common (>= 2.06-13+deb12u2)' },
  ])('$name', ({ relation, expected }) => {
    const control = `Package: grub-efi-amd64-signed\nVersion: 1+2.06+13+deb12u2\nDepends: ${relation}\n`;
    expect(upgradeControl(control, SET)).toBe(`Package: grub-efi-amd64-signed\nVersion: 1+2.06+13+deb12u2${UPGRADE_SUFFIX}\nDepends: ${expected}\n`);
  });

  it('refuses a control file without Version', () => {
    expect(() => upgradeControl('Package: grub-pc\n', SET)).toThrow(/without Version/);
  });
});
