/**
 * The free-space guard of an apt run, before its BE is made: apt fails
 * cleanly at DPkg::Pre-Install-Pkgs (dpkg never runs, nothing changed)
 * rather than dpkg failing half-way for lack of space on btrfs.
 *
 * What the run will write is estimated from the .debs apt hands the hook:
 * each unpacked package's Installed-Size, at least its .deb's size. Not
 * "new minus old", as for an upgrade in place: the BE is a snapshot, so the
 * old version's files stay referenced by the BE it was made from, and dpkg
 * writes every file of the new version afresh (the skip-unchanged pass shares
 * the identical ones only after dpkg). Removals free nothing either. A margin
 * covers dpkg's database, logs and the snapshot's metadata.
 *
 * The floor is bootenv.conf's min-free. When free space minus the estimate
 * would fall below it, BEs nothing protects are destroyed, oldest first —
 * first those the retention policy does not keep, then those only the policy
 * keeps (./prune-plan.ts roomOrder) — one at a time, waiting for btrfs to
 * free their space, until the run fits. A protected BE (running, default,
 * one-shot, last good boot, pinned, mounted, a carry origin) or one of
 * unknown age is never destroyed; if destroying all the others is not
 * enough, the run is refused with NO_SPACE and a list of what the admin
 * could unpin or destroy. So the guard and the policy cannot deadlock: while
 * a BE is prunable, the guard prunes it before it refuses.
 */
import type { PackageAction } from '../apt/hook-input.js';
import { waitForSubvolumeCleaning } from '../btrfs/commands.js';
import { installedSizeBytes, readDebControl } from '../deb/reader.js';
import { BootenvError } from '../errors.js';
import { fileSize, filesystemSpace } from '../sys/fs.js';
import type { BootenvConfig, MinFree } from './config.js';
import type { Options } from './library.js';
import { roomOrder, type KeepReason } from './prune-plan.js';
import { destroyEach, planInSession, retentionPolicy } from './retention.js';
import type { Session } from './session.js';
import type { BootenvState } from './state.js';
import { prepareTransaction } from './transaction.js';

/** What a transaction writes besides its packages' files: dpkg's database and logs, the snapshot's metadata. */
export const TRANSACTION_MARGIN_BYTES = 32 * 1024 * 1024;

/** One .deb of the run: its Installed-Size (null when unknown) and its file size. */
export interface DebSize {
  installedBytes: number | null;
  debBytes: number;
}

/** The bytes an apt run that unpacks `debs` may write into its new BE (see the file's comment). Pure. */
export function estimateWriteBytes(debs: readonly DebSize[]): number {
  return debs.reduce((sum, deb) => sum + Math.max(deb.installedBytes ?? 0, deb.debBytes), TRANSACTION_MARGIN_BYTES);
}

/** The free-space floor of min-free on a filesystem of `sizeBytes`: the larger of its share and its bytes. Pure. */
export function floorBytes(minFree: MinFree, sizeBytes: number): number {
  return Math.max(Math.ceil((sizeBytes * minFree.percent) / 100), minFree.bytes);
}

/** Whether min-free turns the guard off (0). Pure. */
export function guardOff(minFree: MinFree): boolean {
  return minFree.percent === 0 && minFree.bytes === 0;
}

/** "1.5 GiB": for the guard's messages. Pure. */
export function describeBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The sizes of the .debs `actions` unpack. Reads the .debs' control files only. */
async function debSizes(actions: readonly PackageAction[]): Promise<DebSize[]> {
  const sizes: DebSize[] = [];
  for (const action of actions) {
    if (action.action !== 'unpack' || action.deb === null) continue;
    let installedBytes: number | null = null;
    try {
      installedBytes = installedSizeBytes(await readDebControl(action.deb));
    } catch {
      // An unreadable .deb fails in dpkg, which says why; here its file size stands in.
    }
    sizes.push({ installedBytes, debBytes: await fileSize(action.deb) });
  }
  return sizes;
}

/** Why each BE that stays after the guard could not be destroyed, for the refusal's hint. */
function whatStays(kept: ReadonlyArray<{ name: string; reasons: KeepReason[] }>, destroyed: ReadonlySet<string>): string {
  const said: Record<string, string> = {
    running: 'running',
    default: 'boots by default',
    'one-shot': 'boots next',
    pinned: 'pinned: beadm unpin it to let it go',
    'last-good': 'the last BE that booted successfully',
    'carry-origin': "another BE's pending carry reads from it",
    mounted: 'mounted: beadm unmount it',
    'unknown-age': 'no record of when it was made: beadm destroy it if it is not needed',
  };
  return kept
    .filter(({ name }) => !destroyed.has(name))
    .map(({ name, reasons }) => `${name} (${reasons.flatMap((reason) => (said[reason] === undefined ? [] : [said[reason]])).join(', ')})`)
    .join('; ');
}

/**
 * Makes room for an apt run that performs `actions` (see the file's
 * comment): destroys unprotected BEs of `session` while the estimate does
 * not fit above min-free, telling each through session.notify, and throws
 * NO_SPACE when it still does not fit. Needs root.
 */
export async function makeRoomForTransaction(session: Session, state: BootenvState, actions: readonly PackageAction[], config: BootenvConfig): Promise<void> {
  if (guardOff(config.minFree)) return;
  const writeBytes = estimateWriteBytes(await debSizes(actions));
  let space = await filesystemSpace(session.top);
  const floor = floorBytes(config.minFree, space.sizeBytes);
  const fits = () => space.freeBytes - writeBytes >= floor;
  if (fits()) return;
  const plan = await planInSession(session, state, retentionPolicy(config));
  const order = roomOrder(plan);
  const destroyed = new Set<string>();
  for (const name of order) {
    const before = space.freeBytes;
    await destroyEach(session, state, [name]);
    destroyed.add(name);
    await waitForSubvolumeCleaning(session.top);
    space = await filesystemSpace(session.top);
    const why = plan.remove.includes(name) ? 'the retention policy does not keep it' : 'only the retention policy kept it, nothing protects it';
    session.notify(
      `destroyed boot environment ${name} to make room for this apt run (${why}; it freed ${describeBytes(Math.max(0, space.freeBytes - before))}): ` +
        `apt may write ${describeBytes(writeBytes)}, and min-free keeps ${describeBytes(floor)} free`,
    );
    if (fits()) return;
  }
  const stays = whatStays(plan.kept, destroyed);
  throw new BootenvError(
    'NO_SPACE',
    `not enough space for this apt run: it may write ${describeBytes(writeBytes)}, ${describeBytes(space.freeBytes)} is free, and ${describeBytes(floor)} must stay free (min-free in bootenv.conf)` +
      `${destroyed.size === 0 ? '' : ` even after destroying ${[...destroyed].join(', ')}`}; nothing was installed`,
    { hint: `no other boot environment can be pruned${stays === '' ? '' : `; the ones left: ${stays}`}. Free space, lower min-free, or install fewer packages at once` },
  );
}

/**
 * DPkg::Pre-Install-Pkgs with the free-space guard: ./transaction.ts
 * prepareTransaction, which runs makeRoomForTransaction before the
 * transaction starts (the guard lives here because destroying BEs depends on
 * ./transaction.ts, not the other way round). Throws what both throw.
 */
export async function prepareTransactionWithRoom(input: string, options: Options = {}): Promise<void> {
  await prepareTransaction(input, options, makeRoomForTransaction);
}
