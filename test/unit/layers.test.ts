// The house's one direction of dependencies, checked on the source itself:
// cli → be → {apt, btrfs, deb, dedupe, grub} → sys, errors.ts below all of them,
// nothing importing upwards or sideways between the middle layers, and no import cycle.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SOURCE = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../src');
const RANK: Record<string, number> = { cli: 3, be: 2, apt: 1, btrfs: 1, deb: 1, dedupe: 1, grub: 1, sys: 0, '.': -1 };

function sourceFiles(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(directory, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [full] : [];
  });
}

/** Relative imports of a file (value and type imports alike), as paths of .ts files under src/. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from|import)\s+'(\.[^']+)'/g)].map((match) =>
    path.resolve(path.dirname(file), (match[1] as string).replace(/\.js$/, '.ts')),
  );
}

const layerOf = (file: string) => path.dirname(path.relative(SOURCE, file)).split(path.sep)[0] as string;
const files = sourceFiles(SOURCE);

describe('source layers', () => {
  it('every directory of src/ has a rank', () => {
    expect(files.map(layerOf).filter((layer) => RANK[layer] === undefined)).toEqual([]);
  });

  it('imports point down, or stay within their own directory', () => {
    const wrong = files.flatMap((file) =>
      importsOf(file)
        .filter((target) => layerOf(target) !== layerOf(file) && (RANK[layerOf(target)] as number) >= (RANK[layerOf(file)] as number))
        .map((target) => `${path.relative(SOURCE, file)} → ${path.relative(SOURCE, target)}`),
    );
    expect(wrong).toEqual([]);
  });

  it('no import cycle', () => {
    const graph = new Map(files.map((file) => [file, importsOf(file).filter((target) => files.includes(target))]));
    const cycles: string[] = [];
    const done = new Set<string>();
    const visit = (file: string, trail: string[]) => {
      if (trail.includes(file)) {
        cycles.push([...trail.slice(trail.indexOf(file)), file].map((f) => path.relative(SOURCE, f)).join(' → '));
        return;
      }
      if (done.has(file)) return;
      for (const target of graph.get(file) ?? []) visit(target, [...trail, file]);
      done.add(file);
    };
    for (const file of files) visit(file, []);
    expect(cycles).toEqual([]);
  });
});
