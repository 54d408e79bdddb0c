/**
 * bootenv's durable state: one JSON file at the btrfs top level,
 * `@bootenv/.bootenv.json`, beside the BE subvolumes. It records which
 * subvolume is the installed root (GRUB's home), which BE boots by default,
 * and per BE (keyed by subvolume UUID, so a rename needs no update) its
 * origin, creation time, description, last good boot, whether it is pinned
 * (kept by prune, refused by destroy), and the carry of its
 * origin's later changes that is pending for it (be/carry-records.ts); and
 * the shared subvolumes (be/share.ts): paths every BE mounts from one
 * subvolume of their own, with the progress of a share under way.
 * Written atomically under the global lock. Parse and serialize are pure
 * and strict.
 */
import { BootenvError } from '../errors.js';

export const CONTAINER = '@bootenv';
export const STATE_FILE = '.bootenv.json';
const FORMAT = 1;

export interface BootEnvironmentRecord {
  /** UUID of the subvolume it was snapshotted from (a BE or the installed root). */
  originUuid: string | null;
  /** ISO 8601. */
  created: string;
  description: string;
  /** Set for a BE made by an apt transaction. */
  transaction?: TransactionSummary;
  /** The last boot of this BE that reached multi-user.target (`beadm boot-complete --good`); absent if none did. */
  lastGoodBoot?: GoodBoot;
  /** Set by `beadm pin`: destroy refuses the BE and prune keeps it. Absent (not false) when not pinned. */
  pinned?: true;
  /** The carry of its origin's changes since it was made, pending until the BE boots; absent when there is none. */
  carry?: CarryRecord;
  /** What the last carry into it did. */
  lastCarry?: CarrySummary;
}

/** What a carry carries: in `all`, everything the rules allow; in `data`, files no package owns outside /etc, /usr (but /usr/local) and /boot. */
export type CarryMode = 'all' | 'data';

export interface CarryRecord {
  /** Its directory of snapshots: @bootenv/.carry/ID. */
  id: string;
  /** The BE (or installed root) whose changes are carried. */
  originUuid: string;
  mode: CarryMode;
  /** Read-only snapshot of the origin as of the BE's making, or of the last carry into it. */
  baseUuid: string;
  /** Read-only snapshot of the BE right after the last carry into it; null before the first (it was made from the base). */
  newBaseUuid: string | null;
  /** What the BE changed by itself up to the last carry: a file in the carry's directory, or null before the first. */
  touchedFile: string | null;
  /** When the base was taken (ISO 8601). */
  since: string;
  /**
   * Set up by `beadm activate` of a BE that had no carry pending (a rollback):
   * the base is a snapshot of the BE itself as it was activated, the origin the
   * BE it was activated from, so that what the origin holds beyond it (in
   * data mode: its data) follows the machine into it.
   */
  follow?: boolean;
  /** Set between a carry's saving of its result and the bookkeeping after the swap (see be/carry-records.ts). */
  exchange?: CarryExchange;
}

export interface CarryExchange {
  /** The carried snapshot that replaces the BE, and the BE's path it goes to. */
  workUuid: string;
  subvolume: string;
  /** The BE boots now: the carry is complete, nothing stays pending. */
  final: boolean;
  /** What becomes base and new base (and touched file) when the carry is not final. */
  originSnapshotUuid: string;
  newBaseSnapshotUuid: string | null;
  touchedFile: string | null;
  summary: CarrySummary;
}

export interface CarrySummary {
  /** ISO 8601. */
  at: string;
  /** Name of the origin BE ("(installed root)" for it). */
  origin: string;
  final: boolean;
  changes: { created: number; modified: number; removed: number };
  carriedBytes: number;
  /** Paths both BEs changed (at most CONFLICTS_KEPT of them; `conflictCount` counts all). */
  conflicts: Array<{ path: string; kind: string; savedAs: string | null }>;
  conflictCount: number;
  accountClashes: Array<{ file: string; name: string; reason: string }>;
  /** Operations that failed: those changes were not carried and are still in the origin. */
  failed: Array<{ path: string; message: string }>;
  warnings: string[];
  /** Whether a booted system has reported it (beadm boot-complete, into the journal). */
  reported: boolean;
}

export interface GoodBoot {
  /** The kernel's boot id (/proc/sys/kernel/random/boot_id) of that boot. */
  bootId: string;
  /** ISO 8601. */
  at: string;
}

export interface TransactionSummary {
  /** True while apt is still installing into it; such a BE is deleted by recovery. */
  open: boolean;
  subvolume: string;
  /** apt's command line. */
  command: string[];
  packages: Array<{ package: string; architecture: string; oldVersion: string | null; newVersion: string | null; action: string }>;
  /** ISO 8601, once finished. */
  finished: string | null;
  /** The apt runs stacked before this one into the BEs it replaced (in the same boot), oldest first; absent when none. */
  earlier?: Array<{ command: string[]; packages: TransactionSummary['packages']; finished: string | null }>;
}

/** A path every BE mounts from a top-level subvolume of its own (`beadm share`): out of every snapshot, rollback and carry. */
export interface SharedSubvolume {
  /** Absolute path, e.g. /var/lib/postgresql. */
  path: string;
  /** Its subvolume, from the top level, e.g. @var_lib_postgresql. */
  subvolume: string;
  uuid: string;
  /** When it was shared (ISO 8601). */
  since: string;
}

