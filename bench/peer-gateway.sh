#!/usr/bin/env bash
# Runs Postern as the "gateway" target of the peer harness's smtp-throughput.sh (Postfix and
# Haraka side by side), which starts it through GATEWAY_CMD with these in the environment:
#   SINK_HOST, SINK_PORT        the harness's smtp-sink, where relayed mail must go
#   GATEWAY_HOST, GATEWAY_PORT  where Postern's smtp listener must be
#   BENCH_DOMAIN                the recipients' domain (default bench.test)
# It writes a config to a temp dir (smtp listener, a `routes` entry for BENCH_DOMAIN to the sink,
# outbound TLS off, log level warn; the spool fsyncs as always), runs `postern start` (the build
# when current, else the sources) and passes SIGTERM/SIGINT on to it; the temp dir is removed
# once Postern has stopped.
set -euo pipefail
: "${SINK_PORT:?set by smtp-throughput.sh}" "${GATEWAY_PORT:?set by smtp-throughput.sh}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$(mktemp -d -t postern-peer-gateway-XXXXXX)"
cat > "$dir/postern.yaml" <<EOF
hostname: postern.${BENCH_DOMAIN:-bench.test}
data_dir: ./data
listen:
  smtp: { host: ${GATEWAY_HOST:-127.0.0.1}, port: ${GATEWAY_PORT} }
domains:
  local: [localhost]
routes:
  ${BENCH_DOMAIN:-bench.test}: smtp://${SINK_HOST:-127.0.0.1}:${SINK_PORT}
outbound:
  tls: none
log:
  level: warn
EOF
# As bin/postern.cjs sets it before anything starts libuv's pool.
export UV_THREADPOOL_SIZE="${UV_THREADPOOL_SIZE:-16}"
# The compiled daemon (as `npm start` runs it) when dist/ is newer than every source file; the
# sources through tsx otherwise. Run `npm run build` before the harness to measure the build.
entry=(--import "$repo/node_modules/tsx/dist/loader.mjs" "$repo/src/cli.ts")
if [ -f "$repo/dist/src/cli.js" ] && [ -z "$(find "$repo/src" "$repo/plugins" -name '*.ts' -newer "$repo/dist/src/cli.js" -print -quit)" ]; then
  entry=("$repo/bin/postern.cjs")
fi
node "${entry[@]}" start --config "$dir/postern.yaml" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' TERM INT
wait "$pid" || true
# A trapped signal ends the first wait early: wait again for Postern itself to finish.
wait "$pid" 2>/dev/null || true
rm -rf "$dir"
