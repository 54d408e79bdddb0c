// Unit tests for beadm audit's output (src/cli/render.ts): the table, with the quota groups' columns
// when quotas are on.
import { describe, expect, it } from 'vitest';
import type { SpaceAudit } from '../../src/be/space.js';
import { renderAudit } from '../../src/cli/render.js';

const AUDIT: SpaceAudit = {
  name: 'upgraded',
  subvolume: '@bootenv/upgraded',
  origin: 'base',
  referencedBytes: 756_367_360,
  exclusiveBytes: 7_790_592,
  metadataReferencedBytes: 11_000_000,
  metadataExclusiveBytes: 7_389_184,
  sharedWithOriginBytes: 748_576_768,
  identicalUnsharedBytes: 0,
  freedByDestroyBytes: 7_790_592,
  quota: null,
};

describe('renderAudit', () => {
  it('aligns one BE per row; no quota columns without quotas', () => {
    expect(renderAudit([AUDIT, { ...AUDIT, name: 'debian-12', origin: null, sharedWithOriginBytes: null, identicalUnsharedBytes: null }])).toBe(
      [
        'BE         Origin  Referenced  Exclusive  Shared-origin  Identical-unshared  Freed-by-destroy',
        'upgraded   base    721M        7.4M       714M           0B                  7.4M',
        'debian-12  -       721M        7.4M       -              -                   7.4M',
        '',
      ].join('\n'),
    );
  });

  it('shows the quota groups beside the counted numbers and whether they agree', () => {
    const text = renderAudit([
      { ...AUDIT, quota: { referencedBytes: 756_367_360, exclusiveBytes: 7_790_592, agrees: true } },
      { ...AUDIT, name: 'stale', quota: { referencedBytes: 756_367_360, exclusiveBytes: 16_384, agrees: false } },
    ]);
    expect(text.split('\n')[0]).toMatch(/Freed-by-destroy  Quota-referenced  Quota-exclusive  Quota-agrees$/);
    expect(text.split('\n')[1]).toMatch(/721M +7\.4M +yes$/);
    expect(text.split('\n')[2]).toMatch(/721M +16K +NO$/);
  });
});
