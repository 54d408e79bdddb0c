import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** Vitest's order (failed, then longest, first), except that the real-boot test, the longest by far, always starts first. */
class BootTestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const isBoot = (file: TestSpecification) => file.moduleId.endsWith('/test/integration/boot.test.ts');
    return [...sorted.filter(isBoot), ...sorted.filter((file) => !isBoot(file))];
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
