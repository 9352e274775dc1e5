#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, for the cluster test (test/cluster.test.ts) and for people to
# try failover. It never touches the machine's own node (rabbit@localhost on 127.0.0.1:5672).
#
#   scripts/rabbitmq-cluster.sh start          start the three nodes (a fresh cluster when none is running)
#   scripts/rabbitmq-cluster.sh stop           stop the three nodes (their files stay, for the logs)
#   scripts/rabbitmq-cluster.sh status         which nodes run, and the cluster as node 1 (or 2, 3) sees it
#   scripts/rabbitmq-cluster.sh stop-node N    stop node N (1..3) altogether, as a crash of its host would
#   scripts/rabbitmq-cluster.sh start-node N   start node N again; it rejoins the cluster by itself
#   scripts/rabbitmq-cluster.sh urls           the AMQP URLs of the three nodes, comma-separated (for AMQP_URL)
#   scripts/rabbitmq-cluster.sh ctl N ARGS…    rabbitmqctl against node N, e.g. `ctl 1 list_queues name type leader members`
#
# | node | name                   | AMQP            | distribution | management (ES_CLUSTER_MANAGEMENT=1) |
# |------|------------------------|-----------------|--------------|--------------------------------------|
# | 1    | es-cluster-1@localhost | 127.0.0.1:5681  | 25681        | 15681                                |
# | 2    | es-cluster-2@localhost | 127.0.0.1:5682  | 25682        | 15682                                |
# | 3    | es-cluster-3@localhost | 127.0.0.1:5683  | 25683        | 15683                                |
#
# Login guest/guest (from 127.0.0.1 only, RabbitMQ's default), vhost `/`.
#
# How RabbitMQ is installed here: Debian's rabbitmq-server package (3.10), Erlang/OTP 25. /usr/sbin/rabbitmq-server
# and /usr/sbin/rabbitmqctl are wrappers that switch to the `rabbitmq` user and its cookie; this script runs the
# real scripts in /usr/lib/rabbitmq/bin as the current user instead, with, per node:
#   RABBITMQ_NODENAME             es-cluster-N@localhost (short names, like the machine's node)
#   RABBITMQ_NODE_PORT            the AMQP port; RABBITMQ_NODE_IP_ADDRESS 127.0.0.1
#   RABBITMQ_DIST_PORT            the Erlang distribution port (epmd, on 4369, is shared with the machine's node)
#   RABBITMQ_CTL_DIST_PORT_MIN/MAX the ports rabbitmqctl itself listens on while it talks to the node
#   RABBITMQ_CONFIG_FILE          the node's own rabbitmq.conf (listener, memory and disk limits), so the machine's
#                                 /etc/rabbitmq/rabbitmq.conf (listener on 5672) is never read
#   RABBITMQ_CONF_ENV_FILE        the node's own rabbitmq-env.conf, so /etc/rabbitmq/rabbitmq-env.conf
#                                 (NODENAME=rabbit@localhost) is never read
#   RABBITMQ_ENABLED_PLUGINS_FILE its own plugin list: none, or rabbitmq_management with ES_CLUSTER_MANAGEMENT=1
#   RABBITMQ_MNESIA_BASE, RABBITMQ_LOG_BASE, RABBITMQ_PID_FILE   under $ES_CLUSTER_DIR/node-N
#   HOME                          $ES_CLUSTER_DIR/home, which holds the one Erlang cookie of the three nodes
#                                 and of this script's rabbitmqctl calls
# Nodes 2 and 3 join node 1 with `rabbitmqctl -n es-cluster-N@localhost stop_app; join_cluster
# es-cluster-1@localhost; start_app`. Quorum queues declared through any node get members on the three
# (`scripts/rabbitmq-cluster.sh ctl 1 list_queues name type leader members`). The adapter's dead queues
# (`<queue>.dead`) are classic queues, which live on one node: a policy (`es-mirror-dead-queues`, ha-mode all)
# mirrors them on the three; without it a consumer cannot declare its topology again, so cannot resume,
# while the node holding its dead queue is down.
#
# Modest settings for a small machine: one Erlang scheduler per node, memory high watermark 256 MiB, disk free
# limit 50 MB; about 120 MB of memory per node when idle.
#
# Environment: ES_CLUSTER_DIR (default ${TMPDIR:-/tmp}/entity-sync-rabbitmq-cluster), ES_CLUSTER_PORT_BASE
# (default 5680: AMQP ports base+1..base+3, distribution 20000 above, management 10000 above),
# ES_CLUSTER_MANAGEMENT=1 to enable the management plugin, ES_CLUSTER_WAIT (seconds, default 90).
set -euo pipefail

