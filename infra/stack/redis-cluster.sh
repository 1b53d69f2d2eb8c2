#!/usr/bin/env bash
# infra/stack/redis-cluster.sh up|down|status [DIR]: a 3-primary Redis Cluster on 127.0.0.1,
# from Debian's redis-server, for testing meterd against REDIS_CLUSTER_NODES (docs/operations.md).
#
#   up      start the nodes, create the cluster (no replicas) and wait for cluster_state:ok.
#           A healthy cluster already running is reused. Nodes that kept their nodes.conf and
#           AOF (e.g. after `down`) come back with their data; a node whose config belongs to
#           another cluster, or a half-created cluster, is wiped and created again.
#   down    stop the nodes this script started (by their pid files); data is kept in DIR.
#   status  one line per node, then the cluster's state.
#
# DIR (absolute, or relative to the cwd) holds one folder per port: redis.conf, nodes.conf, the
# AOF, redis.log, redis.pid. Default: $MACHINE_STACK_DIR/redis-cluster (infra/stack/lib.sh).
# Env: REDIS_CLUSTER_PORTS (default "7101 7102 7103"); cluster-bus ports are +10000.
# On stdout, `up` prints one line: "started <seeds>" or "reused <seeds>", seeds as
# REDIS_CLUSTER_NODES wants them (the caller knows whether it must call `down` after).
set -euo pipefail
# shellcheck source=infra/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CMD="${1:-}"
DIR="${2:-$MACHINE_STACK_DIR/redis-cluster}"
read -r -a PORTS <<<"${REDIS_CLUSTER_PORTS:-7101 7102 7103}"
[ "${#PORTS[@]}" -ge 3 ] || die "a Redis Cluster needs at least 3 primaries (REDIS_CLUSTER_PORTS)"
SEEDS="$(printf "$STACK_HOST:%s," "${PORTS[@]}")"
SEEDS="${SEEDS%,}"

cli() { timeout 5 redis-cli -h "$STACK_HOST" -p "$1" "${@:2}" </dev/null 2>/dev/null; }
node_pid() { tr -dc 0-9 2>/dev/null <"$DIR/$1/redis.pid" || true; }
# Ours and running: its pid file names a live redis-server.
node_ours() { pid_is "$(node_pid "$1")" redis-server; }
node_up() { [ "$(cli "$1" ping)" = PONG ]; }
info_field() { cli "$1" cluster info | tr -d '\r' | sed -n "s/^$2://p"; }

# Every node answers, sees every other node, and serves all 16384 slots.
cluster_ok() {
  local p
  for p in "${PORTS[@]}"; do
    [ "$(info_field "$p" cluster_state)" = ok ] || return 1
    [ "$(info_field "$p" cluster_known_nodes)" = "${#PORTS[@]}" ] || return 1
    [ "$(info_field "$p" cluster_slots_assigned)" = 16384 ] || return 1
  done
}

# How many nodes know no other node and serve no slot (started from an empty dir).
blank_nodes() {
  local p n=0
  for p in "${PORTS[@]}"; do
    [ "$(info_field "$p" cluster_known_nodes)" = 1 ] && [ "$(info_field "$p" cluster_slots_assigned)" = 0 ] && n=$((n + 1))
  done
  echo "$n"
}

start_node() {
  local port="$1" d="$DIR/$1" pid i
  mkdir -p "$d"
  # Absolute paths only: redis-server resolves cluster-config-file against its cwd otherwise.
  # Durable like the standalone stack (docs/redis.md): AOF synced every second, no eviction.
  cat >"$d/redis.conf" <<EOF
bind $STACK_HOST
port $port
daemonize yes
dir $d
pidfile $d/redis.pid
logfile $d/redis.log
cluster-enabled yes
cluster-config-file $d/nodes.conf
cluster-node-timeout 5000
save ""
appendonly yes
appendfsync everysec
maxmemory-policy noeviction
EOF
  rm -f "$d/redis.pid"
  # 8>&- 9>&-: a daemon must not inherit this script's lock nor up.sh's (see lib.sh).
  redis-server "$d/redis.conf" </dev/null >>"$d/redis.log" 2>&1 8>&- 9>&- \
    || die "redis-server on port $port failed to start; see its log: $d/redis.log"
  for ((i = 0; i < STACK_WAIT_SECONDS * 10; i++)); do
    pid="$(node_pid "$port")"
    if [ -n "$pid" ] && node_up "$port"; then return 0; fi
    sleep 0.1
  done
  die "redis-server on port $port did not answer within ${STACK_WAIT_SECONDS}s; see its log: $d/redis.log"
}

