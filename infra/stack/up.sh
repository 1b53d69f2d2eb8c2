#!/usr/bin/env bash
# infra/stack/up.sh — make Redis, PostgreSQL and ClickHouse answer on 127.0.0.1.
#
#   npm run stack:up          (or: bash infra/stack/up.sh, from any cwd)
#
# Idempotent. For each service:
#   * if something already answers on its port (the machine's own service, or one this
#     script started earlier), use it and never touch it;
#   * otherwise install what is missing from Debian's apt repos and start a private
#     instance on loopback with its data and log under <repo>/.stack/<service>/ and a
#     marker (.stack/<service>/started.pid) so infra/stack/down.sh stops only what this
#     script started.
# Then make sure the Postgres database $PGDATABASE_NAME (default: meterd) exists.
# ClickHouse databases are NOT created here: the migration runner owns them.
#
# Env overrides: REDIS_PORT (6379), PGPORT (5432), CLICKHOUSE_HTTP_PORT (8123),
# CLICKHOUSE_TCP_PORT (9000), PGDATABASE_NAME (meterd), STACK_WAIT_SECONDS (60).
# Needs no stdin and no tty (CI=true runs it with </dev/null).
set -euo pipefail

# shellcheck source=infra/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=infra/stack/clickhouse-config.sh
source "$(dirname "${BASH_SOURCE[0]}")/clickhouse-config.sh"

take_stack_lock

SERVICES=(redis postgres clickhouse)
declare -A STATE  # external | ours | start
declare -A NOTE   # extra text for the status line

port_of() {
  case "$1" in
    redis) echo "$REDIS_PORT" ;;
    postgres) echo "$PGPORT" ;;
    clickhouse) echo "$CLICKHOUSE_HTTP_PORT" ;;
  esac
}
ok_fn_of() {
  case "$1" in
    redis) echo redis_ok ;;
    postgres) echo pg_ok ;;
    clickhouse) echo ch_ok ;;
  esac
}
comm_of() {
  case "$1" in
    redis) echo redis-server ;;
    postgres) echo postgres ;;
    clickhouse) echo clickhouse ;;
  esac
}

# ---------------------------------------------------------------------------------------
# 1. Probe. Decide per service: already answering (someone else's, or ours from an
#    earlier run) or must be started. The fast path (everything up) ends up doing only
#    these probes plus one psql query, well under a second.
# ---------------------------------------------------------------------------------------
probe() {
  local svc="$1" marker pid="" port
  marker="$STACK_DIR/$svc/started.pid"
  port="$(port_of "$svc")"
  [ -f "$marker" ] && pid="$(cat "$marker" 2>/dev/null || true)"

  if [ -n "$pid" ] && pid_is "$pid" "$(comm_of "$svc")"; then
    # Started by an earlier up.sh and still alive (maybe still starting: step 4 waits).
    STATE[$svc]=ours
    return
  fi
  if [ -f "$marker" ]; then
    # Our instance died or the machine restarted: the marker is stale.
    rm -f "$marker"
  fi
  if "$(ok_fn_of "$svc")" || tcp_open "$port"; then
    STATE[$svc]=external
  else
    STATE[$svc]=start
  fi
}

for svc in "${SERVICES[@]}"; do probe "$svc"; done

# ---------------------------------------------------------------------------------------
# 2. Install missing Debian packages, in one apt-get run (update only if needed).
# ---------------------------------------------------------------------------------------
PKGS=()
have curl || PKGS+=(curl)
if [ "${STATE[redis]}" = start ] && ! have redis-server; then PKGS+=(redis-server); fi
if [ "${STATE[postgres]}" = start ] && [ -z "$(pg_bindir || true)" ]; then PKGS+=(postgresql); fi
# psql/createdb are needed in every case, to create the database.
if ! have psql || ! have createdb || ! have pg_isready; then PKGS+=(postgresql-client); fi
if [ "${STATE[clickhouse]}" = start ]; then
  have clickhouse-server || PKGS+=(clickhouse-server)
  have clickhouse-client || PKGS+=(clickhouse-client)
  # <timezone>UTC</timezone> in our config needs the zoneinfo database.
  [ -e /usr/share/zoneinfo/UTC ] || PKGS+=(tzdata)
fi

