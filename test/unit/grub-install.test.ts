// The planning of a deferred grub-install (src/grub/install.ts): what it writes, and the room that needs.
import { describe, expect, it } from 'vitest';
import {
  MARGIN_BYTES,
  espBytesNeeded,
  espWrites,
  homeBytesNeeded,
  orderedRequests,
  parseGrubInstallRequest,
  planGrubInstall,
} from '../../src/grub/install.js';

const BIOS = { firmwareEfi: false, distributor: 'Debian', signedImageAvailable: false };
const UEFI = { firmwareEfi: true, distributor: 'Debian', signedImageAvailable: true };

describe('grub-install requests', () => {
  it('reads the NUL-terminated arguments the wrapper wrote, none for a bare call', () => {
    expect(parseGrubInstallRequest('--target=i386-pc\0--force\0/dev/vda\0')).toEqual(['--target=i386-pc', '--force', '/dev/vda']);
    expect(parseGrubInstallRequest('')).toEqual([]);
    expect(parseGrubInstallRequest('a b\0\0')).toEqual(['a b', '']);
    expect(() => parseGrubInstallRequest('--target=i386-pc')).toThrow(/NUL/);
  });

  it('keeps the order of the calls and runs an identical call once', () => {
    expect(
      orderedRequests([
        { name: '0002.grub-install', args: ['/dev/vdb'] },
        { name: '0000.grub-install', args: ['/dev/vda'] },
        { name: '0001.grub-install', args: ['/dev/vda'] },
      ]),
    ).toEqual([['/dev/vda'], ['/dev/vdb']]);
  });
});

describe('what a grub-install writes', () => {
  it('BIOS: the target from the arguments or the firmware, nothing on an ESP', () => {
    expect(planGrubInstall(['--target=i386-pc', '--force', '--no-floppy', '/dev/vda'], UEFI)).toEqual({ target: 'i386-pc', efi: false, espDirectories: [], signed: false });
    expect(planGrubInstall(['/dev/vda'], BIOS).target).toBe('i386-pc');
  });

  it("EFI: Debian's postinst call (extra removable path) writes EFI/debian and EFI/BOOT, with shim when the signed image is there", () => {
    const plan = planGrubInstall(['--target=x86_64-efi', '--force-extra-removable', ''], UEFI);
    expect(plan).toEqual({ target: 'x86_64-efi', efi: true, espDirectories: ['debian', 'BOOT'], signed: true });
    expect(espWrites(plan).map((write) => write.path)).toEqual([
      'EFI/debian/shimx64.efi',
      'EFI/debian/grubx64.efi',
      'EFI/debian/mmx64.efi',
      'EFI/debian/fbx64.efi',
      'EFI/BOOT/BOOTX64.EFI',
      'EFI/BOOT/grubx64.efi',
      'EFI/BOOT/mmx64.efi',
    ]);
  });

  it('EFI: --bootloader-id, --removable and --no-uefi-secure-boot are honoured; the default target follows the firmware', () => {
    expect(planGrubInstall(['--bootloader-id', 'ubuntu'], { ...UEFI, distributor: undefined })).toMatchObject({ target: 'x86_64-efi', espDirectories: ['ubuntu'] });
    expect(planGrubInstall(['--removable', '--no-uefi-secure-boot'], UEFI)).toMatchObject({ espDirectories: ['BOOT'], signed: false });
    expect(espWrites(planGrubInstall(['--removable', '--no-uefi-secure-boot'], UEFI))).toEqual([{ path: 'EFI/BOOT/BOOTX64.EFI', source: undefined }]);
    expect(planGrubInstall([], { ...UEFI, distributor: 'Ubuntu GNU/Linux' }).espDirectories).toEqual(['ubuntu']);
  });
});

describe('room needed', () => {
  it("ESP: what the rewritten files grow by, an image of unknown size counted again, plus the margin", () => {
    expect(espBytesNeeded([])).toBe(MARGIN_BYTES);
    expect(espBytesNeeded([{ path: 'EFI/debian/grubx64.efi', newBytes: 3_000_000, currentBytes: 2_000_000 }])).toBe(MARGIN_BYTES + 1_000_000);
    expect(espBytesNeeded([{ path: 'EFI/debian/shimx64.efi', newBytes: 900_000, currentBytes: 1_000_000 }])).toBe(MARGIN_BYTES);
    expect(espBytesNeeded([{ path: 'EFI/BOOT/BOOTX64.EFI', newBytes: undefined, currentBytes: 400_000 }])).toBe(MARGIN_BYTES + 400_000);
  });

  it("GRUB's home: the modules and the font whole, plus the margin", () => {
    expect(homeBytesNeeded(5_000_000, 2_400_000)).toBe(7_400_000 + MARGIN_BYTES);
  });
});
