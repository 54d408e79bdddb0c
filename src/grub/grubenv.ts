/**
 * GRUB's environment block (`/boot/grub/grubenv`): a 1024-byte file of
 * `key=value` lines after a fixed header, padded with '#'. GRUB reads it at
 * boot (`load_env`) but cannot write it on btrfs ("sparse file not allowed"),
 * so a one-shot `next_entry` is never cleared by GRUB itself; see README.
 * Pure parse and serialize; writing the file is the caller's (atomic) job.
 */
import { BootenvError } from '../errors.js';

const HEADER = '# GRUB Environment Block\n';
const BLOCK_SIZE = 1024;

export function parseGrubenv(text: string): Map<string, string> {
  if (!text.startsWith(HEADER)) {
    throw new BootenvError('PARSE', 'grubenv does not start with "# GRUB Environment Block"');
  }
  const values = new Map<string, string>();
  for (const line of text.slice(HEADER.length).split('\n')) {
    if (line === '' || /^#+$/.test(line)) continue;
    const separator = line.indexOf('=');
    if (separator <= 0) throw new BootenvError('PARSE', `unexpected line in grubenv: ${JSON.stringify(line)}`);
    values.set(line.slice(0, separator), line.slice(separator + 1));
  }
  return values;
}

/** Serializes to the exact 1024-byte layout grub-editenv writes. */
export function serializeGrubenv(values: ReadonlyMap<string, string>): string {
  let body = HEADER;
  for (const [key, value] of values) body += `${key}=${value}\n`;
  if (Buffer.byteLength(body) > BLOCK_SIZE) {
    throw new BootenvError('INTERNAL', 'GRUB environment block would exceed 1024 bytes');
  }
  return body + '#'.repeat(BLOCK_SIZE - Buffer.byteLength(body));
}
