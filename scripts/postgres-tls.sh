#!/usr/bin/env bash
# A throwaway Postgres server that takes TCP connections only over TLS with a client
# certificate (`hostssl all all 127.0.0.1/32 cert`), for the client-certificate tests
# (tests/it/mtls). Its data, socket and log live under DIR; the machine's own server is
# never touched.
#
#   scripts/postgres-tls.sh start DIR PORT
#       DIR holds ca.pem (the CA client certificates must chain to), server.pem and
#       server.key. initdb into DIR/data, listen on 127.0.0.1:PORT and on a socket in DIR
#       (`local all all trust`: the test's own setup, as user postgres).
#   scripts/postgres-tls.sh stop DIR   stop it and remove DIR
#
# Runs the server as the OS user postgres when called as root (initdb refuses root).
# PG_BIN picks the server's bin directory (default: the newest /usr/lib/postgresql/*/bin).
set -euo pipefail

bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[ -x "$bin/initdb" ] || { echo "no initdb (set PG_BIN)" >&2; exit 1; }

usage() {
  echo "usage: $0 start DIR PORT | stop DIR" >&2
  exit 2
}

[ $# -ge 2 ] || usage
command=$1
dir=$(cd "$2" 2>/dev/null && pwd) || { echo "no directory $2" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$command" in
  start)
    [ $# -eq 3 ] || usage
    port=$3
    for f in ca.pem server.pem server.key; do
      [ -f "$dir/$f" ] || { echo "$dir/$f is missing" >&2; exit 1; }
    done
    [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
    chmod 600 "$dir/server.key"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    cat > "$dir/data/pg_hba.conf" <<EOF
local   all all              trust
hostssl all all 127.0.0.1/32 cert
EOF
    cat >> "$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
ssl = on
ssl_cert_file = '$dir/server.pem'
ssl_key_file = '$dir/server.key'
ssl_ca_file = '$dir/ca.pem'
fsync = off
max_connections = 30
shared_buffers = 16MB
EOF
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; } ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir" ;;
  *)
    usage ;;
esac
