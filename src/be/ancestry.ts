/**
 * The lineage of BEs that btrfs forgets. beadm diff finds what two BEs
 * changed from the tree blocks written since they forked (bootenv-changes),
 * following parent UUIDs to their nearest common ancestor. Carry bases, a BE
 * that its carry replaced and destroyed BEs sit on those ways, and deleting a
 * subvolume deletes its root item, with whose snapshot it was and when it was
 * made. Before bootenv deletes one, it keeps that link in the state
 * (`ancestry`), and hands the links to bootenv-changes, which follows them
 * like root items. A link is kept while it joins two living subvolumes, and
 * dropped when it does not (those BEs are gone, or all above it are): the
 * state does not grow with the BEs' history. Pure.
 */
import type { Subvolume } from '../btrfs/parse.js';
import type { AncestryLink, BootenvState } from './state.js';

/**
 * The links that join living subvolumes of `living`: from each one up to its
 * nearest living ancestor, or, when it has none, up to where its way first
 * meets another living subvolume's way (their common ancestor, itself
 * deleted). Links above that join no two of them, and go.
 */
function reachable(links: Record<string, AncestryLink>, living: readonly Subvolume[]): Record<string, AncestryLink> {
  const alive = new Set(living.map((subvolume) => subvolume.uuid));
  const ways = living.map((subvolume) => {
    const way: string[] = [];
    let parent = subvolume.parentUuid;
    while (parent !== null && !alive.has(parent) && !way.includes(parent) && links[parent] !== undefined) {
      way.push(parent);
      parent = (links[parent] as AncestryLink).parentUuid;
    }
    return { way, toLiving: parent !== null && alive.has(parent) };
  });
  const passes = new Map<string, number>();
  for (const { way } of ways) for (const uuid of way) passes.set(uuid, (passes.get(uuid) ?? 0) + 1);
  const kept: Record<string, AncestryLink> = {};
  for (const { way, toLiving } of ways) {
    const meets = way.findIndex((uuid) => (passes.get(uuid) ?? 0) > 1);
    const end = toLiving ? way.length : meets + 1;
    for (const uuid of way.slice(0, end)) kept[uuid] = links[uuid] as AncestryLink;
  }
  return kept;
}

/**
 * Records in `state` (in memory; the caller saves) the links of `deleting`,
 * subvolumes about to be deleted from `subvolumes` (all of them, as listed
 * with their creation generations), and drops the links nothing needs any
 * more. Returns whether the state changed.
 */
export function rememberAncestry(state: BootenvState, subvolumes: readonly Subvolume[], deleting: readonly Subvolume[]): boolean {
  const links = { ...(state.ancestry ?? {}) };
  for (const subvolume of deleting) {
    if (subvolume.parentUuid !== null && subvolume.createdGeneration !== undefined) links[subvolume.uuid] = { parentUuid: subvolume.parentUuid, generation: subvolume.createdGeneration };
  }
  const gone = new Set(deleting.map((subvolume) => subvolume.uuid));
  const kept = reachable(links, subvolumes.filter((subvolume) => !gone.has(subvolume.uuid)));
  const before = JSON.stringify(state.ancestry ?? {});
  if (Object.keys(kept).length === 0) delete state.ancestry;
  else state.ancestry = kept;
  return JSON.stringify(state.ancestry ?? {}) !== before;
}

/** The links bootenv-changes needs among the living `subvolumes`: UUID, parent UUID, generation. */
export function ancestryLinks(state: BootenvState | undefined, subvolumes: readonly Subvolume[]): Array<{ uuid: string } & AncestryLink> {
  const kept = reachable(state?.ancestry ?? {}, subvolumes);
  return Object.entries(kept).map(([uuid, link]) => ({ uuid, ...link }));
}
