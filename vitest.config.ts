import { defineConfig } from 'vitest/config';

// Two projects: "unit" (fast, parallel: everything under test/ except the VM
// tests) and "vm" (QEMU guests under TCG, and the one-minute soak of 10,000
// flows: slow, one file at a time).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['test/vm/**', '**/node_modules/**'],
          environment: 'node',
          // Fuzz and socket tests on a shared 2-core machine: generous, so a
          // busy machine does not fail a correct test.
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'vm',
          include: ['test/vm/**/*.test.ts'],
          environment: 'node',
          testTimeout: 300_000,
          hookTimeout: 300_000,
          // No file parallelism: `fileParallelism` is a root-only option in
          // vitest 3.2, so the per-project way is one fork that runs the vm
          // files one after another (after the unit files when both run).
          // One QEMU under TCG already takes a core of the two.
          pool: 'forks',
          poolOptions: { forks: { singleFork: true } },
          retry: 0,
        },
      },
    ],
  },
});
