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

# listening PORT: true when something accepts connections on 127.0.0.1:PORT.
listening() {
    ! port_free "$1"
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

# await_ready NAME PID WHAT CHECK...: run CHECK until it succeeds (for 60s at most);
# fail, saying so, when the process PID exits first.
await_ready() {
    local name="$1" pid="$2" what="$3" tries=0
    shift 3
    until "$@"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before $what" >&2
            return 1
        fi
        tries=$((tries + 1))
        if [ "$tries" -gt 300 ]; then
            echo "$name: still not $what after 60s" >&2
            return 1
        fi
        sleep 0.2
    done
}

# start_daprd APP_ID APP_PORT GRPC_PORT HTTP_PORT METRICS_PORT RESOURCES: a sidecar on
# loopback with the shared Configuration (the nameformat resolver). Start it before its
# app and await it healthy after: processes stop newest first, the app before its sidecar.
start_daprd() {
    start "daprd ($1)" "$DAPRD" --app-id "$1" --app-port "$2" --app-protocol grpc \
        --dapr-grpc-port "$3" --dapr-http-port "$4" --metrics-port "$5" \
        --dapr-listen-addresses 127.0.0.1 \
        --resources-path "$6" --config "$SIDECAR_CONFIG" \
        --log-level "${DAPR_LOG_LEVEL:-error}"
}
