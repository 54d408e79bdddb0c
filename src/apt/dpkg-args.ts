/**
 * What a dpkg command line asks for, as apt hands it to Dir::Bin::dpkg: does it
 * change state (and so belongs in a BE), which .deb files and --recursive
 * directories it reads. Pure. The shell wrapper (hooks/apt/apt-hook, its
 * changes_state) keeps its own copy of CHANGING_ACTIONS for its Node-free fast
 * path; test/unit/apt-hook.test.ts runs it against this definition.
 */

/** dpkg actions that change the package database or the installed files. */
export const CHANGING_ACTIONS = [
  '-i',
  '--install',
  '--unpack',
  '--configure',
  '--triggers-only',
  '-r',
  '--remove',
  '-P',
  '--purge',
  '--set-selections',
  '--clear-selections',
  '--update-avail',
  '--merge-avail',
  '-A',
  '--record-avail',
  '--clear-avail',
  '--forget-old-unavail',
  '--add-architecture',
  '--remove-architecture',
] as const;

export interface DpkgInvocation {
  changesState: boolean;
  /** Absolute .deb paths named on the command line. */
  debs: string[];
  /** Directories given to --recursive (apt's /tmp/apt-dpkg-install-XXXXXX). */
  recursiveDirectories: string[];
}

export function classifyDpkgArguments(args: readonly string[]): DpkgInvocation {
  const changing = new Set<string>(CHANGING_ACTIONS);
  const changesState = args.some((arg) => changing.has(arg));
  const recursive = args.includes('--recursive') || args.includes('-R');
  const operands = args.filter((arg) => arg.startsWith('/'));
  return {
    changesState,
    debs: operands.filter((arg) => arg.endsWith('.deb')),
    recursiveDirectories: recursive ? operands.filter((arg) => !arg.endsWith('.deb')) : [],
  };
}
