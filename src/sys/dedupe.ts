/**
 * Sharing extents between files: the way into the kernel's FIDEDUPERANGE
 * ioctl, which Node cannot issue. It goes through bootenv-dedupe
 * (src/native/bootenv-dedupe.c, built beside the bundle), one process for
 * any number of pairs; docs/dedupe.md has the measurements that chose it over
 * xfs_io. The kernel compares the bytes and shares extents only where they
 * are equal; the destination keeps inode, owner, mode, timestamps and xattrs
 * (file capabilities included). Never FICLONE: it drops capabilities.
 */
import path from 'node:path';
import { BootenvError } from '../errors.js';
import { locateNativeHelper, run } from './exec.js';

const DEDUPE_HELPER_NAME = 'bootenv-dedupe';

export interface DedupePair {
  /** The file whose extents are kept (in the origin BE). */
  source: string;
  /** The file that comes to share them (in the new BE). */
  destination: string;
}

export type DedupeOutcome =
  /** Every byte of the destination now shares extents with the source. */
  | { status: 'same'; bytes: number }
  /** Contents (or sizes) differ; `bytes` leading bytes were shared before the difference. */
  | { status: 'differs'; bytes: number }
  | { status: 'error'; bytes: number; errno: string; message: string };

const OUTCOME_LINE = /^(same|differs) (\d+)$|^error (\d+) (E[A-Z0-9]+|EUNKNOWN) (.+)$/;

/** Parses the helper's output: one outcome line per pair, in order. Strict: anything else is a PARSE error. */
export function parseDedupeOutput(output: string, pairCount: number): DedupeOutcome[] {
  const lines = output === '' ? [] : output.replace(/\n$/, '').split('\n');
  if (lines.length !== pairCount) {
    throw new BootenvError('PARSE', `${DEDUPE_HELPER_NAME} reported ${lines.length} outcomes for ${pairCount} pairs`);
  }
  return lines.map((line) => {
    const match = OUTCOME_LINE.exec(line);
    if (match === null) throw new BootenvError('PARSE', `unexpected line from ${DEDUPE_HELPER_NAME}: ${JSON.stringify(line)}`);
    const [, status, bytes, errorBytes, errno, message] = match;
    if (status === 'same' || status === 'differs') return { status, bytes: Number(bytes) };
    return { status: 'error', bytes: Number(errorBytes), errno: errno as string, message: message as string };
  });
}

/**
 * Shares extents: for each pair, the destination's extents are replaced by
 * the source's where the kernel finds the bytes equal. Changes no file's
 * content or metadata; needs root (FIDEDUPERANGE on a file opened read-only).
 * Returns one outcome per pair, in order; a pair's failure is its outcome,
 * not an exception. Throws TOOL_MISSING without the helper, COMMAND_FAILED
 * or PARSE when the helper itself fails.
 */
export async function dedupeFiles(pairs: readonly DedupePair[], helper: string = locateNativeHelper(DEDUPE_HELPER_NAME)): Promise<DedupeOutcome[]> {
  if (pairs.length === 0) return [];
  for (const { source, destination } of pairs) {
    if (!path.isAbsolute(source) || !path.isAbsolute(destination) || source.includes('\0') || destination.includes('\0')) {
      throw new BootenvError('INTERNAL', `dedupe needs absolute paths without NUL: ${JSON.stringify([source, destination])}`);
    }
  }
  const input = pairs.map(({ source, destination }) => `${source}\0${destination}\0`).join('');
  const { stdout } = await run([helper], { input });
  return parseDedupeOutput(stdout, pairs.length);
}

/** One extent of a file as FS_IOC_FIEMAP reports it. */
export interface FileExtent {
  physical: number;
  length: number;
  /** FIEMAP_EXTENT_* flags. */
  flags: number;
}

const EXTENTS_LINE = /^extents((?: \d+:\d+:[0-9a-f]+)*)$|^error (\d+) (E[A-Z0-9]+|EUNKNOWN) (.+)$/;

/** Parses the helper's --extents output: one line per path, in order. Strict. */
export function parseExtentsOutput(output: string, pathCount: number): Array<FileExtent[] | { error: string }> {
  const lines = output === '' ? [] : output.replace(/\n$/, '').split('\n');
  if (lines.length !== pathCount) throw new BootenvError('PARSE', `${DEDUPE_HELPER_NAME} --extents reported ${lines.length} files for ${pathCount}`);
  return lines.map((line) => {
    const match = EXTENTS_LINE.exec(line);
    if (match === null) throw new BootenvError('PARSE', `unexpected line from ${DEDUPE_HELPER_NAME} --extents: ${JSON.stringify(line.slice(0, 200))}`);
    if (match[1] === undefined) return { error: `${match[3]} ${match[4]}` };
    return match[1]
      .trim()
      .split(' ')
      .filter(Boolean)
      .map((field) => {
        const [physical, length, flags] = field.split(':') as [string, string, string];
        return { physical: Number(physical), length: Number(length), flags: parseInt(flags, 16) };
      });
  });
}

/**
 * The extents of each file (FS_IOC_FIEMAP after syncing it), or why not.
 * Reads only; needs read access to the files. Throws as dedupeFiles.
 */
export async function fileExtents(files: readonly string[], helper: string = locateNativeHelper(DEDUPE_HELPER_NAME)): Promise<Array<FileExtent[] | { error: string }>> {
  if (files.length === 0) return [];
  if (files.some((file) => !path.isAbsolute(file) || file.includes('\0'))) throw new BootenvError('INTERNAL', 'fileExtents needs absolute paths without NUL');
  const { stdout } = await run([helper, '--extents'], { input: files.map((file) => `${file}\0`).join('') });
  return parseExtentsOutput(stdout, files.length);
}