RABBIT_BIN="${RABBITMQ_BIN_DIR:-/usr/lib/rabbitmq/bin}"
BASE="${ES_CLUSTER_DIR:-${TMPDIR:-/tmp}/entity-sync-rabbitmq-cluster}"
PORT_BASE="${ES_CLUSTER_PORT_BASE:-5680}"
WAIT="${ES_CLUSTER_WAIT:-90}"
NODES=(1 2 3)

log() { echo "[rabbitmq-cluster] $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

node_name() { echo "es-cluster-$1@localhost"; }
amqp_port() { echo $((PORT_BASE + $1)); }
dist_port() { echo $((PORT_BASE + 20000 + $1)); }
mgmt_port() { echo $((PORT_BASE + 10000 + $1)); }
node_dir() { echo "$BASE/node-$1"; }

check_node_arg() {
  case "${1:-}" in
    1 | 2 | 3) ;;
    *) die "a node number 1, 2 or 3 is needed (got '${1:-}')" ;;
  esac
}

# Runs a RabbitMQ script of $RABBIT_BIN for node $1 with that node's environment.
with_node_env() {
  local n="$1" dir
  shift
  dir="$(node_dir "$n")"
  env -u RABBITMQ_ENV_LOADED \
    HOME="$BASE/home" \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_USE_LONGNAME=false \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
    RABBITMQ_DIST_PORT="$(dist_port "$n")" \
    RABBITMQ_CTL_DIST_PORT_MIN="$((PORT_BASE + 30000 + 10 * n))" \
    RABBITMQ_CTL_DIST_PORT_MAX="$((PORT_BASE + 30000 + 10 * n + 9))" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_PLUGINS_EXPAND_DIR="$dir/plugins-expand" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_MNESIA_DIR="$dir/mnesia/$(node_name "$n")" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 +A 4 -kernel inet_dist_use_interface {127,0,0,1}" \
    RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    ERL_CRASH_DUMP="$dir/erl_crash.dump" \
    "$@"
}

ctl() { # node args…
  local n="$1"
  shift
  ensure_cookie
  mkdir -p "$(node_dir "$n")"
  with_node_env "$n" timeout 60 "$RABBIT_BIN/rabbitmqctl" -n "$(node_name "$n")" "$@"
}

running() { # node: its Erlang node is registered with epmd (fast: no Erlang CLI start-up)
  epmd -names 2>/dev/null | grep -q "^name es-cluster-$1 at port "
}

app_running() { # node: its AMQP listener answers (the rabbit application opens it last when it boots)
  port_taken "$(amqp_port "$1")"
}

write_files() { # node
  local n="$1" dir
  dir="$(node_dir "$n")"
  mkdir -p "$dir/mnesia" "$dir/log" "$dir/plugins-expand"
  {
    echo "listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")"
    echo "vm_memory_high_watermark.absolute = 256MiB"
    echo "disk_free_limit.absolute = 50MB"
    echo "log.file.level = info"
    echo "log.console = false"
    if [ "$n" != 1 ]; then
      # nodes 2 and 3 join node 1 on their first boot; `join_cluster` below is the fallback
      echo "cluster_formation.peer_discovery_backend = classic_config"
      echo "cluster_formation.classic_config.nodes.1 = $(node_name 1)"
    fi
    if [ "${ES_CLUSTER_MANAGEMENT:-}" = "1" ]; then
      echo "management.tcp.port = $(mgmt_port "$n")"
      echo "management.tcp.ip = 127.0.0.1"
    fi
  } >"$dir/rabbitmq.conf"
  # no NODENAME here: the environment above names the node
  echo 'ERL_EPMD_ADDRESS=127.0.0.1' >"$dir/rabbitmq-env.conf"
  echo '[].' >"$dir/advanced.config"
  if [ "${ES_CLUSTER_MANAGEMENT:-}" = "1" ]; then
    echo '[rabbitmq_management].' >"$dir/enabled_plugins"
  else
    echo '[].' >"$dir/enabled_plugins"
  fi
}

ensure_cookie() {
  mkdir -p "$BASE/home"
  if [ ! -s "$BASE/home/.erlang.cookie" ]; then
    head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F' >"$BASE/home/.erlang.cookie"
    chmod 400 "$BASE/home/.erlang.cookie"
  fi
}

