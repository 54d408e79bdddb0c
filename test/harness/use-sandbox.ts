/**
 * The vitest side of sandboxes: hooks that give a describe block (or a file)
 * its own Sandbox. Kept apart from sandbox.ts so that what runs outside vitest
 * (the demo, the benchmarks) never imports vitest.
 */
import { afterAll, beforeAll } from 'vitest';
import { Sandbox, type Layout } from './sandbox.js';

/**
 * Gives the enclosing describe block (or file) a sandbox: created in beforeAll,
 * closed and checked for leftovers in afterAll, whatever happened in between.
 * Returns a getter for the tests.
 */
export function useSandbox(tarball: () => string, layout: Layout, options: { withBootenv?: boolean; sizeGiB?: number } = {}): () => Sandbox {
  let sandbox: Sandbox | undefined;
  beforeAll(async () => {
    sandbox = await Sandbox.create(tarball(), layout, options);
  });
  afterAll(async () => {
    if (sandbox === undefined) return;
    await sandbox.close();
    await sandbox.assertNothingLeft();
  });
  return () => {
    if (sandbox === undefined) throw new Error('the sandbox was not created (see the beforeAll error)');
    return sandbox;
  };
}
