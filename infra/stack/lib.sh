# shellcheck shell=bash
# Shared helpers for infra/stack/up.sh and infra/stack/down.sh. Sourced, not run.
#
# Layout of the state this stack keeps (all under the git-ignored <repo>/.stack/):
#   .stack/<service>/started.pid   marker: "up.sh started this service, this is its pid".
#                                  down.sh only ever stops services that have this file.
#   .stack/redis/                  data dir, redis.log, redis.pid
#   .stack/postgres/location       where the cluster lives (data dir + log), because it may
#                                  have to live under /var/tmp (see up.sh, start_postgres)
#   .stack/clickhouse/             config.xml, users.xml, data/, log/, server.pid
#   .stack/.lock                   flock so two concurrent up.sh/down.sh runs don't race

# Repo root = two levels above this file, whatever the caller's cwd is.
STACK_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$STACK_LIB_DIR/../.." && pwd -P)"
STACK_DIR="$REPO_ROOT/.stack"
# The test clusters (ch-cluster.sh, redis-cluster.sh) listen on fixed ports, so a machine has one of
# each, whichever checkout started it. Their state and locks live outside every checkout, where a
# fresh CI clone running beside a working tree finds them: kept per checkout, one run's `down` or
# kill -9 missed (or stopped) the other's nodes, and removing a clone took its servers' data away.
MACHINE_STACK_DIR="${METERD_MACHINE_STACK_DIR:-/var/tmp/meterd-stack}"
# Held (flock -x) by a test file for as long as it uses a test cluster (test/support/cluster-lock.ts).
CLUSTER_TESTS_LOCK="$MACHINE_STACK_DIR/cluster-tests.lock"

# Everything binds to loopback only; ports may be overridden from the environment.
STACK_HOST=127.0.0.1
REDIS_PORT="${REDIS_PORT:-6379}"
PGPORT="${PGPORT:-5432}"
CLICKHOUSE_HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
CLICKHOUSE_TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"
PGDATABASE_NAME="${PGDATABASE_NAME:-meterd}"

# How long to wait for a service to answer after starting it.
STACK_WAIT_SECONDS="${STACK_WAIT_SECONDS:-60}"

log()  { printf '[stack] %s\n' "$*" >&2; }
warn() { printf '[stack] WARNING: %s\n' "$*" >&2; }
die()  { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# One aligned status line per service, on stdout (the only thing printed there).
status_line() { printf '%-11s %-15s %s\n' "$1" "$2" "$3"; }

have() { command -v "$1" >/dev/null 2>&1; }

# Is anything listening on 127.0.0.1:<port>? Pure bash, so it works before any client
# tool is installed. Connecting to a closed loopback port fails at once; `timeout`
# only guards against a wedged listener.
tcp_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$STACK_HOST/$1" 2>/dev/null
}