/**
 * A share under way (be/share-records.ts), recorded before its first step.
 * Its commit point is the line for `path` in the fstab of `root`: the next
 * session finishes a share whose line is there and rolls back one whose line
 * is not. Subvolume paths are from the top level; `aside` is a path in `root`.
 */
export interface ShareProgress {
  path: string;
  /** The running root whose `path` moves: the booted subvolume. */
  root: string;
  /** The final name (top level), e.g. @var_lib_postgresql. */
  subvolume: string;
  /** Where the copy is made before it is renamed to `subvolume`. */
  temporary: string;
  /** Read-only snapshots of `root` (the copy's source, the check's). */
  snapshots: string[];
  /** UUID of the copy, once it exists; null before. */
  uuid: string | null;
  /** Where the root's own `path` is moved aside until it is deleted (absolute, in `root`). */
  aside: string;
  /** ISO 8601. */
  started: string;
}

export interface BootenvState {
  format: number;
  /** Subvolume path of the installed root: GRUB's home, never a BE. */
  installedRoot: string;
  /** UUID of the BE that boots by default; null before init finished. */
  defaultUuid: string | null;
  environments: Record<string, BootEnvironmentRecord>;
  /** Shared subvolumes; absent when there are none. */
  shared?: SharedSubvolume[];
  /** A share under way; absent when there is none. */
  share?: ShareProgress;
  /** What btrfs forgot of subvolumes bootenv deleted (./ancestry.ts), by UUID; absent when nothing. */
  ancestry?: Record<string, AncestryLink>;
}

/** A deleted subvolume's place in its BEs' lineage: whose snapshot it was, made in which generation. */
export interface AncestryLink {
  parentUuid: string;
  generation: number;
}

export function parseState(text: string): BootenvState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new BootenvError('PARSE', `${CONTAINER}/${STATE_FILE} is not valid JSON`, { cause: error });
  }
  const state = raw as Partial<BootenvState>;
  if (
    typeof state !== 'object' ||
    state === null ||
    state.format !== FORMAT ||
    typeof state.installedRoot !== 'string' ||
    !(state.defaultUuid === null || typeof state.defaultUuid === 'string') ||
    typeof state.environments !== 'object' ||
    state.environments === null
  ) {
    throw new BootenvError('PARSE', `${CONTAINER}/${STATE_FILE} does not hold bootenv state of format ${FORMAT}`);
  }
  for (const [uuid, record] of Object.entries(state.environments)) {
    const good = record?.lastGoodBoot;
    const carry = record?.carry;
    if (
      typeof record?.created !== 'string' ||
      typeof record.description !== 'string' ||
      (record.pinned !== undefined && record.pinned !== true) ||
      (good !== undefined && (typeof good?.bootId !== 'string' || typeof good.at !== 'string')) ||
      (carry !== undefined &&
        (typeof carry?.id !== 'string' ||
          !/^[0-9a-f-]{36}$/.test(carry.id) ||
          typeof carry.originUuid !== 'string' ||
          typeof carry.baseUuid !== 'string' ||
          (carry.mode !== 'all' && carry.mode !== 'data') ||
          !(carry.newBaseUuid === null || typeof carry.newBaseUuid === 'string') ||
          !(carry.touchedFile === null || typeof carry.touchedFile === 'string') ||
          (carry.exchange !== undefined && (typeof carry.exchange?.workUuid !== 'string' || typeof carry.exchange.subvolume !== 'string' || typeof carry.exchange.final !== 'boolean'))))
    ) {
      throw new BootenvError('PARSE', `${CONTAINER}/${STATE_FILE}: bad record for ${uuid}`);
    }
  }
  if (state.shared !== undefined && !Array.isArray(state.shared)) throw new BootenvError('PARSE', `${CONTAINER}/${STATE_FILE}: shared is not a list`);
  for (const shared of state.shared ?? []) {
    if (typeof shared?.path !== 'string' || typeof shared.subvolume !== 'string' || typeof shared.uuid !== 'string' || typeof shared.since !== 'string') {
      throw new BootenvError('PARSE', `${CONTAINER}/${STATE_FILE}: bad shared subvolume ${JSON.stringify(shared)}`);
    }
  }
  for (const [uuid, link] of Object.entries(state.ancestry ?? {})) {
    if (typeof link?.parentUuid !== 'string' || !Number.isSafeInteger(link.generation)) throw new BootenvError('PARSE', `${CONTAINER}/${STATE_FILE}: bad ancestry of ${uuid}`);
  }
  const share = state.share;
  if (
    share !== undefined &&
    (typeof share?.path !== 'string' ||
      typeof share.root !== 'string' ||
      typeof share.subvolume !== 'string' ||
      typeof share.temporary !== 'string' ||
      !Array.isArray(share.snapshots) ||
      !share.snapshots.every((snapshot) => typeof snapshot === 'string') ||
      !(share.uuid === null || typeof share.uuid === 'string') ||
      typeof share.aside !== 'string' ||
      typeof share.started !== 'string')
  ) {
    throw new BootenvError('PARSE', `${CONTAINER}/${STATE_FILE}: bad record of a share under way`);
  }
  return state as BootenvState;
}

export function serializeState(state: BootenvState): string {
  return `${JSON.stringify(state, null, 2)}\n`;
}

export function newState(installedRoot: string): BootenvState {
  return { format: FORMAT, installedRoot, defaultUuid: null, environments: {} };
}
