// Test helpers shared by the unit tests: the BootenvError an action throws, and a temporary directory per file.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { BootenvError } from '../../src/errors.js';

/** Runs `action` and returns the BootenvError it throws; fails the test otherwise. */
export function bootenvErrorFrom(action: () => unknown): BootenvError {
  try {
    action();
  } catch (error) {
    if (error instanceof BootenvError) return error;
    throw error;
  }
  throw new Error('expected a BootenvError, but nothing was thrown');
}

/**
 * Makes a fresh directory before the tests of the calling suite and removes it
 * with its content after them. Returns the path, for use inside tests only.
 */
export function useTemporaryDirectory(prefix: string): () => string {
  let directory: string | undefined;
  beforeAll(() => {
    directory = mkdtempSync(path.join(tmpdir(), prefix));
  });
  afterAll(() => {
    if (directory !== undefined) rmSync(directory, { recursive: true, force: true });
  });
  return () => {
    if (directory === undefined) throw new Error('the temporary directory exists only while tests run');
    return directory;
  };
}
