/**
 * What a dpkg command line asks for, as apt hands it to Dir::Bin::dpkg: does it
 * change state (and so belongs in a BE), which .deb files and --recursive
 * directories it reads, may it take the wrapper's shortcut. Pure. The shell
 * wrapper (hooks/apt/apt-hook, its changes_state and shortcut_allowed) keeps
 * its own copy of CHANGING_ACTIONS and of shortcutAllowed for its Node-free
 * paths; test/unit/apt-hook.test.ts runs them against these definitions.
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

/** The actions of the wrapper's shortcut: they name packages, never files. */
export const SHORTCUT_ACTIONS = ['--configure', '--triggers-only', '-r', '--remove', '--purge'] as const;

/**
 * Whether a dpkg call may take the wrapper's shortcut into the BE of the apt
 * run that is already open (hooks/apt/apt-hook, shortcut_root): each word is
 * lower-case letters, digits and + . : = - only (so no path, no .deb file, no
 * -R), and it has actions, all of them SHORTCUT_ACTIONS. Such a call has no
 * package file to bind into the BE. Anything else goes through beadm.
 */
export function shortcutAllowed(args: readonly string[]): boolean {
  if (!args.every((arg) => /^[a-z0-9+.:=-]+$/.test(arg))) return false;
  const changing = new Set<string>(CHANGING_ACTIONS);
  const shortcut = new Set<string>(SHORTCUT_ACTIONS);
  const actions = args.filter((arg) => changing.has(arg));
  return actions.length > 0 && actions.every((action) => shortcut.has(action));
}
