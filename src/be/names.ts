/**
 * The one validation of BE names. A name becomes a path component under
 * @bootenv/, part of a GRUB menu entry id (`bootenv-NAME`), and part of an fstab
 * option (`subvol=@bootenv/NAME`), so it is held to the characters safe in all
 * three: ASCII letters and digits, then also '.', '_', '+', '-'; at most 64.
 */
import { BootenvError } from '../errors.js';

export const MAX_NAME_LENGTH = 64;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

/** Returns why `name` is not a valid BE name, or undefined when it is. */
export function nameProblem(name: string): string | undefined {
  if (name === '') return 'the name is empty';
  if (name.length > MAX_NAME_LENGTH) return `the name is longer than ${MAX_NAME_LENGTH} characters`;
  if (!NAME.test(name)) {
    return 'a name starts with a letter or digit and holds only letters, digits, ".", "_", "+" and "-"';
  }
  return undefined;
}

/** Throws INVALID_NAME (changing nothing) unless `name` is a valid BE name. */
export function assertValidName(name: string): void {
  const problem = nameProblem(name);
  if (problem !== undefined) {
    throw new BootenvError('INVALID_NAME', `invalid BE name ${JSON.stringify(name)}: ${problem}`);
  }
}

/** Turns free text (e.g. "Ubuntu 24.04") into a valid name, or undefined. */
export function sanitizeName(text: string): string | undefined {
  const name = text
    .replace(/[^A-Za-z0-9._+-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, MAX_NAME_LENGTH);
  return nameProblem(name) === undefined ? name : undefined;
}
