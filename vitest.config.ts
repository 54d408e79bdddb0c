import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** The real-boot tests, the longest by far: BIOS (boot.test.ts) and UEFI (uefi.test.ts), one per fork. */
const REAL_BOOT_TESTS = ['/test/integration/boot.test.ts', '/test/integration/uefi.test.ts'];

/** Vitest's order (failed, then longest, first), except that the real-boot tests always start first, side by side. */
class BootTestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (file: TestSpecification) => REAL_BOOT_TESTS.findIndex((name) => file.moduleId.endsWith(name));
    const boots = sorted.filter((file) => rank(file) !== -1).sort((a, b) => rank(a) - rank(b));
    return [...boots, ...sorted.filter((file) => rank(file) === -1)];
  }
}

// BOOTENV_SKIP_INTEGRATION=1 runs the unit tests only (machines without root, btrfs or debootstrap).
const skipIntegration = process.env.BOOTENV_SKIP_INTEGRATION === '1';

export default defineConfig({
  test: {
    // Integration files each build a sandbox image; two at a time fit a 2-core machine.
    pool: 'forks',
    sequence: { sequencer: BootTestFirst },
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      ...(skipIntegration
        ? []
        : [
            {
              test: {
                name: 'integration',
                include: ['test/integration/**/*.test.ts'],
                globalSetup: ['test/harness/global-setup.ts'],
                testTimeout: 600_000,
                hookTimeout: 900_000,
              },
            },
          ]),
    ],
  },
});
