/**
 * The demo story (README "Try it") as one function, runDemo: a sandbox disk
 * laid out like an Ubuntu install, booted into @, adopts boot environments
 * with beadm; a plain apt-get install and upgrade land in a new BE while the
 * running system stays as it was; then create, activate, list and the
 * refusals. Every step is logged (the command, its output, its exit status)
 * and checked against what the story expects of it; the first step that is
 * not as expected throws. `npm run demo` (test/demo.ts, plain node) and the
 * integration test test/integration/demo.test.ts run this same function, so
 * nothing here may import vitest.
 */
import path from 'node:path';
import { EXIT_CODES, type ErrorCode } from '../src/errors.js';
import { BOOKWORM, ensureBase } from './harness/base.js';
import { installRepositoryInRoot } from './harness/repo.js';
import { Sandbox, type RunResult } from './harness/sandbox.js';

/** Where the story goes, one line (or block of lines) at a time. */
export type Log = (text: string) => void;

interface ListedBE {
  name: string;
  subvolume: string;
  active: string;
}

/** The exit status a step must end with: success, or the refusal the story shows. */
type Expected = 'success' | ErrorCode;

const PACKAGE = 'bootenv-t-changed';

/**
 * Runs in the booted first BE: the main job, with each command's last lines
 * and exit status shown as the beadm steps show theirs. dpkg-query -W exits 1
 * with "no packages found matching" when the package is not installed.
 */
const APT_SCRIPT = [
  'export DEBIAN_FRONTEND=noninteractive',
  'show() { local lines=$1; shift; echo "\\$ $*"; local out status; out=$("$@" 2>&1); status=$?; [ -n "$out" ] && printf "%s\\n" "$out" | tail -n "$lines"; echo "(exit status $status)"; }',
  'show 20 apt-get update -qq',
  `show 2 apt-get install -y ${PACKAGE}=1.0`,
  'show 3 apt-get upgrade -y',
  'echo; echo "# the running system is unchanged:"',
  `show 20 dpkg-query -W ${PACKAGE}`,
].join('\n');

function statusText(exitCode: number): string {
  const code = (Object.keys(EXIT_CODES) as ErrorCode[]).find((name) => EXIT_CODES[name] === exitCode);
  return exitCode === 0 || code === undefined ? `(exit status ${exitCode})` : `(exit status ${exitCode}, ${code})`;
}

/** Throws unless `result` ended with the `expected` exit status; its output is in the log already. */
function expectStatus(what: string, result: RunResult, expected: Expected): void {
  const wanted = expected === 'success' ? 0 : EXIT_CODES[expected];
  if (result.exitCode !== wanted) {
    throw new Error(`demo: "${what}" ended with exit status ${result.exitCode}, the story expects ${wanted}${expected === 'success' ? '' : ` (${expected})`}`);
  }
}

function expectThat(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Error(`demo: ${what}`);
}

/** The BEs `beadm list --json` shows (not logged); throws with its stderr when it fails. */
async function listed(sandbox: Sandbox, booted: string): Promise<ListedBE[]> {
  const result = await sandbox.beadm(booted, ['list', '--json']);
  expectThat(result.exitCode === 0, `"beadm list --json" ended with exit status ${result.exitCode}: ${result.stderr}`);
  return JSON.parse(result.stdout) as ListedBE[];
}

