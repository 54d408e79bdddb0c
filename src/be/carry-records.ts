/**
 * The carry's records and snapshots, and what keeps them consistent (the
 * carry itself is ./carry.ts). A BE made from another one (by apt, beadm
 * create or init) gets a carry record in the state and a directory
 * @bootenv/.carry/ID holding its snapshots, none of them a BE:
 *   base       read-only snapshot of the origin taken the moment the BE was
 *              made (the BE is a snapshot of it), later the origin as of the
 *              last carry;
 *   new-base   read-only snapshot of the BE right after the last carry;
 *   touched    what the BE changed by itself up to then (a JSON file);
 * and the marker @bootenv/.carry/pending/UUID (UUID: the BE subvolume's;
 * content: the ID), which the initramfs looks for at a boot of that
 * subvolume: a carry's swap gives the BE a new subvolume, whose UUID has no
 * marker when the carry completed it. A carry's temporaries (snapshots of
 * the origin and of the BE, the working snapshot) live in ID's directory.
 * Snapshots are named by role and a random suffix and referred to by UUID;
 * the sweep deletes every snapshot and file there that no record refers to,
 * so an interrupted carry, a destroyed BE or a completed carry leave nothing.
 *
 * The swap: a carry saves, in the BE's record, the UUID of its carried
 * snapshot and what the record becomes afterwards (`exchange`), then swaps
 * the snapshot in with one atomic rename, then does the bookkeeping (the BE's
 * record moves to the new UUID). Every session first finishes or discards a
 * recorded swap: the UUID found at the BE's path tells whether it happened.
 */
import { randomUuid } from './random-id.js';
import path from 'node:path';
import { deleteSubvolume, listSubvolumes, snapshotSubvolume } from '../btrfs/commands.js';
import { mountedSubvolumeIds, readMountTable } from '../sys/mountinfo.js';
import type { Subvolume } from '../btrfs/parse.js';
import { BootenvError } from '../errors.js';
import { listDirectory, makeDirectory, readTextIfExists, removeEmptyDirectory, removeFile, writeFileAtomic, writePrivateFileAtomic } from '../sys/fs.js';
import type { Scope } from '../sys/scope.js';
import type { TouchedPaths } from './carry-plan.js';
import type { CarrySetting } from './config.js';
import { rememberAncestry } from './ancestry.js';
import { saveAncestry, saveState, type Session } from './session.js';
import { CONTAINER, type BootenvState, type CarryMode, type CarryRecord } from './state.js';

export const CARRY_DIRECTORY = `${CONTAINER}/.carry`;
/** Where the initramfs looks for a BE subvolume's pending carry: a file named by its UUID. */
const PENDING_DIRECTORY = `${CARRY_DIRECTORY}/pending`;

/** How a BE being made gets its carry: a new one of `mode` from its source, or the one of the BE it replaces (stacked apt runs), or none. */
export type CarryChoice = { mode: CarrySetting } | { inherit: CarryRecord | undefined };

/** A fresh name in a carry's directory, from the top level: @bootenv/.carry/ID/ROLE-XXXXXXXX. */
export function carryPath(id: string, role: string): string {
  return `${CARRY_DIRECTORY}/${id}/${role}-${randomUuid().slice(0, 8)}`;
}

/**
 * Prepares the carry of a BE about to be made from `source`: for a new carry,
 * the read-only base snapshot of `source` (deleted again if `scope` aborts),
 * which the BE is then snapshotted from, so that base and BE are the same
 * tree. Returns the path (from the top level) to snapshot the BE from, its
 * carry record (none for mode none, or when the BE replaced had none) and,
 * for a new carry, the base's path: the caller lists the subvolumes once the
 * BE's snapshot is made too and sets the record's baseUuid (carryBaseUuid).
 */
export async function prepareCarry(
  scope: Scope,
  session: Session,
  source: Subvolume,
  choice: CarryChoice,
): Promise<{ snapshotFrom: string; record: CarryRecord | undefined; basePath?: string }> {
  if ('inherit' in choice) return { snapshotFrom: source.path, record: choice.inherit === undefined ? undefined : { ...choice.inherit } };
  if (choice.mode === 'none') return { snapshotFrom: source.path, record: undefined };
  const id = randomUuid();
  for (const directory of [CARRY_DIRECTORY, `${CARRY_DIRECTORY}/${id}`]) {
    const full = path.join(session.top, directory);
    if (await makeDirectory(full, 0o700)) scope.onAbort(`remove ${directory}`, () => removeEmptyDirectory(full));
  }
  const basePath = carryPath(id, 'base');
  await snapshotSubvolume(path.join(session.top, source.path), path.join(session.top, basePath), 'read-only');
  scope.onAbort(`delete the carry base ${basePath}`, () => deleteSubvolume(path.join(session.top, basePath)));
  return {
    snapshotFrom: basePath,
    record: { id, originUuid: source.uuid, mode: choice.mode, baseUuid: '', newBaseUuid: null, touchedFile: null, since: new Date().toISOString() },
    basePath,
  };
}

