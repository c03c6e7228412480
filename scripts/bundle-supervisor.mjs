// `npm run build` step: bundles the supervisor (dist/vm/supervisor/main.js, compiled by tsc) with its
// dependencies into dist/supervisor/, the mediator and PKCS#12 as chunks loaded when used.
// Dependencies go in too: loaded from node_modules, yaml alone was ~80 CommonJS files, each resolved,
// read, scanned for exports and compiled by node's loaders, ~100 ms of the supervisor's CPU while the
// guest boots beside it on a small host. The bundle holds ESM; its CommonJS parts require node's
// built-ins through the `require` the banner makes.
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

const outdir = new URL('../dist/supervisor/', import.meta.url).pathname;
rmSync(outdir, { recursive: true, force: true }); // no chunks of an earlier build left behind
await build({
  entryPoints: [new URL('../dist/vm/supervisor/main.js', import.meta.url).pathname],
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  logLevel: 'warning',
  banner: { js: "import { createRequire as __createRequire } from 'node:module';\nconst require = __createRequire(import.meta.url);" },
});
