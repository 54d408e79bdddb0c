// The boot test's serial-log parser (test/harness/image.ts) on console output as qemu writes it:
// CRLF line ends, GRUB's escape sequences, kernel messages between the probe's lines.
import { describe, expect, it } from 'vitest';
import { parseSerialLog } from '../harness/image.js';

const BOOTED = [
  '\u001b[H\u001b[J\u001b[1;1H  Booting `Debian GNU/Linux 12 (bookworm) (BE debian-12)\'',
  '',
  'Loading Linux 6.1.0-50-amd64 ...',
  'BOOTENV-PROBE-BEGIN phase=early root=/dev/vda2[/@bootenv/debian-12] boot_id=6b20a848-2ee1-4884-8c5e-a3e4adee3afa uptime=27.77',
  'BOOTENV-OUT: + beadm list -H',
  '[   28.101234] random: crng init done',
  'BOOTENV-OUT: debian-12\tNR\t/\t-\t2026-11-23T20:49:25.000Z\tcreated by beadm init',
  'BOOTENV-PROBE-END rc=0',
  '[   29.708422] reboot: Power down',
  '',
].join('\r\n');

describe('parseSerialLog', () => {
  it('reads the booted subvolume, the step output and its exit status', () => {
    expect(parseSerialLog(BOOTED)).toEqual([
      {
        phase: 'early',
        source: '/dev/vda2[/@bootenv/debian-12]',
        subvolume: '@bootenv/debian-12',
        bootId: '6b20a848-2ee1-4884-8c5e-a3e4adee3afa',
        uptimeSeconds: 27.77,
        exitCode: 0,
        output: '+ beadm list -H\ndebian-12\tNR\t/\t-\t2026-11-23T20:49:25.000Z\tcreated by beadm init',
      },
    ]);
  });

  it("keeps the lines apt copied from dpkg's pty (CR CR LF), as a real apt run in the guest printed them", () => {
    const log = [
      'BOOTENV-PROBE-BEGIN phase=late root=/dev/vda2[/@bootenv/debian-12] boot_id=x uptime=80.1\r\n',
      'BOOTENV-OUT: + apt-get install -y bootenv-t-marker\r\n',
      'BOOTENV-OUT: (Reading database ... \r(Reading database ... 100%\r(Reading database ... 15522 files and directories currently installed.)\r\r\n',
      'BOOTENV-OUT: Preparing to unpack ..././bootenv-t-marker_1.0_all.deb ...\r\r\n',
      'BOOTENV-OUT: Unpacking bootenv-t-marker (1.0) ...\r\r\n',
      'BOOTENV-OUT: bootenv: apt\'s changes are in boot environment apt-20261202-1 (@bootenv/apt-20261202-1); the running system is unchanged. Reboot to use it.\r\n',
      'BOOTENV-PROBE-END rc=0\r\n',
    ].join('');
    const [report] = parseSerialLog(log);
    expect(report?.output.split('\n')).toEqual([
      '+ apt-get install -y bootenv-t-marker',
      '(Reading database ... \r(Reading database ... 100%\r(Reading database ... 15522 files and directories currently installed.)',
      'Preparing to unpack ..././bootenv-t-marker_1.0_all.deb ...',
      'Unpacking bootenv-t-marker (1.0) ...',
      "bootenv: apt's changes are in boot environment apt-20261202-1 (@bootenv/apt-20261202-1); the running system is unchanged. Reboot to use it.",
    ]);
  });

  it.each([
    { name: 'no step left', log: 'BOOTENV-PROBE-BEGIN phase=late root=/dev/vda2[/@] boot_id=x uptime=1.5\r\nBOOTENV-PROBE-END no step\r\n', exitCode: undefined, count: 1 },
    { name: 'a failed step', log: 'BOOTENV-PROBE-BEGIN phase=early root=/dev/vda2[/@] boot_id=x uptime=1\nBOOTENV-PROBE-END rc=3\n', exitCode: 3, count: 1 },
    { name: 'a kernel panic before the probe', log: '[    9.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n', exitCode: undefined, count: 0 },
    { name: 'a probe cut off by the time limit', log: 'BOOTENV-PROBE-BEGIN phase=early root=/dev/vda2[/@] boot_id=x uptime=1\nBOOTENV-OUT: + apt-get upgrade\n', exitCode: undefined, count: 0 },
  ])('$name', ({ log, exitCode, count }) => {
    const reports = parseSerialLog(log);
    expect(reports).toHaveLength(count);
    if (count === 1) expect(reports[0]?.exitCode).toBe(exitCode);
  });
});
