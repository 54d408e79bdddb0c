/**
 * The lineage of BEs that btrfs forgets. beadm diff finds what two BEs
 * changed from the tree blocks written since they forked (bootenv-changes),
 * following parent UUIDs to their nearest common ancestor. Carry bases, a BE
 * that its carry replaced and destroyed BEs sit on those ways, and deleting a
 * subvolume deletes its root item, with whose snapshot it was and when it was
 * made. Before bootenv deletes one, it keeps that link in the state
 * (`ancestry`), and hands the links to bootenv-changes, which follows them
 * like root items. A link no living subvolume's way still passes through is
 * dropped. Pure.
 */
import type { Subvolume } from '../btrfs/parse.js';
import type { AncestryLink, BootenvState } from './state.js';

/** The links still on the way up from some subvolume of `living` (through the other links). */
function reachable(links: Record<string, AncestryLink>, living: readonly Subvolume[]): Record<string, AncestryLink> {
  const byUuid = new Map(living.map((subvolume) => [subvolume.uuid, subvolume]));
  const kept: Record<string, AncestryLink> = {};
  for (const subvolume of living) {
    let parent = subvolume.parentUuid;
    const seen = new Set<string>();
    while (parent !== null && !seen.has(parent)) {
      seen.add(parent);
      if (byUuid.has(parent)) break;
      const link = links[parent];
      if (link === undefined) break;
      kept[parent] = link;
      parent = link.parentUuid;
    }
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
