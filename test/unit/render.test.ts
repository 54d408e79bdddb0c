// Unit tests for src/cli/render.ts: `beadm list` as aligned text and as -H lines (illumos beadm's format), and byte sizes.
import { describe, expect, it } from 'vitest';
import type { BootEnvironment } from '../../src/be/library.js';
import type { CarryReport } from '../../src/be/carry.js';
import type { PruneResult } from '../../src/be/prune.js';
import { LIST_COLUMNS, formatBytes, renderActivationCarry, renderBootCarry, renderCarry, renderList, renderListScripted, renderPrune, renderAutoPrune } from '../../src/cli/render.js';

// Local time, so the expected "Created" text does not depend on the test machine's time zone.
const CREATED = new Date(2024, 4, 1, 9, 5).toISOString();

function be(name: string, fields: Partial<BootEnvironment> = {}): BootEnvironment {
  return {
    name,
    subvolume: `@bootenv/${name}`,
    uuid: '43d7addb-b4f7-1242-bd1d-664a1313f13f',
    subvolumeId: 258,
    active: '',
    mountpoint: null,
    exclusiveBytes: null,
    referencedBytes: null,
    created: CREATED,
    description: '',
    origin: null,
    kernel: '6.1.0-9-amd64',
    bootedSuccessfully: true,
    pinned: false,
    carry: null,
    lastCarry: null,
    ...fields,
  };
}

const ENVIRONMENTS = [
  be('b1', { active: 'NR', mountpoint: '/', exclusiveBytes: 3162112, description: 'installed' }),
  be('before-upgrade', { active: 'T', mountpoint: '/tmp/be_mount.x1', exclusiveBytes: 16384, description: 'before apt upgrade' }),
  be('old', { created: null }),
];