# Health checks: "does the real service answer on its port", not just "is the port open".
redis_ok() {
  if have redis-cli; then
    [ "$(redis-cli -h "$STACK_HOST" -p "$REDIS_PORT" ping 2>/dev/null </dev/null)" = "PONG" ]
  else
    tcp_open "$REDIS_PORT"
  fi
}
# A Redis that keeps nothing on disk or evicts keys forgets idempotency keys and quota counters
# (docs/redis.md). One this script did not start is never reconfigured: warn, or refuse when
# METERD_REDIS_REQUIRE_DURABLE=1 (production-like runs).
redis_durability_check() {
  have redis-cli || return 0
  local aof policy problems=""
  aof="$(redis-cli -h "$STACK_HOST" -p "$REDIS_PORT" config get appendonly 2>/dev/null </dev/null | sed -n 2p)"
  policy="$(redis-cli -h "$STACK_HOST" -p "$REDIS_PORT" config get maxmemory-policy 2>/dev/null </dev/null | sed -n 2p)"
  [ "$aof" = yes ] || problems="appendonly is '${aof:-?}' (a restart forgets every dedupe key and quota counter)"
  [ "$policy" = noeviction ] || problems="${problems:+$problems; }maxmemory-policy is '${policy:-?}' (eviction silently forgets dedupe keys)"
  [ -z "$problems" ] && return 0
  if [ "${METERD_REDIS_REQUIRE_DURABLE:-0}" = 1 ]; then
    die "Redis on $STACK_HOST:$REDIS_PORT is not durable: $problems. Run it with --appendonly yes --appendfsync everysec --maxmemory-policy noeviction (docs/redis.md)."
  fi
  warn "Redis on $STACK_HOST:$REDIS_PORT: $problems. Fine for tests; not for data you keep (docs/redis.md). Not changing a Redis this script did not start."
}
pg_ok() {
  if have pg_isready; then
    pg_isready -q -h "$STACK_HOST" -p "$PGPORT" -t 2 </dev/null
  else
    tcp_open "$PGPORT"
  fi
}
ch_ok() {
  if have curl; then
    # 18.16 answers "Ok.\n" on /ping
    [ "$(curl -sf --max-time 2 "http://$STACK_HOST:$CLICKHOUSE_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ]
  else
    tcp_open "$CLICKHOUSE_HTTP_PORT" # before curl is installed
  fi
}
ch_query() {
  curl -sf --max-time 10 --data-binary "$1" "http://$STACK_HOST:$CLICKHOUSE_HTTP_PORT/"
}

# wait_for <service> <logfile> <check-fn> [pid]: poll until the check passes, or fail with
# an error that names the service and points at its log (CI logs then say where to look).
# With a pid, fail at once if that process exits instead of waiting out the timeout.
wait_for() {
  local name="$1" logfile="$2" check="$3" pid="${4:-}" i
  for ((i = 0; i < STACK_WAIT_SECONDS * 5; i++)); do
    if "$check"; then return 0; fi
    if [ -n "$pid" ] && ! pid_alive "$pid"; then
      die "$name exited while starting; see its log: $logfile"
    fi
    sleep 0.2
  done
  die "$name did not answer on $STACK_HOST within ${STACK_WAIT_SECONDS}s; see its log: $logfile"
}

# pid_alive <pid>: running, and not a zombie. The zombie check matters here: daemons are
# reparented to PID 1, and on these machines PID 1 reaps exited children only every second
# or two, so a dead server still passes `kill -0` for a while.
pid_alive() {
  local pid="$1" stat rest
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  rest="${stat##*) }" # field 3 (state) follows "(comm) "
  [ "${rest%% *}" != Z ]
}

# pid_is <pid> <comm-prefix>: the pid is alive AND is the program we expect. Guards
# against pid reuse, so down.sh never signals an unrelated process after a reboot.
# (/proc/<pid>/comm is truncated to 15 chars, e.g. "clickhouse-serv".)
pid_is() {
  local pid="$1" want="$2" comm
  pid_alive "$pid" || return 1
  comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
  [[ "$comm" == "$want"* ]]
}

# wait_pid_gone <pid> <seconds>
wait_pid_gone() {
  local pid="$1" secs="$2" i
  for ((i = 0; i < secs * 10; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  return 1
}

# Run a command as the postgres OS user when we are root (initdb/pg_ctl refuse root);
# as a normal user, run it as that user (they own their own cluster then).
as_pg_user() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Newest installed PostgreSQL server bin dir (Debian: /usr/lib/postgresql/<ver>/bin).
pg_bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$d" ] && [ -x "$d/initdb" ] && printf '%s\n' "$d"
}

# Serialize up.sh/down.sh runs (e.g. parallel test jobs each calling stack:up).
# The lock is held on fd 9. Every daemon (and apt-get, whose maintainer scripts may start
# one) must be launched with `9>&-`: a daemon that inherited fd 9 would hold the lock for
# its whole life and make every later up.sh/down.sh wait.
# take_stack_lock [<dir>]: the lock of <dir>'s stack (default: this checkout's).
take_stack_lock() {
  local dir="${1:-$STACK_DIR}"
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock -w 300 9 || die "another infra/stack script holds $dir/.lock"
}

# wait_for_pidfile <service> <pidfile> <logfile>: echo the pid once the daemon wrote it.
wait_for_pidfile() {
  local name="$1" pidfile="$2" logfile="$3" i pid
  for ((i = 0; i < STACK_WAIT_SECONDS * 10; i++)); do
    pid="$(cat "$pidfile" 2>/dev/null | head -n 1 | tr -dc 0-9 || true)"
    if [ -n "$pid" ]; then echo "$pid"; return 0; fi
    sleep 0.1
  done
  die "$name did not write its pid file $pidfile within ${STACK_WAIT_SECONDS}s; see its log: $logfile"
}
