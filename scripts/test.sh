#!/usr/bin/env bash
# npm test: dependencies, stack, type check (a type error fails the run), lint and format, migrations,
# then every test file under */dist (unit, integration and end-to-end) with node's test runner.
# npm run test:unit (`scripts/test.sh unit`): only the tests next to the code (*/src/**), which need
# no store: no stack, no migrations, seconds.
source "$(dirname "$0")/lib.sh"
mode="${1:-all}"
require_node20
ensure_deps
if [ "$mode" != unit ]; then
  ensure_stack
  # Debian's Chromium, for the dashboard's browser tests (no-op when installed).
  bash infra/stack/browser.sh
fi
build
if [ "$mode" != unit ]; then
  lint
  migrate
fi
echo "== tests"
if [ "$mode" = unit ]; then
  mapfile -t files < <(find . -path ./node_modules -prune -o -path '*/dist/src/*' -name '*.test.js' -print | grep -v node_modules | sort)
else
  mapfile -t files < <(find . -path ./node_modules -prune -o -path '*/dist/*' -name '*.test.js' -print | grep -v node_modules | sort)
fi
if [ "${#files[@]}" -eq 0 ]; then echo "no test files found" >&2; exit 1; fi
# Limits, so a stuck test fails fast by name instead of running into CI's 90 minutes:
#  - scripts/test-watchdog.mjs (preloaded in every file): a test running past METERD_TEST_TIMEOUT_MS
#    (180 s) fails and names itself; a file that finished but stays alive names what it left open;
#  - --test-timeout: node's own limit on a file (hooks included), the backstop;
#  - TEST_RUN_LIMIT: the whole run.
# Files run two at a time: each has its own databases and key prefix; the machine has 2 cores.
# The ClickHouse cluster of test/cluster/ stays up between its files (restarting 18.16's Replicated
# tables is slow and has hung) and is stopped after the run if this run started it, once no test
# file of any checkout uses it (it is the machine's: MACHINE_STACK_DIR in infra/stack/lib.sh).
ch_cluster_was_up=0
# (The status is read whole first: under pipefail, grep -q closing the pipe early would fail it.)
if [ "$mode" != unit ]; then
  ch_status="$(bash infra/stack/ch-cluster.sh status)"
  case "$ch_status" in *' down'*) ;; *) ch_cluster_was_up=1 ;; esac
fi
stop_ch_cluster() {
  if [ "$mode" != unit ] && [ "$ch_cluster_was_up" = 0 ]; then bash infra/stack/ch-cluster.sh down-when-idle >/dev/null 2>&1 || true; fi
}
trap stop_ch_cluster EXIT
set +e
timeout --kill-after=30s "${TEST_RUN_LIMIT:-60m}" node --test --test-concurrency="${TEST_CONCURRENCY:-2}" --test-timeout=300000 \
  --test-reporter=tap --test-reporter-destination=stdout --test-reporter=./scripts/test-slowest.mjs --test-reporter-destination=stderr \
  --import ./scripts/test-watchdog.mjs "${files[@]}"
rc=$?
set -e
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "the test run exceeded TEST_RUN_LIMIT=${TEST_RUN_LIMIT:-60m} and was stopped" >&2
fi
exit "$rc"
