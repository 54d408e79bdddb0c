/**
 * The one renderer: turns what a command returned into text for people
 * (aligned), for scripts (`-H`: no header, tab-separated, raw numbers) or one
 * JSON document (`--json`). Pure: returns strings, prints nothing.
 */
import type { CarryReport } from '../be/carry.js';
import type { BootEnvironment } from '../be/library.js';
import type { DiffReport } from '../be/diff-plan.js';
import type { BootEnvironmentStory } from '../be/show.js';
import type { CarrySummary, SharedSubvolume } from '../be/state.js';
import type { KeepReason, RetentionPolicy } from '../be/prune-plan.js';
import type { PruneResult } from '../be/prune.js';
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

/** `beadm list`: aligned columns with a header; a pinned BE's description starts with "(pinned)" (-H and --json keep their fields: --json has `pinned`). */
export function renderList(environments: readonly BootEnvironment[]): string {
  const rows = environments.map((be) => [
    be.name,
    be.active === '' ? '-' : be.active,
    be.mountpoint ?? '-',
    formatBytes(be.exclusiveBytes),
    formatCreated(be.created),
    be.pinned ? `(pinned)${be.description === '' ? '' : ` ${be.description}`}` : be.description,
  ]);
  const all = [[...LIST_COLUMNS], ...rows];
  const widths = LIST_COLUMNS.map((_, column) => Math.max(...all.map((row) => (row[column] ?? '').length)));
  return all
    .map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0))).join('  ').trimEnd())
    .join('\n')
    .concat('\n');
}

/**
 * `beadm list -H`: one BE a line, as illumos beadm prints it, so that scripts
 * written for it (Ansible's community.general.beadm) read it unchanged:
 * `name;uuid;active;mountpoint;space;policy;created`. Active flags as in the
 * table (empty for none), the mountpoint empty when not mounted (`/` for the
 * running BE), space the exclusive bytes (empty when unknown: quotas off),
 * policy always `static`, created in seconds since the epoch (empty when
 * unknown). Names hold no `;`; descriptions are left out (list --json has them).
 */
export function renderListScripted(environments: readonly BootEnvironment[]): string {
  return environments
    .map((be) => {
      const created = be.created === null ? NaN : Date.parse(be.created);
      return [be.name, be.uuid, be.active, be.mountpoint ?? '', be.exclusiveBytes ?? '', 'static', Number.isNaN(created) ? '' : String(Math.floor(created / 1000))].join(';');
    })
    .map((line) => `${line}\n`)
    .join('');
}

function keepReasonText(reason: KeepReason, policy: RetentionPolicy): string {
  switch (reason) {
    case 'running':
      return 'running now';
    case 'default':
      return 'boots by default';
    case 'one-shot':
      return 'boots next (one-shot)';
    case 'pinned':
      return 'pinned';
    case 'last-good':
      return 'the last BE that booted successfully';
    case 'carry-origin':
      return "another BE's pending carry reads from it";
    case 'mounted':
      return 'mounted';
    case 'newest':
      return `among the newest ${policy.keep}`;
    case 'daily':
      return `the newest of its day (keep-daily = ${policy.keepDaily})`;
    case 'weekly':
      return `the newest of its week (keep-weekly = ${policy.keepWeekly})`;
    case 'unknown-age':
      return 'no record of when it was made';
  }
}

/** Rows of two or more cells, aligned: every cell but the last padded to its column's width, after `indent`. */
function alignedRows(rows: readonly string[][], indent: string): string {
  const widths = rows.reduce<number[]>((found, row) => row.map((cell, column) => Math.max(found[column] ?? 0, cell.length)), []);
  return rows.map((row) => `${indent}${row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0))).join('  ')}\n`).join('');
}

/** `beadm prune [--dry-run]`: what went (or would go) with what each frees, the total, and why each other BE stays. */
export function renderPrune(result: PruneResult): string {
  const count = result.destroyed.length;
  const environments = `${count} boot environment${count === 1 ? '' : 's'}`;
  const policy = `keep = ${result.keep}, keep-daily = ${result.keepDaily}, keep-weekly = ${result.keepWeekly}`;
  const head =
    count === 0
      ? `Nothing to prune (${policy}).\n`
      : `${result.dryRun ? 'Would destroy' : 'Destroyed'} ${environments}${result.freedBytes === null ? '' : `, freeing ${formatBytes(result.freedBytes)}`} (${policy}):\n` +
        alignedRows(result.destroyed.map((be) => [be.name, `made ${formatCreated(be.created)}`, ...(be.freedByDestroyBytes === null ? [] : [`${formatBytes(be.freedByDestroyBytes)} alone`])]), '  ');
  const kept = result.kept.length === 0 ? '' : `Kept:\n${alignedRows(result.kept.map((be) => [be.name, be.reasons.map((reason) => keepReasonText(reason, result)).join(', ')]), '  ')}`;
  return head + kept;
}

