#!/usr/bin/env bash
# npm start: dependencies, local stack, build, migrations, then every service under the supervisor.
source "$(dirname "$0")/lib.sh"
require_node20
ensure_deps
ensure_stack
build
migrate
echo "== services"
exec node tools/dist/src/supervisor.js
