/**
 * /etc/bootenv/bootenv.conf: `key = value` lines, `#` comments. Keys:
 *   divert        always (default) | never | auto — whether apt's dpkg calls go
 *                 into a new BE; `auto` runs dpkg in place when no BE can be
 *                 made, `always` then refuses (fail closed).
 *   name-template name of BEs made by apt: {date} (YYYYMMDD), {time} (HHMMSS),
 *                 {n} (lowest counter that makes the name unique). Default
 *                 apt-{date}-{n}.
 *   skip-unchanged yes (default) | no — whether, at the end of an apt
 *                 transaction, files identical to the previous BE's come to
 *                 share its extents (docs/dedupe.md).
 *   carry         all (default) | data | none — what of the changes the
 *                 running system makes after a BE is snapshotted goes into it
 *                 when it boots (be/carry-plan.ts): everything, all but /etc,
 *                 or nothing.
 *   rollback-carry data (default) | all | none — what of the running BE's
 *                 changes goes into a BE activated from it that has no carry
 *                 pending (an older BE: a rollback): files no package owns
 *                 outside /etc, /usr and /boot ("data follows the machine,
 *                 the system rolls back"), everything but package state, or
 *                 nothing.
 *   carry-exclude absolute paths, separated by spaces, never carried (one or
 *                 more lines; each adds to the list).
 *   keep          how many of the newest BEs `beadm prune` keeps (digits
 *                 only; default 10); protected BEs are kept besides.
 *   keep-daily    the newest BE of each of the last N days is kept too
 *                 (digits only; default 7).
 *   keep-weekly   the newest BE of each of the last N weeks is kept too
 *                 (digits only; default 4).
 *   auto-prune    yes (default) | no — whether each apt transaction that
 *                 made a BE ends with a prune by that policy.
 *   min-free      the free space an apt run must leave on the filesystem,
 *                 N% of its size or a byte count (digits, optional K, M, G
 *                 or T suffix, binary); default 5% but at least 512M; 0
 *                 turns the free-space guard off.
 * Pure parse; unknown keys and bad values are errors, so a typo is not ignored.
 */
import { BootenvError } from '../errors.js';

export const CONFIG_FILE = '/etc/bootenv/bootenv.conf';

export type DivertMode = 'always' | 'never' | 'auto';

/** A carry mode, or none. */
export type CarrySetting = 'all' | 'data' | 'none';

export interface BootenvConfig {
  divert: DivertMode;
  nameTemplate: string;
  skipUnchanged: boolean;
  carry: CarrySetting;
  /** The carry set up when a BE with none pending is activated from the running one (a rollback). */
  rollbackCarry: CarrySetting;
  /** Absolute paths never carried. */
  carryExclude: string[];
  /** How many of the newest BEs `beadm prune` keeps (./prune-plan.ts). */
  keep: number;
  /** The newest BE of each of the last this many days is kept. */
  keepDaily: number;
  /** The newest BE of each of the last this many weeks is kept. */
  keepWeekly: number;
  /** Prune by the policy after each apt transaction that made a BE. */
  autoPrune: boolean;
  /** The free-space floor of an apt run (./space-guard.ts). */
  minFree: MinFree;
}

/** A free-space floor: the larger of `percent` of the filesystem's size and `bytes`. */
export interface MinFree {
  percent: number;
  bytes: number;
}

export const DEFAULT_CONFIG: BootenvConfig = {
  divert: 'always',
  nameTemplate: 'apt-{date}-{n}',
  skipUnchanged: true,
  carry: 'all',
  rollbackCarry: 'data',
  carryExclude: [],
  keep: 10,
  keepDaily: 7,
  keepWeekly: 4,
  autoPrune: true,
  minFree: { percent: 5, bytes: 512 * 1024 * 1024 },
};

/** Parses a count of BEs to keep (bootenv.conf's `keep`, prune --keep): digits only; undefined otherwise. */
export function parseKeepCount(value: string): number | undefined {
  return /^[0-9]+$/.test(value) ? Number(value) : undefined;
}

const SIZE_UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** Parses bootenv.conf's min-free: `N%` (N up to 100, decimals allowed) or digits with an optional K, M, G or T suffix; undefined otherwise. */
export function parseMinFree(value: string): MinFree | undefined {
  const percent = /^([0-9]+(?:\.[0-9]+)?)%$/.exec(value);
  if (percent !== null) {
    const share = Number(percent[1]);
    return share <= 100 ? { percent: share, bytes: 0 } : undefined;
  }
  const size = /^([0-9]+)([KMGT]?)$/.exec(value);
  return size === null ? undefined : { percent: 0, bytes: Number(size[1]) * (SIZE_UNITS[size[2] as string] as number) };
}

