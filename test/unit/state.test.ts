// Unit tests for src/be/state.ts: parsing and serializing @bootenv/.bootenv.json.
import { describe, expect, it } from 'vitest';
import { newState, parseState, serializeState, type BootenvState } from '../../src/be/state.js';
import { bootenvErrorFrom } from './helpers.js';

const STATE: BootenvState = {
  format: 1,
  installedRoot: '@',
  defaultUuid: '43d7addb-b4f7-1242-bd1d-664a1313f13f',
  environments: {
    '43d7addb-b4f7-1242-bd1d-664a1313f13f': {
      originUuid: 'fe9b8a45-e882-a443-b8d1-19c3c36c05a8',
      created: '2024-05-01T10:20:30.000Z',
      description: 'before upgrade to "trixie"\twith a tab',
      lastGoodBoot: { bootId: '6b20a848-2ee1-4884-8c5e-a3e4adee3afa', at: '2024-05-01T10:25:00.000Z' },
    },
    '01a76dbb-d773-1142-b2e7-b41b708478ae': { originUuid: null, created: '2024-05-02T08:00:00.000Z', description: '', pinned: true },
    '5b0a1c44-2f7e-7a4c-9d51-0e6b2f4e8a11': {
      originUuid: '43d7addb-b4f7-1242-bd1d-664a1313f13f',
      created: '2024-05-03T08:00:00.000Z',
      description: 'apt: install nginx',
      carry: {
        id: '0f3c5e1a-8d2b-4c6e-9a7f-1b2d3e4f5a6b',
        originUuid: '43d7addb-b4f7-1242-bd1d-664a1313f13f',
        mode: 'all',
        baseUuid: '9e8d7c6b-5a4f-3e2d-1c0b-a9f8e7d6c5b4',
        newBaseUuid: null,
        touchedFile: null,
        since: '2024-05-03T08:00:00.000Z',
      },
    },
  },
};
const CARRY = STATE.environments['5b0a1c44-2f7e-7a4c-9d51-0e6b2f4e8a11']?.carry;

describe('newState', () => {
  it('starts with no default BE and no environments', () => {
    expect(newState('@rootfs')).toEqual({ format: 1, installedRoot: '@rootfs', defaultUuid: null, environments: {} });
  });
});

describe('serializeState and parseState', () => {
  it.each([
    ['a fresh state', newState('@')],
    ['a state with BEs', STATE],
  ])('round-trip %s', (_, state) => {
    const text = serializeState(state);
    expect(text.endsWith('}\n')).toBe(true);
    expect(parseState(text)).toEqual(state);
    expect(serializeState(parseState(text))).toBe(text);
  });

  it('writes indented JSON, one key per line', () => {
    expect(serializeState(newState('@'))).toBe(
      '{\n  "format": 1,\n  "installedRoot": "@",\n  "defaultUuid": null,\n  "environments": {}\n}\n',
    );
  });
});

describe('parseState', () => {
  const valid = JSON.parse(serializeState(STATE)) as Record<string, unknown>;

  it.each([
    ['an empty file', ''],
    ['truncated JSON', serializeState(STATE).slice(0, 40)],
    ['not JSON', 'format=1\n'],
  ])('throws PARSE, keeping the cause, for %s', (_, text) => {
    const error = bootenvErrorFrom(() => parseState(text));
    expect(error.code).toBe('PARSE');
    expect(error.message).toMatch(/not valid JSON/);
    expect(error.cause).toBeInstanceOf(SyntaxError);
  });

  it.each([
    ['null', null],
    ['an array', []],
    ['a string', 'state'],
    ['a number', 1],
    ['format 2', { ...valid, format: 2 }],
    ['format as a string', { ...valid, format: '1' }],
    ['no format', { ...valid, format: undefined }],
    ['no installedRoot', { ...valid, installedRoot: undefined }],
    ['installedRoot not a string', { ...valid, installedRoot: 5 }],
    ['no defaultUuid', { ...valid, defaultUuid: undefined }],
    ['defaultUuid a number', { ...valid, defaultUuid: 258 }],
    ['environments null', { ...valid, environments: null }],
    ['environments a string', { ...valid, environments: 'b1' }],
    ['a record that is null', { ...valid, environments: { u: null } }],
    ['a record without created', { ...valid, environments: { u: { originUuid: null, description: '' } } }],
    ['a record with a numeric description', { ...valid, environments: { u: { originUuid: null, created: 'x', description: 1 } } }],
    ['a last good boot without a boot id', { ...valid, environments: { u: { originUuid: null, created: 'x', description: '', lastGoodBoot: { at: 'x' } } } }],
    ['a last good boot that is a string', { ...valid, environments: { u: { originUuid: null, created: 'x', description: '', lastGoodBoot: 'yes' } } }],
    ['pinned false (absent when not pinned)', { ...valid, environments: { u: { originUuid: null, created: 'x', description: '', pinned: false } } }],
    ['pinned as a string', { ...valid, environments: { u: { originUuid: null, created: 'x', description: '', pinned: 'yes' } } }],
    ['a carry of another mode', { ...valid, environments: { u: { originUuid: null, created: 'x', description: '', carry: { ...CARRY, mode: 'some' } } } }],
    ['a carry whose id is a path', { ...valid, environments: { u: { originUuid: null, created: 'x', description: '', carry: { ...CARRY, id: '../../etc' } } } }],
    ['a carry without base', { ...valid, environments: { u: { originUuid: null, created: 'x', description: '', carry: { ...CARRY, baseUuid: undefined } } } }],
    ['a carry swap without its BE', { ...valid, environments: { u: { originUuid: null, created: 'x', description: '', carry: { ...CARRY, exchange: { workUuid: 'w', final: true } } } } }],
  ])('throws PARSE for %s', (_, value) => {
    expect(bootenvErrorFrom(() => parseState(JSON.stringify(value))).code).toBe('PARSE');
  });
});
