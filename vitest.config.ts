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
  },
});