/** Parses a carry setting (bootenv.conf's `carry`, BOOTENV_CARRY, --carry); undefined when it is none of all, data, none. */
export function parseCarrySetting(value: string): CarrySetting | undefined {
  return value === 'all' || value === 'data' || value === 'none' ? value : undefined;
}

export function parseConfig(text: string): BootenvConfig {
  const config = { ...DEFAULT_CONFIG, carryExclude: [...DEFAULT_CONFIG.carryExclude] };
  text.split('\n').forEach((raw, index) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') return;
    const match = /^([a-z-]+)\s*=\s*(.*)$/.exec(line);
    if (!match) throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: expected "key = value"`);
    const [, key, value] = match as unknown as [string, string, string];
    if (key === 'divert') {
      if (value !== 'always' && value !== 'never' && value !== 'auto') {
        throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: divert is always, never or auto, not ${JSON.stringify(value)}`);
      }
      config.divert = value;
    } else if (key === 'name-template') {
      if (!value.includes('{n}') && !value.includes('{time}')) {
        throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: name-template needs {n} or {time} to make names unique`);
      }
      config.nameTemplate = value;
    } else if (key === 'skip-unchanged') {
      if (value !== 'yes' && value !== 'no') {
        throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: skip-unchanged is yes or no, not ${JSON.stringify(value)}`);
      }
      config.skipUnchanged = value === 'yes';
    } else if (key === 'carry') {
      const setting = parseCarrySetting(value);
      if (setting === undefined) throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: carry is all, data or none, not ${JSON.stringify(value)}`);
      config.carry = setting;
    } else if (key === 'rollback-carry') {
      const setting = parseCarrySetting(value);
      if (setting === undefined) throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: rollback-carry is all, data or none, not ${JSON.stringify(value)}`);
      config.rollbackCarry = setting;
    } else if (key === 'carry-exclude') {
      for (const excluded of value.split(/\s+/).filter(Boolean)) {
        if (!excluded.startsWith('/') || excluded === '/' || excluded.split('/').some((part) => part === '..' || part === '.')) {
          throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: carry-exclude takes absolute paths (not / itself, no . or ..), not ${JSON.stringify(excluded)}`);
        }
        config.carryExclude.push(excluded.replace(/\/+$/, ''));
      }
    } else if (key === 'keep') {
      const keep = parseKeepCount(value);
      if (keep === undefined) throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: keep is a number of boot environments (digits only), not ${JSON.stringify(value)}`);
      config.keep = keep;
    } else if (key === 'keep-daily' || key === 'keep-weekly') {
      const count = parseKeepCount(value);
      if (count === undefined) throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: ${key} is a number of days or weeks (digits only), not ${JSON.stringify(value)}`);
      if (key === 'keep-daily') config.keepDaily = count;
      else config.keepWeekly = count;
    } else if (key === 'auto-prune') {
      if (value !== 'yes' && value !== 'no') {
        throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: auto-prune is yes or no, not ${JSON.stringify(value)}`);
      }
      config.autoPrune = value === 'yes';
    } else if (key === 'min-free') {
      const minFree = parseMinFree(value);
      if (minFree === undefined) throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: min-free is a share of the filesystem (5%) or a size (digits, then K, M, G or T), not ${JSON.stringify(value)}`);
      config.minFree = minFree;
    } else {
      throw new BootenvError('PARSE', `${CONFIG_FILE} line ${index + 1}: unknown setting ${JSON.stringify(key)}`);
    }
  });
  return config;
}

/**
 * The name of a BE made by apt at `now`: the template filled in, with {n} one
 * more than the highest counter among `taken` names of the same shape (never
 * reused, so a newer BE never carries an older BE's name). The result still
 * goes through name validation.
 */
export function nameFromTemplate(template: string, now: Date, taken: ReadonlySet<string>): string {
  const pad = (value: number) => String(value).padStart(2, '0');
  const date = `${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}`;
  const time = `${pad(now.getHours())}${pad(now.getMinutes())}${pad(now.getSeconds())}`;
  const filled = template.replaceAll('{date}', date).replaceAll('{time}', time);
  if (!filled.includes('{n}')) return filled;
  const [before, after] = filled.split('{n}', 2) as [string, string];
  let highest = 0;
  for (const name of taken) {
    if (!name.startsWith(before) || !name.endsWith(after)) continue;
    const counter = name.slice(before.length, name.length - after.length);
    if (/^\d+$/.test(counter)) highest = Math.max(highest, Number(counter));
  }
  return filled.replaceAll('{n}', String(highest + 1));
}
