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

  it('does not grow with the history: links above the oldest living BE go, and above the place two ways meet', () => {
    // A line of upgrades 1 <- 2 <- ... <- 9, each deleted in turn but the last three.
    const line = Array.from({ length: 9 }, (_, n) => subvolume(n + 1, n === 0 ? null : n, 10 * (n + 1)));
    const state = newState('@');
    rememberAncestry(state, line, line.slice(0, 6));
    expect(state.ancestry).toBeUndefined();
    // Siblings 11 and 12 of 10, which goes with its own parents 8 and 9: the way from each meets at 10; above it nothing joins them.
    const family = [...line.slice(6), subvolume(10, 9, 100), subvolume(11, 10, 110), subvolume(12, 10, 120)];
    rememberAncestry(state, family, family.filter((entry) => [uuid(7), uuid(8), uuid(9), uuid(10)].includes(entry.uuid)));
    expect(Object.keys(state.ancestry ?? {})).toEqual([uuid(10)]);
    expect(ancestryLinks(state, family.filter((entry) => [uuid(11), uuid(12)].includes(entry.uuid)))).toEqual([{ uuid: uuid(10), parentUuid: uuid(9), generation: 100 }]);
  });

  it('keeps nothing for a subvolume made from none, or listed without its creation generation', () => {
    const state = newState('@');
    const { createdGeneration: _, ...unlisted } = subvolume(2, 1, 20);
    expect(rememberAncestry(state, [subvolume(1, null, 10), unlisted, subvolume(3, 2, 21)], [subvolume(1, null, 10), unlisted])).toBe(false);
    expect(state.ancestry).toBeUndefined();
    expect(() => parseState(serializeState({ ...newState('@'), ancestry: { [uuid(1)]: { parentUuid: uuid(2), generation: 1.5 } } }))).toThrow(/ancestry/);
  });
});
