// The carry helper's output, parsed strictly (src/sys/carry.ts): one outcome per operation, then
// "synced"; a failed sync, a short or unknown report is an error, never a success.
import { describe, expect, it } from 'vitest';
import { BootenvError } from '../../src/errors.js';
import { parseCarryOutput } from '../../src/sys/carry.js';

describe('parseCarryOutput', () => {
  it('reads ok, copied and error outcomes in order, then synced', () => {
    expect(parseCarryOutput('ok\ncopied 4096\nerror ELOOP open parent directory: Too many levels of symbolic links\nsynced\n', 3)).toEqual([
      { status: 'ok' },
      { status: 'copied', bytes: 4096 },
      { status: 'error', errno: 'ELOOP', message: 'open parent directory: Too many levels of symbolic links' },
    ]);
    expect(parseCarryOutput('synced\n', 0)).toEqual([]);
  });

  it.each([
    ['a failed sync', 'ok\nerror EIO syncfs: Input/output error\n', 1, 'COMMAND_FAILED'],
    ['no synced line (the helper died)', 'ok\n', 1, 'PARSE'],
    ['too few outcomes', 'ok\nsynced\n', 2, 'PARSE'],
    ['an unknown line', 'ok\nfine\nsynced\n', 2, 'PARSE'],
  ])('refuses %s', (_, output, count, code) => {
    let caught: unknown;
    try {
      parseCarryOutput(output, count);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(BootenvError);
    expect((caught as BootenvError).code).toBe(code);
  });
});
