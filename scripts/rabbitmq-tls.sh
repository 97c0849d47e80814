#!/usr/bin/env bash
# A throwaway RabbitMQ node with a TLS listener that asks for client certificates, for the
# client-certificate tests (tests/it/mtls). It runs beside the machine's own broker and
# never touches it: a node name, ports, Erlang cookie, config, data and logs of its own, all
# under DIR (as scripts/rabbitmq-cluster.sh does for its nodes).
#
#   scripts/rabbitmq-tls.sh start DIR PORT DIST_PORT
#       DIR holds ca.pem, server.pem and server.key (PEM). Starts node usync-tls-<DIR's
#       name>@localhost with AMQPS on 127.0.0.1:PORT (no plain listener), Erlang
#       distribution on DIST_PORT, `ssl_options.verify = verify_peer`,
#       `fail_if_no_peer_cert = true`, the EXTERNAL mechanism (plugin
#       rabbitmq_auth_mechanism_ssl, user name = the certificate's CN) and PLAIN.
#   scripts/rabbitmq-tls.sh ctl DIR ARGS...   rabbitmqctl against that node (add_user, ...)
#   scripts/rabbitmq-tls.sh stop DIR          stop it and remove DIR
#
# Needs the RabbitMQ server package (rabbitmq-server, rabbitmqctl in /usr/lib/rabbitmq/bin);
# runs as the calling user.
set -euo pipefail

bin=${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}

usage() {
  echo "usage: $0 start DIR PORT DIST_PORT | ctl DIR ARGS... | stop DIR" >&2
  exit 2
}

[ $# -ge 2 ] || usage
command=$1
dir=$(cd "$2" 2>/dev/null && pwd) || { echo "no directory $2" >&2; exit 1; }
shift 2
node="usync-tls-$(basename "$dir")@localhost"

# RABBITMQ_CONF_ENV_FILE replaces /etc/rabbitmq/rabbitmq-env.conf, which names the
# machine's own node; HOME holds this node's cookie.
with_env() {
  # shellcheck disable=SC1091
  . "$dir/ports"
  env HOME="$dir/home" \
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
    RABBITMQ_NODENAME="$node" \
    RABBITMQ_DIST_PORT="$dist_port" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$dir/pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    "$@"
}

ctl() { with_env "$bin/rabbitmqctl" -n "$node" "$@"; }

prepare() {
  local port=$1 dist_port=$2
  for f in ca.pem server.pem server.key; do
    [ -f "$dir/$f" ] || { echo "$dir/$f is missing" >&2; exit 1; }
  done
  printf 'port=%s\ndist_port=%s\n' "$port" "$dist_port" > "$dir/ports"
  mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/home/.erlang.cookie"
  chmod 400 "$dir/home/.erlang.cookie"
  echo '[rabbitmq_auth_mechanism_ssl].' > "$dir/enabled_plugins"
  : > "$dir/rabbitmq-env.conf"
  cat > "$dir/rabbitmq.conf" <<EOF
listeners.tcp = none
listeners.ssl.default = 127.0.0.1:$port
ssl_options.cacertfile = $dir/ca.pem
ssl_options.certfile = $dir/server.pem
ssl_options.keyfile = $dir/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
auth_mechanisms.1 = EXTERNAL
auth_mechanisms.2 = PLAIN
ssl_cert_login_from = common_name
loopback_users = none
log.file.level = info
EOF
}

case "$command" in
  start)
    [ $# -eq 2 ] || usage
    prepare "$1" "$2"
    with_env "$bin/rabbitmq-server" -detached > "$dir/log/startup.out" 2>&1
    for _ in $(seq 120); do
      ctl -q await_startup --timeout 2 >/dev/null 2>&1 && exit 0
      sleep 1
    done
    echo "node $node did not start; see $dir/log" >&2
    exit 1 ;;
  ctl)
    ctl "$@" ;;
  stop)
    pid=$(cat "$dir/pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      ctl -q stop >/dev/null 2>&1 || true
      # `stop` may answer before the VM has exited; the data must not go from under it.
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir" ;;
  *)
    usage ;;
esac
