/**
 * The one-shot protocol (`beadm activate -t`): booting a BE once, and not
 * again if that boot fails. GRUB cannot write its environment block on btrfs,
 * so it reads `next_entry` but never clears it; bootenv writes it from Linux,
 * and the initramfs of the next boot (bootenv-one-shot, from initramfs-tools'
 * local-bottom) takes it by renaming it to `bootenv_tried` before the root
 * becomes `/`, so that a trial BE that fails later in its boot is not booted
 * again. The booted system (`beadm boot-complete`) reads and clears
 * `bootenv_tried`. Every function works on the installed root mounted at
 * `installedRoot` (GRUB's home is its /boot/grub); writes are undone if the
 * scope aborts.
 */
import type { Scope } from '../sys/scope.js';
import { readGrubenv, setGrubenvVariable } from './config.js';
import { ENTRY_ID_PREFIX, menuEntryId } from './menu.js';

const NEXT_ENTRY = 'next_entry';
/** Written by bootenv-one-shot.c; keep in step with it. */
const TRIED_ONE_SHOT = 'bootenv_tried';

export interface OneShotState {
  /** The BE GRUB boots next, once (next_entry), if bootenv set one. */
  pending: string | undefined;
  /** The BE whose one-shot an initramfs took (bootenv_tried), not yet seen by a booted system. */
  tried: string | undefined;
}

/** Both one-shot variables, from one read of grubenv. */
export async function readOneShot(installedRoot: string): Promise<OneShotState> {
  const grubenv = await readGrubenv(installedRoot);
  const environmentName = (key: string) => {
    const id = grubenv.get(key);
    return id?.startsWith(ENTRY_ID_PREFIX) ? id.slice(ENTRY_ID_PREFIX.length) : undefined;
  };
  return { pending: environmentName(NEXT_ENTRY), tried: environmentName(TRIED_ONE_SHOT) };
}

/** Makes BE `name` the next boot's, once; drops the record of an earlier one-shot taken by an initramfs. */
export async function scheduleOneShot(scope: Scope, installedRoot: string, name: string): Promise<void> {
  if ((await readOneShot(installedRoot)).tried !== undefined) await setGrubenvVariable(scope, installedRoot, TRIED_ONE_SHOT, undefined);
  await setGrubenvVariable(scope, installedRoot, NEXT_ENTRY, menuEntryId(name));
}

/** Drops a one-shot that GRUB has not booted yet, if there is one. */
export async function cancelOneShot(scope: Scope, installedRoot: string): Promise<void> {
  if ((await readOneShot(installedRoot)).pending !== undefined) await setGrubenvVariable(scope, installedRoot, NEXT_ENTRY, undefined);
}

/** Drops the record of a one-shot taken by an initramfs: a booted system has seen it. */
export async function forgetTriedOneShot(scope: Scope, installedRoot: string): Promise<void> {
  await setGrubenvVariable(scope, installedRoot, TRIED_ONE_SHOT, undefined);
}

/** Points a pending one-shot at the BE's new name after a rename. */
export async function renameOneShot(scope: Scope, installedRoot: string, to: string): Promise<void> {
  await setGrubenvVariable(scope, installedRoot, NEXT_ENTRY, menuEntryId(to));
}
