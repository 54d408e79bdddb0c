/**
 * The one error type of bootenv and the one table that maps its codes to exit
 * statuses. Every layer throws BootenvError with a code from this closed list;
 * only the CLI turns it into a message and an exit status. The table is
 * documented in README.md ("Exit codes") and must stay in step with it.
 */

export const EXIT_CODES = {
  /** A bug or an unexpected failure of ours. */
  INTERNAL: 1,
  /** The command line itself is wrong (unknown option, missing argument). */
  USAGE: 2,
  /** A BE name that is not allowed. */
  INVALID_NAME: 3,
  /** The named BE does not exist. */
  NOT_FOUND: 4,
  /** A BE (or a mount point) with that name already exists. */
  EXISTS: 5,
  /** The BE is booted, next to boot, or mounted: the operation would break it. */
  BUSY: 6,
  /** This system's layout cannot hold BEs (not btrfs, root at top level, separate /boot, …). */
  UNSUPPORTED: 7,
  /** `beadm init` has not been run yet. */
  NOT_INITIALIZED: 8,
  /** `beadm init` was already run. */
  ALREADY_INITIALIZED: 9,
  /** Another beadm holds the global lock. */
  LOCKED: 10,
  /** A program bootenv needs is not installed. */
  TOOL_MISSING: 11,
  /** An external program (btrfs, mount, grub-mkconfig, …) failed. */
  COMMAND_FAILED: 12,
  /** A BE lacks what booting needs (kernel, initramfs). */
  NOT_BOOTABLE: 13,
  /** Output of a tool, or a state file, could not be understood. */
  PARSE: 14,
  /** The command needs root (every command but check, --help and --version). */
  NOT_ROOT: 15,
  /** Not enough free space for what the operation would write (the ESP, GRUB's home; the btrfs filesystem below min-free for an apt run); nothing was written. */
  NO_SPACE: 16,
  /** The BE is pinned (`beadm pin`): destroy refuses it and prune keeps it until `beadm unpin`. */
  PINNED: 17,
  /** Interrupted by a signal; everything half-done was undone. */
  INTERRUPTED: 130,
} as const;

export type ErrorCode = keyof typeof EXIT_CODES;

export interface BootenvErrorOptions {
  cause?: unknown;
  /** What the user can do about it, printed after the message. */
  hint?: string;
}

export class BootenvError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: BootenvErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BootenvError';
    this.code = code;
    this.hint = options.hint;
  }

  get exitStatus(): number {
    return EXIT_CODES[this.code];
  }
}

/** Wraps anything thrown into a BootenvError, keeping the original as `cause`. */
export function asBootenvError(error: unknown): BootenvError {
  if (error instanceof BootenvError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new BootenvError('INTERNAL', message, { cause: error });
}
