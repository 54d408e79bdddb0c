/**
 * Entry point of dist/beadm.js. Prints what runCli returned and sets the exit
 * status. On the first SIGINT/SIGTERM/SIGHUP the running operation is told to
 * stop and unwinds through its cleanup (unmount, delete half-made snapshot);
 * a second signal runs the cleanup at once and exits.
 */
import { abortOperation, interruptOperation } from '../be/library.js';
import { EXIT_CODES } from '../errors.js';
import { runCli } from './main.js';

let signals = 0;
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    signals += 1;
    interruptOperation(signal);
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

void runCli(process.argv.slice(2), terminal).then((output) => {
  process.stdout.write(output.stdout);
  process.stderr.write(output.stderr);
  process.exitCode = output.exitStatus;
});
