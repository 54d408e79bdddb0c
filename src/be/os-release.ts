/**
 * os-release(5) of a root: the pretty name GRUB's menu shows for a BE and the
 * ID and VERSION_ID that name the first BE (debian-12). Parsed in one place,
 * strictly enough for the fields bootenv reads.
 */
import path from 'node:path';
import { readTextIfExists } from '../sys/fs.js';

export interface OsRelease {
  prettyName: string | undefined;
  id: string | undefined;
  versionId: string | undefined;
}

/** Pure: the fields bootenv reads from an os-release text; a field that is absent is undefined. */
export function parseOsRelease(text: string): OsRelease {
  const field = (key: string) => new RegExp(`^${key}=("?)([^"\\n]*)\\1$`, 'm').exec(text)?.[2];
  return { prettyName: field('PRETTY_NAME'), id: field('ID'), versionId: field('VERSION_ID') };
}

/** os-release of the root at `root`: /etc/os-release, else /usr/lib/os-release; all fields undefined when neither exists. */
export async function readOsRelease(root: string): Promise<OsRelease> {
  const text =
    (await readTextIfExists(path.join(root, 'etc/os-release'))) ?? (await readTextIfExists(path.join(root, 'usr/lib/os-release'))) ?? '';
  return parseOsRelease(text);
}
