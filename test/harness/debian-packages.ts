/**
 * Real Debian packages that a fixture package depends on (libcap2-bin's
 * setcap, for a postinst that gives a file capabilities), downloaded once
 * with `apt-get download` from the host's APT sources into
 * .cache/test/debs/ and reused; served beside the fixtures through
 * installRepositoryInRoot's `extraDebs`. The host runs the same Debian
 * release as the sandbox's base (Debian 12).
 */
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { cacheDirectory } from './base.js';

/** The path of a cached .deb of `name` for this machine's architecture, downloading it first if needed. */
export async function cachedDebianPackage(name: string): Promise<string> {
  const directory = path.join(cacheDirectory(), 'debs');
  mkdirSync(directory, { recursive: true });
  const find = () => readdirSync(directory).find((file) => file.startsWith(`${name}_`) && file.endsWith('.deb'));
  if (find() === undefined) {
    const download = () => execa('apt-get', ['download', '-qq', name], { cwd: directory, reject: false, env: { LC_ALL: 'C' } });
    // A fresh machine may have no package lists yet.
    if ((await download()).exitCode !== 0) {
      await execa('apt-get', ['update', '-qq']);
      await execa('apt-get', ['download', '-qq', name], { cwd: directory, env: { LC_ALL: 'C' } });
    }
  }
  const file = find();
  if (file === undefined || !existsSync(path.join(directory, file))) throw new Error(`apt-get download ${name} left no .deb in ${directory}`);
  return path.join(directory, file);
}