if [ "${#PKGS[@]}" -gt 0 ]; then
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    have sudo || die "need root (or sudo) to install: ${PKGS[*]}"
    SUDO=(sudo -n)
  fi
  APT_LOG="$STACK_DIR/apt.log"
  log "installing from Debian: ${PKGS[*]} (output in $APT_LOG)"
  # DPkg::Lock::Timeout: wait for a concurrent apt run instead of failing at once.
  # Output goes to a log (dpkg is chatty); on failure its tail is shown.
  if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q update \
      && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q install -y \
        --no-install-recommends "${PKGS[@]}"; } </dev/null >"$APT_LOG" 2>&1 9>&-; then
    tail -n 20 "$APT_LOG" >&2
    die "apt-get install ${PKGS[*]} failed; full output in $APT_LOG"
  fi
  hash -r
  # Debian's maintainer scripts may start a service on install when the machine lets
  # them (no policy-rc.d). If one now answers, it is the system's, not ours.
  for svc in "${SERVICES[@]}"; do
    if [ "${STATE[$svc]}" = start ] && tcp_open "$(port_of "$svc")"; then
      STATE[$svc]=external
      NOTE[$svc]=" (started by its Debian package on install)"
    fi
  done
fi

# ---------------------------------------------------------------------------------------
# 3. Start what is missing. Every daemon gets </dev/null and its output sent to its log,
#    so it never holds the caller's stdout/stderr open (a CI step would hang on EOF).
#    The marker is written as soon as the pid is known, before waiting for readiness, so
#    down.sh can still stop an instance that started but never became healthy.
# ---------------------------------------------------------------------------------------

start_redis() {
  local dir="$STACK_DIR/redis" pid
  mkdir -p "$dir"
  rm -f "$dir/redis.pid"
  # Redis holds the dedupe memory and the quota counters (docs/redis.md): an append-only file
  # synced every second survives a restart, and noeviction turns a full Redis into errors
  # (ingest answers 503) instead of silently dropping remembered keys. No RDB snapshots: the
  # AOF is the copy.
  redis-server --daemonize yes --bind "$STACK_HOST" --port "$REDIS_PORT" \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    --save "" --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
    </dev/null >>"$dir/redis.log" 2>&1 9>&- \
    || die "redis-server failed to start; see its log: $dir/redis.log"
  pid="$(wait_for_pidfile redis "$dir/redis.pid" "$dir/redis.log")"
  echo "$pid" >"$dir/started.pid"
  wait_for redis "$dir/redis.log" redis_ok "$pid"
  NOTE[redis]="started by meterd, data in $dir (log redis.log)"
}

# Where our cluster lives. Preferably .stack/postgres/data, but initdb/postgres run as
# the `postgres` OS user (they refuse root), which must be able to traverse the whole
# path to the repo. If it cannot (e.g. repo under a 0700 home), fall back to
# /var/tmp/meterd-stack-<hash of repo path>/postgres. The choice is recorded in
# .stack/postgres/location so later runs (and down.sh) find the same cluster.
pg_locate() {
  local dir="$STACK_DIR/postgres" home hash
  mkdir -p "$dir"
  if [ -f "$dir/location" ]; then
    # shellcheck disable=SC1091
    source "$dir/location"
    [ -n "${PG_HOME:-}" ] && return 0
  fi
  home="$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chmod 755 "$STACK_DIR" "$dir"
    if ! runuser -u postgres -- test -x "$dir"; then
      hash="$(printf '%s' "$REPO_ROOT" | sha1sum | cut -c1-12)"
      home="/var/tmp/meterd-stack-$hash/postgres"
      mkdir -p "$home"
      chmod 755 "/var/tmp/meterd-stack-$hash" "$home"
      log "postgres user cannot reach $dir; keeping the cluster in $home"
    fi
  fi
  PG_HOME="$home"
  printf 'PG_HOME=%q\n' "$PG_HOME" >"$dir/location"
}

start_postgres() {
  local bindir data logf pid
  bindir="$(pg_bindir)" || die "no PostgreSQL server found under /usr/lib/postgresql"
  pg_locate
  data="$PG_HOME/data"
  logf="$PG_HOME/postgres.log"
  mkdir -p "$data"
  touch "$logf"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$data" "$logf"; fi
  chmod 700 "$data"
  if [ ! -s "$data/PG_VERSION" ]; then
    log "initdb $data"
    # trust auth + superuser `postgres`: same contract as the machine's cluster.
    as_pg_user "$bindir/initdb" -D "$data" --auth=trust -U postgres \
      --encoding=UTF8 --locale=C.UTF-8 --no-sync </dev/null >>"$logf" 2>&1 9>&- \
      || die "initdb failed for postgres; see its log: $logf"
  fi
  # -k /tmp: the unix socket goes to /tmp, never into the machine's /var/run/postgresql.
  if ! as_pg_user "$bindir/pg_ctl" -D "$data" -l "$logf" -w -t "$STACK_WAIT_SECONDS" \
      -o "-c listen_addresses=$STACK_HOST -p $PGPORT -k /tmp" start </dev/null >>"$STACK_DIR/postgres/pg_ctl.log" 2>&1 9>&-; then
    [ -s "$data/postmaster.pid" ] && head -n 1 "$data/postmaster.pid" >"$STACK_DIR/postgres/started.pid"
    die "postgres did not start on $STACK_HOST:$PGPORT; see its log: $logf (and $STACK_DIR/postgres/pg_ctl.log)"
  fi
  pid="$(head -n 1 "$data/postmaster.pid")"
  echo "$pid" >"$STACK_DIR/postgres/started.pid"
  wait_for postgres "$logf" pg_ok "$pid"
  NOTE[postgres]="started by meterd, data in $data (log $logf)"
}

