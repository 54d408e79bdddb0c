/**
 * The one renderer: turns what a command returned into text for people
 * (aligned), for scripts (`-H`: no header, tab-separated, raw numbers) or one
 * JSON document (`--json`). Pure: returns strings, prints nothing.
 */
import type { BootEnvironment } from '../be/library.js';
import type { SkipUnchangedReport } from '../be/skip-unchanged.js';
import type { SpaceAudit } from '../be/space.js';
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

/**
 * One line on the skip-unchanged pass (in apt's output and `beadm dedupe`):
 * files and bytes shared with the origin, what was left and why; a second
 * line when some pairs failed.
 */
export function renderSkipUnchanged(report: SkipUnchangedReport | { error: string }, prefix: string): string {
  if ('error' in report) return `${prefix}: skip-unchanged pass failed, the BE is complete but larger than it needs to be: ${report.error}\n`;
  const verb = report.dryRun ? 'would share' : 'share';
  const parts = [
    `${report.shared.files} files (${formatBytes(report.shared.bytes)}) identical to the previous BE's ${verb} its extents`,
    `${report.alreadyShared.files} were shared already`,
    `${report.inline.files} of at most ${report.inlineLimit} bytes are stored inline`,
  ];
  if (report.skippedPackages.length > 0) parts.push(`${report.skippedPackages.length} packages without md5sums or .deb skipped`);
  let text = `${prefix}: skip-unchanged: ${parts.join('; ')} (${report.seconds.toFixed(2)} s).\n`;
  if (report.errors.length > 0) {
    const first = report.errors[0] as { path: string; message: string };
    text += `${prefix}: skip-unchanged: ${report.errors.length} files could not be shared, e.g. ${first.path}: ${first.message}\n`;
  }
  return text;
}

const AUDIT_COLUMNS = ['BE', 'Origin', 'Referenced', 'Exclusive', 'Shared-origin', 'Identical-unshared', 'Freed-by-destroy'] as const;

/**
 * `beadm audit`: aligned columns; with quotas on, the quota groups' numbers in
 * two more columns and whether they agree with the counted ones (within 1 %).
 */
export function renderAudit(audits: readonly SpaceAudit[]): string {
  const quotas = audits.some((audit) => audit.quota !== null);
  const header = [...AUDIT_COLUMNS, ...(quotas ? ['Quota-referenced', 'Quota-exclusive', 'Quota-agrees'] : [])];
  const rows = audits.map((audit) => [
    audit.name,
    audit.origin ?? '-',
    formatBytes(audit.referencedBytes),
    formatBytes(audit.exclusiveBytes),
    formatBytes(audit.sharedWithOriginBytes),
    formatBytes(audit.identicalUnsharedBytes),
    formatBytes(audit.freedByDestroyBytes),
    ...(quotas
      ? [formatBytes(audit.quota?.referencedBytes ?? null), formatBytes(audit.quota?.exclusiveBytes ?? null), audit.quota === null ? '-' : audit.quota.agrees ? 'yes' : 'NO']
      : []),
  ]);
  const all = [header, ...rows];
  const widths = header.map((_, column) => Math.max(...all.map((row) => (row[column] ?? '').length)));
  return all.map((row) => row.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd()).join('\n').concat('\n');
}

/**
 * One frame of a progress bar for a terminal of `columns` columns: carriage
 * return, a bar, the steps done of all and the current step, cut or padded
 * to fill the line but its last column (so that the terminal never wraps).
 * `clearProgress` gives the text that erases it.
 */
export function renderProgress(progress: { done: number; total: number; step: string }, columns: number): string {
  const total = Math.max(progress.total, 1);
  const done = Math.min(Math.max(progress.done, 0), total);
  const barWidth = 20;
  const filled = Math.round((done / total) * barWidth);
  const text = `[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}] ${done}/${total} ${progress.step}`;
  const width = Math.max(columns - 1, 1);
  return `\r${text.length > width ? text.slice(0, width) : text.padEnd(width)}`;
}

/** Least time between two frames of a progress bar within one step. */
const PROGRESS_FRAME_MS = 100;

/** Whether a new frame is due: at once for a new step, else once `PROGRESS_FRAME_MS` have passed since the last one (`last`: none drawn yet when undefined). */
export function progressFrameDue(last: { step: string; at: number } | undefined, step: string, now: number): boolean {
  return last === undefined || last.step !== step || now - last.at >= PROGRESS_FRAME_MS;
}

export function clearProgress(columns: number): string {
  return `\r${' '.repeat(Math.max(columns - 1, 1))}\r`;
}
