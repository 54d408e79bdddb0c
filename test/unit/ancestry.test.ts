// The links bootenv keeps of subvolumes it deletes (src/be/ancestry.ts), for beadm diff's way to
// two BEs' common ancestor: kept while a living subvolume's way passes through them, then dropped.
import { describe, expect, it } from 'vitest';
import { ancestryLinks, rememberAncestry } from '../../src/be/ancestry.js';
import { newState } from '../../src/be/state.js';
import { parseState, serializeState } from '../../src/be/state.js';
import type { Subvolume } from '../../src/btrfs/parse.js';

const uuid = (n: number) => `00000000-0000-0000-0000-${String(n).padStart(12, '0')}`;
function subvolume(n: number, parent: number | null, created: number): Subvolume {
  return { id: 256 + n, generation: created + 5, topLevel: 5, parentUuid: parent === null ? null : uuid(parent), uuid: uuid(n), path: `@bootenv/s${n}`, createdGeneration: created };
}

describe('rememberAncestry and ancestryLinks', () => {
  it('keeps the links of deleted subvolumes that living ones descend through, and drops them when nothing does', () => {
    // 1 (a BE) <- 2 (carry base) <- 3 (the new BE) <- 4 (a BE made from it); 5 stands alone.
    const all = [subvolume(1, null, 10), subvolume(2, 1, 20), subvolume(3, 2, 21), subvolume(4, 3, 30), subvolume(5, null, 40)];
    const state = newState('@');
    expect(rememberAncestry(state, all, [all[1]!])).toBe(true);
    expect(state.ancestry).toEqual({ [uuid(2)]: { parentUuid: uuid(1), generation: 20 } });
    const living = all.filter((entry) => entry.uuid !== uuid(2));
    expect(ancestryLinks(state, living)).toEqual([{ uuid: uuid(2), parentUuid: uuid(1), generation: 20 }]);
    // 3 goes too: 4's way passes through both links.
    expect(rememberAncestry(state, living, [all[2]!])).toBe(true);
    const fewer = living.filter((entry) => entry.uuid !== uuid(3));
    expect(ancestryLinks(state, fewer).map((link) => link.uuid).sort()).toEqual([uuid(2), uuid(3)]);
    // The state file keeps them.
    expect(parseState(serializeState(state)).ancestry).toEqual(state.ancestry);
    // 4 goes: no living subvolume descends through 3 or 2 any more.
    expect(rememberAncestry(state, fewer, [all[3]!])).toBe(true);
    expect(state.ancestry).toBeUndefined();
    expect(rememberAncestry(state, [all[4]!], [])).toBe(false);
  });

  it('keeps nothing for a subvolume made from none, or listed without its creation generation', () => {
    const state = newState('@');
    const { createdGeneration: _, ...unlisted } = subvolume(2, 1, 20);
    expect(rememberAncestry(state, [subvolume(1, null, 10), unlisted, subvolume(3, 2, 21)], [subvolume(1, null, 10), unlisted])).toBe(false);
    expect(state.ancestry).toBeUndefined();
    expect(() => parseState(serializeState({ ...newState('@'), ancestry: { [uuid(1)]: { parentUuid: uuid(2), generation: 1.5 } } }))).toThrow(/ancestry/);
  });
});
