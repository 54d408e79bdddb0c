/**
 * Vitest expectations shared by the real-boot stories (boot.test.ts on BIOS,
 * uefi.test.ts on UEFI). Kept apart from image.ts, which imports no vitest.
 */
import { expect } from 'vitest';
import type { BootResult, ProbeReport } from './image.js';

/** The one probe report of a boot that came up; fails with the serial log otherwise. */
export function cameUp(result: BootResult): ProbeReport {
  expect(result.timedOut, result.log).toBe(false);
  expect(result.steps, result.log).toHaveLength(1);
  const report = result.steps[0] as ProbeReport;
  expect(report.exitCode, report.output).toBe(0);
  return report;
}

/** `text` with the regular-expression characters of a Debian version escaped. */
export function escaped(text: string): string {
  return text.replace(/[.+]/g, '\\$&');
}
