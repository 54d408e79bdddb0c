/**
 * Entry point of dist/beadm.js. Prints what runCli returned and sets the exit
 * status. On the first SIGINT/SIGTERM/SIGHUP the running operation is told to
 * stop and unwinds through its cleanup (unmount, delete half-made snapshot);
 * a second signal runs the cleanup at once and exits. While beadm run's
 * COMMAND runs, signals are its own (src/sys/scope.ts).
 */
import { abortOperation, interruptOperation } from '../be/library.js';
import { EXIT_CODES } from '../errors.js';
import { runCli } from './main.js';

let signals = 0;
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    if (!interruptOperation(signal)) return;
    signals += 1;
    if (signals > 1) {
      void abortOperation().finally(() => process.exit(EXIT_CODES.INTERRUPTED));
    }
  });
}

const terminal = {
  isTTY: process.stderr.isTTY === true,
  // A terminal that reports no size (0 columns, as a pty nobody sized) gets the usual 80.
  columns: process.stderr.columns || 80,
  write: (text: string) => process.stderr.write(text),
};

// A front end may hand dpkg, and so the wrapper's beadm, a standard error it cannot write to
// (aptitude: /dev/null opened read-only, measured with 0.8.13): a note then goes unsaid, the
// result stands. Standard output carries results (the wrapper's chroot directory): a failure
// there fails the command.
process.stderr.on('error', () => undefined);
process.stdout.on('error', () => {
  process.exitCode = EXIT_CODES.INTERNAL;
});

void runCli(process.argv.slice(2), terminal).then((output) => {
  process.exitCode = output.exitStatus;
  if (output.stdout !== '') process.stdout.write(output.stdout);
  if (output.stderr !== '') process.stderr.write(output.stderr);
});
