/**
 * Other processes: what /proc/PID/stat says of one (its parent, its start
 * time, which together with the pid identify it across pid reuse), and the
 * processes left running inside a discarded transaction's chroot (apt was
 * killed; its dpkg and maintainer scripts were not). Those are found by their
 * root directory — never by name — and stopped so that the BE's mounts can be
 * released: SIGTERM, then SIGKILL after `graceMilliseconds`. And the
 * processes that use something below a directory (a share refuses to move
 * it then; they are only named, never signalled).
 */
import { promises as fs } from 'node:fs';
import { readTextIfExists } from './fs.js';

export interface ProcessInfo {
  pid: number;
  /** The command name (/proc/PID/comm, at most 15 bytes). */
  command: string;
  parentPid: number;
  /** Field 22 of /proc/PID/stat: start time in clock ticks since boot. */
  startTime: string;
}

/** What /proc/PID/stat says of `pid`; undefined when the process is gone. */
export async function processInfo(pid: number): Promise<ProcessInfo | undefined> {
  const stat = await readTextIfExists(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  // The command name is in parentheses and may itself hold spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return {
    pid,
    command: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')),
    parentPid: Number(fields[1]),
    startTime: fields[19] ?? '',
  };
}

/** The command line of `pid` (/proc/PID/cmdline); empty when the process is gone. */
export async function processCommandLine(pid: number): Promise<string[]> {
  const text = (await readTextIfExists(`/proc/${pid}/cmdline`)) ?? '';
  return text.split('\0').filter((word) => word !== '');
}

/**
 * Paths of the files `pid` itself holds a lock on, from /proc/PID/fd and the
 * `lock:` lines of /proc/PID/fdinfo (a POSIX lock shows there only for the
 * process that took it, not for a child it forked); empty when the process is
 * gone. Needs root for other users' processes.
 */
export async function lockedFiles(pid: number): Promise<string[]> {
  let descriptors: string[];
  try {
    descriptors = await fs.readdir(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
  const locked: string[] = [];
  for (const descriptor of descriptors) {
    try {
      if (!/^lock:/m.test((await readTextIfExists(`/proc/${pid}/fdinfo/${descriptor}`)) ?? '')) continue;
      locked.push(await fs.readlink(`/proc/${pid}/fd/${descriptor}`));
    } catch {
      // closed meanwhile
    }
  }
  return locked;
}

/** A process that uses something below a path: how (cwd, root, exe, a file it holds open or has mapped) and what. */
export interface PathUser {
  pid: number;
  command: string;
  how: string;
  file: string;
}

/**
 * The processes (other than this one) whose working directory, root,
 * executable, open files or mapped files are `directory` or below it, from
 * /proc/PID/{cwd,root,exe,fd,map_files} (paths as this process sees them).
 * Reads only; needs root for other users' processes.
 */
export async function processesUsing(directory: string): Promise<PathUser[]> {
  const below = (file: string) => file === directory || file.startsWith(`${directory}/`);
  const users: PathUser[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const links: Array<[string, string]> = [
      ['cwd', `/proc/${entry}/cwd`],
      ['root', `/proc/${entry}/root`],
      ['exe', `/proc/${entry}/exe`],
    ];
    for (const kind of ['fd', 'map_files']) {
      try {
        for (const name of await fs.readdir(`/proc/${entry}/${kind}`)) links.push([kind === 'fd' ? `fd ${name}` : 'mapped', `/proc/${entry}/${kind}/${name}`]);
      } catch {
        // gone, or a kernel thread
      }
    }
    for (const [how, link] of links) {
      let file: string;
      try {
        file = (await fs.readlink(link)).replace(/ \(deleted\)$/, '');
      } catch {
        continue;
      }
      if (!below(file)) continue;
      const info = await processInfo(Number(entry));
      users.push({ pid: Number(entry), command: info?.command ?? '?', how, file });
      break;
    }
  }
  return users;
}

/** PIDs of processes whose root directory is `root` or below it. */
async function processesRootedIn(root: string): Promise<number[]> {
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

/**
 * A named point of a multi-step change where the tests kill this process
 * (SIGKILL, as a power cut would stop it) to show that the next run finishes
 * or undoes what was half done: with BOOTENV_TEST_CRASH_AT=NAME in the
 * environment, reaching NAME kills the process. Does nothing otherwise.
 */
export function crashPoint(name: string): void {
  if (process.env.BOOTENV_TEST_CRASH_AT === name) process.kill(process.pid, 'SIGKILL');
}
