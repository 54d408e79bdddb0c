// Unit tests for src/be/os-release.ts on the os-release files of Debian 12 and 13 (captured
// from the debootstrapped bases the integration tests use) and on the shapes os-release(5) allows.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseOsRelease } from '../../src/be/os-release.js';

const captured = (name: string) => readFileSync(new URL(`../fixtures-captured/os-release.${name}.txt`, import.meta.url), 'utf8');

describe('parseOsRelease', () => {
  it.each([
    ['debian-12', { prettyName: 'Debian GNU/Linux 12 (bookworm)', id: 'debian', versionId: '12' }],
    ['debian-13', { prettyName: 'Debian GNU/Linux 13 (trixie)', id: 'debian', versionId: '13' }],
  ])('%s as shipped', (name, expected) => {
    expect(parseOsRelease(captured(name))).toEqual(expected);
  });

  it.each([
    ['unquoted values', 'ID=ubuntu\nVERSION_ID=24.04\n', { prettyName: undefined, id: 'ubuntu', versionId: '24.04' }],
    ['a field name inside another is not that field', 'XID=no\nID_LIKE=debian\n', { prettyName: undefined, id: undefined, versionId: undefined }],
    ['mismatched quotes are no value', 'PRETTY_NAME="Broken\n', { prettyName: undefined, id: undefined, versionId: undefined }],
    ['empty text', '', { prettyName: undefined, id: undefined, versionId: undefined }],
  ])('%s', (_, text, expected) => {
    expect(parseOsRelease(text)).toEqual(expected);
  });
});
