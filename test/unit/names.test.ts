// Unit tests for src/be/names.ts: which BE names are allowed and how free text becomes one.
import { describe, expect, it } from 'vitest';
import { MAX_NAME_LENGTH, assertValidName, nameProblem, sanitizeName } from '../../src/be/names.js';
import { EXIT_CODES } from '../../src/errors.js';
import { bootenvErrorFrom } from './helpers.js';

const VALID = ['b2', 'B2', '2024', 'debian-12', 'ubuntu-24.04', 'a_b+c', 'x.', 'a'.repeat(MAX_NAME_LENGTH)];

// Each would break a path under @bootenv/, a GRUB menu entry id, an fstab option or a shell.
const HOSTILE = [
  ['empty', ''],
  ['dot', '.'],
  ['dot-dot', '..'],
  ['a slash', 'a/b'],
  ['a space', 'a b'],
  ['a single quote', "it's"],
  ['a double quote', 'a"b'],
  ['command substitution', '$(reboot)'],
  ['backticks', '`x`'],
  ['a leading dash (an option)', '-rf'],
  ['a leading dot (hidden)', '.hidden'],
  ['a leading underscore', '_x'],
  ['65 characters', 'a'.repeat(MAX_NAME_LENGTH + 1)],
  ['300 characters', 'a'.repeat(300)],
  ['a comma (splits fstab options)', 'a,b'],
  ['an equals sign (fstab option value)', 'a=b'],
  ['a non-ASCII letter', 'é'],
  ['the replacement character of non-UTF-8 argv', '\uFFFD'],
  ['a newline', 'a\nb'],
  ['a trailing newline', 'ab\n'],
  ['a semicolon', 'a;b'],
  ['a tab', 'a\tb'],
  ['a NUL', 'a\0b'],
  ['a GRUB variable', '${root}'],
] as const;

describe('nameProblem and assertValidName', () => {
  it.each(VALID)('accept %j', (name) => {
    expect(nameProblem(name)).toBeUndefined();
    expect(() => assertValidName(name)).not.toThrow();
  });

  it.each(HOSTILE)('reject %s with INVALID_NAME', (_, name) => {
    expect(nameProblem(name)).toEqual(expect.any(String));
    const error = bootenvErrorFrom(() => assertValidName(name));
    expect(error.code).toBe('INVALID_NAME');
    expect(error.exitStatus).toBe(EXIT_CODES.INVALID_NAME);
    expect(error.message).toContain(JSON.stringify(name));
  });

  it.each([
    ['', /empty/],
    ['a'.repeat(300), /longer than 64/],
    ['-rf', /starts with a letter or digit/],
  ])('explain why %j is rejected', (name, reason) => {
    expect(nameProblem(name)).toMatch(reason);
  });
});

describe('sanitizeName', () => {
  it.each([
    ['Ubuntu 24.04', 'Ubuntu-24.04'],
    ['Debian GNU/Linux 12 (bookworm)', 'Debian-GNU-Linux-12-bookworm-'],
    ['  before upgrade', 'before-upgrade'],
    ['--rf', 'rf'],
    ['.hidden', 'hidden'],
    ["it's $(reboot)", 'it-s-reboot-'],
    ['café au lait', 'caf-au-lait'],
    ['a,b=c', 'a-b-c'],
    ['a'.repeat(300), 'a'.repeat(MAX_NAME_LENGTH)],
    ['b2', 'b2'],
  ])('turns %j into %j', (text, name) => {
    expect(sanitizeName(text)).toBe(name);
    expect(nameProblem(name)).toBeUndefined();
  });

  it.each(['', '...', '---', 'éé', '\uFFFD', ' \n\t'])('gives undefined for %j, which holds no usable character', (text) => {
    expect(sanitizeName(text)).toBeUndefined();
  });
});
