// Unit tests for src/be/prune-plan.ts: which BEs `beadm prune` destroys and why each other one stays.
import { describe, expect, it } from 'vitest';
import { planPrune, type Protection, type PruneCandidate } from '../../src/be/prune-plan.js';

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
    const plan = planPrune(candidates, keep);
    expect(plan.remove).toEqual(removed);
    // Every BE is either removed or kept with a reason, never both.
    expect([...plan.remove, ...plan.kept.map(({ name }) => name)].sort()).toEqual(candidates.map(({ name }) => name).sort());
    for (const { reasons } of plan.kept) expect(reasons.length).toBeGreaterThan(0);
  });

  it('gives every reason a BE stays, strongest first, newest BE first', () => {
    const plan = planPrune([be('old', 1, 'mounted', 'pinned'), be('gone', 2), be('running', 3, 'default', 'running', 'last-good'), be('undated', null, 'pinned')], 1);
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
    const plan = planPrune([{ name: 'odd', created: 'yesterday', protections: [] }, be('a', 1), be('b', 2)], 0);
    expect(plan.remove).toEqual(['a', 'b']);
    expect(plan.kept).toEqual([{ name: 'odd', reasons: ['unknown-age'] }]);
  });
});
