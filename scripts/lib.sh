# Shared by scripts/start.sh and scripts/test.sh: dependencies, the local stack, build, migrations.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

require_node20() {
  local major
  major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
  if [ "$major" != "20" ]; then
    echo "meterd needs Node.js 20.x (uWebSockets.js ships native binaries for Node 20 here); found $(node --version 2>/dev/null || echo none)" >&2
    exit 1
  fi
}

# Installs npm dependencies when node_modules is missing or older than the lock file.
ensure_deps() {
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "== installing npm dependencies"
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

ensure_stack() {
  echo "== local stack"
  bash infra/stack/up.sh
}

build() {
  echo "== type check and build"
  npx --no-install tsc -b
}

migrate() {
  echo "== migrations"
  node tools/dist/src/migrate.js
}

# ESLint (type-aware: floating and misused promises are errors) and Prettier; `npm run format` fixes.
lint() {
  echo "== lint and format check"
  npx --no-install eslint .
  npx --no-install prettier --check --log-level warn .
}
