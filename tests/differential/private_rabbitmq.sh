#!/usr/bin/env bash
# A private RabbitMQ node for the differential tier (Debian's rabbitmq-server, run as root).
#
#   eval "$(bash tests/differential/private_rabbitmq.sh start)"   # exports MINIMQ_DIFF_URL ...
#   bash tests/differential/private_rabbitmq.sh stop              # uses MINIMQ_DIFF_NODE/_DIR
#
# Its own node name, AMQP port, distribution port and data/log dirs under a temp dir; no
# plugins (so no management listener on 15672) and no config from /etc/rabbitmq, so it can
# run beside another node on the same machine. Shares the machine's epmd.
set -euo pipefail

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "${1:-}" in
start)
    dir=$(mktemp -d /tmp/minimq-diff-rabbit.XXXXXX)
    node="${MINIMQ_PRIVATE_NODE_PREFIX:-minimq-diff}-$$@localhost"
    port=$(free_port)
    dist=$(free_port)
    while [ "$dist" = "$port" ]; do dist=$(free_port); done
    mkdir -p "$dir/mnesia" "$dir/log"
    echo "[]." > "$dir/enabled_plugins"
    : > "$dir/rabbitmq-env.conf"
    chown -R rabbitmq:rabbitmq "$dir" 2>/dev/null || true
    env RABBITMQ_NODENAME="$node" RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq" RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" RABBITMQ_PID_FILE="$dir/pid" \
        nohup rabbitmq-server > "$dir/stdout.log" 2>&1 &
    # Ready once the AMQP port answers a protocol header with connection.start.
    for _ in $(seq 1 120); do
        if python3 - "$port" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)
s.settimeout(2)
s.sendall(b"AMQP\x00\x00\x09\x01")
assert s.recv(1)[:1] == b"\x01"
PY
        then
            echo "export MINIMQ_DIFF_URL=amqp://guest:guest@127.0.0.1:$port/"
            echo "export MINIMQ_DIFF_NODE=$node"
            echo "export MINIMQ_DIFF_DIR=$dir"
            exit 0
        fi
        sleep 0.5
    done
    echo "private RabbitMQ did not start; its log:" >&2
    tail -30 "$dir/stdout.log" >&2 || true
    exit 1
    ;;
stop)
    node=${MINIMQ_DIFF_NODE:?}
    dir=${MINIMQ_DIFF_DIR:?}
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" rabbitmqctl -q -n "$node" stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
