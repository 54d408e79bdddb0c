// Bundles src/cli/bin.ts and its runtime dependencies into one CommonJS file,
// dist/beadm-bundle.js, run by dist/beadm.js (scripts/launcher.cjs: it compiles
// the bundle with a V8 code cache), for the Node.js of Debian 12 / Ubuntu 24.04 (>= 18.19), and
// compiles the FIDEDUPERANGE helper src/native/bootenv-dedupe.c into
// dist/bootenv-dedupe with $CC (default cc) and $CPPFLAGS $CFLAGS $LDFLAGS
// (default CFLAGS: -O2 -Wall -Wextra; dpkg-buildpackage exports its own).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

// ar-async calls the deprecated Buffer constructor; bundled outside node_modules, Node would
// print a DEP0005 warning on stderr (into apt's output). Give it the allocation it means.
const arAsyncBuffers = {
  name: 'ar-async-buffers',
  setup(builder) {
    builder.onLoad({ filter: /[\\/]ar-async[\\/]ar\.js$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      if (!source.includes('new Buffer(')) throw new Error(`${args.path}: no "new Buffer(" left to replace; check this plugin`);
      const prelude = "function bootenvBuffer(value, encoding) { return typeof value === 'number' ? Buffer.alloc(value) : Buffer.from(value, encoding); }\n";
      return { contents: prelude + source.replaceAll('new Buffer(', 'bootenvBuffer('), loader: 'js' };
    });
  },
};

const bundled = await build({
  entryPoints: ['src/cli/bin.ts'],
  outfile: 'dist/beadm-bundle.js',
  write: false,
  bundle: true,
  platform: 'node',
  target: 'node18.19',
  format: 'cjs',
  define: { BOOTENV_VERSION: JSON.stringify(version), 'import.meta.url': '__bootenv_import_meta_url' },
  inject: ['scripts/import-meta-url.js'],
  legalComments: 'none',
  logLevel: 'warning',
  plugins: [arAsyncBuffers],
});
// dist/beadm-bundle.js: the bundle; dist/beadm.js: the launcher (scripts/launcher.cjs) that runs it with V8's code cache.
const bundle = bundled.outputFiles[0].text;
const buildId = createHash('sha256').update(bundle).digest('hex').slice(0, 16);
mkdirSync('dist', { recursive: true });
writeFileSync('dist/beadm-bundle.js', bundle);
writeFileSync('dist/beadm.js', `#!/usr/bin/env node\n${readFileSync('scripts/launcher.cjs', 'utf8')}launch(${JSON.stringify(buildId)});\n`);
chmodSync('dist/beadm.js', 0o755);
// The repository is "type": "module"; the bundle is CommonJS wherever it is installed.
writeFileSync('dist/package.json', '{ "type": "commonjs" }\n');

const flags = (name, fallback = '') => (process.env[name] ?? fallback).split(/\s+/).filter(Boolean);
// The native helpers: bootenv-dedupe (FIDEDUPERANGE for the skip-unchanged pass), bootenv-one-shot
// (run by the initramfs to take a one-shot activation), bootenv-carry (applies a carry plan),
// bootenv-boot-carry (run by the initramfs to carry into the BE it boots), bootenv-changes (reads two
// subvolumes' trees for beadm diff).
for (const name of ['bootenv-dedupe', 'bootenv-one-shot', 'bootenv-carry', 'bootenv-boot-carry', 'bootenv-changes']) {
  execFileSync(
    process.env.CC ?? 'cc',
    [...flags('CPPFLAGS'), ...flags('CFLAGS', '-O2 -Wall -Wextra'), '-o', `dist/${name}`, `src/native/${name}.c`, ...flags('LDFLAGS')],
    { stdio: 'inherit' },
  );
}
