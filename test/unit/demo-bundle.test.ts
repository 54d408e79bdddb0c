// The demo (test/demo.ts) runs under plain node, where importing vitest throws "Vitest failed
// to access its internal state"; the integration test that runs its story (demo.test.ts) runs
// inside vitest and cannot see that. So: its bundle, made as package.json's demo script makes
// it (esbuild --bundle --platform=node --format=esm --packages=external), imports no vitest.
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { expect, it } from 'vitest';

it('the demo bundle imports nothing from vitest', async () => {
  const result = await build({
    entryPoints: [fileURLToPath(new URL('../demo.ts', import.meta.url))],
    bundle: true,
    platform: 'node',
    format: 'esm',
    packages: 'external',
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  const external = Object.values(result.metafile.outputs).flatMap((output) => output.imports.filter((entry) => entry.external).map((entry) => entry.path));
  // The packages it does import are seen: execa (the harness spawns with it).
  expect(external).toContain('execa');
  expect(external.filter((name) => /^(@vitest\/|vitest($|\/))/.test(name))).toEqual([]);
});
