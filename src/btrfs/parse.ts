/**
 * Strict parsers for btrfs-progs output (captured samples and the version they
 * came from live under test/fixtures-captured/). A line that matches no known
 * shape is a PARSE error, never skipped: a new btrfs-progs format must fail
 * loudly rather than make a subvolume disappear from a listing.
 */
import { BootenvError } from '../errors.js';

export interface Subvolume {
  id: number;
  generation: number;
  topLevel: number;
  /** null when the subvolume was not made as a snapshot. */
  parentUuid: string | null;
  uuid: string;
  /** Path from the top level of the filesystem, as `btrfs subvolume list` prints it. */
  path: string;
  /** The generation it was made in (its root item's otransid; `cgen`, listed with -c). */
  createdGeneration?: number;
}

const SUBVOLUME_LINE =
  /^ID (\d+) gen (\d+)(?: cgen (\d+))? top level (\d+) parent_uuid (-|[0-9a-f-]{36}) +uuid ([0-9a-f-]{36}) path (.+)$/;

/** Parses `btrfs subvolume list -u -q [-c] MOUNTPOINT` (run on the top level). */
export function parseSubvolumeList(output: string): Subvolume[] {
  return nonEmptyLines(output).map((line) => {
    const match = SUBVOLUME_LINE.exec(line);
    if (!match) throw parseError('btrfs subvolume list', line);
    const [, id, generation, created, topLevel, parentUuid, uuid, rawPath] = match as unknown as string[];
    return {
      id: Number(id),
      generation: Number(generation),
      topLevel: Number(topLevel),
      parentUuid: parentUuid === '-' ? null : (parentUuid as string),
      uuid: uuid as string,
      path: (rawPath as string).replace(/^<FS_TREE>\//, ''),
      ...(created === undefined ? {} : { createdGeneration: Number(created) }),
    };
  });
}

export interface QgroupUsage {
  /** The subvolume id of a level-0 qgroup `0/ID`. */
  subvolumeId: number;
  referencedBytes: number;
  exclusiveBytes: number;
}

/** btrfs-progs ≥ 6.0.1 names the columns and adds Path; older ones print qgroupid, rfer, excl. */
const QGROUP_HEADER =
  /^(?:Qgroupid\s+Referenced\s+Exclusive(?:\s+Max exclusive)?(?:\s+Path)?|qgroupid\s+rfer\s+excl(?:\s+max_excl)?)\s*$/;
const QGROUP_RULE = /^[-\s]+$/;
const QGROUP_LINE = /^(\d+)\/(\d+)\s+(\d+)\s+(\d+)(?:\s+(?:none|\d+))?(?:\s+.*)?$/;

/**
 * Parses `btrfs qgroup show --raw` (with or without -e; in the format of
 * btrfs-progs ≥ 6.0.1 with its Path column, or the older one without).
 * Returns level-0 qgroups only.
 */
export function parseQgroupShow(output: string): QgroupUsage[] {
  const usages: QgroupUsage[] = [];
  for (const line of nonEmptyLines(output)) {
    if (QGROUP_HEADER.test(line) || QGROUP_RULE.test(line)) continue;
    const match = QGROUP_LINE.exec(line);
    if (!match) throw parseError('btrfs qgroup show', line);
    const [, level, id, referenced, exclusive] = match as unknown as string[];
    if (level !== '0') continue;
    usages.push({ subvolumeId: Number(id), referencedBytes: Number(referenced), exclusiveBytes: Number(exclusive) });
  }
  return usages;
}

/** The filesystem UUID from `btrfs filesystem show PATH`. */
export function parseFilesystemUuid(output: string): string {
  const first = nonEmptyLines(output)[0] ?? '';
  const match = /^Label: .*\buuid: ([0-9a-f-]{36})\s*$/.exec(first);
  if (!match) throw parseError('btrfs filesystem show', first);
  return match[1] as string;
}

function nonEmptyLines(output: string): string[] {
  return output.split('\n').filter((line) => line.trim() !== '');
}

function parseError(tool: string, line: string): BootenvError {
  return new BootenvError('PARSE', `unexpected line from ${tool}: ${JSON.stringify(line)}`, {
    hint: 'this btrfs-progs version prints something bootenv does not know; please report it',
  });
}
