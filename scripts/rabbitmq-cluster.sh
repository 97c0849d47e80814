#!/usr/bin/env bash
# A throwaway three-node RabbitMQ cluster on this machine, for the failover tests
# (tests/it/cluster). It runs beside the machine's own broker and never touches it: its
# nodes have names of their own (usync1..3@localhost), their own ports, their own Erlang
# cookie (so they cannot even reach the machine's node), and their own env file, config,
# data, logs and pid files under one directory.
#
#   scripts/rabbitmq-cluster.sh start       three nodes, clustered (about 40 s)
#   scripts/rabbitmq-cluster.sh stop        stop them and remove the directory
#   scripts/rabbitmq-cluster.sh status      the cluster as node 1 (or any live node) sees it
#   scripts/rabbitmq-cluster.sh addresses   host:port of nodes 1..3, comma-separated
#   scripts/rabbitmq-cluster.sh kill N      SIGKILL node N's Erlang VM (a crash, not a stop)
#   scripts/rabbitmq-cluster.sh freeze N    SIGSTOP it: the socket stays open, nothing answers
#   scripts/rabbitmq-cluster.sh heal        continue frozen nodes, restart dead ones, wait
#                                           until all three run the app again
#   scripts/rabbitmq-cluster.sh leader Q    the number of the node leading quorum queue Q
#
# Environment: USYNC_CLUSTER_DIR (default /tmp/user-sync-cluster), USYNC_CLUSTER_PORT
# (default 5780: node N listens for AMQP on 127.0.0.1:5780+N and for Erlang distribution
# on 25780+N), USYNC_CLUSTER_NAME (default usync: the nodes are usync1..3@localhost), so
# that a second cluster can run beside one already running. Needs the RabbitMQ server package (rabbitmq-server, rabbitmqctl in
# /usr/lib/rabbitmq/bin); runs as the calling user.
set -euo pipefail

dir=${USYNC_CLUSTER_DIR:-/tmp/user-sync-cluster}
base=${USYNC_CLUSTER_PORT:-5780}
bin=${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}
prefix=${USYNC_CLUSTER_NAME:-usync}
nodes=(1 2 3)

name() { echo "$prefix$1@localhost"; }
amqp_port() { echo $((base + $1)); }

# Runs a RabbitMQ script with node N's environment. HOME holds the cluster's cookie, and
# RABBITMQ_CONF_ENV_FILE replaces /etc/rabbitmq/rabbitmq-env.conf, which names the machine's
# own node.
with_env() {
  local n=$1
  shift
  env HOME="$dir/home" \
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
    RABBITMQ_NODENAME="$(name "$n")" \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
    RABBITMQ_DIST_PORT=$((20000 + base + n)) \
    RABBITMQ_CONFIG_FILE="$dir/node$n/rabbitmq.conf" \
    RABBITMQ_MNESIA_BASE="$dir/node$n/mnesia" \
    RABBITMQ_LOG_BASE="$dir/node$n/log" \
    RABBITMQ_PID_FILE="$dir/node$n/pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    "$@"
}

ctl() { local n=$1; shift; with_env "$n" "$bin/rabbitmqctl" -n "$(name "$n")" "$@"; }

pid_of() { local p; p=$(cat "$dir/node$1/pid" 2>/dev/null || true); echo "$p"; }

alive() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

frozen() {
  local pid; pid=$(pid_of "$1")
  [ -n "$pid" ] && [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = T ]
}

# The first node whose VM runs and is not frozen: where cluster-wide questions are asked.
any_live() {
  for n in "${nodes[@]}"; do alive "$n" && ! frozen "$n" && { echo "$n"; return 0; }; done
  echo "no live node" >&2
  return 1
}

prepare() {
  mkdir -p "$dir/home"
  if [ ! -f "$dir/home/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/home/.erlang.cookie"
    chmod 400 "$dir/home/.erlang.cookie"
  fi
  echo '[].' > "$dir/enabled_plugins"
  : > "$dir/rabbitmq-env.conf"
  for n in "${nodes[@]}"; do
    mkdir -p "$dir/node$n/mnesia" "$dir/node$n/log"
    # autoheal: after a freeze longer than net_ticktime the nodes rejoin by themselves
    # instead of staying partitioned for the next test.
    cat > "$dir/node$n/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
cluster_partition_handling = autoheal
log.file.level = info
EOF
  done
}

launch() {
  local n=$1
  alive "$n" && return 0
  with_env "$n" "$bin/rabbitmq-server" -detached > "$dir/node$n/log/startup.out" 2>&1
}

await() {
  local n=$1
  for _ in $(seq 90); do
    ctl "$n" -q await_startup --timeout 2 >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "node $n ($(name "$n")) did not start; see $dir/node$n/log" >&2
  return 1
}

running_nodes() { ctl "$1" -q cluster_status --formatter json 2>/dev/null \
  | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))'; }

await_cluster() {
  local n; n=$(any_live)
  for _ in $(seq 90); do
    [ "$(running_nodes "$n" || echo 0)" = 3 ] && return 0
    sleep 1
  done
  echo "the cluster did not reach three running nodes" >&2
  return 1
}

case "${1:-}" in
  start)
    prepare
    for n in "${nodes[@]}"; do launch "$n"; done
    for n in "${nodes[@]}"; do await "$n"; done
    for n in 2 3; do
      if ! ctl "$n" -q cluster_status 2>/dev/null | grep -q "$(name 1)"; then
        ctl "$n" -q stop_app
        ctl "$n" -q join_cluster "$(name 1)"
        ctl "$n" -q start_app
      fi
    done
    await_cluster
    "$0" addresses ;;
  stop)
    for n in 3 2 1; do
      frozen "$n" && kill -CONT "$(pid_of "$n")"
      if alive "$n"; then
        pid=$(pid_of "$n")
        ctl "$n" -q stop >/dev/null 2>&1 || true
        # `stop` may answer before the VM has exited; the data must not go from under it.
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
      fi
    done
    rm -rf "$dir" ;;
  status)
    ctl "$(any_live)" cluster_status ;;
  addresses)
    echo "127.0.0.1:$(amqp_port 1),127.0.0.1:$(amqp_port 2),127.0.0.1:$(amqp_port 3)" ;;
  pid)
    pid_of "$2" ;;
  kill)
    pid=$(pid_of "$2")
    [ -n "$pid" ] || { echo "node $2 has no pid file" >&2; exit 1; }
    kill -9 "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    echo "node $2 (pid $pid) survived SIGKILL" >&2; exit 1 ;;
  freeze)
    kill -STOP "$(pid_of "$2")" ;;
  heal)
    for n in "${nodes[@]}"; do
      frozen "$n" && kill -CONT "$(pid_of "$n")"
      alive "$n" || launch "$n"
    done
    for n in "${nodes[@]}"; do await "$n"; done
    await_cluster ;;
  leader)
    node=$(ctl "$(any_live)" -q list_queues name leader --formatter json \
      | python3 -c 'import json,sys; q=sys.argv[1]; print(next(x["leader"] for x in json.load(sys.stdin) if x["name"]==q))' "$2")
    echo "${node#"$prefix"}" | cut -d@ -f1 ;;
  *)
    echo "usage: $0 start|stop|status|addresses|pid N|kill N|freeze N|heal|leader QUEUE" >&2
    exit 2 ;;
esac
