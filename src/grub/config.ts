/**
 * GRUB's configuration in its home, the installed root's /boot/grub. The BE
 * entries are written to bootenv/entries.cfg there. When grub.cfg reads that
 * file at boot (bootenv's 09_bootenv wrote it so: SOURCING_MARKER), a change
 * of the BEs replaces entries.cfg alone, after the new text has passed
 * grub-script-check. Otherwise grub-mkconfig runs chrooted in the installed
 * root (its /etc/default/grub and /etc/grub.d, including 09_bootenv, apply)
 * into a new file that must pass grub-script-check before it is fsynced and
 * renamed over grub.cfg. Either way a crash leaves the old menu or the new
 * one, never a torn one.
 */
import { BootenvError } from '../errors.js';
import { run } from '../sys/exec.js';
import { readTextIfExists, removeFile, renamePath, syncFile, writeCandidateFile, writeFileAtomic, makeDirectory } from '../sys/fs.js';
import { mountChrootFilesystems } from '../sys/mount.js';
import { Scope, withScope } from '../sys/scope.js';
import { parseGrubenv, serializeGrubenv } from './grubenv.js';

export const GRUB_HOME = '/boot/grub';
const ENTRIES_FILE = `${GRUB_HOME}/bootenv/entries.cfg`;
export const GRUB_SCRIPT = '/etc/grub.d/09_bootenv';
const GRUBENV = `${GRUB_HOME}/grubenv`;
const GRUB_CONFIG = `${GRUB_HOME}/grub.cfg`;
/** The line bootenv's 09_bootenv writes into grub.cfg with the stanza that sources entries.cfg. */
export const SOURCING_MARKER = '# bootenv: entries.cfg is read at boot';

/** Whether the grub.cfg under the installed root mounted at `installedRoot` sources entries.cfg at boot. */
export async function grubConfigSourcesEntries(installedRoot: string): Promise<boolean> {
  return (await readTextIfExists(`${installedRoot}${GRUB_CONFIG}`))?.includes(`\n${SOURCING_MARKER}`) ?? false;
}

/**
 * Replaces entries.cfg under the installed root mounted at `installedRoot`:
 * the new text, written beside it, must pass grub-script-check before it is
 * renamed over the file. The previous content comes back if `scope` aborts.
 * Throws COMMAND_FAILED when the check fails (entries.cfg is then unchanged).
 */
export async function replaceMenuEntries(scope: Scope, installedRoot: string, text: string): Promise<void> {
  const file = `${installedRoot}${ENTRIES_FILE}`;
  const candidate = `${file}.bootenv-new`;
  const previous = await readTextIfExists(file);
  await makeDirectory(`${installedRoot}${GRUB_HOME}/bootenv`);
  await withScope(async (inner) => {
    inner.always(`remove ${candidate}`, () => removeFile(candidate));
    await writeCandidateFile(candidate, text);
    const check = await run(['grub-script-check', candidate], { okExitCodes: [1] });
    // A menu without a BE that has a kernel only defines the function, which the check reports as doing nothing: so GRUB reads it.
    if (check.exitCode !== 0 && !/contains no commands/.test(check.stdout + check.stderr)) {
      throw new BootenvError('COMMAND_FAILED', `the boot menu entries do not pass grub-script-check: ${check.stdout}${check.stderr}`);
    }
    await renamePath(candidate, file);
  });
  scope.onAbort(`restore ${ENTRIES_FILE}`, () =>
    previous === undefined ? removeFile(file) : writeFileAtomic(file, previous),
  );
}

/**
 * Runs grub-mkconfig chrooted in the installed root mounted at `installedRoot`
 * and atomically replaces its /boot/grub/grub.cfg. Mounts /proc, /sys, /dev,
 * /run, /tmp inside it for the duration only. Throws COMMAND_FAILED when
 * grub-mkconfig fails or its output does not pass grub-script-check (grub.cfg
 * is then unchanged).
 */
export async function regenerateGrubConfig(installedRoot: string): Promise<void> {
  const target = GRUB_CONFIG;
  const candidate = `${target}.bootenv-new`;
  await withScope(async (scope) => {
    await mountChrootFilesystems(scope, installedRoot);
    scope.always(`remove ${candidate}`, () => removeFile(`${installedRoot}${candidate}`));
    await run(['chroot', installedRoot, 'grub-mkconfig', '-o', candidate]);
    const check = await run(['chroot', installedRoot, 'grub-script-check', candidate], { okExitCodes: [1] });
    if (check.exitCode !== 0) {
      throw new BootenvError('COMMAND_FAILED', `the generated GRUB configuration does not pass grub-script-check: ${check.stdout}${check.stderr}`);
    }
    await syncFile(`${installedRoot}${candidate}`);
    await renamePath(`${installedRoot}${candidate}`, `${installedRoot}${target}`);
  });
}

/** The variables in GRUB's environment block; empty when there is none. */
export async function readGrubenv(installedRoot: string): Promise<Map<string, string>> {
  const text = await readTextIfExists(`${installedRoot}${GRUBENV}`);
  return text === undefined ? new Map() : parseGrubenv(text);
}

/**
 * Sets (value) or removes (undefined) `key` in GRUB's environment block,
 * replacing the file atomically; restored if `scope` aborts.
 */
export async function setGrubenvVariable(scope: Scope, installedRoot: string, key: string, value: string | undefined): Promise<void> {
  const file = `${installedRoot}${GRUBENV}`;
  const previous = await readTextIfExists(file);
  const values = previous === undefined ? new Map<string, string>() : parseGrubenv(previous);
  if (value === undefined) values.delete(key);
  else values.set(key, value);
  await writeFileAtomic(file, serializeGrubenv(values));
  scope.onAbort(`restore ${GRUBENV}`, () => (previous === undefined ? removeFile(file) : writeFileAtomic(file, previous)));
}
