#!/usr/bin/env bash
# Prints the path of kustomize-render (and nothing else on stdout), building it if needed.
# Order: $KUSTOMIZE_RENDER; our cached build .cache/kustomize/<api version>-<go.sum hash>/;
# else `go build` this module (modules from the Go module proxy) into that cache.
set -euo pipefail
SRC="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$SRC/../.." && pwd)"
VERSION="$(awk '$1 == "sigs.k8s.io/kustomize/api" { sub(/^v/, "", $2); print $2; exit }' "$SRC/go.mod")"
STAMP="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-12)"
CACHE="${KUSTOMIZE_CACHE_DIR:-$ROOT/.cache/kustomize}/$VERSION-$STAMP"
BIN="$CACHE/kustomize-render"

if [ -n "${KUSTOMIZE_RENDER:-}" ]; then
    [ -x "$KUSTOMIZE_RENDER" ] || {
        echo "build.sh: KUSTOMIZE_RENDER=$KUSTOMIZE_RENDER is not an executable file" >&2
        exit 1
    }
    echo "$KUSTOMIZE_RENDER"
    exit 0
fi
if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
command -v go >/dev/null 2>&1 || {
    echo "build.sh: no kustomize-render cached and no Go toolchain to build one" >&2
    exit 1
}
echo "build.sh: building kustomize-render (kustomize api $VERSION)" >&2
mkdir -p "$CACHE"
tmp="$(mktemp "$CACHE/build.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
start=$(date +%s)
if ! (cd "$SRC" && go build -trimpath -mod=readonly -ldflags "-s -w" -o "$tmp" .) >&2; then
    echo "build.sh: building kustomize-render failed (see above)" >&2
    exit 1
fi
mv "$tmp" "$BIN"
echo "build.sh: built $BIN in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
