/**
 * Choosing what GRUB boots inside a BE: the newest kernel in the BE's own /boot
 * that has a matching initramfs and a modules directory. Pure: the caller lists
 * the directories.
 */

export interface BootFiles {
  version: string;
  /** File names inside the BE's /boot. */
  kernel: string;
  initrd: string;
}

/**
 * Picks the newest bootable kernel from the names in /boot and /lib/modules.
 * Returns undefined when no kernel has both an initrd.img-VERSION and modules.
 */
export function chooseBootFiles(bootNames: readonly string[], moduleDirectories: readonly string[]): BootFiles | undefined {
  const names = new Set(bootNames);
  const modules = new Set(moduleDirectories);
  const versions = bootNames
    .filter((name) => name.startsWith('vmlinuz-'))
    .map((name) => name.slice('vmlinuz-'.length))
    .filter((version) => names.has(`initrd.img-${version}`) && modules.has(version))
    .sort(compareKernelVersions);
  const newest = versions.at(-1);
  return newest === undefined ? undefined : { version: newest, kernel: `vmlinuz-${newest}`, initrd: `initrd.img-${newest}` };
}

/** Orders kernel versions the way a person reads them: 6.1.0-9 < 6.1.0-10 < 6.10.0-1. */
export function compareKernelVersions(a: string, b: string): number {
  const partsA = a.split(/(\d+)/);
  const partsB = b.split(/(\d+)/);
  for (let index = 0; index < Math.max(partsA.length, partsB.length); index += 1) {
    const left = partsA[index] ?? '';
    const right = partsB[index] ?? '';
    if (left === right) continue;
    const numeric = index % 2 === 1;
    if (!numeric || left === '' || right === '') return left < right ? -1 : 1;
    const difference = Number(left) - Number(right);
    if (difference !== 0) return difference;
  }
  return 0;
}
