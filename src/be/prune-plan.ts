/**
 * The retention plan of `beadm prune`, pure: given every BE with its creation
 * time and what protects it, which BEs go and why each other one stays. The
 * policy (bootenv.conf's keep, keep-daily, keep-weekly) keeps the newest
 * `keep` BEs by creation time, and the newest BE of each of the last
 * `keepDaily` calendar days and of each of the last `keepWeekly` weeks
 * (Monday to Sunday, local time, the current day and week included), as
 * snapper's and restic's timeline cleanup do. Beyond the policy, a protected
 * BE stays (the reasons are the ones `beadm destroy` refuses for, and the last
 * BE that booted successfully), and so does a BE whose creation time is
 * unknown (bootenv cannot tell whether it is old). Everything else goes,
 * oldest first. The free-space guard may also take the BEs only the policy
 * keeps (roomOrder): they are not protected. The library (./prune.ts)
 * gathers the facts and destroys what the plan says.
 */

/** Why a BE may not be destroyed: what `beadm destroy` refuses for, and the last good boot. */
export type Protection = 'running' | 'default' | 'one-shot' | 'pinned' | 'carry-origin' | 'mounted' | 'last-good';

/** Why a BE stays: protected, kept by the policy, or of unknown age. */
export type KeepReason = Protection | 'newest' | 'daily' | 'weekly' | 'unknown-age';

export interface PruneCandidate {
  name: string;
  /** ISO 8601; null when bootenv has no record of it. */
  created: string | null;
  protections: readonly Protection[];
}

/** What the policy keeps besides the protected BEs. */
export interface RetentionPolicy {
  /** The newest this many BEs. */
  keep: number;
  /** The newest BE of each of the last this many days. */
  keepDaily: number;
  /** The newest BE of each of the last this many weeks. */
  keepWeekly: number;
}

export interface PrunePlan {
  /** The BEs to destroy, oldest first. */
  remove: string[];
  /** The BEs that stay, newest first, each with every reason it stays (at least one). */
  kept: Array<{ name: string; reasons: KeepReason[] }>;
}

/** The order reasons are given in: the strongest first. */
const REASON_ORDER: readonly KeepReason[] = ['running', 'default', 'one-shot', 'pinned', 'last-good', 'carry-origin', 'mounted', 'newest', 'daily', 'weekly', 'unknown-age'];

const POLICY_REASONS: ReadonlySet<KeepReason> = new Set(['newest', 'daily', 'weekly']);

const DAY_MS = 24 * 60 * 60 * 1000;

/** The local calendar day of `time` as a day count (so that days subtract), DST-proof. */
function localDay(time: number): number {
  const date = new Date(time);
  return Math.round(Date.UTC(date.getFullYear(), date.getMonth(), date.getDate()) / DAY_MS);
}

/** The local week (Monday to Sunday) of `time` as a week count. */
function localWeek(time: number): number {
  // Day 0 (1970-01-01) was a Thursday: day + 3 counts from a Monday.
  return Math.floor((localDay(time) + 3) / 7);
}

/**
 * Plans a prune by `policy` at `now` (see the file's comment) of `candidates`
 * (by creation time; equal times in the order given, later ones newer). Pure.
 */
export function planPrune(candidates: readonly PruneCandidate[], policy: RetentionPolicy, now: Date): PrunePlan {
  const dated = candidates
    .map((candidate, index) => ({ candidate, index, time: candidate.created === null ? NaN : Date.parse(candidate.created) }))
    .filter(({ time }) => !Number.isNaN(time))
    .sort((a, b) => b.time - a.time || b.index - a.index);
  const byPolicy = new Map<number, Set<KeepReason>>();
  const add = (index: number, reason: KeepReason) => byPolicy.set(index, (byPolicy.get(index) ?? new Set()).add(reason));
  for (const { index } of dated.slice(0, policy.keep)) add(index, 'newest');
  const buckets: Array<[KeepReason, (time: number) => number, number]> = [
    ['daily', localDay, policy.keepDaily],
    ['weekly', localWeek, policy.keepWeekly],
  ];
  for (const [reason, bucketOf, count] of buckets) {
    const current = bucketOf(now.getTime());
    const first = current - count + 1;
    const seen = new Set<number>();
    // Newest first: the first BE met in a bucket is its newest.
    for (const { index, time } of dated) {
      // A BE made "later than now" (the clock was set back) counts as made now.
      const bucket = Math.min(bucketOf(time), current);
      if (count === 0 || bucket < first || seen.has(bucket)) continue;
      seen.add(bucket);
      add(index, reason);
    }
  }
  const datedIndexes = new Set(dated.map(({ index }) => index));
  const reasonsOf = (candidate: PruneCandidate, index: number): KeepReason[] => {
    const reasons = new Set<KeepReason>([...candidate.protections, ...(byPolicy.get(index) ?? [])]);
    if (!datedIndexes.has(index)) reasons.add('unknown-age');
    return REASON_ORDER.filter((reason) => reasons.has(reason));
  };
  const remove = dated
    .filter(({ candidate, index }) => reasonsOf(candidate, index).length === 0)
    .reverse()
    .map(({ candidate }) => candidate.name);
  const kept = [
    ...dated.map(({ candidate, index }) => ({ name: candidate.name, reasons: reasonsOf(candidate, index) })),
    ...candidates.flatMap((candidate, index) => (datedIndexes.has(index) ? [] : [{ name: candidate.name, reasons: reasonsOf(candidate, index) }])),
  ].filter(({ reasons }) => reasons.length > 0);
  return { remove, kept };
}

/**
 * The order in which the free-space guard destroys BEs to make room: what
 * the plan removes (oldest first), then the BEs only the policy keeps, oldest
 * first. Never a protected BE, never one of unknown age. Pure.
 */
export function roomOrder(plan: PrunePlan): string[] {
  const policyOnly = plan.kept.filter(({ reasons }) => reasons.every((reason) => POLICY_REASONS.has(reason))).map(({ name }) => name);
  return [...plan.remove, ...policyOnly.reverse()];
}
