#!/usr/bin/env bash
# infra/stack/pgbouncer.sh — a PgBouncer in transaction mode in front of the stack's Postgres.
#
#   bash infra/stack/pgbouncer.sh up|down|status      (from any cwd)
#
# up:     install Debian's pgbouncer if missing (non-interactive), write its config under
#         <repo>/.stack/pgbouncer/<port>/ and start it on 127.0.0.1:$PGBOUNCER_PORT (6432), unless
#         ours already runs there. Idempotent; prints a status line on stdout.
# down:   stop it if this script started it (marker .stack/pgbouncer/<port>/started.pid), else nothing.
# status: "running <pid>" or "stopped"; exit 0 either way.
#
# Every database name is routed to the Postgres on $PGPORT (the `*` fallback), so a test's fresh
# database is reachable at once. pool_mode=transaction is the point: meterd must work when each
# transaction may run on a different server connection (docs/operations.md, "Postgres behind PgBouncer"). Auth is
# trust, like the stack's Postgres on loopback; a deployment uses auth_type=scram-sha-256 with an
# auth_file or auth_query.
#
# Env overrides: PGBOUNCER_PORT (6432), PGPORT (5432), PGBOUNCER_POOL_SIZE (20),
# PGBOUNCER_QUERY_TIMEOUT_S (0 = off), STACK_WAIT_SECONDS (60).
set -euo pipefail

# shellcheck source=infra/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PGBOUNCER_PORT="${PGBOUNCER_PORT:-6432}"
PGBOUNCER_POOL_SIZE="${PGBOUNCER_POOL_SIZE:-20}"
PGBOUNCER_QUERY_TIMEOUT_S="${PGBOUNCER_QUERY_TIMEOUT_S:-0}"
# One directory per port, so several instances (one per test file) can run side by side.
DIR="$STACK_DIR/pgbouncer/$PGBOUNCER_PORT"
MARKER="$DIR/started.pid"

pgbouncer_ok() {
  have pg_isready && pg_isready -q -h "$STACK_HOST" -p "$PGBOUNCER_PORT" -d postgres -t 2 </dev/null
}

# our_pid: the pid in the marker when it names a live pgbouncer; removes a stale marker.
our_pid() {
  local pid
  [ -f "$MARKER" ] || return 1
  pid="$(tr -dc 0-9 <"$MARKER")"
  if pid_is "$pid" pgbouncer; then
    echo "$pid"
    return 0
  fi
  rm -f "$MARKER"
  return 1
}

install_pgbouncer() {
  have pgbouncer && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    have sudo || die "need root (or sudo) to install pgbouncer"
    sudo=(sudo -n)
  fi
  log "installing pgbouncer from Debian (output in $STACK_DIR/apt-pgbouncer.log)"
  if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q install -y \
      --no-install-recommends pgbouncer \
    || { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q update \
      && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q install -y \
        --no-install-recommends pgbouncer; }; } </dev/null >"$STACK_DIR/apt-pgbouncer.log" 2>&1 9>&-; then
    tail -n 20 "$STACK_DIR/apt-pgbouncer.log" >&2
    die "apt-get install pgbouncer failed"
  fi
  hash -r
}

write_config() {
  mkdir -p "$DIR"
  # The stack's Postgres trusts loopback, so any user name goes; the file only has to exist.
  printf '"postgres" ""\n' >"$DIR/userlist.txt"
  cat >"$DIR/pgbouncer.ini" <<EOF
; Written by infra/stack/pgbouncer.sh; edits are overwritten on the next \`up\`.
[databases]
* = host=$STACK_HOST port=$PGPORT

[pgbouncer]
listen_addr = $STACK_HOST
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/userlist.txt
pool_mode = transaction
default_pool_size = $PGBOUNCER_POOL_SIZE
max_client_conn = 1000
; node-postgres sends no startup parameter beyond the tracked ones unless told to; meterd passes
; statement_timeout per transaction (SET LOCAL), never as a startup parameter.
ignore_startup_parameters = extra_float_digits
query_timeout = $PGBOUNCER_QUERY_TIMEOUT_S
server_reset_query =
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
admin_users = postgres
EOF
  # Created here so the daemon, running as postgres, can append to it.
  touch "$DIR/pgbouncer.log"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$DIR"; fi
}

up() {
  take_stack_lock
  local pid
  if pid="$(our_pid)"; then
    wait_for pgbouncer "$DIR/pgbouncer.log" pgbouncer_ok "$pid"
    status_line pgbouncer "$STACK_HOST:$PGBOUNCER_PORT" "already running (pid $pid)"
    return 0
  fi
  if tcp_open "$PGBOUNCER_PORT"; then
    die "port $PGBOUNCER_PORT is taken by a process this script did not start"
  fi
  pg_ok || die "Postgres does not answer on $STACK_HOST:$PGPORT: run infra/stack/up.sh first"
  install_pgbouncer
  write_config
  rm -f "$DIR/pgbouncer.pid"
  # pgbouncer refuses to run as root: -u drops to the postgres user. -d daemonizes after the
  # config is read, so a bad config fails here, with its reason in the log.
  local as_user=()
  if [ "$(id -u)" -eq 0 ]; then as_user=(-u postgres); fi
  pgbouncer -d "${as_user[@]}" "$DIR/pgbouncer.ini" </dev/null >>"$DIR/pgbouncer.log" 2>&1 9>&- \
    || die "pgbouncer failed to start; see its log: $DIR/pgbouncer.log"
  local i
  for ((i = 0; i < STACK_WAIT_SECONDS * 10; i++)); do
    pid="$(cat "$DIR/pgbouncer.pid" 2>/dev/null | tr -dc 0-9 || true)"
    [ -n "$pid" ] && break
    sleep 0.1
  done
  [ -n "$pid" ] || die "pgbouncer wrote no pid file; see its log: $DIR/pgbouncer.log"
  echo "$pid" >"$MARKER"
  wait_for pgbouncer "$DIR/pgbouncer.log" pgbouncer_ok "$pid"
  status_line pgbouncer "$STACK_HOST:$PGBOUNCER_PORT" "started (pid $pid, pool_mode=transaction, log $DIR/pgbouncer.log)"
}

down() {
  take_stack_lock
  local pid
  if ! pid="$(our_pid)"; then
    status_line pgbouncer "" "not started by this script, left alone"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_pid_gone "$pid" 20; then
    kill -KILL "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 10 || die "pgbouncer (pid $pid) would not exit"
  fi
  rm -f "$MARKER" "$DIR/pgbouncer.pid"
  status_line pgbouncer "" "stopped (pid $pid)"
}

status() {
  local pid
  if pid="$(our_pid)"; then echo "running $pid"; else echo "stopped"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
