#!/usr/bin/env bash
# infra/stack/down.sh — stop the services that infra/stack/up.sh started, and only those.
#
#   npm run stack:down        (or: bash infra/stack/down.sh, from any cwd)
#
# A service counts as "started by up.sh" only if .stack/<service>/started.pid exists and
# names a live process of the expected program (pid reuse after a reboot is not enough).
# Services that were already running when up.sh ran (the machine's own Postgres/Redis)
# have no marker and are left alone. Data under .stack/ is kept, so the next up.sh
# restarts on the same data. Harmless when nothing was started.
set -euo pipefail

# shellcheck source=infra/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

take_stack_lock

# marker_pid <service> <comm-prefix>: sets PID to the marker's pid if it is ours and
# alive; returns 1 (and removes a stale marker) otherwise.
marker_pid() {
  local svc="$1" comm="$2" marker="$STACK_DIR/$1/started.pid"
  PID=""
  if [ ! -f "$marker" ]; then
    status_line "$svc" "" "not started by up.sh, left alone"
    return 1
  fi
  PID="$(tr -dc 0-9 <"$marker")"
  if ! pid_is "$PID" "$comm"; then
    rm -f "$marker"
    status_line "$svc" "" "was no longer running (stale marker removed)"
    return 1
  fi
}

# SIGTERM, wait, then SIGKILL as a last resort.
term_and_wait() {
  local svc="$1" pid="$2" secs="$3"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_pid_gone "$pid" "$secs"; then
    warn "$svc (pid $pid) still running after ${secs}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 10 || die "$svc (pid $pid) would not exit"
  fi
}

stop_clickhouse() {
  marker_pid clickhouse clickhouse || return 0
  # SIGTERM = graceful shutdown (finishes in-flight inserts/merges); give it time.
  term_and_wait clickhouse "$PID" 60
  rm -f "$STACK_DIR/clickhouse/started.pid" "$STACK_DIR/clickhouse/server.pid"
  status_line clickhouse "" "stopped (pid $PID); data kept in $STACK_DIR/clickhouse"
}

stop_postgres() {
  local bindir data PG_HOME=""
  marker_pid postgres postgres || return 0
  # shellcheck disable=SC1091
  source "$STACK_DIR/postgres/location"
  data="$PG_HOME/data"
  bindir="$(pg_bindir || true)"
  # -m fast: roll back open transactions and disconnect clients, then a clean
  # shutdown (no crash recovery on the next start). pg_ctl refuses root, hence as_pg_user.
  if [ -z "$bindir" ] || ! as_pg_user "$bindir/pg_ctl" -D "$data" stop -m fast -w -t 60 \
      </dev/null >>"$STACK_DIR/postgres/pg_ctl.log" 2>&1; then
    warn "pg_ctl stop failed (see $STACK_DIR/postgres/pg_ctl.log); signalling postmaster $PID"
    term_and_wait postgres "$PID" 60
  fi
  rm -f "$STACK_DIR/postgres/started.pid"
  status_line postgres "" "stopped (pid $PID); data kept in $data"
}

stop_redis() {
  marker_pid redis redis-server || return 0
  # Started with --save "": SIGTERM exits without writing anything (= shutdown nosave).
  term_and_wait redis "$PID" 30
  rm -f "$STACK_DIR/redis/started.pid"
  status_line redis "" "stopped (pid $PID)"
}

# Reverse start order.
stop_clickhouse
stop_postgres
stop_redis
