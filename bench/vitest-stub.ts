// Stands in for vitest when a benchmark bundles the test harness (sandbox.ts's useSandbox
// registers vitest hooks; the benchmarks use the Sandbox class only).
export function beforeAll(): never {
  throw new Error('vitest hooks are not available in a benchmark');
}
export const afterAll = beforeAll;
