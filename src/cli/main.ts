/**
 * The beadm command line: a table of commands, each parsing its options,
 * calling one library function and handing what it returned to the renderer.
 * This is the only layer that writes to stdout/stderr or decides the exit
 * status (see EXIT_CODES); it never exits mid-flight — on a signal it lets
 * the running operation unwind through its cleanup first.
 */
import { Command, CommanderError, Option } from 'commander';
import {
  activateBootEnvironment,
  checkSystem,
  completeBoot,
  createBootEnvironment,
  destroyBootEnvironment,
  initialize,
  listBootEnvironments,
  mountBootEnvironment,
  pinBootEnvironment,
  renameBootEnvironment,
  unmountBootEnvironment,
  upgradeIntoBootEnvironment,
  type BootEnvironment,
  type Options,
} from '../be/library.js';
import { carryBootEnvironment } from '../be/carry.js';
import { listShared, shareDirectories } from '../be/share.js';
import { parseCarrySetting, parseKeepCount, type CarrySetting } from '../be/config.js';
import { finishTransactionAndPrune, pruneBootEnvironments, type AptRunOutcome } from '../be/prune.js';
import { diffBootEnvironments } from '../be/diff.js';
import { runInClone } from '../be/run.js';
import { showBootEnvironment } from '../be/show.js';
import { prepareTransactionWithRoom } from '../be/space-guard.js';
import { enterTransaction, recordDpkgFailure } from '../be/transaction.js';
import { BootenvError, EXIT_CODES, asBootenvError } from '../errors.js';
import { auditBootEnvironments, dedupeBootEnvironment, type AuditProgress } from '../be/space.js';
import { clearProgress, progressFrameDue, renderActivationCarry, renderAudit, renderAutoPrune, renderBootCarry, renderCarry, renderError, renderErrorJson, renderJson, renderList, renderListScripted, renderProgress, renderPrune, renderShared, renderDiff, renderShow, renderSkipUnchanged } from './render.js';

declare const BOOTENV_VERSION: string;

/** Where a progress bar may be drawn while a long command runs: standard error, when it is a terminal. */
export interface ProgressTerminal {
  isTTY: boolean;
  columns: number;
  write(text: string): void;
}

export interface CliOutput {
  stdout: string;
  stderr: string;
  exitStatus: number;
}

interface Reply {
  /** What --json prints. */
  data: unknown;
  /** What people read. */
  text: string;
  /** Exit status other than 0 that is still a result (beadm upgrade passes on apt-get's). */
  exitStatus?: number;
}

function outcomeText(outcome: AptRunOutcome): string {
  switch (outcome.outcome) {
    case 'finished':
      return (
        `bootenv: apt's changes are in boot environment ${outcome.name} (${outcome.subvolume}); ` +
        `the running system is unchanged. Reboot to use it.\n` +
        (outcome.replaced === null ? '' : `bootenv: ${outcome.name} includes and replaces ${outcome.replaced}, which held this boot's earlier apt changes.\n`) +
        (outcome.skipUnchanged === null ? '' : renderSkipUnchanged(outcome.skipUnchanged, 'bootenv')) +
        (outcome.pruned === null ? '' : renderAutoPrune(outcome.pruned)) +
        (outcome.bootLoader.menuRequested ? `bootenv: the GRUB menu that a package asked update-grub for was written by bootenv, from the installed root: it boots ${outcome.name} by default and keeps an entry for every other boot environment.\n` : '')
      );
    case 'aborted':
      return `bootenv: dpkg failed${outcome.dpkgStatus === null ? '' : ` (exit status ${outcome.dpkgStatus})`}; ${outcome.name === null ? 'no boot environment was made' : `boot environment ${outcome.name} was discarded`}. Nothing else changed.\n`;
    default:
      return '';
  }
}

