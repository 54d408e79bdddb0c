/**
 * Space of boot environments: `beadm dedupe` (the skip-unchanged pass on
 * demand, between any two BEs, for BEs made before bootenv or by other tools)
 * and `beadm audit` (per BE: data referenced, exclusive, shared with its
 * origin, identical to its origin's but unshared, and what destroying it
 * would free). Audit numbers come from the files' extents (FIEMAP) and need
 * no quotas; with quotas on, the quota groups' numbers are given beside them.
 */
import path from 'node:path';
import { qgroupUsage } from '../btrfs/commands.js';
import { mountAt, parseMountInfo } from '../btrfs/mountinfo.js';
import type { Subvolume } from '../btrfs/parse.js';
import { inlineLimit } from '../dedupe/plan.js';
import { measureDataSpace, type Extent } from '../dedupe/space.js';
import { BootenvError } from '../errors.js';
import { fileExtents } from '../sys/dedupe.js';
import { readText, regularFilesBelow } from '../sys/fs.js';
import { withScope } from '../sys/scope.js';
import { bootEnvironmentSubvolumes, findBootEnvironment, openSession, requireState, type Options, type Session } from './library.js';
import { packagesOfRoots, shareUnchangedFiles, type SkipUnchangedReport } from './skip-unchanged.js';
import { assertValidName } from './names.js';
import type { BootenvState } from './state.js';

/** The subvolume a BE was made from (a BE or the installed root), if it still exists. */
function originOf(session: Session, state: BootenvState, subvolume: Subvolume): Subvolume | undefined {
  const originUuid = state.environments[subvolume.uuid]?.originUuid ?? subvolume.parentUuid;
  return originUuid === null ? undefined : session.subvolumes.find((candidate) => candidate.uuid === originUuid);
}

function nameOf(session: Session, state: BootenvState, subvolume: Subvolume): string {
  if (subvolume.path === state.installedRoot) return '(installed root)';
  return bootEnvironmentSubvolumes(session).find((environment) => environment.subvolume.uuid === subvolume.uuid)?.name ?? subvolume.path;
}

async function topInlineLimit(session: Session): Promise<number> {
  return inlineLimit(mountAt(parseMountInfo(await readText('/proc/self/mountinfo')), session.top)?.superOptions ?? '');
}

export interface DedupeOptions extends Options {
  /** BE to share with; default the BE `name` was made from. */
  against?: string;
  dryRun?: boolean;
}

export interface DedupeResult {
  name: string;
  against: string;
  report: SkipUnchangedReport;
}

/**
 * Makes the files of BE `name` that are identical to files of its origin (or
 * of BE `against`) share their extents, package by package from dpkg's
 * md5sums (see skip-unchanged.ts). Changes no file's content or metadata.
 * Needs root; takes the lock. Throws NOT_FOUND (no such BE, or no origin to
 * share with), INVALID_NAME, BUSY during an apt transaction.
 */
export async function dedupeBootEnvironment(name: string, options: DedupeOptions = {}): Promise<DedupeResult> {
  assertValidName(name);
  if (options.against !== undefined) assertValidName(options.against);
  return withScope(async (scope) => {
    const session = await openSession(scope, options);
    const state = requireState(session);
    const target = findBootEnvironment(session, name);
    const origin = options.against !== undefined ? findBootEnvironment(session, options.against) : originOf(session, state, target);
    if (origin === undefined) throw new BootenvError('NOT_FOUND', `the BE ${name} was made from no longer exists`, { hint: 'name one to share with: --against OTHER' });
    const originRoot = path.join(session.top, origin.path);
    const targetRoot = path.join(session.top, target.path);
    const report = await shareUnchangedFiles({
      originRoot,
      targetRoot,
      packages: await packagesOfRoots(originRoot, targetRoot),
      inlineLimit: await topInlineLimit(session),
      dryRun: options.dryRun ?? false,
      checkExtents: true,
    });
    return { name, against: nameOf(session, state, origin), report };
  });
}

export interface SpaceAudit {
  name: string;
  subvolume: string;
  /** The BE it was made from, "(installed root)", or null when gone. */
  origin: string | null;
  /** Data bytes the BE's files lie in, each byte once. */
  referencedBytes: number;
  /** Of those, bytes no other file references. */
  exclusiveBytes: number;
  /** Of those, bytes its origin's files lie in too; null without origin. */
  sharedWithOriginBytes: number | null;
  /** Bytes of dpkg-installed files identical to the origin's that do not share its extents (beadm dedupe would); null without origin. */
  identicalUnsharedBytes: number | null;
  /** What destroying the BE would free: the quota group's exclusive bytes with quotas on, else exclusiveBytes (data only). */
  freedByDestroyBytes: number;
  /** From quota groups (data and metadata) when quotas are on. */
  quota: { referencedBytes: number; exclusiveBytes: number } | null;
}

async function extentsOfTree(root: string): Promise<Extent[][]> {
  return (await fileExtents(await regularFilesBelow(root))).filter((entry): entry is Extent[] => Array.isArray(entry));
}

/**
 * Audits the named BEs (all when `names` is empty). Reads only; mounts the
 * top level privately. Needs root. Throws NOT_FOUND, INVALID_NAME.
 */
export async function auditBootEnvironments(names: readonly string[], options: Options = {}): Promise<SpaceAudit[]> {
  for (const name of names) assertValidName(name);
  return withScope(async (scope) => {
    const session = await openSession(scope, options, 'allow');
    const state = requireState(session);
    const targets = names.length > 0 ? names.map((name) => ({ name, subvolume: findBootEnvironment(session, name) })) : bootEnvironmentSubvolumes(session);
    const quotas = await qgroupUsage(session.top);
    const limit = await topInlineLimit(session);
    const audits: SpaceAudit[] = [];
    for (const { name, subvolume } of targets) {
      const root = path.join(session.top, subvolume.path);
      const origin = originOf(session, state, subvolume);
      const originRoot = origin === undefined ? undefined : path.join(session.top, origin.path);
      const space = measureDataSpace(await extentsOfTree(root), originRoot === undefined ? null : await extentsOfTree(originRoot));
      const identical =
        originRoot === undefined
          ? null
          : (await shareUnchangedFiles({ originRoot, targetRoot: root, packages: await packagesOfRoots(originRoot, root), inlineLimit: limit, dryRun: true, checkExtents: true })).shared.bytes;
      const quota = quotas?.find((usage) => usage.subvolumeId === subvolume.id);
      audits.push({
        name,
        subvolume: subvolume.path,
        origin: origin === undefined ? null : nameOf(session, state, origin),
        ...space,
        identicalUnsharedBytes: identical,
        freedByDestroyBytes: quota?.exclusiveBytes ?? space.exclusiveBytes,
        quota: quota === undefined ? null : { referencedBytes: quota.referencedBytes, exclusiveBytes: quota.exclusiveBytes },
      });
    }
    return audits;
  });
}
