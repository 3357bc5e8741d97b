#!/usr/bin/env bash
# `make run`: daprd (in-memory pub/sub and state store) and the worker on the echo backend.
# Send a prompt from another terminal with: make ask PROMPT="Tell me a story"
set -euo pipefail
cd "$(dirname "$0")/.."
DAPRD="${DAPRD:-$(bash scripts/daprd.sh)}"
export APP_PORT="${APP_PORT:-50051}"
export DAPR_GRPC_PORT="${DAPR_GRPC_PORT:-50001}"
export DAPR_HTTP_PORT="${DAPR_HTTP_PORT:-3500}"
export WORKER_CONVERSATION_COMPONENTS="${WORKER_CONVERSATION_COMPONENTS:-[\"dapr-echo\"]}"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

.venv/bin/python -m worker &
pids+=($!)
"$DAPRD" --app-id llm-stream-worker \
    --app-port "$APP_PORT" --app-protocol grpc \
    --dapr-grpc-port "$DAPR_GRPC_PORT" --dapr-http-port "$DAPR_HTTP_PORT" \
    --resources-path components/local --config components/config/sidecar.yaml \
    --log-level warn &
pids+=($!)
echo "worker and daprd started; in another terminal: make ask PROMPT=\"Tell me a story\"" >&2
wait -n "${pids[@]}"
