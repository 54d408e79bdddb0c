// What README.md tells a user to run exists and is what CI runs: its test command is the one
// .ci/run runs, the demo's story is the integration test it names, every `npm run SCRIPT` is a
// script of package.json, and every script and file of this repository it names
// (`scripts/…`, `test/…`, `docs/…`, …) is there.
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const repository = new URL('../../', import.meta.url);
const readme = readFileSync(new URL('README.md', repository), 'utf8');
const scripts = Object.keys((JSON.parse(readFileSync(new URL('package.json', repository), 'utf8')) as { scripts: Record<string, string> }).scripts);

/** The shell commands of the ```sh block that follows `heading`. */
function commandsUnder(heading: string): string[] {
  const block = new RegExp(`^${heading}\\n[\\s\\S]*?\`\`\`sh\\n([\\s\\S]*?)\`\`\``, 'm').exec(readme)?.[1];
  if (block === undefined) throw new Error(`README.md has no sh block under "${heading}"`);
  return block.split('\n').map((line) => line.replace(/\s+#.*$/, '').trim()).filter(Boolean);
}

const npmRuns = [...new Set([...readme.matchAll(/\bnpm run ([\w:-]+)/g)].map((match) => match[1] as string))];
const files = [...new Set([...readme.matchAll(/`((?:\.ci|bench|debian|docs|fixtures|hooks|scripts|src|test)\/[^`\s]*)`/g)].map((match) => match[1] as string))];

describe('README.md', () => {
  it('gives the test command .ci/run runs, after installing the dependencies', () => {
    const ci = readFileSync(new URL('.ci/run', repository), 'utf8').split('\n').filter((line) => line !== '' && !line.startsWith('#'));
    expect(commandsUnder('## Run the tests')).toEqual(['npm ci && npm test']);
    expect(ci.slice(-2)).toEqual(['bash scripts/install-deps.sh', 'npm ci && npm test']);
  });

  it('tries it with scripts/demo.sh, which installs with npm ci and runs npm run demo', () => {
    expect(commandsUnder('## Try it \\(sandbox demo\\)')).toEqual(['bash scripts/demo.sh']);
    const demo = readFileSync(new URL('scripts/demo.sh', repository), 'utf8');
    expect(demo).toMatch(/^npm ci\b/m);
    expect(demo).toMatch(/^npm run demo$/m);
  });

  it('names the integration test that runs the demo story, as it is called', () => {
    const title = /^it\('([^']+)'/m.exec(readFileSync(new URL('test/integration/demo.test.ts', repository), 'utf8'))?.[1];
    expect(title).toBeDefined();
    expect(readme.replace(/\s+/g, ' ')).toContain(`"${title}" (\`test/integration/demo.test.ts\`)`);
  });

  it.each(npmRuns)('npm run %s is a script of package.json', (name) => {
    expect(scripts).toContain(name);
  });

  it.each(files)('names %s, which exists', (file) => {
    expect(existsSync(new URL(file, repository))).toBe(true);
  });
});
