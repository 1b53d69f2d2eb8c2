#!/usr/bin/env bash
# npm run image:smoke: builds the image (infra/image/build.sh), then runs infra/test/podman.smoke.ts:
# `podman run` of every service answering /healthz against the host's stores, and the local overlay
# under `podman kube play` through signup, provision and meter. Needs root podman and the local stack.
# Opt-in, not part of npm test: the build takes minutes and needs Debian's mirror and npm's registry.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$ROOT"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/infra/image/containers.conf}"
bash infra/stack/up.sh >/dev/null
tag="$(bash infra/image/build.sh)"
echo "== podman run: migrate, then /healthz of every service ($tag)"
# A Postgres and a ClickHouse database of this run's own, migrated by the image, dropped at the end.
db="meterd_run_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
cleanup() {
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  curl -sf -X POST 'http://127.0.0.1:8123/' --data-binary "DROP DATABASE IF EXISTS $db" || true
}
trap cleanup EXIT
stores=(-e "DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db" -e "CLICKHOUSE_DATABASE=$db" -e "REDIS_KEY_PREFIX=$db")
podman run --rm --network=host "${stores[@]}" "$tag" migrate
run_one() { # name port-variable args...
  local name=$1 var=$2; shift 2
  local port; port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
  local c="meterd-smoke-$name-$$"
  podman run -d --rm --name "$c" --network=host -e "$var=$port" -e NODE_ENV=development -e INGEST_THREADS=1 \
    -e SPOOL_DIR=/tmp/spool -e LOG_LEVEL=warn "${stores[@]}" "$@" "$tag" "$name" >/dev/null
  local ok=""
  for _ in $(seq 1 120); do
    if body="$(node -e 'fetch(process.argv[1]).then(async r=>{if(r.status!==200)process.exit(1);console.log(await r.text())}).catch(()=>process.exit(1))' "http://127.0.0.1:$port/healthz")"; then ok=1; break; fi
    sleep 0.5
  done
  if [ -z "$ok" ]; then podman logs "$c" >&2 || true; podman stop -t 5 "$c" >/dev/null || true; echo "$name: /healthz did not answer" >&2; return 1; fi
  echo "$name: GET /healthz on :$port → $body"
  podman stop -t 30 "$c" >/dev/null
}
run_one ingest INGEST_PORT
run_one aggregator AGGREGATOR_PORT
run_one billing-sync BILLING_SYNC_PORT
run_one control-api CONTROL_API_PORT
run_one front FRONT_PORT
run_one stripe-local STRIPE_LOCAL_PORT
echo "== podman kube play (infra/k8s/overlays/local)"
npx tsc -b
METERD_IMAGE_TAG="$tag" node --test --import ./scripts/test-watchdog.mjs infra/dist/test/podman.smoke.js
