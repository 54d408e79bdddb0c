// The demo story (README "Try it"): a sandbox disk laid out like an Ubuntu install, booted
// into @, adopts boot environments with beadm; a plain apt-get install and upgrade land in a
// new BE while the running system stays as it was; then create, activate, list and the
// refusals. Every step prints the command and its output. Needs root; cleans up.
import path from 'node:path';
import { BOOKWORM, ensureBase } from './harness/base.js';
import { installRepositoryInRoot } from './harness/repo.js';
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
  await sandbox.withTopLevel((top) => installRepositoryInRoot(path.join(top, '@')));
  console.log(`Sandbox: ${sandbox.image} on ${sandbox.loop}, btrfs ${sandbox.uuid}, subvolumes @ and @home`);
  await step('@', ['check'], 'can this system use boot environments? (silent, exit 0 = yes)');
  await step('@', ['init'], 'adopt the installed root: its snapshot becomes the first BE');
  const [first] = JSON.parse(await step('@', ['list', '--json'], 'one BE, flagged R (default from the next boot)'));
  console.log(`\n--- "rebooting" into ${first.subvolume} ---`);
  await step(first.subvolume, ['list'], 'booted into the first BE: N (now) and R (next boot)');

  const apt = 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y bootenv-t-changed=1.0 | tail -2; apt-get upgrade -y | tail -3; echo; echo "running system: $(dpkg-query -W bootenv-t-changed 2>&1)"';
  console.log('\n# the main job: plain apt-get, diverted into a new BE (packages from a local test repository)');
  console.log(`[booted: ${first.subvolume}] $ apt-get install -y bootenv-t-changed=1.0; apt-get upgrade -y`);
  console.log((await sandbox.boot(first.subvolume, ['bash', '-c', apt])).stdout.trim());
  await step(first.subvolume, ['list'], 'one BE holds both runs; it boots next (R)');
  const [, pending] = JSON.parse((await sandbox.beadm(first.subvolume, ['list', '--json'])).stdout);
  console.log(`\n--- "rebooting" into ${pending.subvolume} ---`);
  console.log((await sandbox.boot(pending.subvolume, ['dpkg-query', '-W', 'bootenv-t-changed'])).stdout.trim());
  await step(pending.subvolume, ['activate', first.name], 'roll back to the first BE: it boots by default again');
  await step(first.subvolume, ['create', 'b2', '-d', 'try'], 'a throw-away BE to experiment in');
  await step(first.subvolume, ['activate', 'b2'], 'boot b2 from the next boot on');
  await step(first.subvolume, ['list'], 'b2 is R now');
  const grubCfg = await sandbox.readFile('@/boot/grub/grub.cfg');
  console.log("\n# GRUB's menu entry for b2, in the installed root's /boot/grub/grub.cfg:");
  console.log(/menuentry [^\n]*'bootenv-b2'[\s\S]*?\n\}/.exec(grubCfg)?.[0]);
  await step(first.subvolume, ['destroy', first.name], 'the running BE cannot be destroyed');
  await step(first.subvolume, ['create', '../evil'], 'hostile names are refused');
  await step(first.subvolume, ['activate', first.name], 'and back again to the first BE');
  await step(first.subvolume, ['destroy', 'b2'], 'the experiment is gone');
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
