// hooks/apt/apt-hook keeps three policies in shell for its Node-free paths: which dpkg calls
// change state, which may take the shortcut into an open transaction's BE, and whether
// bootenv.conf says divert = never. Here the script's own functions (sourced by sh under another
// name, so that it only defines them) run against the one TypeScript definition of each:
// CHANGING_ACTIONS/classifyDpkgArguments, shortcutAllowed and parseConfig.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CHANGING_ACTIONS, classifyDpkgArguments, SHORTCUT_ACTIONS, shortcutAllowed } from '../../src/apt/dpkg-args.js';
import { parseConfig } from '../../src/be/config.js';

const SCRIPT = fileURLToPath(new URL('../../hooks/apt/apt-hook', import.meta.url));

/** Runs `function ARGS` of the sourced apt-hook with `input` on stdin. */
function callShell(name: string, args: readonly string[], input = ''): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync('sh', ['-c', `. "$1"; shift; ${name} "$@"`, 'apt-hook-test', SCRIPT, ...args], { input, encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('changes_state and CHANGING_ACTIONS', () => {
  it('the case pattern lists exactly CHANGING_ACTIONS', () => {
    const script = readFileSync(SCRIPT, 'utf8');
    const pattern = /^changes_state\(\) \{\n\s+for arg in "\$@"; do\n\s+case "\$arg" in\n([\s\S]*?)\)\n\s+return 0/m.exec(script)?.[1];
    expect(pattern).toBeDefined();
    const inShell = (pattern as string).split(/[|\\\n]/).map((word) => word.trim()).filter(Boolean);
    expect([...inShell].sort()).toEqual([...CHANGING_ACTIONS].sort());
  });

  it.each([
    // Each action alone and as apt 2.6 passes it (captured) ...
    ...CHANGING_ACTIONS.map((action) => [action]),
    ['--status-fd', '13', '--no-triggers', '--unpack', '--auto-deconfigure', '/var/cache/apt/archives/a_1_all.deb'],
    ['--status-fd', '13', '--force-depends', '--abort-after=1', '--remove', 'a:all'],
    ['--status-fd', '14', '--no-triggers', '--purge', '--pending'],
    // ... and read-only queries, options that only look like actions, operands.
    ['--print-foreign-architectures'],
    ['--assert-multi-arch'],
    ['--assert-protected-field'],
    ['--version'],
    ['-l', 'apt'],
    ['--get-selections'],
    ['--audit'],
    ['--force-remove-essential'],
    ['--remove-foo'],
    ['--configured'],
    ['-ri'],
    ['/tmp/--remove'],
    [],
  ])('%j', (...args: string[]) => {
    const { status } = callShell('changes_state', args);
    expect(status === 0).toBe(classifyDpkgArguments(args).changesState);
  });
});

describe('shortcut_allowed and shortcutAllowed', () => {
  it.each([
    // Each action alone, and as apt 2.6 passes the ones that name packages (captured).
    ...CHANGING_ACTIONS.map((action) => [action]),
    ...SHORTCUT_ACTIONS.map((action) => [action, 'a:amd64']),
    ['--status-fd', '15', '--configure', '--pending'],
    ['--status-fd', '14', '--no-triggers', '--configure', 'libc6:amd64', 'bootenv-t-app:all'],
    ['--status-fd', '13', '--force-depends', '--abort-after=1', '--remove', 'a:all'],
    ['--status-fd', '14', '--triggers-only', '--pending'],
    ['--status-fd', '14', '--no-triggers', '--purge', '--pending'],
    // Package files, directories, -R, other actions with them, words outside the set: beadm decides.
    ['--status-fd', '13', '--no-triggers', '--unpack', '--auto-deconfigure', '/var/cache/apt/archives/a_1_all.deb'],
    ['--configure', '--unpack', 'a'],
    ['--remove', '-i', 'a'],
    ['-P', 'a'],
    ['--configure', '-R', 'a'],
    ['--configure', '/tmp/apt-dpkg-install-x'],
    ['--configure', 'a_1_all.deb'],
    ['--configure', ''],
    ['--configure', 'A'],
    ['--configure', 'a b'],
    ['--status-fd', '15'],
    ['--configured', 'a'],
    [],
  ])('%j', (...args: string[]) => {
    const { status } = callShell('shortcut_allowed', args);
    expect(status === 0).toBe(shortcutAllowed(args));
  });

  it('shortcut_root answers the transaction root for its process only, and only for what shortcut_allowed lets through', () => {
    const directory = mkdtempSync(path.join(tmpdir(), 'apt-hook-test.'));
    try {
      const shortcut = path.join(directory, 'wrapper-shortcut');
      // sh's parent is this process: the shortcut names it by pid and start time, field 22 of /proc/PID/stat.
      const stat = readFileSync(`/proc/${process.pid}/stat`, 'utf8');
      const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] as string;
      const root = (content: string | undefined, args: readonly string[]) => {
        if (content === undefined) rmSync(shortcut, { force: true });
        else writeFileSync(shortcut, content);
        const result = spawnSync('sh', ['-c', `. "$1"; shift; SHORTCUT="$1"; shift; shortcut_root "$@"`, 'apt-hook-test', SCRIPT, shortcut, ...args], { encoding: 'utf8' });
        return result.status === 0 ? result.stdout : `status ${result.status}`;
      };
      const configure = ['--status-fd', '15', '--configure', '--pending'];
      expect(root(`${process.pid} ${start}\n`, configure)).toBe('/run/bootenv/txn/root\n');
      expect(root(`${process.pid} ${start}\n`, ['--unpack', '/var/cache/apt/archives/a_1_all.deb'])).toBe('status 1');
      expect(root(`${process.pid} ${Number(start) + 1}\n`, configure)).toBe('status 1');
      expect(root(`${process.pid + 1} ${start}\n`, configure)).toBe('status 1');
      expect(root('', configure)).toBe('status 1');
      expect(root(undefined, configure)).toBe('status 1');
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});

describe('config_divert and parseConfig', () => {
  /** parseConfig's divert, or 'invalid' where it throws. */
  function divertInTypeScript(text: string): string {
    try {
      return parseConfig(text).divert;
    } catch {
      return 'invalid';
    }
  }

  const shipped = readFileSync(new URL('../../hooks/bootenv.conf', import.meta.url), 'utf8');

  // ASCII texts: the shell must give exactly parseConfig's answer.
  it.each([
    ['the shipped file', shipped],
    ['empty', ''],
    ['never', 'divert = never\n'],
    ['no spaces, no newline', 'divert=never'],
    ['spaces', '   divert   =   never   \n'],
    ['tabs', '\tdivert\t=\tnever\t\n'],
    ['vertical tab and form feed', '\vdivert = never\f\n'],
    ['a comment after', 'divert = never # not auto\n'],
    ['a comment right after', 'divert = never#auto\n'],
    ['two comments', 'divert = never # a # b\n'],
    ['commented out', '# divert = never\n'],
    ['indented comment', '   # divert = never\n'],
    ['a later line overrides never', 'divert = never\ndivert = always\n'],
    ['a later line sets never', 'divert = always\n\ndivert = never\n'],
    ['auto', 'divert = auto\n'],
    ['the other keys beside it', 'name-template = x-{time}\nskip-unchanged = no\ndivert = never\n'],
    ['a value holding =', 'name-template = a=b-{n}\ndivert = never\n'],
    ['CRLF lines', 'divert = never\r\nskip-unchanged = yes\r\n'],
    ['CRLF, last line wins', 'divert = never\r\ndivert = auto\r\n'],
    // parseConfig's comment pattern does not cross a carriage return.
    ['CRLF and a comment', 'divert = never # x\r\n'],
    ['capital value', 'divert = Never\n'],
    ['two words', 'divert = never always\n'],
    ['quoted', 'divert = "never"\n'],
    ['a backslash', 'divert = nev\\er\n'],
    ['empty value', 'divert =\n'],
    ['no =', 'divert never\n'],
    ['==', 'divert == never\n'],
    ['no key', '= never\n'],
    ['capital key', 'Divert = never\n'],
    ['key with a space', 'div ert = never\n'],
    ['unknown key beside never', 'divert = never\ncolour = blue\n'],
    ['bad name-template beside never', 'divert = never\nname-template = fixed\n'],
    ['bad skip-unchanged beside never', 'skip-unchanged = maybe\ndivert = never\n'],
    ['carry settings beside never', 'carry = data\ncarry-exclude = /srv/scratch /var/cache/big/\ndivert = never\n'],
    ['bad carry beside never', 'carry = some\ndivert = never\n'],
    ['rollback-carry beside never', 'rollback-carry = none\ndivert = never\n'],
    ['bad rollback-carry beside never', 'rollback-carry = etc\ndivert = never\n'],
    ['carry-exclude of a relative path', 'carry-exclude = srv\ndivert = never\n'],
    ['carry-exclude of /', 'carry-exclude = /\ndivert = never\n'],
    ['carry-exclude with ..', 'carry-exclude = /srv/../etc\ndivert = never\n'],
    ['carry-exclude with a glob', 'carry-exclude = /srv/*\ndivert = never\n'],
    ['keep beside never', 'keep = 3\ndivert = never\n'],
    ['keep 0 beside never', 'divert = never\nkeep=0\n'],
    ['keep with a comment beside never', 'keep = 12 # weekly\ndivert = never\n'],
    ['negative keep beside never', 'keep = -1\ndivert = never\n'],
    ['fractional keep beside never', 'keep = 2.5\ndivert = never\n'],
    ['empty keep beside never', 'keep =\ndivert = never\n'],
    ['keep of two numbers beside never', 'keep = 1 2\ndivert = never\n'],
    ['keep as a word beside never', 'keep = all\ndivert = never\n'],
    ['keep with a glob beside never', 'keep = [0-9]\ndivert = never\n'],
    ['the retention keys beside never', 'keep-daily = 7\nkeep-weekly=0\nauto-prune = no\ndivert = never\n'],
    ['bad keep-daily beside never', 'keep-daily = 1.5\ndivert = never\n'],
    ['bad keep-weekly beside never', 'keep-weekly = -4\ndivert = never\n'],
    ['bad auto-prune beside never', 'auto-prune = on\ndivert = never\n'],
    ...['5%', '2.5%', '100%', '100.0%', '007%', '1G', '300M', '4096', '0', '8T', '16K'].map((value) => [`min-free = ${value} beside never`, `min-free = ${value}\ndivert = never\n`]),
    ...['101%', '100.5%', '.5%', '5.%', '1.2.3%', '%', '5 %', '1g', '1GiB', '-1', '', 'G', '1.5G', '1 G', '5%%', '[0-9]'].map((value) => [`bad min-free ${JSON.stringify(value)} beside never`, `min-free = ${value}\ndivert = never\n`]),
  ])('%s', (_, text) => {
    expect(callShell('config_divert', [], text).stdout.trim()).toBe(divertInTypeScript(text));
  });

  // JavaScript's trim() and \s also take Unicode spaces; the shell does not read them and
  // answers "invalid", which leaves the decision to beadm — never a different mode.
  it.each([
    ['a byte-order mark', '\ufeffdivert = never\n'],
    ['a no-break space', 'divert =\u00a0never\n'],
  ])('%s: the shell defers to beadm', (_, text) => {
    expect(divertInTypeScript(text)).toBe('never');
    expect(callShell('config_divert', [], text).stdout.trim()).toBe('invalid');
  });
});
