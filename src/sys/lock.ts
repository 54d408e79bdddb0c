/**
 * The global bootenv lock. Node has no flock(2), so the lock is held by a
 * child `flock LOCKFILE cat` whose stdin is a pipe from us: the kernel releases
 * the lock when that child ends, and the child ends when we close the pipe or
 * die in any way (even SIGKILL), so a crashed beadm never leaves a stale lock.
 * We know the lock is ours when `cat` echoes the line we wrote: it only runs
 * once flock has the lock. The lock file is root's alone (0600): whoever can
 * open it can hold it, and with it stop every apt run.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { BootenvError } from '../errors.js';
import { FIXED_PATH } from './exec.js';
import type { Scope } from './scope.js';

const LOCK_FILE = '/run/bootenv/lock';
const CONFLICT_EXIT = 75;

/**
 * Takes the global lock, waiting up to `waitSeconds`, and registers its release
 * in `scope`. Throws LOCKED when another process keeps it longer.
 */
export async function acquireGlobalLock(scope: Scope, waitSeconds: number, lockFile = LOCK_FILE): Promise<void> {
  await fs.mkdir(path.dirname(lockFile), { recursive: true, mode: 0o755 });
  // Root's alone: flock(2) needs only an open file, so a lock file others can open is one they can hold.
  await (await fs.open(lockFile, 'a', 0o600)).close();
  await fs.chown(lockFile, 0, 0);
  await fs.chmod(lockFile, 0o600);
  const child = execa(
    'flock',
    ['--exclusive', '--wait', String(waitSeconds), '--conflict-exit-code', String(CONFLICT_EXIT), lockFile, 'cat'],
    { env: { PATH: FIXED_PATH, LC_ALL: 'C' }, stdin: 'pipe', stdout: 'pipe', stderr: 'pipe', reject: false, cleanup: true },
  );
  const stdin = child.stdin;
  const stdout = child.stdout;
  if (stdin === null || stdout === null) throw new BootenvError('INTERNAL', 'flock child has no pipes');
  const acquired = new Promise<boolean>((resolve) => {
    stdout.once('data', () => resolve(true));
    void child.then(() => resolve(false));
  });
  stdin.write('locked\n');
  if (!(await acquired)) {
    const result = await child;
    if (result.exitCode === CONFLICT_EXIT) {
      throw new BootenvError('LOCKED', `another beadm or bootenv transaction holds ${lockFile}`, {
        hint: 'wait for it to finish and try again',
      });
    }
    if ((result.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
      throw new BootenvError('TOOL_MISSING', 'flock is not installed', { hint: 'install util-linux' });
    }
    throw new BootenvError('COMMAND_FAILED', `flock ${lockFile} failed: ${String(result.stderr).trim()}`);
  }
  scope.always(`release ${lockFile}`, async () => {
    stdin.end();
    await child;
  });
}
