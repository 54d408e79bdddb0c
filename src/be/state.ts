/**
 * bootenv's durable state: one JSON file at the btrfs top level,
 * `@bootenv/.bootenv.json`, beside the BE subvolumes. It records which
 * subvolume is the installed root (GRUB's home), which BE boots by default,
 * and per BE (keyed by subvolume UUID, so a rename needs no update) its
 * origin, creation time, description and last good boot. Written atomically under the global
 * lock. Parse and serialize are pure and strict.
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
}

export interface BootenvState {
  format: number;
  /** Subvolume path of the installed root: GRUB's home, never a BE. */
  installedRoot: string;
  /** UUID of the BE that boots by default; null before init finished. */
  defaultUuid: string | null;
  environments: Record<string, BootEnvironmentRecord>;
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
    if (
      typeof record?.created !== 'string' ||
      typeof record.description !== 'string' ||
      (good !== undefined && (typeof good?.bootId !== 'string' || typeof good.at !== 'string'))
    ) {
      throw new BootenvError('PARSE', `${CONTAINER}/${STATE_FILE}: bad record for ${uuid}`);
    }
  }
  return state as BootenvState;
}

export function serializeState(state: BootenvState): string {
  return `${JSON.stringify(state, null, 2)}\n`;
}

export function newState(installedRoot: string): BootenvState {
  return { format: FORMAT, installedRoot, defaultUuid: null, environments: {} };
}
