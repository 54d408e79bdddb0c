// Bundles src/cli/bin.ts and its runtime dependencies into one CommonJS file,
// dist/beadm.js, for the Node.js of Debian 12 / Ubuntu 24.04 (>= 18.19).
import { build } from 'esbuild';
import { readFileSync, chmodSync, writeFileSync } from 'node:fs';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

await build({
  entryPoints: ['src/cli/bin.ts'],
  outfile: 'dist/beadm.js',
  bundle: true,
  platform: 'node',
  target: 'node18.19',
  format: 'cjs',
  banner: { js: '#!/usr/bin/env node' },
  define: { BOOTENV_VERSION: JSON.stringify(version), 'import.meta.url': '__bootenv_import_meta_url' },
  inject: ['scripts/import-meta-url.js'],
  legalComments: 'none',
  logLevel: 'warning',
});
chmodSync('dist/beadm.js', 0o755);
// The repository is "type": "module"; the bundle is CommonJS wherever it is installed.
writeFileSync('dist/package.json', '{ "type": "commonjs" }\n');