async function readStandardInput(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function aptPid(value: string): number {
  if (!/^\d+$/.test(value)) throw new BootenvError('USAGE', `--apt-pid needs a process id, not ${JSON.stringify(value)}`);
  return Number(value);
}

/** Options for every library call: the lock timeout from BOOTENV_LOCK_TIMEOUT, and where notices go. */
function libraryOptions(onNotice: (sentence: string) => void): Options {
  const wait = process.env.BOOTENV_LOCK_TIMEOUT;
  return { onNotice, ...(wait !== undefined && /^\d+$/.test(wait) ? { lockWaitSeconds: Number(wait) } : {}) };
}

function carrySetting(value: string): CarrySetting {
  const setting = parseCarrySetting(value);
  if (setting === undefined) throw new BootenvError('USAGE', `--carry is all, data or none, not ${JSON.stringify(value)}`);
  return setting;
}

function keepCount(value: string, option: string): number {
  const keep = parseKeepCount(value);
  if (keep === undefined) throw new BootenvError('USAGE', `${option} needs a number (digits only), not ${JSON.stringify(value)}`);
  return keep;
}

/** Commander's collector for a repeatable option. */
function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function environmentReply(environment: BootEnvironment, sentence: string): Reply {
  return { data: environment, text: `${sentence}\n` };
}

/**
 * Runs `body` with a progress callback that draws a bar on `terminal` (when
 * it is a TTY; runCli passes none with --json): a frame when progressFrameDue
 * says so; erased when `body` ends, however it ends.
 */
async function withProgressBar<T>(terminal: ProgressTerminal | undefined, body: (onProgress: ((progress: AuditProgress) => void) | undefined) => Promise<T>): Promise<T> {
  if (terminal?.isTTY !== true) return body(undefined);
  let last: { step: string; at: number } | undefined;
  try {
    return await body((progress) => {
      const now = Date.now();
      if (!progressFrameDue(last, progress.step, now)) return;
      terminal.write(renderProgress(progress, terminal.columns));
      last = { step: progress.step, at: now };
    });
  } finally {
    if (last !== undefined) terminal.write(clearProgress(terminal.columns));
  }
}

function buildProgram(
  setReply: (reply: Reply) => void,
  setScripted: (value: boolean) => void,
  onNotice: (sentence: string) => void,
  terminal: ProgressTerminal | undefined,
): Command {
  const program = new Command('beadm')
    .description('Manage boot environments (writable btrfs snapshots of the root filesystem) on Debian and Ubuntu.')
    .version(typeof BOOTENV_VERSION === 'string' ? BOOTENV_VERSION : 'development')
    .option('--json', 'print the result as one JSON document on stdout')
    .showHelpAfterError()
    .exitOverride();
  const options = libraryOptions(onNotice);

  program
    .command('check')
    .description('exit 0 if this system can use boot environments; silent (see exit codes)')
    .option('-v, --verbose', 'say why not')
    .action(async () => {
      await checkSystem();
      setReply({ data: { usable: true }, text: '' });
    });

  program
    .command('init')
    .description('adopt the installed system: its root becomes the first BE, activated for the next boot')
    .option('-n, --name <name>', 'name of the first BE (default: ID-VERSION_ID from os-release)')
    .option('-d, --description <text>', 'description of the first BE')
    .option('--share <path>', 'then move PATH into a subvolume of its own that every BE mounts, out of every rollback (repeatable; see beadm share)', collect, [])
    .action(async (commandOptions: { name?: string; description?: string; share: string[] }) => {
      const environment = await initialize({ ...options, ...commandOptions });
      const created = `Created boot environment ${environment.name} (${environment.subvolume}) from the installed root; it boots by default from the next boot on.`;
      setReply({ data: environment, text: `${created}\n${commandOptions.share.length === 0 ? '' : renderShared(environment.shared ?? [], commandOptions.share)}` });
    });

  program
    .command('share')
    .description('move each PATH into a subvolume of its own beside @home, mounted by every BE: out of every rollback and carry; without PATH, list what is shared')
    .argument('[paths...]', 'directories of the running system, e.g. /var/lib/postgresql')
    .action(async (paths: string[]) => {
      if (paths.length === 0) {
        const shared = await listShared(options);
        setReply({ data: shared, text: renderShared(shared, []) });
        return;
      }
      const result = await shareDirectories(paths, options);
      setReply({ data: result, text: renderShared(result.shared, result.added) });
    });

  program
    .command('create')
    .description('create a BE as a snapshot of the running BE (or of SOURCE)')
    .argument('<name>', 'name of the new BE')
    .option('-e, --source <source>', 'BE to clone instead of the running one')
    .option('-a, --activate', 'activate the new BE for the next boot')
    .option('-d, --description <text>', 'description')
    .option('--carry <mode>', "carry the source's later changes into it when it boots: all, data (not /etc) or none (default: bootenv.conf)")
    .action(async (name: string, commandOptions: { source?: string; activate?: boolean; description?: string; carry?: string }) => {
      const { carry, ...rest } = commandOptions;
      const environment = await createBootEnvironment({ ...options, ...rest, name, ...(carry === undefined ? {} : { carry: carrySetting(carry) }) });
      setReply(environmentReply(environment, `Created boot environment ${name} (${environment.subvolume})${commandOptions.activate ? '; it boots by default from the next boot on' : ''}.`));
    });

  program
    .command('list')
    .description('list BEs; Active: N running now, R default on next boot, T next boot only')
    .option('-H', "for scripts, as illumos beadm prints it: no header, one BE a line, name;uuid;active;mountpoint;space;policy;created")
    .action(async (commandOptions: { H?: boolean }) => {
      const environments = await listBootEnvironments(options);
      setScripted(commandOptions.H === true);
      setReply({ data: environments, text: commandOptions.H ? renderListScripted(environments) : renderList(environments) });
    });

  program
    .command('activate')
    .description('boot NAME from the next boot on (or, with -t, on the next boot only)')
    .argument('<name>', 'BE to activate')
    .option('-t, --temporary', 'next boot only (one-shot)')
    .option('--carry <mode>', 'its carry: all, data (files no package owns, outside /etc, /usr, /boot) or none; a BE with none pending gets one from the running BE (default: rollback-carry)')
    .action(async (name: string, commandOptions: { temporary?: boolean; carry?: string }) => {
      const { carry, ...rest } = commandOptions;
      const environment = await activateBootEnvironment(name, { ...options, ...rest, ...(carry === undefined ? {} : { carry: carrySetting(carry) }) });
      const boots = commandOptions.temporary ? `Boot environment ${name} boots once, on the next boot.` : `Boot environment ${name} boots by default from the next boot on.`;
      setReply(environmentReply(environment, boots + renderActivationCarry(environment)));
    });

  program
    .command('destroy')
    .description('destroy a BE (never the running or next-boot BE)')
    .argument('<name>', 'BE to destroy')
    .option('-F, --force', 'unmount it first if it is mounted')
    .action(async (name: string, commandOptions: { force?: boolean }) => {
      const destroyed = await destroyBootEnvironment(name, { ...options, ...commandOptions });
      setReply({ data: destroyed, text: `Destroyed boot environment ${name} (${destroyed.subvolume}).\n` });
    });

  for (const [command, pinned] of [['pin', true], ['unpin', false]] as const) {
    program
      .command(command)
      .description(pinned ? 'pin a BE: destroy refuses it and prune keeps it' : 'unpin a BE pinned with beadm pin')
      .argument('<name>', pinned ? 'BE to pin' : 'BE to unpin')
      .action(async (name: string) => {
        const environment = await pinBootEnvironment(name, pinned, options);
        setReply(environmentReply(environment, pinned ? `Boot environment ${name} is pinned: destroy refuses it and prune keeps it.` : `Boot environment ${name} is not pinned.`));
      });
  }

  program
    .command('prune')
    .description('destroy the BEs that the retention policy does not keep and nothing protects (running, default, one-shot, last good boot, pinned, mounted, a carry origin)')
    .option('--keep <n>', 'how many of the newest BEs to keep (default: bootenv.conf keep, 10)')
    .option('--keep-daily <n>', 'keep the newest BE of each of the last N days (default: bootenv.conf keep-daily, 7)')
    .option('--keep-weekly <n>', 'keep the newest BE of each of the last N weeks (default: bootenv.conf keep-weekly, 4)')
    .option('--dry-run', 'say what would be destroyed and what that frees, destroy nothing')
    .action(async (commandOptions: { keep?: string; keepDaily?: string; keepWeekly?: string; dryRun?: boolean }) => {
      const policy = {
        ...(commandOptions.keep === undefined ? {} : { keep: keepCount(commandOptions.keep, '--keep') }),
        ...(commandOptions.keepDaily === undefined ? {} : { keepDaily: keepCount(commandOptions.keepDaily, '--keep-daily') }),
        ...(commandOptions.keepWeekly === undefined ? {} : { keepWeekly: keepCount(commandOptions.keepWeekly, '--keep-weekly') }),
      };
      const result = await pruneBootEnvironments({ ...options, dryRun: commandOptions.dryRun === true, ...policy });
      setReply({ data: result, text: renderPrune(result) });
    });

  program
    .command('diff')
    .description("what differs from BE A to BE B (default: the running BE): packages added, removed, upgraded, downgraded; conffiles; files no package owns")
    .argument('<a>', 'BE compared from')
    .argument('[b]', 'BE compared to (default: the running BE)')
    .action(async (from: string, to: string | undefined) => {
      const report = await diffBootEnvironments(from, { ...options, ...(to === undefined ? {} : { to }) });
      setReply({ data: report, text: renderDiff(report) });
    });

  const runCommand = (name: string, description: string, withCommand: boolean) => {
    const command = program
      .command(name)
      .description(description)
      .option('-e, --source <name>', 'BE to clone (default: the running BE)')
      .option('-k, --keep <name>', 'afterwards, make the clone a BE of this name (whatever the exit status)')
      .option('-d, --description <text>', 'description of the kept BE (default: the command line)');
    if (withCommand) command.argument('<command...>', 'the command and its arguments, after --');
    command.action(async (...args: unknown[]) => {
      const commandOptions = (withCommand ? args[1] : args[0]) as { source?: string; keep?: string; description?: string };
      // Said as it happens, not at the end: the note that a shell is in a clone comes before the shell.
      const onNoticeNow = terminal === undefined ? options.onNotice : (sentence: string) => terminal.write(`beadm: note: ${sentence}\n`);
      const report = await runInClone({
        ...options,
        ...(onNoticeNow === undefined ? {} : { onNotice: onNoticeNow }),
        cwd: process.cwd(),
        ...(withCommand ? { command: args[0] as string[] } : {}),
        ...(commandOptions.source === undefined ? {} : { source: commandOptions.source }),
        ...(commandOptions.keep === undefined ? {} : { keep: commandOptions.keep }),
        ...(commandOptions.description === undefined ? {} : { description: commandOptions.description }),
      });
      setReply({ data: report, text: '', exitStatus: report.exitStatus });
    });
  };
  runCommand('run', "run a command in a throw-away clone of the running BE (or -e SOURCE), set up as apt's BE is (no services start), and pass on its exit status", true);
  runCommand('shell', 'an interactive shell in a throw-away clone of the running BE (or -e SOURCE); exit discards it unless --keep', false);

  program
    .command('show')
    .description('what made a BE (its apt runs and their packages), its boots, carries and space')
    .argument('<name>', 'BE to show')
    .action(async (name: string) => {
      const story = await showBootEnvironment(name, options);
      setReply({ data: story, text: renderShow(story) });
    });

  program
    .command('rename')
    .description('rename a BE that is not mounted')
    .argument('<old>', 'current name')
    .argument('<new>', 'new name')
    .action(async (from: string, to: string) => {
      const environment = await renameBootEnvironment(from, to, options);
      setReply(environmentReply(environment, `Renamed boot environment ${from} to ${to}.`));
    });

  program
    .command('mount')
    .description('mount a BE read-only, setuid bits and device nodes ignored, at DIR (default: /run/bootenv/mnt/NAME, root only)')
    .argument('<name>', 'BE to mount')
    .argument('[dir]', 'mount point')
    .option('-w, --writable', 'mount it read-write (DIR must be behind a directory only root can enter)')
    .option('--suid', 'honour its setuid bits and device nodes (DIR must be behind a directory only root can enter)')
    .action(async (name: string, directory: string | undefined, commandOptions: { writable?: boolean; suid?: boolean }) => {
      const environment = await mountBootEnvironment(name, directory, { ...options, ...commandOptions });
      setReply({ data: environment, text: `${environment.mountpoint}\n` });
    });

  program
    .command('unmount')
    .alias('umount')
    .description('unmount a BE mounted with beadm mount')
    .argument('<name>', 'BE to unmount')
    .option('-f, --force', 'detach a mount that is still in use (the kernel lets go of it when its last file is closed)')
    .action(async (name: string, commandOptions: { force?: boolean }) => {
      const environment = await unmountBootEnvironment(name, { ...options, force: commandOptions.force === true });
      setReply(environmentReply(environment, `Unmounted boot environment ${name}.`));
    });

  program
    .command('boot-complete')
    .description("clear a one-shot activation once its BE has booted; --good: record this boot as good (run by bootenv's boot units)")
    .option('--good', 'also record this boot of the running BE as successful')
    .action(async (commandOptions: { good?: boolean }) => {
      const result = await completeBoot({ ...options, good: commandOptions.good === true });
      const text = [
        ...(result.cleared === null
          ? []
          : [
              result.oneShotBooted
                ? `Cleared the one-shot activation of ${result.cleared}.\n`
                : `The one-shot boot environment ${result.cleared} did not come up; cleared its activation.\n`,
            ]),
        ...(result.returnCarry === undefined
          ? []
          : [
              `The next boot returns to ${result.returnCarry.name}; it takes this BE's ${result.returnCarry.mode === 'data' ? 'data (files no package owns, outside /etc, /usr and /boot)' : 'changes (all but package state)'} then (rollback-carry = ${result.returnCarry.mode}).\n`,
            ]),
        ...(result.markedGood === null ? [] : [`Recorded this boot of ${result.markedGood} as good.\n`]),
        ...(result.carry === undefined ? [] : [renderBootCarry(result.carry.name, result.carry.carried, result.carry.missed)]),
      ].join('');
      setReply({ data: result, text });
    });

  program
    .command('carry')
    .description("carry into NAME what its origin changed since NAME was made (done by the initramfs at NAME's first boot)")
    .argument('<name>', 'BE to carry into (not the running one)')
    .option('--dry-run', 'list what would be carried and the conflicts, change nothing')
    .addOption(new Option('--boot', "the initramfs's: NAME is mounted as / and not yet in use; the carry completes").hideHelp())
    .action(async (name: string, commandOptions: { dryRun?: boolean; boot?: boolean }) => {
      const report = await carryBootEnvironment(name, { ...options, ...commandOptions });
      setReply({ data: report, text: renderCarry(report), ...(report.failed.length > 0 ? { exitStatus: EXIT_CODES.COMMAND_FAILED } : {}) });
    });

  program
    .command('dedupe')
    .description("make NAME's files identical to its origin's (or OTHER's) share their extents")
    .argument('<name>', 'BE whose files come to share')
    .option('--against <other>', 'BE to share with (default: the BE NAME was made from)')
    .option('--dry-run', 'say what would be shared, share nothing')
    .action(async (name: string, commandOptions: { against?: string; dryRun?: boolean }) => {
      const result = await withProgressBar(terminal, (onProgress) => dedupeBootEnvironment(name, { ...options, ...commandOptions, ...(onProgress === undefined ? {} : { onProgress }) }));
      setReply({ data: result, text: renderSkipUnchanged(result.report, `beadm: ${name} against ${result.against}`) });
    });

  program
    .command('audit')
    .description('space per BE: referenced, exclusive, shared with its origin, identical but unshared, freed by destroy')
    .argument('[names...]', 'BEs to audit (default: all)')
    .action(async (names: string[]) => {
      const audits = await withProgressBar(terminal, (onProgress) => auditBootEnvironments(names, { ...options, ...(onProgress === undefined ? {} : { onProgress }) }));
      setReply({ data: audits, text: renderAudit(audits) });
    });

  program
    .command('upgrade')
    .description('run apt-get dist-upgrade (or apt-get ARGS) diverted into a new BE')
    .option('-n, --be-name <name>', 'name of the new BE (default: the name template)')
    .argument('[apt-args...]', 'apt-get arguments, after -- (default: dist-upgrade)')
    .allowUnknownOption()
    .action(async (aptArguments: string[], commandOptions: { beName?: string }) => {
      const status = await upgradeIntoBootEnvironment({ aptArguments, ...(commandOptions.beName === undefined ? {} : { beName: commandOptions.beName }) });
      setReply({ data: { aptExitStatus: status }, text: '', exitStatus: status });
    });

  const hook = program.command('apt-hook', { hidden: true }).description("bootenv's APT entry points (see /etc/apt/apt.conf.d/50bootenv)");
  hook.command('pre-install-pkgs').action(async () => {
    await prepareTransactionWithRoom(await readStandardInput(), options);
    setReply({ data: null, text: '' });
  });
  hook
    .command('enter')
    .requiredOption('--apt-pid <pid>', 'apt process')
    .argument('<dpkg-args...>')
    .action(async (dpkgArgs: string[], commandOptions: { aptPid: string }) => {
      const root = await enterTransaction(aptPid(commandOptions.aptPid), dpkgArgs, options);
      // The wrapper runs dpkg in place only when told so in as many words; anything else but a directory stops it.
      setReply({ data: { root }, text: `${root === '' ? 'in-place' : root}\n` });
    });
  hook
    .command('dpkg-failed')
    .requiredOption('--apt-pid <pid>', 'apt process')
    .argument('<status>')
    .action(async (status: string, commandOptions: { aptPid: string }) => {
      await recordDpkgFailure(aptPid(commandOptions.aptPid), Number(status));
      setReply({ data: null, text: '' });
    });
  hook.command('post-invoke').action(async () => {
    const outcome = await finishTransactionAndPrune(options);
    setReply({ data: outcome, text: outcomeText(outcome) });
  });
  for (const command of hook.commands) command.exitOverride();

  return program;
}

/**
 * Runs beadm with `argv` (without node and script) and returns what to print
 * and the exit status. Long scans (audit, dedupe) draw a progress bar on `terminal`
 * while they run, when it is a TTY and --json is not given, and erase it.
 */
export async function runCli(argv: readonly string[], terminal?: ProgressTerminal): Promise<CliOutput> {
  let reply: Reply | undefined;
  let scripted = false;
  let help = '';
  // Notices are printed however the command ends: what was cleaned up on the way stays said on failure too.
  const notices: string[] = [];
  const program = buildProgram(
    (value) => {
      reply = value;
    },
    (value) => {
      scripted = value;
    },
    (sentence) => notices.push(`beadm: note: ${sentence}\n`),
    argv.includes('--json') ? undefined : terminal,
  );
  program.configureOutput({ writeOut: (text) => (help += text), writeErr: (text) => (help += text) });
  for (const command of program.commands) {
    command.exitOverride().configureOutput({ writeOut: (text) => (help += text), writeErr: (text) => (help += text) });
  }
  const json = argv.includes('--json');
  const verbose = argv.includes('-v') || argv.includes('--verbose');
  const isCheck = argv.find((word) => !word.startsWith('-')) === 'check';
  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (caught) {
    if (caught instanceof CommanderError) {
      if (caught.exitCode === 0) return { stdout: help, stderr: '', exitStatus: 0 };
      return { stdout: '', stderr: help, exitStatus: EXIT_CODES.USAGE };
    }
    const error = asBootenvError(caught);
    if (isCheck && !verbose && !json) return { stdout: '', stderr: '', exitStatus: error.exitStatus };
    return {
      stdout: json ? renderErrorJson(error) : '',
      stderr: notices.join('') + renderError(error) + internalDetail(error),
      exitStatus: error.exitStatus,
    };
  }
  const notes = notices.join('');
  if (reply === undefined) return { stdout: help, stderr: notes, exitStatus: 0 };
  return { stdout: json && !scripted ? renderJson(reply.data) : reply.text, stderr: notes, exitStatus: reply.exitStatus ?? 0 };
}

function internalDetail(error: BootenvError): string {
  if (error.code !== 'INTERNAL' || !(error.cause instanceof Error)) return '';
  return `${error.cause.stack ?? ''}\n`;
}
