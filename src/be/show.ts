/**
 * `beadm show NAME`: one BE's story — what `list` says of it, and what made it
 * (the apt runs stacked into it with their packages and versions, from the
 * state record), when it last booted successfully, its pending and last carry,
 * and its space: what destroying it alone would free (the audit's count, no
 * quotas needed) and the quota figures when quotas are on.
 */
import { BootenvError } from '../errors.js';
import { withScope } from '../sys/scope.js';
import { listBootEnvironments, type BootEnvironment } from './library.js';
import { assertValidName } from './names.js';
import { findBootEnvironment, requireState, type Options } from './session.js';
import { measureDestroyedSpace } from './space.js';
import type { GoodBoot, TransactionSummary } from './state.js';
import { openSession } from './transaction.js';

export interface AptRun {
  command: string[];
  packages: TransactionSummary['packages'];
  /** ISO 8601; null while apt is still installing into it. */
  finished: string | null;
}

export interface BootEnvironmentStory extends BootEnvironment {
  /** The apt runs that made it, oldest first; empty for a BE made by beadm create or init. */
  aptRuns: AptRun[];
  lastGoodBoot: GoodBoot | null;
  /** What destroying it alone would free, carry snapshots included (as beadm audit counts). */
  freedByDestroyBytes: number;
}

/** Describes BE `name`. Reads only (the space count commits the filesystem and reads every subvolume's tree). Throws NOT_FOUND, INVALID_NAME. */
export async function showBootEnvironment(name: string, options: Options = {}): Promise<BootEnvironmentStory> {
  assertValidName(name);
  const listed = (await listBootEnvironments(options)).find((environment) => environment.name === name);
  return withScope(async (scope) => {
    const session = await openSession(scope, options, 'allow');
    const state = requireState(session);
    const subvolume = findBootEnvironment(session, name);
    if (listed === undefined || listed.uuid !== subvolume.uuid) throw new BootenvError('BUSY', `boot environment ${name} changed while it was being described; run beadm show again`);
    const record = state.environments[subvolume.uuid];
    const transaction = record?.transaction;
    const aptRuns: AptRun[] =
      transaction === undefined
        ? []
        : [...(transaction.earlier ?? []), { command: transaction.command, packages: transaction.packages, finished: transaction.finished }];
    const space = await measureDestroyedSpace(session, state, [subvolume]);
    return { ...listed, aptRuns, lastGoodBoot: record?.lastGoodBoot ?? null, freedByDestroyBytes: space.freedByDestroyBytes.get(subvolume.uuid) ?? 0 };
  });
}
