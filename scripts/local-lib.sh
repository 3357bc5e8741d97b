# Shared by scripts/run-local.sh (`make run`) and scripts/consume-local.sh (`make consume`):
# sourced, not run. Starts processes in the background, remembers them, and stops them
# all (newest first) when the calling script exits or is interrupted.

# Where `make run` keeps Redis' data, the rendered resources and the address file.
LOCAL_RUN_DIR="${LOCAL_RUN_DIR:-$PWD/.cache/run}"
ENDPOINTS_FILE="$LOCAL_RUN_DIR/endpoints.env"
SIDECAR_CONFIG="$PWD/components/config/sidecar.yaml"

started_pids=()
started_names=()
remove_on_exit=()

# stop_started: SIGTERM to each started process, newest first, waiting for each to exit,
# so the worker drains before its sidecar stops and the sidecar before Redis.
stop_started() {
    local i pid
    for (( i=${#started_pids[@]}-1; i>=0; i-- )); do
        pid="${started_pids[$i]}"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    started_pids=()
}

on_exit() {
    local status=$?
    trap - EXIT INT TERM
    if [ "${#remove_on_exit[@]}" -gt 0 ]; then rm -f "${remove_on_exit[@]}"; fi
    stop_started
    exit "$status"
}

# Ctrl-C (or SIGTERM) stops what was started, in order, and exits 0: stopping is the
# normal way out of `make run`.
trap on_exit EXIT
trap 'exit 0' INT TERM

# start NAME COMMAND...: run COMMAND in the background and remember it. In its own
# session: Ctrl-C then reaches only this script, which stops everything in order,
# instead of every process at once (a sidecar gone while the worker drains).
start() {
    local name="$1"
    shift
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@" &
    else
        "$@" &
    fi
    started_pids+=($!)
    started_names+=("$name")
}

# wait_any: block until one started process exits; say which, and fail.
wait_any() {
    local i
    wait -n "${started_pids[@]}" || true
    for i in "${!started_pids[@]}"; do
        if ! kill -0 "${started_pids[$i]}" 2>/dev/null; then
            echo "${started_names[$i]} exited; stopping the rest" >&2
            return 1
        fi
    done
}

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1")
} 2>/dev/null

# pick_port PREFERRED: PREFERRED when free, else one the kernel hands out.
pick_port() {
    if port_free "$1"; then
        echo "$1"
    else
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    fi
}

# wait_port NAME PORT PID: wait until PORT accepts connections, or fail when PID died.
wait_port() {
    local tries=0
    until ! port_free "$2"; do
        if ! kill -0 "$3" 2>/dev/null; then
            echo "$1 exited before listening on port $2" >&2
            return 1
        fi
        tries=$((tries + 1))
        if [ "$tries" -gt 600 ]; then
            echo "$1 does not listen on port $2 after 60s" >&2
            return 1
        fi
        sleep 0.1
    done
}

# healthy PORT: true when the sidecar on PORT reports healthy (HTTP 204 on /v1.0/healthz:
# components loaded, the app's subscriptions in place).
healthy() {
    local code
    code="$(
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
        printf 'GET /v1.0/healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
        read -r -t 2 _ status _ <&3 && echo "$status"
    )"
    [ "$code" = 204 ]
} 2>/dev/null

# wait_healthy NAME PORT PID: wait until the sidecar is healthy, or fail when PID died.
wait_healthy() {
    local tries=0
    until healthy "$2"; do
        if ! kill -0 "$3" 2>/dev/null; then
            echo "$1 exited before reporting healthy" >&2
            return 1
        fi
        tries=$((tries + 1))
        if [ "$tries" -gt 300 ]; then
            echo "$1 does not report healthy on port $2 after 60s" >&2
            return 1
        fi
        sleep 0.2
    done
}

# start_daprd APP_ID APP_PORT GRPC_PORT HTTP_PORT METRICS_PORT RESOURCES...:
# a sidecar on loopback with the shared Configuration (the nameformat resolver). Start
# it before its app and wait_healthy after: processes stop newest first, the app
# before its sidecar.
start_daprd() {
    local app_id="$1" app_port="$2" grpc="$3" http="$4" metrics="$5"
    shift 5
    local resources=() folder
    for folder in "$@"; do resources+=(--resources-path "$folder"); done
    start "daprd ($app_id)" "$DAPRD" --app-id "$app_id" \
        --app-port "$app_port" --app-protocol grpc \
        --dapr-grpc-port "$grpc" --dapr-http-port "$http" --metrics-port "$metrics" \
        --dapr-listen-addresses 127.0.0.1 \
        "${resources[@]}" --config "$SIDECAR_CONFIG" \
        --log-level "${DAPR_LOG_LEVEL:-error}"
}
