// The one exit-code table (src/errors.ts) is documented the same in README.md and beadm(8).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../src/errors.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const manual = readFileSync(new URL('../../docs/beadm.8', import.meta.url), 'utf8');

describe('exit codes', () => {
  it.each(Object.entries(EXIT_CODES))('%s (%i) is in the README table and in beadm(8)', (code, status) => {
    expect(readme).toMatch(new RegExp(`^\\| ${status} \\| ${code} \\|`, 'm'));
    expect(manual).toMatch(new RegExp(`^\\.B ${status}\\n${code}:`, 'm'));
  });

  it('the statuses are distinct', () => {
    const statuses = Object.values(EXIT_CODES);
    expect(new Set(statuses).size).toBe(statuses.length);
  });
});
