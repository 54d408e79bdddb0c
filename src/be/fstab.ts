/**
 * A BE's own /etc/fstab. Each BE mounts `/` from its own subvolume, keeps every
 * other line (shared subvolumes such as @home stay shared), and mounts the
 * installed root at /.rootbe with GRUB's home bound onto /boot/grub, so that
 * update-grub or grub-install run inside any BE write the one configuration
 * the boot loader reads. The lines of shared subvolumes (`beadm share`) are
 * added and removed here too. Pure text in, text out; unrelated lines are
 * kept byte for byte.
 */
import { BootenvError } from '../errors.js';

export const INSTALLED_ROOT_MOUNTPOINT = '/.rootbe';
const MANAGED_COMMENT = "# bootenv: the installed root and GRUB's home, shared by every BE (see beadm(8))";

interface FstabLine {
  spec: string;
  file: string;
  type: string;
  options: string[];
}

function parseLine(line: string): FstabLine | undefined {
  const trimmed = line.trim();
  if (trimmed === '' || trimmed.startsWith('#')) return undefined;
  const [spec, file, type, options] = trimmed.split(/\s+/);
  if (spec === undefined || file === undefined || type === undefined) return undefined;
  return { spec, file, type, options: (options ?? 'defaults').split(',') };
}

function withSubvolume(options: readonly string[], subvolume: string): string {
  const kept = options.filter((option) => !option.startsWith('subvol=') && !option.startsWith('subvolid='));
  return [...kept, `subvol=${subvolume}`].join(',');
}

function isManaged(line: string): boolean {
  if (line === MANAGED_COMMENT) return true;
  const parsed = parseLine(line);
  if (parsed === undefined) return false;
  return parsed.file === INSTALLED_ROOT_MOUNTPOINT || (parsed.file === '/boot/grub' && parsed.options.includes('bind'));
}

/** The subvolume option of the btrfs line for `/`, or undefined. */
export function rootSubvolumeInFstab(text: string): string | undefined {
  for (const line of text.split('\n')) {
    const parsed = parseLine(line);
    if (parsed?.file === '/' && parsed.type === 'btrfs') {
      const option = parsed.options.find((o) => o.startsWith('subvol='));
      return option?.slice('subvol='.length).replace(/^\/+/, '');
    }
  }
  return undefined;
}

/**
 * Rewrites an fstab for the BE at `beSubvolume`: the `/` line mounts that
 * subvolume, the managed /.rootbe and /boot/grub lines are (re)written once.
 * Throws UNSUPPORTED when there is no btrfs line for `/`.
 */
export function rewriteFstabForBootEnvironment(text: string, beSubvolume: string, installedRootSubvolume: string): string {
  const output: string[] = [];
  let rootLine: FstabLine | undefined;
  const lines = text.endsWith('\n') ? text.slice(0, -1).split('\n') : text.split('\n');
  for (const line of lines) {
    if (isManaged(line)) continue;
    const parsed = parseLine(line);
    if (parsed?.file === '/') {
      if (parsed.type !== 'btrfs') {
        throw new BootenvError('UNSUPPORTED', `/etc/fstab mounts / as ${parsed.type}, not btrfs`);
      }
      rootLine = parsed;
      const rest = line.trim().split(/\s+/).slice(4);
      output.push([parsed.spec, '/', 'btrfs', withSubvolume(parsed.options, beSubvolume), ...rest].join(' '));
      continue;
    }
    output.push(line);
  }
  if (rootLine === undefined) {
    throw new BootenvError('UNSUPPORTED', '/etc/fstab has no line for /', {
      hint: 'add the root filesystem to /etc/fstab (as the installer does) and run beadm again',
    });
  }
  output.push(
    MANAGED_COMMENT,
    [rootLine.spec, INSTALLED_ROOT_MOUNTPOINT, 'btrfs', withSubvolume(rootLine.options, installedRootSubvolume), '0', '0'].join(' '),
    `${INSTALLED_ROOT_MOUNTPOINT}/boot/grub /boot/grub none bind,x-systemd.requires-mounts-for=${INSTALLED_ROOT_MOUNTPOINT} 0 0`,
  );
  return `${output.join('\n')}\n`;
}

function linesOf(text: string): string[] {
  return text === '' ? [] : (text.endsWith('\n') ? text.slice(0, -1) : text).split('\n');
}

/** The fstab line that mounts shared subvolume `subvolume` at `mountPoint`, as the installer writes the one for @home. */
export function sharedMountLine(filesystemUuid: string, mountPoint: string, subvolume: string): string {
  return `UUID=${filesystemUuid} ${mountPoint} btrfs defaults,subvol=${subvolume} 0 0`;
}

/** The line of `text` mounting something at `mountPoint` (spec, type, options as written), or undefined. */
export function fstabEntry(text: string, mountPoint: string): { spec: string; type: string; options: string } | undefined {
  for (const line of linesOf(text)) {
    const parsed = parseLine(line);
    if (parsed?.file === mountPoint) return { spec: parsed.spec, type: parsed.type, options: parsed.options.join(',') };
  }
  return undefined;
}

/** Whether `text` has a line (any filesystem) mounting something at `mountPoint`. */
export function mountsInFstab(text: string, mountPoint: string): boolean {
  return linesOf(text).some((line) => parseLine(line)?.file === mountPoint);
}

/** Whether `text` has the btrfs line mounting `subvolume` at `mountPoint`. */
export function hasSharedMount(text: string, mountPoint: string, subvolume: string): boolean {
  return linesOf(text).some((line) => {
    const parsed = parseLine(line);
    return parsed?.file === mountPoint && parsed.type === 'btrfs' && parsed.options.some((option) => option.replace(/^subvol=\/*/, 'subvol=') === `subvol=${subvolume}`);
  });
}

/**
 * `text` with `line` (from sharedMountLine) for its mount point: other lines
 * for that mount point go, the line goes before bootenv's own lines (or at
 * the end). Unchanged when the line is there already.
 */
export function withSharedMount(text: string, line: string): string {
  const file = parseLine(line)?.file;
  const kept = linesOf(text).filter((existing) => existing === line || parseLine(existing)?.file !== file);
  if (kept.includes(line)) return `${kept.join('\n')}\n`;
  const managed = kept.indexOf(MANAGED_COMMENT);
  kept.splice(managed === -1 ? kept.length : managed, 0, line);
  return `${kept.join('\n')}\n`;
}

/** `text` without the btrfs line mounting `subvolume` at `mountPoint` (the undo of withSharedMount for a new share). */
export function withoutSharedMount(text: string, mountPoint: string, subvolume: string): string {
  const kept = linesOf(text).filter((line) => !hasSharedMount(line, mountPoint, subvolume));
  return kept.length === 0 ? '' : `${kept.join('\n')}\n`;
}
