// The demo story (README "Try it"): a sandbox disk laid out like an Ubuntu install, booted
// into @, adopts boot environments with beadm and walks through create, activate, list and
// the refusals. Every step prints the command and its output. Needs root; cleans up.
import { BOOKWORM, ensureBase } from './harness/base.js';
import { Sandbox } from './harness/sandbox.js';

let sandbox: Sandbox | undefined;

async function step(booted: string, args: string[], note: string): Promise<string> {
  console.log(`\n# ${note}\n[booted: ${booted || '(top level)'}] $ beadm ${args.join(' ')}`);
  const result = await sandbox!.beadm(booted, args);
  const shown = `${result.stdout}${result.stdout && result.stderr ? '\n' : ''}${result.stderr}`.trimEnd();
  if (shown !== '') console.log(shown);
  console.log(`(exit status ${result.exitCode})`);
  return result.stdout;
}

async function main(): Promise<void> {
  console.log('Preparing the Debian 12 base (debootstrap, cached after the first run) ...');
  const base = await ensureBase(BOOKWORM);
  sandbox = await Sandbox.create(base, 'ubuntu');
  console.log(`Sandbox: ${sandbox.image} on ${sandbox.loop}, btrfs ${sandbox.uuid}, subvolumes @ and @home`);
  await step('@', ['check'], 'can this system use boot environments? (silent, exit 0 = yes)');
  await step('@', ['init'], 'adopt the installed root: its snapshot becomes the first BE');
  const [first] = JSON.parse(await step('@', ['list', '--json'], 'one BE, flagged R (default from the next boot)'));
  console.log(`\n--- "rebooting" into ${first.subvolume} ---`);
  await step(first.subvolume, ['list'], 'booted into the first BE: N (now) and R (next boot)');
  await step(first.subvolume, ['create', 'b2', '-d', 'try'], 'a throw-away BE to experiment in');
  await step(first.subvolume, ['activate', 'b2'], 'boot b2 from the next boot on');
  await step(first.subvolume, ['list'], 'b2 is R now');
  const grubCfg = await sandbox.readFile('@/boot/grub/grub.cfg');
  console.log("\n# GRUB's menu entry for b2, in the installed root's /boot/grub/grub.cfg:");
  console.log(/menuentry [^\n]*'bootenv-b2'[\s\S]*?\n\}/.exec(grubCfg)?.[0]);
  await step(first.subvolume, ['destroy', first.name], 'the running BE cannot be destroyed');
  await step(first.subvolume, ['create', '../evil'], 'hostile names are refused');
  await step(first.subvolume, ['activate', first.name], 'roll back: the first BE boots by default again');
  await step(first.subvolume, ['destroy', 'b2'], 'and the experiment is gone');
  console.log('\nbtrfs subvolume list (host side):');
  console.log((await sandbox.subvolumes()).join('\n'));
}

main()
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(async () => {
    await sandbox?.close();
    console.log('\nSandbox removed: nothing left mounted or attached.');
  });
