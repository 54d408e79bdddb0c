// Unit tests for the free-space guard's pure parts (src/be/space-guard.ts) and the Installed-Size
// it reads from a .deb's control file (src/deb/reader.ts).
import { describe, expect, it } from 'vitest';
import { describeBytes, estimateWriteBytes, floorBytes, guardOff, TRANSACTION_MARGIN_BYTES } from '../../src/be/space-guard.js';
import { installedSizeBytes } from '../../src/deb/reader.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

describe('estimateWriteBytes', () => {
  it.each([
    ['nothing unpacked: the margin alone', [], TRANSACTION_MARGIN_BYTES],
    ['Installed-Size of each package', [{ installedBytes: 10 * MiB, debBytes: 3 * MiB }, { installedBytes: 1 * MiB, debBytes: MiB / 2 }], 11 * MiB + TRANSACTION_MARGIN_BYTES],
    ['at least the .deb size', [{ installedBytes: 1 * MiB, debBytes: 4 * MiB }], 4 * MiB + TRANSACTION_MARGIN_BYTES],
    ['no Installed-Size: the .deb size', [{ installedBytes: null, debBytes: 2 * MiB }], 2 * MiB + TRANSACTION_MARGIN_BYTES],
  ])('%s', (_, debs, expected) => {
    expect(estimateWriteBytes(debs)).toBe(expected);
  });
});

describe('floorBytes and guardOff', () => {
  it.each([
    ['the default: 5% of 100 GiB', { percent: 5, bytes: 512 * MiB }, 100 * GiB, 5 * GiB],
    ['the default on a small filesystem: 512 MiB', { percent: 5, bytes: 512 * MiB }, 2 * GiB, 512 * MiB],
    ['a share alone', { percent: 2.5, bytes: 0 }, 4 * GiB, 0.1 * GiB],
    ['bytes alone', { percent: 0, bytes: GiB }, 100 * GiB, GiB],
    ['off', { percent: 0, bytes: 0 }, 100 * GiB, 0],
  ])('%s', (_, minFree, size, expected) => {
    expect(floorBytes(minFree, size)).toBe(Math.ceil(expected));
    expect(guardOff(minFree)).toBe(expected === 0);
  });
});

describe('installedSizeBytes', () => {
  it.each([
    ['Package: a\nVersion: 1\nInstalled-Size: 123\nDescription: x\n', 123 * 1024],
    ['Package: a\ninstalled-size:  7 \n', 7 * 1024],
    ['Package: a\nVersion: 1\n', null],
    ['Package: a\nInstalled-Size: many\n', null],
    ['Package: a\nDescription: x\n Installed-Size: 5\n', null],
  ])('%j → %s', (control, expected) => {
    expect(installedSizeBytes(control)).toBe(expected);
  });
});

describe('describeBytes', () => {
  it.each([
    [512, '512 B'],
    [1536, '1.5 KiB'],
    [300 * MiB, '300.0 MiB'],
    [5 * GiB, '5.0 GiB'],
  ])('%i → %s', (bytes, text) => {
    expect(describeBytes(bytes)).toBe(text);
  });
});