/** The UUID of the carry base at `basePath`, from `session.subvolumes` as listed after its snapshot. */
export function carryBaseUuid(session: Session, basePath: string): string {
  const base = session.subvolumes.find((subvolume) => subvolume.path === basePath);
  if (base === undefined) throw new BootenvError('INTERNAL', `snapshot ${basePath} is not listed by btrfs`);
  return base.uuid;
}

/**
 * Gives BE `target` a rollback's carry (CarryRecord.follow) from the running
 * `origin`: the base is a read-only snapshot of `target` as it is now, so that
 * its carry takes what `origin` holds beyond it, filtered by `mode`. Records
 * it in `state` (in memory; the caller saves) and marks it pending; `scope`
 * undoes both if it aborts.
 */
export async function startFollowCarry(scope: Scope, session: Session, state: BootenvState, target: Subvolume, origin: Subvolume, mode: CarryMode): Promise<void> {
  const entry = state.environments[target.uuid];
  if (entry === undefined) throw new BootenvError('INTERNAL', `no state record for ${target.path}`);
  const { record, basePath } = await prepareCarry(scope, session, target, { mode });
  if (record === undefined || basePath === undefined) throw new BootenvError('INTERNAL', 'a carry of mode none was prepared');
  session.subvolumes = await listSubvolumes(session.top);
  entry.carry = { ...record, baseUuid: carryBaseUuid(session, basePath), originUuid: origin.uuid, follow: true };
  await markCarryPending(session, target.uuid, record.id);
  scope.onAbort(`unmark the carry of ${target.path}`, () => markCarryPending(session, target.uuid, undefined));
}

/** Marks BE subvolume `uuid` as having the carry of `id` pending for its next boot (or, with undefined, as having none). */
export async function markCarryPending(session: Session, uuid: string, id: string | undefined): Promise<void> {
  const marker = path.join(session.top, PENDING_DIRECTORY, uuid);
  if (id === undefined) return removeFile(marker);
  await makeDirectory(path.dirname(marker), 0o700);
  await writeFileAtomic(marker, `${id}\n`);
}

/** What a BE changed by itself up to the last carry into it (none before the first). */
export async function readTouched(session: Session, record: CarryRecord): Promise<TouchedPaths> {
  if (record.touchedFile === null) return { exact: [], trees: [] };
  const text = await readTextIfExists(path.join(session.top, CARRY_DIRECTORY, record.id, record.touchedFile));
  if (text === undefined) throw new BootenvError('NOT_FOUND', `the carry record of ${record.id} names ${record.touchedFile}, which is gone`);
  return JSON.parse(text) as TouchedPaths;
}

/** Writes `touched` to a fresh file in the carry's directory (root's alone); returns its name. */
export async function writeTouched(session: Session, id: string, touched: TouchedPaths): Promise<string> {
  const name = path.basename(carryPath(id, 'touched')) + '.json';
  await writePrivateFileAtomic(path.join(session.top, CARRY_DIRECTORY, id, name), JSON.stringify(touched));
  return name;
}

/**
 * Finishes the swap recorded in the BE whose record is under `uuid`: if the
 * carried snapshot is at the BE's path, the record moves to its UUID (with the
 * default, and other BEs' origins), becomes what the carry said (gone when it
 * was final, else with the new base), and the summary is kept as lastCarry;
 * if not, the swap never happened and the record only forgets it. Saves the
 * state through `scope`. Returns which.
 */
export async function completeExchange(scope: Scope, session: Session, state: BootenvState, uuid: string): Promise<'finished' | 'discarded'> {
  const entry = state.environments[uuid];
  const exchange = entry?.carry?.exchange;
  if (entry?.carry === undefined || exchange === undefined) throw new BootenvError('INTERNAL', `no carry swap recorded for ${uuid}`);
  session.subvolumes = await listSubvolumes(session.top);
  const atPath = session.subvolumes.find((subvolume) => subvolume.path === exchange.subvolume);
  if (atPath?.uuid !== exchange.workUuid) {
    delete entry.carry.exchange;
    await saveState(scope, session, state);
    return 'discarded';
  }
  const { exchange: _, ...carry } = entry.carry;
  const moved = { ...entry, lastCarry: exchange.summary };
  if (exchange.final) delete moved.carry;
  else moved.carry = { ...carry, baseUuid: exchange.originSnapshotUuid, newBaseUuid: exchange.newBaseSnapshotUuid, touchedFile: exchange.touchedFile, since: exchange.summary.at };
  delete state.environments[uuid];
  state.environments[exchange.workUuid] = moved;
  await markCarryPending(session, exchange.workUuid, exchange.final ? undefined : entry.carry.id);
  await markCarryPending(session, uuid, undefined);
  if (state.defaultUuid === uuid) state.defaultUuid = exchange.workUuid;
  for (const other of Object.values(state.environments)) {
    if (other.originUuid === uuid) other.originUuid = exchange.workUuid;
    if (other.carry?.originUuid === uuid) other.carry.originUuid = exchange.workUuid;
  }
  await saveState(scope, session, state);
  return 'finished';
}

