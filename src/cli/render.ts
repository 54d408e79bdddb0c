/**
 * The one renderer: turns what a command returned into text for people
 * (aligned), for scripts (`-H`: no header, tab-separated, raw numbers) or one
 * JSON document (`--json`). Pure: returns strings, prints nothing.
 */
import type { BootEnvironment } from '../be/library.js';
import type { BootenvError } from '../errors.js';

export const LIST_COLUMNS = ['BE', 'Active', 'Mountpoint', 'Space', 'Created', 'Description'] as const;

export function formatBytes(bytes: number | null): string {
  if (bytes === null) return '-';
  const units = ['B', 'K', 'M', 'G', 'T', 'P'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value}B` : `${value < 10 ? value.toFixed(1) : Math.round(value)}${units[unit]}`;
}

function formatCreated(iso: string | null): string {
  if (iso === null) return '-';
  const date = new Date(iso);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** `beadm list`: aligned columns with a header. */
export function renderList(environments: readonly BootEnvironment[]): string {
  const rows = environments.map((be) => [
    be.name,
    be.active === '' ? '-' : be.active,
    be.mountpoint ?? '-',
    formatBytes(be.exclusiveBytes),
    formatCreated(be.created),
    be.description,
  ]);
  const all = [[...LIST_COLUMNS], ...rows];
  const widths = LIST_COLUMNS.map((_, column) => Math.max(...all.map((row) => (row[column] ?? '').length)));
  return all
    .map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0))).join('  ').trimEnd())
    .join('\n')
    .concat('\n');
}

/** `beadm list -H`: one BE per line, tab-separated, raw values, `-` for none. */
export function renderListScripted(environments: readonly BootEnvironment[]): string {
  return environments
    .map((be) =>
      [be.name, be.active === '' ? '-' : be.active, be.mountpoint ?? '-', be.exclusiveBytes ?? '-', be.created ?? '-', be.description.replace(/[\t\n]/g, ' ')].join('\t'),
    )
    .map((line) => `${line}\n`)
    .join('');
}

export function renderJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

export function renderError(error: BootenvError): string {
  return `beadm: ${error.message}\n${error.hint === undefined ? '' : `beadm: hint: ${error.hint}\n`}`;
}

export function renderErrorJson(error: BootenvError): string {
  return renderJson({ error: { code: error.code, exitStatus: error.exitStatus, message: error.message, hint: error.hint ?? null } });
}
