/**
 * Reading GRUB's prefix out of a BIOS core.img (the file grub-install leaves
 * in /boot/grub/i386-pc, or the BIOS boot partition it writes): after the
 * 512-byte diskboot.img and lzma_decompress.img comes the kernel and its
 * modules, LZMA-compressed raw (grub-mkimage: a dictionary of at most 1 MiB, lc=3, lp=0,
 * pb=2, no end marker); the prefix is a string in it. xz decompresses it.
 */
import { execa } from 'execa';

/** The strings of a core.img that look like GRUB prefixes (contain /boot/grub). */
export async function corePrefixes(core: Buffer, lzmaDecompressBytes: number): Promise<string[]> {
  const compressed = core.subarray(512 + lzmaDecompressBytes);
  // xz stops with "Unexpected end of input" (no end marker) after writing everything: its exit status says nothing.
  const decompressed = await execa('xz', ['-dc', '--format=raw', '--lzma1=dict=1MiB,lc=3,lp=0,pb=2'], { input: compressed, encoding: 'buffer', reject: false });
  const strings = await execa('strings', ['-n', '8'], { input: decompressed.stdout });
  return strings.stdout.split('\n').filter((line) => line.includes('/boot/grub'));
}