start_clickhouse() {
  local dir="$STACK_DIR/clickhouse" pid logf
  logf="$dir/log/clickhouse-server.err.log"
  mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
  write_clickhouse_config "$dir" "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT"
  # Not running (probe said so), so any pid file left is stale; the server refuses to
  # start over one that names a live pid, and the pid could have been reused.
  rm -f "$dir/server.pid"
  # Debian's 18.16 ships /usr/sbin/clickhouse-server (no multi-call `clickhouse` binary).
  # It runs fine as root with a private config, so no user switching is needed.
  clickhouse-server --config-file="$dir/config.xml" --pid-file="$dir/server.pid" --daemon \
    </dev/null >>"$dir/log/stdout.log" 2>&1 9>&- \
    || die "clickhouse-server failed to start; see its logs: $logf and $dir/log/stdout.log"
  pid="$(wait_for_pidfile clickhouse "$dir/server.pid" "$logf")"
  echo "$pid" >"$dir/started.pid"
  wait_for clickhouse "$logf" ch_ok "$pid"
  NOTE[clickhouse]="started by meterd, data in $dir (logs in log/)"
}

for svc in "${SERVICES[@]}"; do
  if [ "${STATE[$svc]}" = start ]; then "start_$svc"; fi
done

# ---------------------------------------------------------------------------------------
# 4. Everything must answer now (also covers a service that is still starting up, e.g.
#    the machine's own right after boot, or something else squatting on the port).
# ---------------------------------------------------------------------------------------
for svc in "${SERVICES[@]}"; do
  case "${STATE[$svc]}" in
    external)
      "$(ok_fn_of "$svc")" || wait_for "$svc (already listening on $STACK_HOST:$(port_of "$svc"), not started by meterd)" \
        "the log of whatever owns that port" "$(ok_fn_of "$svc")"
      NOTE[$svc]="already running${NOTE[$svc]:-}"
      ;;
    ours)
      if [ -z "${NOTE[$svc]:-}" ]; then
        case "$svc" in
          redis) logf="$STACK_DIR/redis/redis.log"; where="$STACK_DIR/redis" ;;
          postgres) pg_locate; logf="$PG_HOME/postgres.log"; where="$PG_HOME/data" ;;
          clickhouse) logf="$STACK_DIR/clickhouse/log/clickhouse-server.err.log"; where="$STACK_DIR/clickhouse" ;;
        esac
        "$(ok_fn_of "$svc")" || wait_for "$svc" "$logf" "$(ok_fn_of "$svc")" "$(cat "$STACK_DIR/$svc/started.pid")"
        NOTE[$svc]="started by meterd (earlier run), data in $where"
      fi
      ;;
  esac
done

# ---------------------------------------------------------------------------------------
# 5. The application database. -w: never prompt for a password (no stdin in CI).
# ---------------------------------------------------------------------------------------
PGUSER_STACK="${PGUSER:-postgres}"
db_lit="${PGDATABASE_NAME//\'/\'\'}"
exists="$(psql -w -h "$STACK_HOST" -p "$PGPORT" -U "$PGUSER_STACK" -d postgres -XtAc \
  "SELECT 1 FROM pg_database WHERE datname='$db_lit'" </dev/null)" \
  || die "cannot query postgres at $STACK_HOST:$PGPORT as $PGUSER_STACK"
if [ "$exists" != 1 ]; then
  createdb -w -h "$STACK_HOST" -p "$PGPORT" -U "$PGUSER_STACK" "$PGDATABASE_NAME" </dev/null \
    || die "createdb $PGDATABASE_NAME failed"
  db_note="database $PGDATABASE_NAME created"
else
  db_note="database $PGDATABASE_NAME exists"
fi

redis_durability_check

ch_version="$(ch_query 'SELECT version()' || true)"
case "$ch_version" in
  18.16.*) ;;
  *) [ "${STATE[clickhouse]}" = external ] || warn "ClickHouse on :$CLICKHOUSE_HTTP_PORT reports version '${ch_version}', expected 18.16.x" ;;
esac

status_line redis "$STACK_HOST:$REDIS_PORT" "${NOTE[redis]}"
status_line postgres "$STACK_HOST:$PGPORT" "${NOTE[postgres]} [$db_note]"
status_line clickhouse "$STACK_HOST:$CLICKHOUSE_HTTP_PORT" "${NOTE[clickhouse]} [version ${ch_version:-?}, native port $CLICKHOUSE_TCP_PORT]"
