#!/usr/bin/env bash
# `make run`: the worker (echo backend, no API key) and its sidecar, as deployed: a local
# Redis (Debian's redis-server, data kept in .cache/run/redis with AOF on), the Redis
# pub/sub and state store and the Resiliency policy of components/redis.
# `make run BROKER=memory`: in-memory pub/sub and state store (components/local) instead,
# no Redis; only this sidecar sees the events and nothing survives a restart.
# Ctrl-C stops everything it started. Ports: the variables below, and REDIS_PORT (6380, or
# a free one when taken); LOCAL_RUN_DIR (.cache/run) holds Redis' data and the resources;
# DAPR_LOG_LEVEL (error) shows more of the sidecar's log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/local-lib.sh

BROKER="${BROKER:-redis}"
DAPRD="${DAPRD:-$(bash scripts/daprd.sh)}"
export APP_PORT="${APP_PORT:-50051}"
export DAPR_GRPC_PORT="${DAPR_GRPC_PORT:-50001}"
export DAPR_HTTP_PORT="${DAPR_HTTP_PORT:-3500}"
DAPR_METRICS_PORT="${DAPR_METRICS_PORT:-9090}"
export WORKER_CONVERSATION_COMPONENTS="${WORKER_CONVERSATION_COMPONENTS:-[\"dapr-echo\"]}"
# As deployed: the sidecar presents Dapr's app API token, the worker answers no one else.
export APP_API_TOKEN="${APP_API_TOKEN:-$(head -c 24 /dev/urandom | base64 | tr -d '/+=')}"

case "$BROKER" in
    redis)
        bash scripts/ensure-redis.sh
        # The same port across restarts unless it is taken (e.g. by `dapr init`'s 6379).
        REDIS_PORT="${REDIS_PORT:-$(pick_port 6380)}"
        redis_address="127.0.0.1:$REDIS_PORT"
        mkdir -p "$LOCAL_RUN_DIR/redis"
        # Two servers on one data folder would each rewrite its append-only file.
        pidfile="$LOCAL_RUN_DIR/redis/redis.pid"
        if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "run-local.sh: a Redis on $LOCAL_RUN_DIR/redis still runs (pid $(cat "$pidfile")): is another \`make run\` up? Stop it first." >&2
            exit 1
        fi
        start redis-server redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
            --dir "$LOCAL_RUN_DIR/redis" --appendonly yes --save "" --pidfile "$pidfile" \
            --logfile "$LOCAL_RUN_DIR/redis/redis.log" --loglevel warning
        await_ready redis-server "${started_pids[-1]}" "listening on port $REDIS_PORT" \
            listening "$REDIS_PORT"
        # components/redis as deployed, pointed at this Redis; plus Dapr's echo
        # conversation component (--llm-component dapr-echo).
        resources="$LOCAL_RUN_DIR/resources"
        rm -rf "$resources"
        mkdir -p "$resources"
        for file in components/redis/*.yaml; do
            sed "s/localhost:6379/$redis_address/g" "$file" > "$resources/$(basename "$file")"
        done
        cp components/local/echo.yaml "$resources/"
        ;;
    memory)
        resources="$PWD/components/local"
        redis_address=""
        ;;
    *)
        echo "run-local.sh: BROKER must be redis or memory, not '$BROKER'" >&2
        exit 2
        ;;
esac

start_daprd llm-stream-worker "$APP_PORT" "$DAPR_GRPC_PORT" "$DAPR_HTTP_PORT" \
    "$DAPR_METRICS_PORT" "$resources"
sidecar_pid="${started_pids[-1]}"
start worker .venv/bin/python -m worker
await_ready "daprd (llm-stream-worker)" "$sidecar_pid" "reporting healthy" \
    healthy "$DAPR_HTTP_PORT"

if [ "$BROKER" = redis ]; then
    # What `make consume` attaches to; gone once this stops.
    printf 'REDIS_ADDRESS=%s\nRESOURCES=%s\n' "$redis_address" "$resources" > "$ENDPOINTS_FILE"
    remove_on_exit+=("$ENDPOINTS_FILE")
fi

cat >&2 <<EOF

llm-stream-worker is up (broker: $BROKER, LLM: the echo backend, no API key).
  sidecar  gRPC 127.0.0.1:$DAPR_GRPC_PORT   HTTP 127.0.0.1:$DAPR_HTTP_PORT   (app id llm-stream-worker)
  worker   app port 127.0.0.1:$APP_PORT
EOF
if [ "$BROKER" = redis ]; then
    cat >&2 <<EOF
  Redis    $redis_address   data in $LOCAL_RUN_DIR/redis (kept across restarts)
  resources $resources (components/redis pointed at this Redis)

In another terminal:
  make ask PROMPT="Tell me a story"     # ask; the reply streams back
  make consume                          # a second Dapr app printing every reply as it completes
Or attach your own app with its own sidecar to the same Redis:
  daprd --app-id my-app --resources-path $resources --config components/config/sidecar.yaml ...
Ctrl-C stops the worker, its sidecar and Redis.
EOF
else
    cat >&2 <<EOF
  in-memory pub/sub and state: only this sidecar sees the events, nothing is kept.

In another terminal:
  make ask PROMPT="Tell me a story"
Ctrl-C stops the worker and its sidecar.
EOF
fi
wait_any
