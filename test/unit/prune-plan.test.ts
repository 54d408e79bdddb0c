// Unit tests for src/be/prune-plan.ts: which BEs `beadm prune` destroys and why each other one stays.
import { describe, expect, it } from 'vitest';
import { planPrune, roomOrder, type Protection, type PruneCandidate, type RetentionPolicy } from '../../src/be/prune-plan.js';

/** Only the newest `keep`: no age buckets. */
const newest = (keep: number): RetentionPolicy => ({ keep, keepDaily: 0, keepWeekly: 0 });
const NOW = new Date(2026, 11, 31, 12);

/** BE `name` made on day `day` of December 2026 (null: no record). */
function be(name: string, day: number | null, ...protections: Protection[]): PruneCandidate {
  return { name, created: day === null ? null : new Date(Date.UTC(2026, 11, day)).toISOString(), protections };
}

describe('planPrune', () => {
  it.each<[string, PruneCandidate[], number, string[]]>([
    ['nothing to prune: fewer BEs than keep', [be('a', 1), be('b', 2)], 10, []],
    ['exactly keep BEs', [be('a', 1), be('b', 2)], 2, []],
    ['the oldest beyond keep go, oldest first', [be('a', 1), be('b', 2), be('c', 3), be('d', 4), be('e', 5)], 2, ['a', 'b', 'c']],
    ['by creation time, not by the order given', [be('new', 9), be('old', 1), be('mid', 5)], 1, ['old', 'mid']],
    ['keep 0: every unprotected BE goes', [be('a', 1), be('b', 2, 'running', 'default')], 0, ['a']],
    ['protected BEs beyond keep stay', [be('a', 1, 'pinned'), be('b', 2, 'running'), be('c', 3, 'last-good'), be('d', 4, 'one-shot'), be('e', 5, 'mounted'), be('f', 6, 'carry-origin'), be('g', 7), be('h', 8)], 1, ['g']],
    ['protected BEs count among the newest', [be('a', 1), be('b', 2), be('c', 3, 'default')], 1, ['a', 'b']],
    ['a BE of unknown age stays', [be('x', null), be('a', 1), be('b', 2)], 1, ['a']],
    ['equal times: later in the list is newer', [be('first', 1), be('second', 1), be('third', 1)], 1, ['first', 'second']],
    ['no BEs', [], 3, []],
  ])('%s', (_, candidates, keep, removed) => {
    const plan = planPrune(candidates, newest(keep), NOW);
    expect(plan.remove).toEqual(removed);
    // Every BE is either removed or kept with a reason, never both.
    expect([...plan.remove, ...plan.kept.map(({ name }) => name)].sort()).toEqual(candidates.map(({ name }) => name).sort());
    for (const { reasons } of plan.kept) expect(reasons.length).toBeGreaterThan(0);
  });

  it('gives every reason a BE stays, strongest first, newest BE first', () => {
    const plan = planPrune([be('old', 1, 'mounted', 'pinned'), be('gone', 2), be('running', 3, 'default', 'running', 'last-good'), be('undated', null, 'pinned')], newest(1), NOW);
    expect(plan).toEqual({
      remove: ['gone'],
      kept: [
        { name: 'running', reasons: ['running', 'default', 'last-good', 'newest'] },
        { name: 'old', reasons: ['pinned', 'mounted'] },
        { name: 'undated', reasons: ['pinned', 'unknown-age'] },
      ],
    });
  });

  it('a BE with an unreadable creation time is of unknown age, never removed', () => {
    const plan = planPrune([{ name: 'odd', created: 'yesterday', protections: [] }, be('a', 1), be('b', 2)], newest(0), NOW);
    expect(plan.remove).toEqual(['a', 'b']);
    expect(plan.kept).toEqual([{ name: 'odd', reasons: ['unknown-age'] }]);
  });

  describe('age buckets, local time, a fixed clock', () => {
    /** BE `name` made at local `hour` on day `day` of December 2026. */
    const at = (name: string, day: number, hour = 10, ...protections: Protection[]): PruneCandidate => ({ name, created: new Date(2026, 11, day, hour).toISOString(), protections });
    // Thursday 17 December 2026, noon: today is the 17th, this week began on Monday the 14th.
    const now = new Date(2026, 11, 17, 12);

    it.each<[string, PruneCandidate[], RetentionPolicy, string[]]>([
      ['keep-daily: the newest of each of the last N days', [at('d15a', 15, 8), at('d15b', 15, 9), at('d16a', 16, 8), at('d16b', 16, 20), at('d17', 17, 1)], { keep: 0, keepDaily: 3, keepWeekly: 0 }, ['d15a', 'd16a']],
      ['keep-daily: days before the last N go', [at('d13', 13), at('d14', 14), at('d15', 15), at('d16', 16), at('d17', 17)], { keep: 0, keepDaily: 2, keepWeekly: 0 }, ['d13', 'd14', 'd15']],
      ['keep-daily counts calendar days, not days with a BE', [at('d1', 1), at('d10', 10), at('d17', 17)], { keep: 0, keepDaily: 7, keepWeekly: 0 }, ['d1', 'd10']],
      // Weeks start on Monday: the 14th (Mon) and the 13th (Sun) are in different weeks.
      ['keep-weekly: the newest of each of the last N weeks', [at('w1', 1), at('w7', 7), at('w9', 9), at('w13', 13), at('w14', 14), at('w17', 17)], { keep: 0, keepDaily: 0, keepWeekly: 2 }, ['w1', 'w7', 'w9', 'w14']],
      ['the reasons add up: newest, daily and weekly together', [at('a', 2), at('b', 9), at('c', 15), at('d', 16), at('e', 17)], { keep: 1, keepDaily: 2, keepWeekly: 2 }, ['a', 'c']],
      ['protected BEs stay whatever the buckets', [at('p', 1, 10, 'pinned'), at('x', 2), at('y', 17)], { keep: 0, keepDaily: 1, keepWeekly: 0 }, ['x']],
      ['buckets of 0 keep nothing', [at('a', 16), at('b', 17)], { keep: 0, keepDaily: 0, keepWeekly: 0 }, ['a', 'b']],
      ['a BE made later than now counts in today', [at('future', 18), at('today', 17)], { keep: 0, keepDaily: 1, keepWeekly: 0 }, ['today']],
    ])('%s', (_, candidates, policy, removed) => {
      const plan = planPrune(candidates, policy, now);
      expect(plan.remove).toEqual(removed);
      expect([...plan.remove, ...plan.kept.map(({ name }) => name)].sort()).toEqual(candidates.map(({ name }) => name).sort());
    });

    it('says which bucket keeps each BE', () => {
      const plan = planPrune([at('old', 1), at('week', 9), at('day', 16), at('last', 17)], { keep: 1, keepDaily: 2, keepWeekly: 2 }, now);
      expect(plan.kept).toEqual([
        { name: 'last', reasons: ['newest', 'daily', 'weekly'] },
        { name: 'day', reasons: ['daily'] },
        { name: 'week', reasons: ['weekly'] },
      ]);
      expect(plan.remove).toEqual(['old']);
    });
  });
});

describe('roomOrder', () => {
  it('what the plan removes, then what only the policy keeps, oldest first; never protected or undated BEs', () => {
    const plan = planPrune([be('a', 1), be('b', 2), be('p', 3, 'pinned'), be('c', 4), be('d', 5), be('run', 6, 'running'), be('x', null)], newest(3), NOW);
    expect(plan.remove).toEqual(['a', 'b']);
    expect(roomOrder(plan)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('nothing when every BE is protected', () => {
    expect(roomOrder(planPrune([be('run', 1, 'running', 'default')], newest(10), NOW))).toEqual([]);
  });
});
