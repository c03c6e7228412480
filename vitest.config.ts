import { defineConfig } from 'vitest/config';

// Integration tests start real servers, QEMU guests and registries: give them room,
// and run files in separate processes so one test's sockets never leak into another's.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    fileParallelism: true,
    maxWorkers: 2,
    // Kernel install and default image for test/e2e, once per run (a no-op when no e2e file is selected).
    globalSetup: ['test/e2e/global-setup.ts'],
  },
});
