/**
 * The one place that spawns processes. Commands are argv arrays (never shell
 * strings), run with a fixed PATH and LC_ALL=C so that the output every parser
 * sees is the same on every system. A non-zero exit is an error unless the
 * caller lists it as expected; a missing program is TOOL_MISSING, not a crash.
 */
import { accessSync, constants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { BootenvError } from '../errors.js';
import { throwIfInterrupted, withForegroundChild } from './scope.js';

export const FIXED_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface CommandResult {
  argv: readonly string[];
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Exit codes other than 0 that are an answer, not a failure. */
  okExitCodes?: readonly number[];
  /** What is written to the command's standard input (text, or bytes). */
  input?: string | Uint8Array;
  /** Extra environment variables, on top of the fixed ones. */
  env?: Record<string, string>;
  /** Give the command our stdin, stdout and stderr (interactive tools such as apt-get). */
  inheritStdio?: boolean;
  /** Every exit status is an answer (the caller passes it on). */
  anyExitCode?: boolean;
}

/** The fixed environment every command runs with (PATH and LC_ALL over ours). */
function environment(extra: Record<string, string> = {}): { env: Record<string, string>; extendEnv: true } {
  return { env: { ...extra, PATH: FIXED_PATH, LC_ALL: 'C' }, extendEnv: true };
}

/** For a command whose stdout the caller streams: stderr kept (up to `maxStderr` bytes) to say why it failed. */
function streamingOptions(maxStderr: number) {
  return { ...environment(), reject: false, buffer: { stdout: false, stderr: true }, maxBuffer: { stderr: maxStderr } } as const;
}

interface Ended {
  failed: boolean;
  exitCode?: number | undefined;
  cause?: unknown;
  shortMessage?: string | undefined;
}

/** Why a command did not run to an exit status (TOOL_MISSING when the program does not exist; killed; …), or undefined when it did. */
function notRun(argv: readonly string[], result: Ended): BootenvError | undefined {
  if (!result.failed || result.exitCode !== undefined) return undefined;
  if ((result.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    return new BootenvError('TOOL_MISSING', `${argv[0]} is not installed`, { cause: result.cause, hint: `install the package that provides ${argv[0]}` });
  }
  return new BootenvError('COMMAND_FAILED', `${argv.join(' ')}: ${result.shortMessage}`, { cause: result.cause });
}

/** COMMAND_FAILED for a command that exited with a status nobody expected; `detail`: what it said, if anything. */
function exitFailure(argv: readonly string[], result: Ended, detail: string): BootenvError {
  return new BootenvError('COMMAND_FAILED', `${argv.join(' ')} failed: ${detail || `exit status ${result.exitCode}`}`, { cause: result });
}

/**
 * Runs argv and waits for it. Throws TOOL_MISSING when the program does not
 * exist and COMMAND_FAILED (with stderr in the message) when it exits with a
 * status not in `okExitCodes`.
 */
export async function run(argv: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
  const [file, ...args] = argv;
  if (file === undefined) throw new BootenvError('INTERNAL', 'run() called with an empty argv');
  throwIfInterrupted();
  const result = await execa(file, args, {
    ...environment(options.env),
    reject: false,
    stripFinalNewline: false,
    ...(options.inheritStdio
      ? { stdin: 'inherit' as const, stdout: 'inherit' as const, stderr: 'inherit' as const }
      : options.input === undefined
        ? { stdin: 'ignore' as const }
        : { input: options.input }),
  });
  const stdout = typeof result.stdout === 'string' ? result.stdout : '';
  const stderr = typeof result.stderr === 'string' ? result.stderr : '';
  const failure = notRun(argv, result);
  if (failure !== undefined) throw failure;
  const exitCode = result.exitCode ?? 1;
  if (exitCode !== 0 && !options.anyExitCode && !(options.okExitCodes ?? []).includes(exitCode)) throw exitFailure(argv, result, stderr.trim() || stdout.trim());
  return { argv, exitCode, stdout, stderr };
}

/**
 * Runs argv in the foreground, on beadm's own terminal, with the caller's
 * environment (plus `env`), and returns its exit status: 128 + the signal's
 * number when a signal ended it, as a shell says. While it runs, the signals
 * beadm gets are the child's: SIGTERM and SIGHUP are passed on to it, SIGINT
 * and SIGQUIT (which the terminal sent to both) are left to it. Throws
 * TOOL_MISSING when the program does not exist.
 */
export async function runForeground(argv: readonly string[], env: Record<string, string>): Promise<number> {
  const [file, ...args] = argv;
  if (file === undefined) throw new BootenvError('INTERNAL', 'runForeground() called with an empty argv');
  throwIfInterrupted();
  const child = execa(file, args, { env, extendEnv: true, reject: false, stdin: 'inherit', stdout: 'inherit', stderr: 'inherit' });
  const result = await withForegroundChild((signal) => {
    if (signal === 'SIGTERM' || signal === 'SIGHUP') child.kill(signal as NodeJS.Signals);
  }, async () => child);
  const signal = typeof result.signal === 'string' ? osConstants.signals[result.signal as NodeJS.Signals] : undefined;
  if (result.exitCode === undefined && signal !== undefined) return 128 + signal;
  const failure = notRun(argv, result);
  if (failure !== undefined) throw failure;
  return result.exitCode ?? 1;
}

/**
 * Runs argv and hands each line of its stdout (without the newline) to
 * `onLine` as it comes, for outputs too large to hold as one string. Returns
 * the command's stderr. Throws as run(); an exception from `onLine` stops the
 * command and is rethrown.
 */
export async function runLines(argv: readonly string[], onLine: (line: string) => void): Promise<{ stderr: string }> {
  // Chunks split by hand: several times faster than a line iterator on outputs of a million lines.
  const decoder = new StringDecoder('utf8');
  let partial = '';
  const result = await runChunks(argv, (chunk) => {
    const lines = (partial + decoder.write(chunk)).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) onLine(line);
  });
  const rest = partial + decoder.end();
  if (rest !== '') onLine(rest);
  return result;
}

/** A program that data streams through (a decompressor), started by pipeThrough. */
export interface StreamFilter {
  /** What the program writes to its stdout. */
  output: Readable;
  /** Settles when the program has exited: rejects (COMMAND_FAILED, with its stderr) unless it exited 0. */
  finished: Promise<void>;
  /** Stops the program (the consumer gave up); `finished` then resolves, unless the program had failed by itself. */
  stop: () => void;
}

/**
 * Streams `input` through the program argv (e.g. `xz -dc`) and returns its
 * output as a stream: nothing is buffered but the program's stderr. Throws
 * TOOL_MISSING (through `finished`) when the program does not exist.
 */
export function pipeThrough(argv: readonly string[], input: Readable): StreamFilter {
  const [file, ...args] = argv;
  if (file === undefined) throw new BootenvError('INTERNAL', 'pipeThrough() called with an empty argv');
  throwIfInterrupted();
  const child = execa(file, args, { ...streamingOptions(64 * 1024), stdin: 'pipe', stdout: 'pipe', stderr: 'pipe' });
  const stdin = child.stdin;
  const stdout = child.stdout;
  if (stdin === null || stdout === null) throw new BootenvError('INTERNAL', `no pipes to ${file}`);
  // The program may exit before reading everything (bad data): that is its exit status's to tell.
  stdin.on('error', () => undefined);
  input.on('error', (error) => stdin.destroy(error));
  input.pipe(stdin);
  let stopped = false;
  const finished = child.then((result) => {
    if (stopped && result.isTerminated) return;
    const failure = notRun(argv, result);
    if (failure !== undefined) throw failure;
    if (result.exitCode !== 0) throw exitFailure(argv, result, typeof result.stderr === 'string' ? result.stderr.trim() : '');
  });
  // Callers await `finished` when they care; an unobserved rejection must not crash the process.
  finished.catch(() => undefined);
  return {
    output: stdout,
    finished,
    stop: () => {
      stopped = true;
      input.unpipe(stdin);
      stdin.destroy();
      child.kill();
    },
  };
}

/** True when `program` is an executable file in one of the fixed PATH's directories. */
export function haveProgram(program: string): boolean {
  return FIXED_PATH.split(':').some((dir) => {
    try {
      accessSync(`${dir}/${program}`, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * One of bootenv's native helpers (src/native, built beside the bundle): the
 * one beside the running bundle (dist/, /usr/lib/bootenv/), else the
 * installed one. Throws TOOL_MISSING when neither is there.
 */
export function locateNativeHelper(name: string): string {
  const candidates = [path.join(path.dirname(fileURLToPath(import.meta.url)), name), `/usr/lib/bootenv/${name}`];
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next one
    }
  }
  throw new BootenvError('TOOL_MISSING', `${name} is not installed (looked for ${candidates.join(', ')})`, { hint: 'reinstall bootenv' });
}

/**
 * Runs argv and hands its stdout to `onChunk` as it comes, as bytes (a
 * binary stream such as `btrfs send`). Returns the command's stderr. Throws
 * as run(); an exception from `onChunk` stops the command and is rethrown.
 */
export async function runChunks(argv: readonly string[], onChunk: (chunk: Buffer) => void): Promise<{ stderr: string }> {
  const [file, ...args] = argv;
  if (file === undefined) throw new BootenvError('INTERNAL', 'runChunks() called with an empty argv');
  throwIfInterrupted();
  const child = execa(file, args, { ...streamingOptions(1024 * 1024), stdin: 'ignore', encoding: 'buffer' });
  const stdout = child.stdout;
  if (stdout === null) throw new BootenvError('INTERNAL', `no pipe from ${file}`);
  let consumerError: { error: unknown } | undefined;
  try {
    for await (const chunk of stdout) {
      try {
        onChunk(chunk as Buffer);
      } catch (error) {
        consumerError = { error };
        break;
      }
    }
  } catch {
    // The program failed or could not start: its result below says which.
  }
  if (consumerError !== undefined) {
    child.kill();
    await child;
    throw consumerError.error;
  }
  const result = await child;
  const stderr = result.stderr instanceof Uint8Array ? Buffer.from(result.stderr).toString('utf8') : typeof result.stderr === 'string' ? result.stderr : '';
  const failure = notRun(argv, result);
  if (failure !== undefined) throw failure;
  if (result.exitCode !== 0) throw exitFailure(argv, result, stderr.trim());
  return { stderr };
}
