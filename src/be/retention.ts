/**
 * Retention inside an open session: the facts the pure plan (./prune-plan.ts)
 * needs about every BE — its creation time and what protects it: what
 * `beadm destroy` refuses for (./library.ts destroyRefusals: running, default,
 * one-shot, pinned, a pending carry's origin, mounted) and being the last BE
 * that booted successfully — and the prune by that plan: measured as audit
 * measures (./space.ts, no quotas needed), then each BE destroyed through
 * destroy's own path, oldest first. `beadm prune` (./prune.ts), the prune at
 * the end of an apt transaction and the free-space guard (./transaction.ts,
 * ./space-guard.ts) all go through here, so they protect the same BEs. It
 * does not open sessions itself (that would import ./transaction.ts).
 */
import type { Subvolume } from '../btrfs/parse.js';
import { withScope } from '../sys/scope.js';
import type { BootenvConfig } from './config.js';
import { destroyInSession, destroyRefusals } from './library.js';
import { planPrune, type KeepReason, type PruneCandidate, type PrunePlan, type Protection, type RetentionPolicy } from './prune-plan.js';
import { bootEnvironmentSubvolumes, type Session } from './session.js';
import { measureDestroyedSpace } from './space.js';
import type { BootenvState } from './state.js';

export interface PruneResult extends RetentionPolicy {
  dryRun: boolean;
  /** The BEs destroyed (with dryRun: that would be), oldest first, each with what destroying it alone frees (null: not measured). */
  destroyed: Array<{ name: string; subvolume: string; created: string; freedByDestroyBytes: number | null }>;
  /**
   * What destroying them all frees: at least the sum of their figures (it also counts what only they share among
   * themselves). Null when not measured: the prune after an apt run does not read every subvolume's tree for it
   * (150 ms a tree on a Debian root: 30 s of an apt run with 100 BEs, measured).
   */
  freedBytes: number | null;
  /** Every other BE, newest first, with every reason it stays. */
  kept: Array<{ name: string; reasons: KeepReason[] }>;
}

/** bootenv.conf's retention policy, with what `overrides` says instead. */
export function retentionPolicy(config: BootenvConfig, overrides: Partial<RetentionPolicy> = {}): RetentionPolicy {
  return { keep: overrides.keep ?? config.keep, keepDaily: overrides.keepDaily ?? config.keepDaily, keepWeekly: overrides.keepWeekly ?? config.keepWeekly };
}

/** The BE whose last good boot is the latest, if any BE booted successfully. */
function lastGoodBootEnvironment(session: Session, state: BootenvState): string | undefined {
  let latest: { name: string; at: string } | undefined;
  for (const { name, subvolume } of bootEnvironmentSubvolumes(session)) {
    const at = state.environments[subvolume.uuid]?.lastGoodBoot?.at;
    if (at !== undefined && (latest === undefined || Date.parse(at) >= Date.parse(latest.at))) latest = { name, at };
  }
  return latest?.name;
}

/** Every BE of `session` with its creation time and what protects it. Reads only. */
async function pruneCandidates(session: Session, state: BootenvState): Promise<PruneCandidate[]> {
  const lastGood = lastGoodBootEnvironment(session, state);
  const candidates = [];
  for (const { name, subvolume } of bootEnvironmentSubvolumes(session)) {
    const protections: Protection[] = (await destroyRefusals(session, state, name, subvolume)).map(({ reason }) => reason);
    if (name === lastGood) protections.push('last-good');
    candidates.push({ name, created: state.environments[subvolume.uuid]?.created ?? null, protections });
  }
  return candidates;
}

/** The plan for `session`'s BEs under `policy`, now. Reads only. */
export async function planInSession(session: Session, state: BootenvState, policy: RetentionPolicy): Promise<PrunePlan> {
  return planPrune(await pruneCandidates(session, state), policy, new Date());
}

/**
 * Destroys the BEs `names` of `session` in that order, each as `beadm destroy`
 * would (state record, GRUB menu, subvolume and its carry's snapshots), each
 * in a scope of its own: a failure stops there, the BEs destroyed before it
 * stay destroyed, and the error is thrown. Needs root.
 */
export async function destroyEach(session: Session, state: BootenvState, names: readonly string[]): Promise<void> {
  for (const name of names) await withScope((each) => destroyInSession(each, session, state, name));
}

/**
 * Plans by `policy`, measures what the plan frees (unless `measure` is false)
 * and, unless `dryRun`, destroys the planned BEs oldest first (destroyEach): a
 * dry run and the prune after it (with nothing changed between) name the same
 * BEs. Throws what the space measurement and destroy throw.
 */
export async function pruneInSession(session: Session, state: BootenvState, policy: RetentionPolicy, dryRun: boolean, measure = true): Promise<PruneResult> {
  const plan = await planInSession(session, state, policy);
  const environments = bootEnvironmentSubvolumes(session);
  const targets = plan.remove.map((name) => environments.find((environment) => environment.name === name)?.subvolume as Subvolume);
  const space = measure ? await measureDestroyedSpace(session, state, targets) : undefined;
  const destroyed = targets.map((subvolume, index) => ({
    name: plan.remove[index] as string,
    subvolume: subvolume.path,
    created: state.environments[subvolume.uuid]?.created as string,
    freedByDestroyBytes: space === undefined ? null : (space.freedByDestroyBytes.get(subvolume.uuid) ?? 0),
  }));
  if (!dryRun) await destroyEach(session, state, plan.remove);
  return { dryRun, ...policy, destroyed, freedBytes: space?.freedTogetherBytes ?? null, kept: plan.kept };
}