async function story(sandbox: Sandbox, log: Log): Promise<void> {
  /** `beadm ARGS` in the booted subvolume, logged; its exit status must be `expected`. Returns its stdout. */
  const step = async (booted: string, args: string[], note: string, expected: Expected = 'success'): Promise<string> => {
    log(`\n# ${note}\n[booted: ${booted || '(top level)'}] $ beadm ${args.join(' ')}`);
    const result = await sandbox.beadm(booted, args);
    const shown = `${result.stdout}${result.stdout && result.stderr ? '\n' : ''}${result.stderr}`.trimEnd();
    if (shown !== '') log(shown);
    log(statusText(result.exitCode));
    expectStatus(`beadm ${args.join(' ')}`, result, expected);
    return result.stdout;
  };

  await step('@', ['check'], 'can this system use boot environments? (silent, exit 0 = yes)');
  await step('@', ['init'], 'adopt the installed root: its snapshot becomes the first BE');
  const afterInit = JSON.parse(await step('@', ['list', '--json'], 'one BE, flagged R (default from the next boot)')) as ListedBE[];
  expectThat(afterInit.length === 1 && afterInit[0]?.active === 'R', `after init, one BE flagged R, not ${JSON.stringify(afterInit)}`);
  const first = afterInit[0] as ListedBE;
  log(`\n--- "rebooting" into ${first.subvolume} ---`);
  await step(first.subvolume, ['list'], 'booted into the first BE: N (now) and R (next boot)');

  log('\n# the main job: plain apt-get, diverted into a new BE (packages from a local test repository)');
  log(`[booted: ${first.subvolume}]`);
  const apt = await sandbox.boot(first.subvolume, ['bash', '-c', APT_SCRIPT]);
  log(apt.stdout.trim());
  expectStatus('the apt-get script', apt, 'success');
  const statuses = [...apt.stdout.matchAll(/^\(exit status (\d+)\)$/gm)].map((match) => Number(match[1]));
  expectThat(JSON.stringify(statuses) === '[0,0,0,1]', `apt-get update, install and upgrade must exit 0 and dpkg-query 1 (not installed), not ${JSON.stringify(statuses)}`);
  expectThat(/^bootenv: apt's changes are in boot environment \S+ \(@bootenv\/\S+\); the running system is unchanged\./m.test(apt.stdout), 'apt-get did not report a new BE');
  expectThat(apt.stdout.includes(`dpkg-query: no packages found matching ${PACKAGE}`), `the running system must still lack ${PACKAGE}`);

  await step(first.subvolume, ['list'], 'one BE holds both runs; it boots next (R)');
  const afterApt = await listed(sandbox, first.subvolume);
  const pending = afterApt[1];
  expectThat(afterApt.length === 2 && pending?.active === 'R', `after apt-get, two BEs with the new one flagged R, not ${JSON.stringify(afterApt)}`);
  log(`\n--- "rebooting" into ${pending.subvolume} ---\n[booted: ${pending.subvolume}] $ dpkg-query -W ${PACKAGE}`);
  const installed = await sandbox.boot(pending.subvolume, ['dpkg-query', '-W', PACKAGE]);
  log(installed.stdout.trim());
  log(statusText(installed.exitCode));
  expectStatus(`dpkg-query -W ${PACKAGE} in the new BE`, installed, 'success');
  expectThat(installed.stdout.trim() === `${PACKAGE}\t1.1`, `the new BE must hold ${PACKAGE} 1.1 (installed 1.0, then upgraded)`);

  await step(pending.subvolume, ['activate', first.name], 'roll back to the first BE: it boots by default again');
  await step(first.subvolume, ['create', 'b2', '-d', 'try'], 'a throw-away BE to experiment in');
  await step(first.subvolume, ['activate', 'b2'], 'boot b2 from the next boot on');
  await step(first.subvolume, ['list'], 'b2 is R now');
  const grubCfg = await sandbox.readFile('@/boot/grub/grub.cfg');
  const linux = /\nfunction bootenv_linux \{\n[^\n]*\n\}/.exec(grubCfg)?.[0].trim();
  expectThat(linux !== undefined && grubCfg.includes('source "${config_directory}/bootenv/entries.cfg"'), 'grub.cfg does not source bootenv/entries.cfg');
  const entry = /menuentry [^\n]*'bootenv-b2'[\s\S]*?\n\}/.exec(await sandbox.readBootMenu())?.[0];
  expectThat(entry !== undefined, "entries.cfg has no menu entry 'bootenv-b2'");
  log("\n# GRUB's menu entry for b2, in the installed root's /boot/grub/bootenv/entries.cfg (grub.cfg sources it at boot):");
  log(entry);
  log('# and the function it boots through, in /boot/grub/grub.cfg (the command line of /etc/default/grub):');
  log(linux);
  await step(first.subvolume, ['destroy', first.name], 'the running BE cannot be destroyed', 'BUSY');
  await step(first.subvolume, ['create', '../evil'], 'hostile names are refused', 'INVALID_NAME');
  await step(first.subvolume, ['activate', first.name], 'and back again to the first BE');
  await step(first.subvolume, ['destroy', 'b2'], 'the experiment is gone');
  const subvolumes = await sandbox.subvolumes();
  log('\nbtrfs subvolume list (host side):');
  log(subvolumes.join('\n'));
  expectThat(!subvolumes.includes('@bootenv/b2') && subvolumes.includes(first.subvolume) && subvolumes.includes(pending.subvolume), `subvolumes after the story: ${subvolumes.join(', ')}`);
}

/**
 * Runs the demo story on a new sandbox (a sparse image in /var/tmp on a loop
 * device, with the cached Debian 12 base, built by debootstrap if missing),
 * logging every step. Needs root, btrfs and loop devices. Throws at the first
 * step whose exit status or result is not what the story expects; whatever
 * happened, removes the sandbox and checks that nothing of it is left mounted
 * or attached (throwing if something is).
 */
export async function runDemo(log: Log): Promise<void> {
  log('Preparing the Debian 12 base (debootstrap, cached after the first run) ...');
  const base = await ensureBase(BOOKWORM);
  const sandbox = await Sandbox.create(base, 'ubuntu');
  let failure: unknown;
  try {
    await sandbox.withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
    log(`Sandbox: ${sandbox.image} on ${sandbox.loop}, btrfs ${sandbox.uuid}, subvolumes @ and @home`);
    await story(sandbox, log);
  } catch (error) {
    failure = error;
  }
  try {
    await sandbox.close();
    await sandbox.assertNothingLeft();
  } catch (cleanupError) {
    throw failure === undefined ? cleanupError : new AggregateError([failure, cleanupError], 'the demo failed, and so did removing its sandbox');
  }
  log('\nSandbox removed: nothing left mounted or attached.');
  if (failure !== undefined) throw failure;
}
