/**
 * The account databases (/etc/passwd, group, shadow, gshadow, subuid,
 * subgid) merged entry by entry, three ways: `base` as the origin BE was when
 * the new BE was snapshotted, `origin` as it is now (an admin's useradd,
 * passwd, usermod -aG), `current` as the new BE has it (a postinst's adduser
 * --system). An entry changed on one side only takes that side's change; an
 * entry changed on both is merged field by field, group member lists as
 * sets. What cannot be merged — the same name added twice with different
 * entries, a field changed both ways, an id the new BE gave to another name,
 * an entry removed on one side and changed on the other — keeps the new BE's
 * version and is reported as a clash, never dropped silently. Lines keep the
 * new BE's order; entries from the origin are appended in the origin's
 * order. Pure; throws PARSE on a line with the wrong number of fields or a
 * name listed twice.
 */
import { BootenvError } from '../errors.js';

export const ACCOUNT_FILES = ['passwd', 'group', 'shadow', 'gshadow', 'subuid', 'subgid'] as const;
export type AccountFile = (typeof ACCOUNT_FILES)[number];

interface Shape {
  fields: number;
  /** Index of the numeric id (uid, gid) that must stay unique. */
  id?: number;
  /** Indexes of comma-separated member lists, merged as sets. */
  sets: number[];
}

const SHAPES: Record<Exclude<AccountFile, 'subuid' | 'subgid'>, Shape> = {
  passwd: { fields: 7, id: 2, sets: [] },
  group: { fields: 4, id: 2, sets: [3] },
  shadow: { fields: 9, sets: [] },
  gshadow: { fields: 4, sets: [2, 3] },
};

export interface AccountClash {
  file: AccountFile;
  name: string;
  /** What could not be merged; the new BE's version was kept. */
  reason: string;
}

export interface AccountMerge {
  /** The merged file. */
  text: string;
  /** Names whose entries came from the origin: added, changed, removed there. */
  added: string[];
  changed: string[];
  removed: string[];
  clashes: AccountClash[];
}

type Entries = Map<string, string[]>;