/**
 * Deletes every snapshot and file under @bootenv/.carry that no carry record
 * refers to, and the directories left empty. A snapshot that is mounted (the
 * BE a boot's carry replaced, still the root it runs in: btrfs would delete
 * it from under it) stays for the next sweep, and so does one that cannot be
 * deleted, which is said. Final: nothing is undone.
 */
export async function sweepCarrySnapshots(session: Session): Promise<void> {
  if (session.state === undefined) return;
  const records = Object.values(session.state.environments).flatMap((entry) => (entry.carry === undefined ? [] : [entry.carry]));
  const referenced = new Set(records.flatMap((carry) => [carry.baseUuid, carry.newBaseUuid, carry.exchange?.workUuid, carry.exchange?.originSnapshotUuid, carry.exchange?.newBaseSnapshotUuid]));
  const files = new Set(records.flatMap((carry) => [carry.touchedFile, carry.exchange?.touchedFile].map((name) => (name ? `${carry.id}/${name}` : ''))));
  const deleted = new Set<string>();
  const mounted = mountedSubvolumeIds(await readMountTable(), session.probe.deviceNumber);
  const deleting = session.subvolumes.filter((subvolume) => subvolume.path.startsWith(`${CARRY_DIRECTORY}/`) && !referenced.has(subvolume.uuid) && !mounted.has(subvolume.id));
  // Bases and replaced BEs are on the way from BEs to their ancestors: beadm diff follows the links kept here.
  if (deleting.length > 0 && rememberAncestry(session.state, session.subvolumes, deleting)) await saveAncestry(session, session.state.ancestry);
  for (const subvolume of deleting) {
    try {
      await deleteSubvolume(path.join(session.top, subvolume.path), false);
      deleted.add(subvolume.uuid);
    } catch (error) {
      session.notify(`could not delete ${subvolume.path} yet (${error instanceof Error ? error.message : String(error)}); the next beadm will`);
    }
  }
  // A deleted subvolume leaves btrfs subvolume list at once (it lists the cleaning ones only with -d).
  session.subvolumes = session.subvolumes.filter((subvolume) => !deleted.has(subvolume.uuid));
  const pending = new Set(Object.entries(session.state.environments).flatMap(([uuid, entry]) => (entry.carry === undefined ? [] : [uuid, ...(entry.carry.exchange?.final === false ? [entry.carry.exchange.workUuid] : [])])));
  for (const uuid of await listDirectory(path.join(session.top, PENDING_DIRECTORY))) {
    if (!pending.has(uuid)) await removeFile(path.join(session.top, PENDING_DIRECTORY, uuid));
  }
  const directory = path.join(session.top, CARRY_DIRECTORY);
  for (const id of await listDirectory(directory)) {
    if (`${CARRY_DIRECTORY}/${id}` === PENDING_DIRECTORY) continue;
    for (const name of await listDirectory(path.join(directory, id))) {
      const file = path.join(directory, id, name);
      if (!files.has(`${id}/${name}`) && !session.subvolumes.some((subvolume) => subvolume.path === `${CARRY_DIRECTORY}/${id}/${name}`)) await removeFile(file);
    }
    if ((await listDirectory(path.join(directory, id))).length === 0) await removeEmptyDirectory(path.join(directory, id));
  }
}

/**
 * What every session does first (after the apt transaction's recovery):
 * finishes or discards the swap of a carry that was interrupted, tells the
 * user, and sweeps what no record refers to.
 */
export async function recoverInterruptedCarries(scope: Scope, session: Session): Promise<void> {
  const state = session.state;
  if (state === undefined) return;
  for (const [uuid, entry] of Object.entries(state.environments)) {
    const into = entry.carry?.exchange?.subvolume;
    if (into === undefined) continue;
    const outcome = await completeExchange(scope, session, state, uuid);
    session.notify(
      outcome === 'finished'
        ? `finished the bookkeeping of the carry into ${into}, which was interrupted after its swap`
        : `discarded a carry into ${into} that was interrupted before its swap; the BE is as it was before it`,
    );
  }
  await sweepCarrySnapshots(session);
}
