/**
 * `beadm prune`: destroys the BEs that the retention policy does not keep
 * (bootenv.conf's keep, keep-daily and keep-weekly, or --keep, --keep-daily,
 * --keep-weekly: ./prune-plan.ts) and that nothing protects. What protects a BE is what `beadm
 * destroy` refuses for (./library.ts destroyRefusals: running, default,
 * one-shot, pinned, a pending carry's origin, mounted) and being the last BE
 * that booted successfully; the plan itself is ./prune-plan.ts. One session
 * (one lock) plans, measures what the plan frees (./space.ts, as audit
 * counts: no quotas needed) and, unless it is a dry run, destroys each BE of
 * the plan through destroy's own path, oldest first: a dry run and the prune
 * after it (with nothing changed between) name the same BEs.
 */
import type { Subvolume } from '../btrfs/parse.js';
import { withScope } from '../sys/scope.js';
import { destroyInSession, destroyRefusals, type Options } from './library.js';
import { planPrune, type KeepReason, type PruneCandidate, type PrunePlan, type Protection, type RetentionPolicy } from './prune-plan.js';
import { bootEnvironmentSubvolumes, requireState, type Session } from './session.js';
import { measureDestroyedSpace } from './space.js';
import type { BootenvState } from './state.js';
import { loadConfig, openSession } from './transaction.js';

export interface PruneOptions extends Options {
  /** How many of the newest BEs to keep; default bootenv.conf's keep. */
  keep?: number;
  /** Of how many of the last days the newest BE is kept; default bootenv.conf's keep-daily. */
  keepDaily?: number;
  /** Of how many of the last weeks the newest BE is kept; default bootenv.conf's keep-weekly. */
  keepWeekly?: number;
  /** Plan and measure only; destroy nothing. */
  dryRun?: boolean;
}

export interface PruneResult extends RetentionPolicy {
  dryRun: boolean;
  /** The BEs destroyed (with dryRun: that would be), oldest first, each with what destroying it alone frees. */
  destroyed: Array<{ name: string; subvolume: string; created: string; freedByDestroyBytes: number }>;
  /** What destroying them all frees: at least the sum of their figures (it also counts what only they share among themselves). */
  freedBytes: number;
  /** Every other BE, newest first, with every reason it stays. */
  kept: Array<{ name: string; reasons: KeepReason[] }>;
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

/** Every BE of `session` with its creation time and what protects it, for the plan. Reads only. */
export async function pruneCandidates(session: Session, state: BootenvState): Promise<PruneCandidate[]> {
  const lastGood = lastGoodBootEnvironment(session, state);
  const candidates = [];
  for (const { name, subvolume } of bootEnvironmentSubvolumes(session)) {
    const protections: Protection[] = (await destroyRefusals(session, state, name, subvolume)).map(({ reason }) => reason);
    if (name === lastGood) protections.push('last-good');
    candidates.push({ name, created: state.environments[subvolume.uuid]?.created ?? null, protections });
  }
  return candidates;
}

/** The policy of bootenv.conf, with what `options` says instead. Throws PARSE (bootenv.conf). */
export async function retentionPolicy(options: PruneOptions = {}): Promise<RetentionPolicy> {
  const config = await loadConfig();
  return { keep: options.keep ?? config.keep, keepDaily: options.keepDaily ?? config.keepDaily, keepWeekly: options.keepWeekly ?? config.keepWeekly };
}

/**
 * Destroys the BEs `names` of `session` in that order, each as `beadm destroy`
 * would, in a scope of its own: a failure stops there, the BEs destroyed
 * before it stay destroyed, and the error is thrown.
 */
export async function destroyEach(session: Session, state: BootenvState, names: readonly string[]): Promise<void> {
  for (const name of names) await withScope((each) => destroyInSession(each, session, state, name));
}

/** The plan of `session`'s BEs under `policy` now. Reads only. */
export async function planInSession(session: Session, state: BootenvState, policy: RetentionPolicy): Promise<PrunePlan> {
  return planPrune(await pruneCandidates(session, state), policy, new Date());
}

/**
 * Prunes BEs (see the file's comment). Without dryRun, destroys the planned
 * BEs one by one, each as `beadm destroy` would (state record, GRUB menu,
 * subvolume and its carry's snapshots); a failure stops there, the BEs
 * destroyed before it stay destroyed, and the error is thrown. Needs root.
 * Throws what openSession, loadConfig (PARSE), the space measurement and
 * destroy throw.
 */
export async function pruneBootEnvironments(options: PruneOptions = {}): Promise<PruneResult> {
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const policy = await retentionPolicy(options);
    const plan = await planInSession(session, state, policy);
    const environments = bootEnvironmentSubvolumes(session);
    const targets = plan.remove.map((name) => environments.find((environment) => environment.name === name)?.subvolume as Subvolume);
    const space = await measureDestroyedSpace(session, state, targets);
    const destroyed = targets.map((subvolume, index) => ({
      name: plan.remove[index] as string,
      subvolume: subvolume.path,
      created: state.environments[subvolume.uuid]?.created as string,
      freedByDestroyBytes: space.freedByDestroyBytes.get(subvolume.uuid) ?? 0,
    }));
    if (!options.dryRun) await destroyEach(session, state, plan.remove);
    return { dryRun: options.dryRun === true, ...policy, destroyed, freedBytes: space.freedTogetherBytes, kept: plan.kept };
  });
}
