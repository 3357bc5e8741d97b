#!/usr/bin/env bash
# `make consume`: examples/downstream_service.py as a second Dapr app, with its own
# sidecar and app id, on the Redis that `make run` started: it prints every reply as it
# completes. Start `make run` first. Ctrl-C stops the service and its sidecar. Arguments
# go to the service (`make consume` passes --follow: chunks as they arrive).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/local-lib.sh

if [ ! -f "$ENDPOINTS_FILE" ]; then
    echo "consume-local.sh: no Redis from \`make run\` ($ENDPOINTS_FILE is missing): start \`make run\` first" >&2
    exit 1
fi
# REDIS_ADDRESS and RESOURCES: the Redis and the components `make run` uses.
source "$ENDPOINTS_FILE"
DAPRD="${DAPRD:-$(bash scripts/daprd.sh)}"
CONSUMER_APP_ID="${CONSUMER_APP_ID:-downstream}"
CONSUMER_APP_PORT="${CONSUMER_APP_PORT:-$(pick_port 50052)}"
CONSUMER_GRPC_PORT="${CONSUMER_GRPC_PORT:-$(pick_port 50011)}"
CONSUMER_HTTP_PORT="${CONSUMER_HTTP_PORT:-$(pick_port 3511)}"
CONSUMER_METRICS_PORT="${CONSUMER_METRICS_PORT:-$(pick_port 9091)}"

start_daprd "$CONSUMER_APP_ID" "$CONSUMER_APP_PORT" "$CONSUMER_GRPC_PORT" \
    "$CONSUMER_HTTP_PORT" "$CONSUMER_METRICS_PORT" "$RESOURCES"
sidecar_pid="${started_pids[-1]}"
start downstream_service .venv/bin/python examples/downstream_service.py \
    --app-port "$CONSUMER_APP_PORT" "$@"
await_ready "daprd ($CONSUMER_APP_ID)" "$sidecar_pid" "reporting healthy" \
    healthy "$CONSUMER_HTTP_PORT"

cat >&2 <<EOF

$CONSUMER_APP_ID is consuming the replies from Redis $REDIS_ADDRESS (its own consumer group).
  sidecar gRPC 127.0.0.1:$CONSUMER_GRPC_PORT   HTTP 127.0.0.1:$CONSUMER_HTTP_PORT
Replies are printed below as they arrive; ask from another terminal: make ask PROMPT="Hi"
EOF
wait_any
