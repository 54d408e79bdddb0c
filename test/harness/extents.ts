/**
 * How files are stored on btrfs, read from the host for assertions: the
 * extents of a file (filefrag -v: logical and physical block, flags such as
 * shared and inline) and the exclusive bytes of a path (btrfs filesystem du).
 * Reads only.
 */
import { execa } from 'execa';

export interface Extent {
  /** First logical 4 KiB block. */
  logical: number;
  /** First physical 4 KiB block. */
  physical: number;
  flags: string[];
}

/** The extents of `file` from `filefrag -v -b4096`. */
export async function extentsOf(file: string): Promise<Extent[]> {
  const { stdout } = await execa('filefrag', ['-v', '-b4096', file]);
  return stdout
    .split('\n')
    .map((line) => /^\s*\d+:\s+(\d+)\.\.\s*\d+:\s+(\d+)\.\.\s*\d+:\s+\d+:\s*(?:\d+:)?\s*(\S*)$/.exec(line))
    .filter((match): match is RegExpExecArray => match !== null)
    .map((match) => ({ logical: Number(match[1]), physical: Number(match[2]), flags: (match[3] ?? '').split(',').filter(Boolean) }));
}

/** [logical, physical] block pairs: equal for two files that share all their extents. */
export async function physicalLayout(file: string): Promise<Array<[number, number]>> {
  return (await extentsOf(file)).map(({ logical, physical }) => [logical, physical]);
}

/** Exclusive bytes of `target` (file or directory) after a filesystem sync. */
export async function exclusiveBytes(target: string): Promise<number> {
  await execa('btrfs', ['filesystem', 'sync', target]);
  const { stdout } = await execa('btrfs', ['filesystem', 'du', '-s', '--raw', target]);
  const field = (stdout.trim().split('\n').at(-1) ?? '').trim().split(/\s+/)[1];
  if (field === undefined || !/^\d+$/.test(field)) throw new Error(`unexpected btrfs filesystem du output: ${stdout}`);
  return Number(field);
}
