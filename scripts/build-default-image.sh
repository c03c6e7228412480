#!/usr/bin/env bash
# Builds microagent's default image (busybox + curl + CA bundle, from Debian packages) as an OCI layout in
# the state directory and its cached ext4 root filesystem, so `microagent run` works offline afterwards.
# Usage: scripts/build-default-image.sh [--rebuild] [STATE_DIR]   (default: $MICROAGENT_STATE_DIR or ~/.microagent)
# Needs `npm run build` first (scripts/setup.sh runs it) and, the first time, Debian's package mirror.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rebuild=0
if [ "${1:-}" = "--rebuild" ]; then rebuild=1; shift; fi
state="${1:-${MICROAGENT_STATE_DIR:-$HOME/.microagent}}"

node --input-type=module - "$state" "$rebuild" <<'JS'
import { join } from 'node:path';
import { buildDefaultImageLayout, ensureDefaultImage } from './dist/vm/rootfs/index.js';
const [state, rebuild] = process.argv.slice(2);
const started = Date.now();
if (rebuild === '1') await buildDefaultImageLayout(join(state, 'images', 'default-layout'), join(state, 'images', 'default-debs'));
const image = await ensureDefaultImage(state);
const seconds = ((Date.now() - started) / 1000).toFixed(1);
process.stderr.write(`[default-image] ${image.digest} ${image.cached ? 'already built' : 'built'} in ${seconds}s: ${image.rootfsPath}\n`);
JS