describe('formatBytes', () => {
  it.each<[number | null, string]>([
    [null, '-'],
    [0, '0B'],
    [1023, '1023B'],
    [1024, '1.0K'],
    [1536, '1.5K'],
    [10 * 1024, '10K'],
    [16384, '16K'],
    [3162112, '3.0M'],
    [5 * 1024 ** 3, '5.0G'],
    [300 * 1024 ** 4, '300T'],
    [1024 ** 5, '1.0P'],
    [2 * 1024 ** 6, '2048P'],
  ])('%j → %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe('renderListScripted (-H)', () => {
  const epoch = String(Math.floor(Date.parse(CREATED) / 1000));
  const uuid = '43d7addb-b4f7-1242-bd1d-664a1313f13f';

  it("writes illumos beadm's line per BE, no header: name;uuid;active;mountpoint;space;policy;created", () => {
    expect(renderListScripted(ENVIRONMENTS)).toBe(
      [
        `b1;${uuid};NR;/;3162112;static;${epoch}\n`,
        `before-upgrade;${uuid};T;/tmp/be_mount.x1;16384;static;${epoch}\n`,
        `old;${uuid};;;;static;\n`,
      ].join(''),
    );
  });

  it('is what Ansible community.general.beadm reads on Linux: split on ";", R in field 2 when activated, field 3 set when mounted', () => {
    const lines = renderListScripted(ENVIRONMENTS).trimEnd().split('\n').map((line) => line.split(';'));
    expect(lines.map((fields) => fields.length)).toEqual([7, 7, 7]);
    expect(lines.map((fields) => [fields[0], fields[2]?.includes('R'), Boolean(fields[3])])).toEqual([
      ['b1', true, true],
      ['before-upgrade', false, true],
      ['old', false, false],
    ]);
  });

  it('leaves descriptions out, whatever they hold', () => {
    const output = renderListScripted([be('b1', { description: 'a;b\tc\nd' })]);
    expect(output).toBe(`b1;${uuid};;;;static;${epoch}\n`);
  });

  it('writes nothing when there are no BEs', () => {
    expect(renderListScripted([])).toBe('');
  });
});

describe('renderList', () => {
  it('aligns the columns under the header BE Active Mountpoint Space Created Description', () => {
    expect(renderList(ENVIRONMENTS)).toBe(
      [
        'BE              Active  Mountpoint        Space  Created           Description',
        'b1              NR      /                 3.0M   2024-05-01 09:05  installed',
        'before-upgrade  T       /tmp/be_mount.x1  16K    2024-05-01 09:05  before apt upgrade',
        'old             -       -                 -      -',
        '',
      ].join('\n'),
    );
  });

  it('writes only the header when there are no BEs', () => {
    expect(renderList([])).toBe(`${LIST_COLUMNS.join('  ')}\n`);
  });

  it.each(ENVIRONMENTS.map((environment) => [environment.name, environment] as const))(
    'starts every column of %s where its header starts',
    (_, environment) => {
      const [header, row] = renderList([environment]).split('\n') as [string, string];
      const starts = LIST_COLUMNS.map((column) => header.indexOf(column));
      // An empty last cell is trimmed away with the trailing blanks.
      for (const start of starts.slice(1).filter((column) => column < row.length)) {
        expect(row[start - 1]).toBe(' ');
        expect(row[start]).not.toBe(' ');
      }
    },
  );
});

describe('renderCarry and renderBootCarry', () => {
  const report: CarryReport = {
    name: 'apt-1',
    pending: true,
    origin: 'debian-12',
    follow: false,
    mode: 'all',
    since: '2026-12-01T10:00:00.000Z',
    dryRun: false,
    final: true,
    changes: { created: 3, modified: 2, removed: 1 },
    carriedBytes: 3 * 1024 * 1024,
    copiedBytes: 0,
    conflicts: [
      { path: '/etc/app.conf', kind: 'changed-both', savedAs: '/etc/app.conf.bootenv-origin' },
      { path: '/srv/gone', kind: 'removed-in-origin', savedAs: null },
    ],
    accounts: { added: ['passwd:alice'], changed: [], removed: [], clashes: [{ file: 'group', name: 'svc', reason: 'gid 1000 is _x\'s in the new boot environment' }] },
    skipped: { packageState: 4, excluded: 0 },
    warnings: [],
    failed: [{ path: '/srv/frozen', message: 'copy: rename into place: Operation not permitted' }],
    seconds: 1.234,
    phaseSeconds: { snapshots: 0, changes: 0, plan: 0, apply: 0, swap: 0 },
  };

  it('one line on what was carried, then each conflict, clash and failure', () => {
    expect(renderCarry(report, 'bootenv').split('\n')).toEqual([
      'bootenv: carried into apt-1 what debian-12 changed since 2026-12-01T10:00:00.000Z: 3 created, 2 changed, 1 removed (3.0M of files, shared; 0B written); 3 conflicts; 4 changes of package state and 0 excluded left out (1.23 s).',
      "bootenv: conflict: /etc/app.conf: changed in both: apt-1 keeps its version; debian-12's is saved as /etc/app.conf.bootenv-origin",
      'bootenv: conflict: /srv/gone: removed in debian-12, changed in apt-1: apt-1 keeps its version',
      "bootenv: conflict: /etc/group: svc: gid 1000 is _x's in the new boot environment",
      'bootenv: NOT CARRIED: /srv/frozen: copy: rename into place: Operation not permitted (it is still in debian-12)',
      '',
    ]);
  });

  it('a dry run says would; a carry on demand that the BE stays pending; nothing pending says so', () => {
    expect(renderCarry({ ...report, dryRun: true, conflicts: [], accounts: { ...report.accounts, clashes: [] }, failed: [] })).toMatch(/^beadm: would carry into apt-1 .*\(3\.0M of files, to be shared\); 0 conflicts; 4 changes/);
    expect(renderCarry({ ...report, final: false, conflicts: [], accounts: { ...report.accounts, clashes: [] }, failed: [] })).toMatch(/\nbeadm: apt-1 stays pending: what debian-12 changes from now on is carried when apt-1 boots\.\n$/);
    expect(renderCarry({ ...report, pending: false })).toBe('beadm: apt-1 has no carry pending: nothing to carry.\n');
  });

  it('at boot (into the journal): the carry once, and loudly a carry that did not run', () => {
    const summary = { at: 'x', origin: 'debian-12', final: true, changes: report.changes, carriedBytes: 1024, conflicts: report.conflicts.slice(0, 1), conflictCount: 3, accountClashes: [], failed: [], warnings: [], reported: true };
    expect(renderBootCarry('apt-1', summary, null)).toBe(
      'Carried into apt-1 what debian-12 changed until this boot: 3 created, 2 changed, 1 removed (1.0K); 3 conflicts.\n' +
        "bootenv: conflict: /etc/app.conf: changed in both: apt-1 keeps its version; debian-12's is saved as /etc/app.conf.bootenv-origin\n" +
        'bootenv: … and 2 more conflicts (files saved as *.bootenv-origin).\n',
    );
    expect(renderBootCarry('apt-1', null, { origin: 'debian-12', since: '2026-12-01T10:00:00.000Z' })).toMatch(/^WARNING: apt-1 booted with a carry pending from debian-12: what debian-12 changed since 2026-12-01T10:00:00\.000Z was NOT carried into it/);
  });
});

describe('renderActivationCarry', () => {
  it('says what a rollback carries and what it does not; nothing without a carry', () => {
    expect(renderActivationCarry({ name: 'debian-12', carry: null })).toBe('');
    expect(renderActivationCarry({ name: 'debian-12', carry: { origin: 'apt-1', mode: 'data', since: 'x' } })).toBe(
      "\nAt that boot it takes from apt-1 its data (files no package owns, outside /etc, /usr and /boot); debian-12's packages and /etc stay its own: what apt-1 changed there (packages, configuration, users) is not carried.",
    );
    expect(renderActivationCarry({ name: 'apt-2', carry: { origin: 'debian-12', mode: 'all', since: 'x' } })).toBe('\nAt that boot it takes from debian-12 what it changed (all but package state).');
  });
});

describe('renderList of a pinned BE', () => {
  it('starts its description with (pinned); -H is unchanged by it', () => {
    const environments = [be('b1', { pinned: true, description: 'known good' }), be('b2', { pinned: true })];
    expect(renderList(environments).split('\n').slice(1, 3).map((line) => line.replace(/^.*09:05  /, ''))).toEqual(['(pinned) known good', '(pinned)']);
    expect(renderListScripted(environments).split('\n')[0]?.split(';').slice(0, 6)).toEqual(['b1', '43d7addb-b4f7-1242-bd1d-664a1313f13f', '', '', '', 'static']);
  });
});

describe('renderPrune', () => {
  const result: PruneResult = {
    dryRun: true,
    keep: 2,
    keepDaily: 0,
    keepWeekly: 4,
    destroyed: [
      { name: 'apt-20240501-1', subvolume: '@bootenv/apt-20240501-1', created: CREATED, freedByDestroyBytes: 3162112 },
      { name: 'b2', subvolume: '@bootenv/b2', created: CREATED, freedByDestroyBytes: 16384 },
    ],
    freedBytes: 5 * 1024 ** 2,
    kept: [
      { name: 'b9', reasons: ['newest', 'weekly'] },
      { name: 'debian-12', reasons: ['running', 'default', 'last-good'] },
      { name: 'old', reasons: ['pinned'] },
    ],
  };

  it('a dry run: what would go, what each frees alone, the total, and why each other BE stays', () => {
    expect(renderPrune(result)).toBe(
      [
        'Would destroy 2 boot environments, freeing 5.0M (keep = 2, keep-daily = 0, keep-weekly = 4):',
        '  apt-20240501-1  made 2024-05-01 09:05  3.0M alone',
        '  b2              made 2024-05-01 09:05  16K alone',
        'Kept:',
        '  b9         among the newest 2, the newest of its week (keep-weekly = 4)',
        '  debian-12  running now, boots by default, the last BE that booted successfully',
        '  old        pinned',
        '',
      ].join('\n'),
    );
  });

  it('a prune says what it destroyed', () => {
    expect(renderPrune({ ...result, dryRun: false, destroyed: result.destroyed.slice(0, 1) }).split('\n')[0]).toBe('Destroyed 1 boot environment, freeing 5.0M (keep = 2, keep-daily = 0, keep-weekly = 4):');
  });

  it('the prune after an apt run: one line when it destroyed something, nothing otherwise', () => {
    expect(renderAutoPrune(result)).toBe('bootenv: pruned 2 boot environments (apt-20240501-1, b2), freeing 5.0M (keep = 2, keep-daily = 0, keep-weekly = 4; auto-prune in bootenv.conf).\n');
    expect(renderAutoPrune({ ...result, destroyed: [], freedBytes: 0 })).toBe('');
  });

  it('the prune after an apt run does not measure what it frees, and says nothing of it', () => {
    const unmeasured = { ...result, dryRun: false, destroyed: result.destroyed.map((be) => ({ ...be, freedByDestroyBytes: null })), freedBytes: null };
    expect(renderAutoPrune(unmeasured)).toBe('bootenv: pruned 2 boot environments (apt-20240501-1, b2) (keep = 2, keep-daily = 0, keep-weekly = 4; auto-prune in bootenv.conf).\n');
    expect(renderPrune({ ...unmeasured, kept: [] }).split('\n').slice(0, 2)).toEqual(['Destroyed 2 boot environments (keep = 2, keep-daily = 0, keep-weekly = 4):', expect.stringMatching(/^  apt-20240501-1 +made \S+ \S+$/)]);
  });

  it('nothing to prune', () => {
    expect(renderPrune({ ...result, destroyed: [], freedBytes: 0, kept: [] })).toBe('Nothing to prune (keep = 2, keep-daily = 0, keep-weekly = 4).\n');
  });
});
