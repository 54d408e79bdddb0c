/**
 * The retention plan of `beadm prune`, pure: given every BE with its creation
 * time and what protects it, which BEs go and why each other one stays. The
 * newest `keep` BEs by creation time stay; of the older ones, a protected BE
 * stays (the reasons are the ones `beadm destroy` refuses for, and the last BE
 * that booted successfully), and so does a BE whose creation time is unknown
 * (bootenv cannot tell whether it is old). Everything else goes, oldest first.
 * The library (./prune.ts) gathers the facts and destroys what the plan says.
 */

/** Why a BE may not be destroyed: what `beadm destroy` refuses for, and the last good boot. */
export type Protection = 'running' | 'default' | 'one-shot' | 'pinned' | 'carry-origin' | 'mounted' | 'last-good';

/** Why a BE stays: protected, among the newest `keep`, or of unknown age. */
export type KeepReason = Protection | 'newest' | 'unknown-age';

export interface PruneCandidate {
  name: string;
  /** ISO 8601; null when bootenv has no record of it. */
  created: string | null;
  protections: readonly Protection[];
}

export interface PrunePlan {
  /** The BEs to destroy, oldest first. */
  remove: string[];
  /** The BEs that stay, newest first, each with every reason it stays (at least one). */
  kept: Array<{ name: string; reasons: KeepReason[] }>;
}

/** The order reasons are given in: the strongest first. */
const REASON_ORDER: readonly KeepReason[] = ['running', 'default', 'one-shot', 'pinned', 'last-good', 'carry-origin', 'mounted', 'newest', 'unknown-age'];

/**
 * Plans a prune that keeps the newest `keep` of `candidates` (by creation
 * time; equal times in the order given, later ones newer) and every protected
 * or undated one. Pure.
 */
export function planPrune(candidates: readonly PruneCandidate[], keep: number): PrunePlan {
  const dated = candidates
    .map((candidate, index) => ({ candidate, index, time: candidate.created === null ? NaN : Date.parse(candidate.created) }))
    .filter(({ time }) => !Number.isNaN(time))
    .sort((a, b) => b.time - a.time || b.index - a.index);
  const newest = new Set(dated.slice(0, keep).map(({ candidate }) => candidate.name));
  const reasonsOf = (candidate: PruneCandidate, index: number): KeepReason[] => {
    const reasons = new Set<KeepReason>(candidate.protections);
    if (newest.has(candidate.name)) reasons.add('newest');
    if (!dated.some((entry) => entry.index === index)) reasons.add('unknown-age');
    return REASON_ORDER.filter((reason) => reasons.has(reason));
  };
  const remove = dated
    .filter(({ candidate, index }) => reasonsOf(candidate, index).length === 0)
    .reverse()
    .map(({ candidate }) => candidate.name);
  const kept = [
    ...dated.map(({ candidate, index }) => ({ name: candidate.name, reasons: reasonsOf(candidate, index) })),
    ...candidates.flatMap((candidate, index) => (dated.some((entry) => entry.index === index) ? [] : [{ name: candidate.name, reasons: reasonsOf(candidate, index) }])),
  ].filter(({ reasons }) => reasons.length > 0);
  return { remove, kept };
}