/** The prune at the end of an apt run (auto-prune): one line when it destroyed something, else nothing. */
export function renderAutoPrune(result: PruneResult): string {
  const count = result.destroyed.length;
  if (count === 0) return '';
  const names = result.destroyed.map(({ name }) => name).join(', ');
  const freeing = result.freedBytes === null ? '' : `, freeing ${formatBytes(result.freedBytes)}`;
  return `bootenv: pruned ${count} boot environment${count === 1 ? '' : 's'} (${names})${freeing} (keep = ${result.keep}, keep-daily = ${result.keepDaily}, keep-weekly = ${result.keepWeekly}; auto-prune in bootenv.conf).\n`;
}

/** `beadm share`: one line per shared path (path, subvolume, mounted now or not); the ones just shared said first. */
export function renderShared(shared: ReadonlyArray<SharedSubvolume & { mounted?: boolean }>, added: readonly string[]): string {
  const said = added.map((sharePath) => {
    const entry = shared.find((candidate) => candidate.path === sharePath);
    return `Shared ${sharePath}: it is subvolume ${entry?.subvolume ?? '?'} now, mounted there by every boot environment, and no longer rolls back.\n`;
  });
  if (added.length > 0) return said.join('');
  if (shared.length === 0) return 'Nothing is shared.\n';
  const rows = [['Path', 'Subvolume', 'Mounted', 'Since'], ...shared.map((entry) => [entry.path, entry.subvolume, entry.mounted === false ? 'no' : 'yes', formatCreated(entry.since)])];
  const widths = [0, 1, 2].map((column) => Math.max(...rows.map((row) => (row[column] ?? '').length)));
  return rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0))).join('  ')).join('\n').concat('\n');
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
 * `beadm audit`: aligned columns; when some BE has a carry pending, the
 * exclusive bytes of its carry's snapshots before Freed-by-destroy; with quotas
 * on, the quota groups' numbers in two more columns and whether they agree
 * with the counted ones (within 1 %).
 */
