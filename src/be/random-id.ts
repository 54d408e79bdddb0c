/**
 * Random UUIDs for the names beadm makes up (carry records and their
 * snapshots, scratch snapshots of run, diff and share). node:crypto is loaded
 * on the first one: loading it costs every start 4 ms (Debian 12's nodejs,
 * measured), and list, activate and destroy never make a name.
 */
import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

/** A random version 4 UUID. */
export function randomUuid(): string {
  return (load('node:crypto') as typeof import('node:crypto')).randomUUID();
}
