/**
 * `beadm prune`: destroys the BEs that the retention policy does not keep
 * (bootenv.conf's keep, keep-daily and keep-weekly, or --keep, --keep-daily,
 * --keep-weekly: ./prune-plan.ts) and that nothing protects, in one session
 * (one lock) through ./retention.ts; and the same prune at the end of each
 * apt transaction that made a BE (bootenv.conf's auto-prune), which lives
 * here rather than in ./transaction.ts because destroying BEs (./library.ts)
 * depends on ./transaction.ts, not the other way round.
 */
import { withScope } from '../sys/scope.js';
import type { Options } from './library.js';
import type { RetentionPolicy } from './prune-plan.js';
import { pruneInSession, retentionPolicy, type PruneResult } from './retention.js';
import { requireState } from './session.js';
import { CONFIG_FILE } from './config.js';
import { finishTransaction, loadConfig, openSession, type TransactionOutcome } from './transaction.js';

export type { PruneResult } from './retention.js';

type Finished = Extract<TransactionOutcome, { outcome: 'finished' }>;

/** An apt run's outcome; a finished one says what the prune after it destroyed. */
export type AptRunOutcome = Exclude<TransactionOutcome, Finished> | (Finished & {
  /** The prune by policy after the commit; null when auto-prune = no, or when it failed (said in a notice). */
  pruned: PruneResult | null;
});

export interface PruneOptions extends Options, Partial<RetentionPolicy> {
  /** Plan and measure only; destroy nothing. */
  dryRun?: boolean;
}

/**
 * Prunes BEs (see the file's comment and ./retention.ts pruneInSession).
 * Needs root. Throws what openSession, loadConfig (PARSE), the space
 * measurement and destroy throw.
 */
export async function pruneBootEnvironments(options: PruneOptions = {}): Promise<PruneResult> {
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const overrides = { ...(options.keep === undefined ? {} : { keep: options.keep }), ...(options.keepDaily === undefined ? {} : { keepDaily: options.keepDaily }), ...(options.keepWeekly === undefined ? {} : { keepWeekly: options.keepWeekly }) };
    return pruneInSession(session, state, retentionPolicy(await loadConfig(), overrides), options.dryRun === true);
  });
}

/**
 * DPkg::Post-Invoke: finishes the apt run's transaction (./transaction.ts
 * finishTransaction, which throws what it throws) and, when that made a BE
 * and bootenv.conf says auto-prune = yes, prunes by the policy in a session
 * of its own. The prune never fails the apt run: its failure is told as a
 * notice and the new BE stays.
 */
export async function finishTransactionAndPrune(options: Options = {}): Promise<AptRunOutcome> {
  const outcome = await finishTransaction(options);
  if (outcome.outcome !== 'finished') return outcome;
  try {
    const config = await loadConfig();
    if (!config.autoPrune) return { ...outcome, pruned: null };
    const pruned = await withScope(async (scope) => {
      const session = await openSession(scope, options);
      // Not measured: reading every tree for the figure would cost the apt run seconds (beadm prune --dry-run says it).
      return pruneInSession(session, requireState(session), retentionPolicy(config), false, false);
    });
    return { ...outcome, pruned };
  } catch (error) {
    options.onNotice?.(`the prune after this apt run (auto-prune in ${CONFIG_FILE}) failed; the new boot environment is kept: ${error instanceof Error ? error.message : String(error)}`);
    return { ...outcome, pruned: null };
  }
}