stop_node() {
  local port="$1" pid
  node_ours "$port" || return 0
  pid="$(node_pid "$port")"
  # No RDB (save ""): SIGTERM flushes the AOF and exits.
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_pid_gone "$pid" 30; then
    warn "redis-server on port $port (pid $pid) still running after 30s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 10 || die "redis-server on port $port (pid $pid) would not exit"
  fi
}

# wait_cluster_ok <seconds>
wait_cluster_ok() {
  local end=$((SECONDS + $1))
  while ((SECONDS < end)); do
    cluster_ok && return 0
    sleep 0.2
  done
  return 1
}

wipe_and_start() {
  local p
  for p in "${PORTS[@]}"; do stop_node "$p"; done
  for p in "${PORTS[@]}"; do
    rm -rf "${DIR:?}/$p"
    start_node "$p"
  done
}

create() {
  local p hosts=()
  for p in "${PORTS[@]}"; do hosts+=("$STACK_HOST:$p"); done
  redis-cli --cluster create "${hosts[@]}" --cluster-replicas 0 --cluster-yes </dev/null >>"$DIR/create.log" 2>&1 \
    || die "redis-cli --cluster create failed; see $DIR/create.log"
  wait_cluster_ok "$STACK_WAIT_SECONDS" || die "the cluster did not reach cluster_state:ok within ${STACK_WAIT_SECONDS}s; see $DIR/*/redis.log"
}

up() {
  have redis-server && have redis-cli || die "redis-server/redis-cli missing: run infra/stack/up.sh (installs Debian's redis-server)"
  local p started=0
  for p in "${PORTS[@]}"; do
    if node_ours "$p"; then continue; fi
    # Someone else's server on our port: never touch it.
    tcp_open "$p" && die "port $p is in use by a process this script did not start"
    tcp_open "$((p + 10000))" && die "cluster-bus port $((p + 10000)) is in use by a process this script did not start"
    start_node "$p"
    started=1
  done
  if cluster_ok; then
    [ "$started" = 1 ] && echo "started $SEEDS" || echo "reused $SEEDS"
    return 0
  fi
  if [ "$started" = 1 ] && [ "$(blank_nodes)" = 0 ]; then
    # Every node restarted from its kept nodes.conf: they find each other within a few
    # cluster-node-timeouts, or the configs do not belong together.
    if wait_cluster_ok 15; then
      echo "started $SEEDS"
      return 0
    fi
  fi
  # Partly fresh, or configs of different clusters: start over.
  if [ "$(blank_nodes)" != "${#PORTS[@]}" ]; then
    log "stale cluster config in $DIR: recreating the cluster (its data is lost)"
    wipe_and_start
  fi
  create
  echo "started $SEEDS"
}

down() {
  local p
  for p in "${PORTS[@]}"; do
    if node_ours "$p"; then
      stop_node "$p"
      status_line "redis:$p" "" "stopped; data kept in $DIR/$p"
    else
      status_line "redis:$p" "" "not running from $DIR, left alone"
    fi
  done
}

status() {
  local p
  for p in "${PORTS[@]}"; do
    if node_ours "$p"; then
      status_line "redis:$p" "$STACK_HOST:$p" "pid $(node_pid "$p"), cluster_state:$(info_field "$p" cluster_state)"
    else
      status_line "redis:$p" "$STACK_HOST:$p" "not running from $DIR"
    fi
  done
  cluster_ok && status_line cluster "$SEEDS" ok || { status_line cluster "$SEEDS" "not ok"; return 1; }
}

case "$CMD" in
  up | down | status) ;;
  *) die "usage: $0 up|down|status [DIR]" ;;
esac
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd -P)"
# Our own lock (fd 8), not up.sh's: up.sh may call this script while it holds its lock.
exec 8>"$DIR/.lock"
flock -w 120 8 || die "another redis-cluster.sh holds $DIR/.lock"
"$CMD"
