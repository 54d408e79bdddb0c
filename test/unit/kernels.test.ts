// Unit tests for src/grub/kernels.ts: ordering kernel versions and choosing the kernel GRUB boots in a BE.
import { describe, expect, it } from 'vitest';
import { chooseBootFiles, compareKernelVersions } from '../../src/grub/kernels.js';

describe('compareKernelVersions', () => {
  it.each([
    ['6.1.0-9-amd64', '6.1.0-10-amd64'],
    ['6.1.0-10-amd64', '6.10.0-1-amd64'],
    ['6.1.0-9', '6.1.0-10'],
    ['6.1.0-10', '6.10.0-1'],
    ['5.15.0-105-generic', '6.8.0-31-generic'],
    ['6.8.0-9-generic', '6.8.0-31-generic'],
    ['6.1', '6.1.0'],
    ['6.1.0-18-amd64', '6.1.0-18-cloud-amd64'],
    ['4.19.0-26-amd64', '6.1.0-9-amd64'],
  ])('%s < %s', (older, newer) => {
    expect(compareKernelVersions(older, newer)).toBeLessThan(0);
    expect(compareKernelVersions(newer, older)).toBeGreaterThan(0);
  });

  it.each(['6.1.0-9-amd64', '6.8.0-31-generic', ''])('%j equals itself', (version) => {
    expect(compareKernelVersions(version, version)).toBe(0);
  });

  it('orders by the first numeric difference even after a part equal up to leading zeros', () => {
    expect(compareKernelVersions('6.01.0-9', '6.1.0-10')).toBeLessThan(0);
    expect(compareKernelVersions('6.1.0-10', '6.01.0-9')).toBeGreaterThan(0);
  });

  it('sorts a /boot listing the way a person reads it', () => {
    const versions = ['6.10.0-1', '6.1.0-10', '6.1.0-9', '6.2.0-1', '6.1.0-2'];
    expect([...versions].sort(compareKernelVersions)).toEqual(['6.1.0-2', '6.1.0-9', '6.1.0-10', '6.2.0-1', '6.10.0-1']);
  });
});

describe('chooseBootFiles', () => {
  function boot(...versions: string[]): string[] {
    return versions.flatMap((version) => [`vmlinuz-${version}`, `initrd.img-${version}`, `config-${version}`, `System.map-${version}`]);
  }

  it.each<[string, string[], string[], string | undefined]>([
    ['the only kernel', boot('6.1.0-9-amd64'), ['6.1.0-9-amd64'], '6.1.0-9-amd64'],
    ['the newest of 6.1.0-9, 6.1.0-10 and 6.10.0-1', boot('6.1.0-9', '6.10.0-1', '6.1.0-10'), ['6.1.0-10', '6.1.0-9', '6.10.0-1'], '6.10.0-1'],
    [
      'an older kernel when the newest has no initrd',
      [...boot('6.1.0-9-amd64'), 'vmlinuz-6.1.0-10-amd64'],
      ['6.1.0-9-amd64', '6.1.0-10-amd64'],
      '6.1.0-9-amd64',
    ],
    ['an older kernel when the newest has no modules', boot('6.1.0-9-amd64', '6.1.0-10-amd64'), ['6.1.0-9-amd64'], '6.1.0-9-amd64'],
    [
      'nothing when an initrd has no kernel',
      ['initrd.img-6.1.0-10-amd64', 'config-6.1.0-10-amd64'],
      ['6.1.0-10-amd64'],
      undefined,
    ],
    ['nothing when no kernel has modules', boot('6.1.0-9-amd64'), ['6.1.0-8-amd64'], undefined],
    ['nothing in an empty /boot', [], ['6.1.0-9-amd64'], undefined],
    ['nothing from the vmlinuz and initrd.img symlinks alone', ['vmlinuz', 'initrd.img', 'vmlinuz.old', 'initrd.img.old'], [], undefined],
    ['a kernel among grub/ and efi/ directories', ['grub', 'efi', ...boot('6.8.0-31-generic')], ['6.8.0-31-generic'], '6.8.0-31-generic'],
  ])('picks %s', (_, bootNames, moduleDirectories, version) => {
    const chosen = chooseBootFiles(bootNames, moduleDirectories);
    if (version === undefined) {
      expect(chosen).toBeUndefined();
    } else {
      expect(chosen).toEqual({ version, kernel: `vmlinuz-${version}`, initrd: `initrd.img-${version}` });
    }
  });
});
