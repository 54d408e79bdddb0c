/**
 * Processes left running inside a discarded transaction's chroot (apt was
 * killed; its dpkg and maintainer scripts were not). They are found by their
 * root directory — never by name — and stopped so that the BE's mounts can be
 * released: SIGTERM, then SIGKILL after `graceMilliseconds`.
 */
import { promises as fs } from 'node:fs';

/** PIDs of processes whose root directory is `root` or below it. */
export async function processesRootedIn(root: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const processRoot = await fs.readlink(`/proc/${entry}/root`);
      if (processRoot === root || processRoot.startsWith(`${root}/`)) pids.push(Number(entry));
    } catch {
      // gone, or a kernel thread
    }
  }
  return pids;
}

/** Stops every process rooted in `root`; returns the PIDs it signalled. */
export async function stopProcessesRootedIn(root: string, graceMilliseconds = 3000): Promise<number[]> {
  const signalled = await processesRootedIn(root);
  for (const pid of signalled) signal(pid, 'SIGTERM');
  const deadline = Date.now() + graceMilliseconds;
  while (Date.now() < deadline && (await processesRootedIn(root)).length > 0) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  for (const pid of await processesRootedIn(root)) signal(pid, 'SIGKILL');
  for (let wait = 0; wait < 50 && (await processesRootedIn(root)).length > 0; wait += 1) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return signalled;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}
