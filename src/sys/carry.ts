/**
 * The carry helper (src/native/bootenv-carry.c, built beside the bundle):
 * applies a carry's operations to the working snapshot of a new BE (clones
 * extents, copies xattrs, ACLs and file capabilities, sets times to the
 * nanosecond) and swaps that snapshot in with one atomic rename. Paths are
 * byte strings (one character per byte), relative to the two roots.
 */
import { BootenvError } from '../errors.js';
import { locateNativeHelper, run } from './exec.js';
import { throwIfInterrupted } from './scope.js';

const CARRY_HELPER = 'bootenv-carry';

/** One operation for the helper: its name and two fields (see bootenv-carry.c). */
export interface HelperRecord {
  op: 'copy' | 'save' | 'mkdir' | 'meta' | 'times' | 'link' | 'remove' | 'write';
  first: string | Buffer;
  second: string;
}

export type HelperOutcome = { status: 'ok' } | { status: 'copied'; bytes: number } | { status: 'error'; errno: string; message: string };

const OUTCOME = /^(?:(ok)|copied (\d+)|error (E[A-Z0-9]+|EUNKNOWN) (.+))$/;

/** Parses the helper's output: one outcome per record, then "synced". Strict: anything else is PARSE; a failed sync is COMMAND_FAILED. */
export function parseCarryOutput(output: string, count: number): HelperOutcome[] {
  const lines = output === '' ? [] : output.replace(/\n$/, '').split('\n');
  const last = lines.pop();
  if (last !== 'synced') {
    if (last !== undefined && lines.length === count && last.startsWith('error ')) throw new BootenvError('COMMAND_FAILED', `${CARRY_HELPER}: ${last.slice(6)}`);
    throw new BootenvError('PARSE', `${CARRY_HELPER} did not finish: ${JSON.stringify((last ?? '').slice(0, 200))}`);
  }
  if (lines.length !== count) throw new BootenvError('PARSE', `${CARRY_HELPER} reported ${lines.length} outcomes for ${count} operations`);
  return lines.map((line) => {
    const match = OUTCOME.exec(line);
    if (match === null) throw new BootenvError('PARSE', `unexpected line from ${CARRY_HELPER}: ${JSON.stringify(line.slice(0, 200))}`);
    if (match[1] !== undefined) return { status: 'ok' };
    if (match[2] !== undefined) return { status: 'copied', bytes: Number(match[2]) };
    return { status: 'error', errno: match[3] as string, message: match[4] as string };
  });
}

/**
 * Applies `records` below `targetRoot`, reading from `sourceRoot`, then syncs
 * the filesystem. Changes only `targetRoot`'s tree; needs root. Returns one
 * outcome per record (a record's failure is its outcome). Throws TOOL_MISSING
 * without the helper, COMMAND_FAILED or PARSE when the helper itself fails.
 */
export async function applyCarryRecords(sourceRoot: string, targetRoot: string, records: readonly HelperRecord[], helper: string = locateNativeHelper(CARRY_HELPER)): Promise<HelperOutcome[]> {
  const parts: Buffer[] = [];
  for (const { op, first, second } of records) {
    const firstBytes = typeof first === 'string' ? Buffer.from(first, 'latin1') : first;
    const secondBytes = Buffer.from(second, 'latin1');
    if (firstBytes.includes(0) || secondBytes.includes(0)) throw new BootenvError('INTERNAL', `a carry record holds a NUL byte (${op} ${JSON.stringify(second)})`);
    parts.push(Buffer.from(`${op}\0`), firstBytes, Buffer.from([0]), secondBytes, Buffer.from([0]));
  }
  throwIfInterrupted();
  const { stdout } = await run([helper, 'apply', sourceRoot, targetRoot], { input: Buffer.concat(parts), okExitCodes: [1] });
  return parseCarryOutput(stdout, records.length);
}

/** Swaps the entries at `first` and `second` (absolute paths) in one atomic rename and syncs their directories. Throws COMMAND_FAILED. */
export async function exchangePaths(first: string, second: string, helper: string = locateNativeHelper(CARRY_HELPER)): Promise<void> {
  throwIfInterrupted();
  await run([helper, 'exchange', first, second]);
}

/**
 * Sets the modification time of each path (a symlink itself, not its target;
 * the access time stays) to an exact "SECONDS.NANOSECONDS", in one run of
 * `bootenv-carry mtimes` (paths as UTF-8): utimes() from Node is not exact (a double of
 * seconds), and touch would be a process per path, 10 ms each.
 */
export async function setModificationTimes(entries: ReadonlyArray<{ path: string; mtime: string }>, helper: string = locateNativeHelper(CARRY_HELPER)): Promise<void> {
  if (entries.length === 0) return;
  throwIfInterrupted();
  const input = Buffer.concat(entries.flatMap(({ path, mtime }) => [Buffer.from(path), Buffer.from([0]), Buffer.from(mtime), Buffer.from([0])]));
  const { stdout } = await run([helper, 'mtimes'], { input });
  const lines = stdout.split('\n').filter((line) => line !== '');
  if (lines.length !== entries.length) throw new BootenvError('INTERNAL', `${CARRY_HELPER} mtimes answered ${lines.length} lines for ${entries.length} paths`);
  const failed = lines.findIndex((line) => line !== 'ok');
  if (failed >= 0) throw new BootenvError('INTERNAL', `cannot set the modification time of ${entries[failed]?.path}: ${lines[failed]}`);
}
