// Unit tests for src/cli/render.ts: `beadm list` as aligned text and as -H tab-separated lines, and byte sizes.
import { describe, expect, it } from 'vitest';
import type { BootEnvironment } from '../../src/be/library.js';
import { LIST_COLUMNS, formatBytes, renderList, renderListScripted } from '../../src/cli/render.js';

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
  it('writes one tab-separated line of 6 raw fields per BE, no header', () => {
    expect(renderListScripted(ENVIRONMENTS)).toBe(
      [
        `b1\tNR\t/\t3162112\t${CREATED}\tinstalled\n`,
        `before-upgrade\tT\t/tmp/be_mount.x1\t16384\t${CREATED}\tbefore apt upgrade\n`,
        'old\t-\t-\t-\t-\t\n',
      ].join(''),
    );
  });

  it.each([
    ['a tab', 'a\tb', 'a b'],
    ['a newline', 'line 1\nline 2', 'line 1 line 2'],
    ['both', '\ta\n', ' a '],
    ['nothing special', 'before upgrade', 'before upgrade'],
  ])('keeps 6 fields on one line when the description holds %s', (_, description, shown) => {
    const output = renderListScripted([be('b1', { description })]);
    const lines = output.split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toBe('');
    const fields = (lines[0] ?? '').split('\t');
    expect(fields).toHaveLength(6);
    expect(fields[5]).toBe(shown);
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
