/**
 * Cleanup scopes: the undo of every side effect is registered the moment the
 * side effect succeeds, and undone in reverse order. Two kinds of undo:
 * `always` (unmount a private mount, release a lock) runs however the scope
 * ends; `onAbort` (delete a half-made snapshot, restore a replaced file) runs
 * only if the scope is not committed — abort is the default outcome, as in
 * tukit.
 *
 * Signals: the CLI calls interrupt(); the next side effect that asks
 * throwIfInterrupted() throws INTERRUPTED, so the operation unwinds through its
 * scopes like any other failure and nothing is left half-made. Undo steps run
 * even while interrupted. While a foreground child runs (withForegroundChild),
 * signals are the child's.
 */
import { BootenvError } from '../errors.js';

type Undo = () => Promise<void> | void;

interface Entry {
  what: string;
  undo: Undo;
  always: boolean;
}

const openScopes = new Set<Scope>();
let interruptedBy: string | undefined;
let closing = 0;

/** Set while a foreground child (beadm run's COMMAND) owns the terminal: it gets the signals instead. */
let foreground: ((signal: string) => void) | undefined;

/**
 * Records that a signal arrived; the running operation stops at its next
 * step. While a foreground child runs, the signal is the child's instead
 * (handed to `forward`) and false is returned: it interrupts nothing here.
 */
export function interrupt(signal: string): boolean {
  if (foreground !== undefined) {
    foreground(signal);
    return false;
  }
  interruptedBy = signal;
  return true;
}

/**
 * Runs `body` (which waits for a child on the terminal) with signals handed
 * to `forward` instead of interrupting the operation: Ctrl-C is the child's
 * to act on, and what follows it (beadm run's cleanup) must still run.
 */
export async function withForegroundChild<T>(forward: (signal: string) => void, body: () => Promise<T>): Promise<T> {
  foreground = forward;
  try {
    return await body();
  } finally {
    foreground = undefined;
  }
}

/** Throws INTERRUPTED after interrupt(), except while undo steps are running. */
export function throwIfInterrupted(): void {
  if (interruptedBy !== undefined && closing === 0) {
    throw new BootenvError('INTERRUPTED', `interrupted by ${interruptedBy}; what was half-done has been undone`);
  }
}

export class Scope {
  private readonly entries: Entry[] = [];
  private committed = false;
  private closed = false;
  /** Errors thrown by undo steps; reported by the caller, never swallowed silently. */
  readonly cleanupErrors: Error[] = [];

  constructor() {
    openScopes.add(this);
  }

  /** Registers an undo that runs when the scope closes, committed or not. */
  always(what: string, undo: Undo): void {
    this.entries.push({ what, undo, always: true });
  }

  /** Registers an undo that runs only when the scope closes without commit(). */
  onAbort(what: string, undo: Undo): void {
    this.entries.push({ what, undo, always: false });
  }

  /** Keeps the onAbort side effects: the operation succeeded. */
  commit(): void {
    this.committed = true;
  }

  /** Runs the due undo steps in reverse order; safe to call more than once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    openScopes.delete(this);
    closing += 1;
    try {
      for (const entry of this.entries.reverse()) {
        if (!entry.always && this.committed) continue;
        try {
          await entry.undo();
        } catch (error) {
          const message = error instanceof Error ? error.message : String(error);
          this.cleanupErrors.push(new Error(`cleanup "${entry.what}" failed: ${message}`, { cause: error }));
        }
      }
    } finally {
      closing -= 1;
    }
  }
}

/**
 * Runs `body` inside a new scope: commits when it returns, aborts when it throws.
 * Cleanup failures are attached to the thrown error (or thrown if body succeeded).
 */
export async function withScope<T>(body: (scope: Scope) => Promise<T>): Promise<T> {
  const scope = new Scope();
  let result: T;
  try {
    result = await body(scope);
    throwIfInterrupted();
    scope.commit();
  } catch (error) {
    await scope.close();
    if (scope.cleanupErrors.length > 0 && error instanceof Error) {
      error.message += `; also: ${scope.cleanupErrors.map((e) => e.message).join('; ')}`;
    }
    throw error;
  }
  await scope.close();
  if (scope.cleanupErrors.length > 0) {
    throw new AggregateError(scope.cleanupErrors, scope.cleanupErrors.map((e) => e.message).join('; '));
  }
  return result;
}

/** Closes every open scope (newest first); for a second signal, when waiting is not wanted. */
export async function abortOpenScopes(): Promise<Error[]> {
  const errors: Error[] = [];
  for (const scope of [...openScopes].reverse()) {
    await scope.close();
    errors.push(...scope.cleanupErrors);
  }
  return errors;
}