function lines(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

function parseEntries(file: AccountFile, shape: Shape, text: string, side: string): Entries {
  const entries: Entries = new Map();
  for (const line of lines(text)) {
    const fields = line.split(':');
    if (fields.length !== shape.fields) throw new BootenvError('PARSE', `${side} /etc/${file}: ${fields.length} fields, not ${shape.fields}, in ${JSON.stringify(line)}`);
    const name = fields[0] as string;
    if (entries.has(name)) throw new BootenvError('PARSE', `${side} /etc/${file}: ${JSON.stringify(name)} is listed twice`);
    entries.set(name, fields);
  }
  return entries;
}

const same = (a: readonly string[] | undefined, b: readonly string[] | undefined) => a !== undefined && b !== undefined && a.join(':') === b.join(':');

function mergeSet(base: string, origin: string, current: string): string {
  const members = (value: string) => value.split(',').filter((member) => member !== '');
  const [b, o, n] = [members(base), members(origin), members(current)];
  const removedInOrigin = new Set(b.filter((member) => !o.includes(member)));
  const result = n.filter((member) => !removedInOrigin.has(member));
  for (const member of o) if (!b.includes(member) && !result.includes(member)) result.push(member);
  return result.join(',');
}

/** Field by field; null when some field changed both ways (then the fields in conflict are named). */
function mergeFields(shape: Shape, base: string[], origin: string[], current: string[]): { fields: string[] } | { conflicting: number[] } {
  const fields: string[] = [];
  const conflicting: number[] = [];
  for (let index = 0; index < shape.fields; index++) {
    const [b, o, n] = [base[index] as string, origin[index] as string, current[index] as string];
    if (shape.sets.includes(index)) fields.push(mergeSet(b, o, n));
    else if (o === b || o === n) fields.push(n);
    else if (n === b) fields.push(o);
    else {
      conflicting.push(index + 1);
      fields.push(n);
    }
  }
  return conflicting.length > 0 ? { conflicting } : { fields };
}

/**
 * Merges one account file. `refused`: names whose entry was not taken from
 * the origin in a file this one goes with (shadow goes with passwd, gshadow
 * with group): their entries are not added here either, so that no user gets
 * a password without an account. Returns the merge and the names refused.
 */
export function mergeAccountFile(file: AccountFile, base: string, origin: string, current: string, refused: ReadonlySet<string> = new Set()): AccountMerge & { refused: Set<string> } {
  if (file === 'subuid' || file === 'subgid') return mergeRanges(file, base, origin, current, refused);
  const shape = SHAPES[file];
  const [b, o, n] = [parseEntries(file, shape, base, 'base'), parseEntries(file, shape, origin, 'origin'), parseEntries(file, shape, current, 'new BE')];
  const merge: AccountMerge & { refused: Set<string> } = { text: '', added: [], changed: [], removed: [], clashes: [], refused: new Set() };
  const clash = (name: string, reason: string) => {
    merge.clashes.push({ file, name, reason });
    merge.refused.add(name);
  };
  const result: Entries = new Map();
  /** Entries whose fields came from the origin: they must not take an id the new BE gave to another name. */
  const fromOrigin = new Map<string, string[] | undefined>();
  for (const [name, entry] of n) {
    const [inBase, inOrigin] = [b.get(name), o.get(name)];
    if (inBase === undefined) {
      if (inOrigin !== undefined && !same(inOrigin, entry)) clash(name, 'added in both boot environments with different entries');
      result.set(name, entry);
    } else if (inOrigin === undefined) {
      if (same(entry, inBase)) merge.removed.push(name);
      else {
        clash(name, 'removed in the origin, changed in the new boot environment');
        result.set(name, entry);
      }
    } else if (same(inOrigin, inBase) || same(inOrigin, entry)) {
      result.set(name, entry);
    } else {
      const merged = mergeFields(shape, inBase, inOrigin, entry);
      if ('conflicting' in merged) {
        clash(name, `changed in both boot environments (field ${merged.conflicting.join(', ')})`);
        result.set(name, entry);
      } else {
        result.set(name, merged.fields);
        merge.changed.push(name);
        fromOrigin.set(name, entry);
      }
    }
  }
  for (const [name, entry] of o) {
    if (n.has(name)) continue;
    const inBase = b.get(name);
    if (inBase !== undefined) {
      if (!same(entry, inBase)) clash(name, 'changed in the origin, removed in the new boot environment');
    } else if (refused.has(name)) {
      clash(name, `not added: its entry in the file that goes with /etc/${file} was not taken`);
    } else {
      result.set(name, entry);
      merge.added.push(name);
      fromOrigin.set(name, undefined);
    }
  }
  if (shape.id !== undefined) {
    const owners = new Map<string, string[]>();
    for (const [name, entry] of result) owners.set(entry[shape.id] as string, [...(owners.get(entry[shape.id] as string) ?? []), name]);
    for (const [name, previous] of fromOrigin) {
      const id = (result.get(name) as string[])[shape.id] as string;
      const others = (owners.get(id) ?? []).filter((other) => other !== name);
      if (others.length === 0) continue;
      clash(name, `${file === 'passwd' ? 'uid' : 'gid'} ${id} is ${others.join(', ')}'s in the new boot environment`);
      if (previous === undefined) {
        result.delete(name);
        merge.added = merge.added.filter((added) => added !== name);
      } else {
        result.set(name, previous);
        merge.changed = merge.changed.filter((changed) => changed !== name);
      }
    }
  }
  merge.text = [...result.values()].map((entry) => `${entry.join(':')}\n`).join('');
  return merge;
}

/** subuid/subgid: `name:start:count` lines, several per name; merged as a set of lines, ranges of different names must not overlap. */
function mergeRanges(file: 'subuid' | 'subgid', base: string, origin: string, current: string, refused: ReadonlySet<string>): AccountMerge & { refused: Set<string> } {
  const parse = (text: string, side: string) =>
    lines(text).map((line) => {
      const match = /^([^:]+):(\d+):(\d+)$/.exec(line);
      if (match === null) throw new BootenvError('PARSE', `${side} /etc/${file}: expected name:start:count, not ${JSON.stringify(line)}`);
      return { line, name: match[1] as string, start: Number(match[2]), end: Number(match[2]) + Number(match[3]) };
    });
  const [b, o, n] = [parse(base, 'base'), parse(origin, 'origin'), parse(current, 'new BE')];
  const has = (list: typeof b, line: string) => list.some((entry) => entry.line === line);
  const merge: AccountMerge & { refused: Set<string> } = { text: '', added: [], changed: [], removed: [], clashes: [], refused: new Set() };
  const result = n.filter((entry) => {
    const removed = has(b, entry.line) && !has(o, entry.line);
    if (removed) merge.removed.push(entry.name);
    return !removed;
  });
  for (const entry of o) {
    if (has(b, entry.line) || has(result, entry.line)) continue;
    const overlapping = result.find((other) => other.name !== entry.name && other.start < entry.end && entry.start < other.end);
    if (refused.has(entry.name)) merge.clashes.push({ file, name: entry.name, reason: 'not added: its account was not taken from the origin' });
    else if (overlapping !== undefined) merge.clashes.push({ file, name: entry.name, reason: `range ${entry.start}-${entry.end - 1} overlaps ${overlapping.name}'s in the new boot environment` });
    else {
      result.push(entry);
      merge.added.push(entry.name);
    }
  }
  merge.text = result.map((entry) => `${entry.line}\n`).join('');
  return merge;
}
