/**
 * `dpkg --audit` of a dpkg database other than the running one: what dpkg
 * itself reports as unfinished there — packages half-installed,
 * half-configured, unpacked but not configured, or awaiting or holding
 * pending triggers. The apt transaction asks it of a new BE before that BE may
 * become the default, whatever the hooks recorded about dpkg's exit status.
 */
import { run } from '../sys/exec.js';

/**
 * Runs the host's dpkg on the database at `adminDirectory` (e.g.
 * BE/var/lib/dpkg) and returns its report, trimmed; '' when dpkg finds
 * nothing unfinished. Reads only. Throws COMMAND_FAILED when dpkg cannot
 * read the database.
 */
export async function auditDpkgDatabase(adminDirectory: string): Promise<string> {
  // dpkg 1.21 exits 1 when it reports something; either way its report is on stdout.
  const result = await run(['dpkg', `--admindir=${adminDirectory}`, '--audit'], { okExitCodes: [1] });
  return result.stdout.trim();
}
