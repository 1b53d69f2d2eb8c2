#!/usr/bin/env bash
# npm test: dependencies, stack, type check (a type error fails the run), migrations, then every
# test file under */dist (unit, integration and end-to-end) with node's test runner.
source "$(dirname "$0")/lib.sh"
require_node20
ensure_deps
ensure_stack
# Debian's Chromium, for the dashboard's browser tests (no-op when installed).
bash infra/stack/browser.sh
build
migrate
echo "== tests"
mapfile -t files < <(find . -path ./node_modules -prune -o -path '*/dist/*' -name '*.test.js' -print | grep -v node_modules | sort)
if [ "${#files[@]}" -eq 0 ]; then echo "no test files found" >&2; exit 1; fi
# Files run two at a time: each has its own databases and key prefix; the machine has 2 cores.
exec node --test --test-concurrency="${TEST_CONCURRENCY:-2}" "${files[@]}"
