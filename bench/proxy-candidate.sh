#!/usr/bin/env bash
# CANDIDATE_CMD for the shared proxy benchmark (/work/shared/bench/peers, see its README):
#   sudo CANDIDATE_CMD=$PWD/bench/proxy-candidate.sh /work/shared/bench/peers/run.sh --quick
# Runs `microagent proxy` from dist/ (run `npm run build` first) on 127.0.0.1:$CANDIDATE_PORT with the
# bench policy, writes the workspace CA to $CANDIDATE_CA before listening, trusts $ORIGIN_CA upstream,
# and stays in the foreground until SIGTERM. PROXY_BENCH_FSYNC=0 skips the audit fsync (default: on).
set -euo pipefail
: "${CANDIDATE_PORT:?}" "${CANDIDATE_CA:?}" "${ORIGIN_CA:?}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state=${CANDIDATE_DIR:-$(mktemp -d /tmp/microagent-candidate.XXXXXX)}/microagent
mkdir -p "$state"
main="$here/dist/cli/main.js"
node "$main" --state-dir "$state" ca create --dir "$state/proxy-ca" --workspace bench >/dev/null
cp "$state/proxy-ca/ca.pem" "$CANDIDATE_CA"
extra=()
[[ ${PROXY_BENCH_FSYNC:-1} == 0 ]] && extra+=(--no-fsync)
exec node "$main" --state-dir "$state" proxy --policy "$here/bench/proxy-bench-policy.yaml" \
  --listen "127.0.0.1:$CANDIDATE_PORT" --ca-dir "$state/proxy-ca" --audit "$state/proxy-audit.jsonl" \
  --workspace bench --upstream-ca "$ORIGIN_CA" "${extra[@]}"