port_taken() { # port
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

wait_app() { # node
  local n="$1" deadline=$((SECONDS + WAIT))
  until app_running "$n"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "node $n: last lines of its log:"
      tail -n 20 "$(node_dir "$n")/log/$(node_name "$n").log" >&2 2>/dev/null || true
      die "node $n ($(node_name "$n")) did not start within ${WAIT}s"
    fi
    sleep 1
  done
}

start_server() { # node
  local n="$1"
  if running "$n"; then
    log "node $n ($(node_name "$n")) runs already"
    return 0
  fi
  if port_taken "$(amqp_port "$n")"; then
    die "port $(amqp_port "$n") is taken by something else; set ES_CLUSTER_PORT_BASE"
  fi
  write_files "$n"
  log "starting node $n ($(node_name "$n")) on 127.0.0.1:$(amqp_port "$n")"
  with_node_env "$n" "$RABBIT_BIN/rabbitmq-server" -detached \
    >"$(node_dir "$n")/log/startup.log" 2>&1 </dev/null
}

clustered_with_1() { # node: node 1 and node N are both among node N's running cluster members
  local status
  status="$(ctl "$1" -q cluster_status --formatter json 2>/dev/null)" || return 1
  echo "$status" | grep -q "\"running_nodes\":\[[^]]*\"$(node_name 1)\"" &&
    echo "$status" | grep -q "\"running_nodes\":\[[^]]*\"$(node_name "$1")\""
}

cmd_start() {
  local any=0 n
  for n in "${NODES[@]}"; do
    if running "$n"; then any=1; fi
  done
  if [ "$any" = 0 ] && [ -d "$BASE" ]; then
    log "no node runs: starting a fresh cluster in $BASE"
    rm -rf "$BASE/node-1" "$BASE/node-2" "$BASE/node-3"
  fi
  ensure_cookie
  start_server 1
  wait_app 1
  for n in 2 3; do start_server "$n"; done
  for n in 2 3; do wait_app "$n"; done
  for n in 2 3; do
    if clustered_with_1 "$n"; then continue; fi
    log "node $n joins $(node_name 1)"
    ctl "$n" -q stop_app >/dev/null
    ctl "$n" -q join_cluster "$(node_name 1)" >/dev/null
    ctl "$n" -q start_app >/dev/null
    wait_app "$n"
  done
  # The adapter's dead queues (`<queue>.dead`) are classic queues, which live on one node: mirrored on the
  # three, a consumer can declare them again, and so resume, while that node is down.
  ctl 1 -q set_policy --apply-to queues es-mirror-dead-queues '\.dead$' \
    '{"ha-mode":"all","ha-sync-mode":"automatic"}' >/dev/null
  log "cluster up: $(cmd_urls)"
}

cmd_stop() {
  local n
  for n in 3 2 1; do
    if running "$n"; then
      log "stopping node $n ($(node_name "$n"))"
      ctl "$n" -q stop >/dev/null 2>&1 || log "node $n: rabbitmqctl stop exited with $?"
    fi
  done
}

cmd_stop_node() {
  check_node_arg "${1:-}"
  if running "$1"; then
    log "stopping node $1 ($(node_name "$1"))"
    ctl "$1" -q stop >/dev/null
  else
    log "node $1 ($(node_name "$1")) is not running"
  fi
}

cmd_start_node() {
  check_node_arg "${1:-}"
  [ -d "$(node_dir "$1")/mnesia" ] || die "node $1 was never started: run '$0 start' first"
  start_server "$1"
  wait_app "$1"
  log "node $1 ($(node_name "$1")) is up"
}

cmd_status() {
  local n shown=0
  for n in "${NODES[@]}"; do
    if running "$n"; then
      if app_running "$n"; then
        echo "node $n $(node_name "$n") amqp://127.0.0.1:$(amqp_port "$n") running"
      else
        echo "node $n $(node_name "$n") amqp://127.0.0.1:$(amqp_port "$n") node up, rabbit application stopped"
      fi
    else
      echo "node $n $(node_name "$n") amqp://127.0.0.1:$(amqp_port "$n") stopped"
    fi
  done
  for n in "${NODES[@]}"; do
    if [ "$shown" = 0 ] && app_running "$n"; then
      ctl "$n" cluster_status
      shown=1
    fi
  done
  [ "$shown" = 1 ]
}

cmd_urls() {
  echo "amqp://guest:guest@127.0.0.1:$(amqp_port 1),amqp://guest:guest@127.0.0.1:$(amqp_port 2),amqp://guest:guest@127.0.0.1:$(amqp_port 3)"
}

[ -x "$RABBIT_BIN/rabbitmq-server" ] || die "no RabbitMQ in $RABBIT_BIN (set RABBITMQ_BIN_DIR)"

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  stop-node) cmd_stop_node "${2:-}" ;;
  start-node) cmd_start_node "${2:-}" ;;
  urls) cmd_urls ;;
  ctl)
    check_node_arg "${2:-}"
    n="$2"
    shift 2
    ctl "$n" "$@"
    ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