export function renderAudit(audits: readonly SpaceAudit[]): string {
  const quotas = audits.some((audit) => audit.quota !== null);
  const carries = audits.some((audit) => audit.carrySnapshotBytes !== null);
  const columns: string[] = [...AUDIT_COLUMNS];
  if (carries) columns.splice(columns.length - 1, 0, 'Carry-snapshots');
  const header = [...columns, ...(quotas ? ['Quota-referenced', 'Quota-exclusive', 'Quota-agrees'] : [])];
  const rows = audits.map((audit) => [
    audit.name,
    audit.origin ?? '-',
    formatBytes(audit.referencedBytes),
    formatBytes(audit.exclusiveBytes),
    formatBytes(audit.sharedWithOriginBytes),
    formatBytes(audit.identicalUnsharedBytes),
    ...(carries ? [formatBytes(audit.carrySnapshotBytes)] : []),
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

const CONFLICT_TEXT: Record<string, (into: string, origin: string, savedAs: string | null) => string> = {
  'changed-both': (into, origin, savedAs) => `changed in both: ${into} keeps its version; ${origin}'s is saved as ${savedAs}`,
  'removed-in-new': (into, origin, savedAs) => (savedAs === null ? `removed in ${into}, changed in ${origin}: not carried` : `removed in ${into}, changed in ${origin}: ${origin}'s is saved as ${savedAs}`),
  'removed-in-origin': (into, origin) => `removed in ${origin}, changed in ${into}: ${into} keeps its version`,
  'type-both': (into, origin, savedAs) => `a different kind of entry in each: ${into} keeps its own; ${origin}'s is saved as ${savedAs}`,
  'metadata-both': (into) => `owner or mode changed in both: ${into} keeps its own`,
  'directory-kept': (into, origin, savedAs) => `removed in ${origin}, but ${into} has entries in it: kept${savedAs === null ? '' : `; ${origin}'s entry is saved as ${savedAs}`}`,
  'directory-recreated': (into, origin) => `removed in ${into}: made again to hold ${origin}'s changes`,
  accounts: (into, origin, savedAs) => `entries clash (below): the merge keeps ${into}'s; ${origin}'s file is saved as ${savedAs}`,
};

/** The lines on a carry's conflicts, account clashes, failures and warnings (for a report and for a boot's summary). */
function carryDetails(into: string, summary: Pick<CarrySummary, 'origin' | 'conflicts' | 'accountClashes' | 'failed' | 'warnings'>, prefix: string): string {
  const origin = summary.origin;
  return [
    ...summary.conflicts.map(({ path, kind, savedAs }) => `${prefix}: conflict: ${path}: ${(CONFLICT_TEXT[kind] ?? CONFLICT_TEXT['changed-both'] as (a: string, b: string, c: string | null) => string)(into, origin, savedAs)}\n`),
    ...summary.accountClashes.map(({ file, name, reason }) => `${prefix}: conflict: /etc/${file}: ${name}: ${reason}\n`),
    ...summary.failed.map(({ path, message }) => `${prefix}: NOT CARRIED: ${path}: ${message} (it is still in ${origin})\n`),
    ...summary.warnings.map((warning) => `${prefix}: warning: ${warning}\n`),
  ].join('');
}

/** What `beadm activate` adds about the carry the BE's boot will run: what follows it, and what does not. */
export function renderActivationCarry(environment: Pick<BootEnvironment, 'name' | 'carry'>): string {
  const carry = environment.carry;
  if (carry === null) return '';
  const origin = carry.origin ?? 'its origin';
  if (carry.mode === 'data') {
    return `\nAt that boot it takes from ${origin} its data (files no package owns, outside /etc, /usr and /boot); ${environment.name}'s packages and /etc stay its own: what ${origin} changed there (packages, configuration, users) is not carried.`;
  }
  return `\nAt that boot it takes from ${origin} what it changed (all but package state).`;
}

/** `beadm carry`: one line on what was (or would be) carried, then one per conflict, clash, failure and warning. */
export function renderCarry(report: CarryReport, prefix = 'beadm'): string {
  if (!report.pending) return `${prefix}: ${report.name} has no carry pending: nothing to carry.\n`;
  const { created, modified, removed } = report.changes;
  const verb = report.dryRun ? 'would carry' : 'carried';
  const conflicts = report.conflicts.length + report.accounts.clashes.length;
  const line =
    (report.follow
      ? `${prefix}: ${verb} into ${report.name} ${report.mode === 'data' ? 'the data (files no package owns, outside /etc, /usr and /boot)' : 'what differs'} of ${report.origin}, the BE it was activated from on ${report.since} (a rollback): `
      : `${prefix}: ${verb} into ${report.name} what ${report.origin} changed since ${report.since}${report.mode === 'data' ? ' (data: files no package owns, outside /etc, /usr and /boot)' : ''}: `) +
    `${created} created, ${modified} changed, ${removed} removed (${formatBytes(report.carriedBytes)} of files, ${report.dryRun ? 'to be shared' : `shared; ${formatBytes(report.copiedBytes)} written`}); ` +
    `${conflicts} conflict${conflicts === 1 ? '' : 's'}` +
    (report.skipped.packageState + report.skipped.excluded > 0 ? `; ${report.skipped.packageState} changes of package state and ${report.skipped.excluded} excluded left out` : '') +
    `${report.dryRun ? '' : ` (${report.seconds.toFixed(2)} s)`}.\n`;
  const pending = !report.dryRun && !report.final ? `${prefix}: ${report.name} stays pending: what ${report.origin} changes from now on is carried when ${report.name} boots.\n` : '';
  return line + carryDetails(report.name, { origin: report.origin ?? '', conflicts: report.conflicts, accountClashes: report.accounts.clashes, failed: report.failed, warnings: report.warnings }, prefix) + pending;
}

/** What `beadm boot-complete` says (into the journal) about the carry into the booted BE. */
export function renderBootCarry(name: string, carried: CarrySummary | null, missed: { origin: string; since: string } | null): string {
  let text = '';
  if (carried !== null) {
    const { created, modified, removed } = carried.changes;
    const conflicts = carried.conflictCount + carried.accountClashes.length;
    text += `Carried into ${name} what ${carried.origin} changed${carried.final ? ' until this boot' : ''}: ${created} created, ${modified} changed, ${removed} removed (${formatBytes(carried.carriedBytes)}); ${conflicts} conflict${conflicts === 1 ? '' : 's'}${carried.failed.length > 0 ? `; ${carried.failed.length} NOT CARRIED` : ''}.\n`;
    text += carryDetails(name, carried, 'bootenv');
    if (carried.conflictCount > carried.conflicts.length) text += `bootenv: … and ${carried.conflictCount - carried.conflicts.length} more conflicts (files saved as *.bootenv-origin).\n`;
  }
  if (missed !== null) {
    text +=
      `WARNING: ${name} booted with a carry pending from ${missed.origin}: what ${missed.origin} changed since ${missed.since} was NOT carried into it ` +
      `(its initramfs did not run the carry, or the carry failed: see this boot's log); it is still in ${missed.origin}. ` +
      `To carry it: boot ${missed.origin} and run beadm carry ${name}; then boot ${name} again.\n`;
  }
  return text;
}

/** `beadm diff A B`: package changes with both versions, conffiles, then the files dpkg does not know of, each section only when it has lines. */
export function renderDiff(report: DiffReport): string {
  const { packages, conffiles, files } = report;
  const sections: string[] = [`Changes from ${report.from} to ${report.to}:\n`];
  const section = (title: string, rows: string[][]) => {
    if (rows.length > 0) sections.push(`${title} (${rows.length}):\n${alignedRows(rows, '  ')}`);
  };
  const instance = (entry: { package: string; architecture: string }) => `${entry.package}:${entry.architecture}`;
  section('Packages added', packages.added.map((entry) => [instance(entry), entry.version]));
  section('Packages removed', packages.removed.map((entry) => [instance(entry), entry.version]));
  section('Packages upgraded', packages.upgraded.map((entry) => [instance(entry), entry.from, '->', entry.to]));
  section('Packages downgraded', packages.downgraded.map((entry) => [instance(entry), entry.from, '->', entry.to]));
  section('Conffiles', conffiles.map((entry) => [entry.change, entry.path, `(${entry.packages.join(', ')})`]));
  const kind = (change: { kind: string }) => (change.kind === 'file' ? '' : change.kind);
  section('Files no package owns, added', files.added.map((change) => [change.path, kind(change)]));
  section('Files no package owns, removed', files.removed.map((change) => [change.path, kind(change)]));
  section(
    'Files no package owns, changed',
    files.changed.map((change) => [
      change.path,
      change.kindBefore !== undefined ? `${change.kindBefore} -> ${change.kind}` : [change.content ? 'content' : '', change.metadata ? 'mode/owner' : ''].filter(Boolean).join(', '),
    ]),
  );
  if (sections.length === 1) sections.push('No differences.\n');
  sections.push(`${report.packagedChanges} path${report.packagedChanges === 1 ? '' : 's'} of dpkg's packages and database differ as well.\n`);
  return sections.join('');
}

/** `beadm show NAME`: its fields, then the apt runs that made it with each package's versions. */
export function renderShow(story: BootEnvironmentStory): string {
  const rows: string[][] = [
    ['Name', story.name],
    ['Subvolume', story.subvolume],
    ['UUID', story.uuid],
    ['Active', story.active === '' ? '-' : story.active],
    ['Created', formatCreated(story.created)],
    ['Origin', story.origin ?? '-'],
    ['Description', story.description === '' ? '-' : story.description],
    ['Kernel', story.kernel ?? '-'],
    ['Pinned', story.pinned ? 'yes' : 'no'],
    ['Booted', story.lastGoodBoot === null ? 'never successfully' : `successfully, last ${formatCreated(story.lastGoodBoot.at)}`],
    ['Mountpoint', story.mountpoint ?? '-'],
    ['Destroy frees', formatBytes(story.freedByDestroyBytes)],
  ];
  if (story.exclusiveBytes !== null) rows.push(['Quota', `${formatBytes(story.exclusiveBytes)} exclusive, ${formatBytes(story.referencedBytes)} referenced`]);
  if (story.carry !== null) rows.push(['Carry', `${story.carry.mode} from ${story.carry.origin ?? '?'} since ${formatCreated(story.carry.since)}, pending until it boots`]);
  if (story.lastCarry !== null) rows.push(['Last carry', `${formatCreated(story.lastCarry.at)} from ${story.lastCarry.origin}`]);
  let text = alignedRows(rows.map(([key, value]) => [`${key}:`, value ?? '']), '');
  story.aptRuns.forEach((run, index) => {
    text += `apt run ${index + 1} of ${story.aptRuns.length}: ${run.command.join(' ')}${run.finished === null ? ' (not finished)' : `, finished ${formatCreated(run.finished)}`}\n`;
    text += alignedRows(
      run.packages.map((entry) => [entry.action, `${entry.package}:${entry.architecture}`, entry.oldVersion ?? '-', '->', entry.newVersion ?? '-']),
      '  ',
    );
  });
  return text;
}
