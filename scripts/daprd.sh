#!/usr/bin/env bash
# Prints the path of a daprd to use (and nothing else on stdout), building it if needed.
# Order: $DAPRD; a daprd from `dapr init` (on PATH or in ~/.dapr/bin); our cached build;
# else build tools/daprd (the pinned Dapr release, only our components) into the cache,
# keyed by the release and a hash of tools/daprd (so a new component means a new build).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$ROOT/tools/daprd"
VERSION="$(awk '$1 == "github.com/dapr/dapr" { sub(/^v/, "", $2); print $2; exit }' "$SRC/go.mod")"
# The cache key holds the component set too: a binary built before a component was
# registered in main.go must not be reused after.
KEY="$(cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum" "$SRC/overlay/components_notag.go" | sha256sum | cut -c1-12)"
CACHE="${DAPRD_CACHE_DIR:-$ROOT/.cache/daprd}/$VERSION-$KEY"
BIN="$CACHE/daprd"

if [ -n "${DAPRD:-}" ]; then
    [ -x "$DAPRD" ] || { echo "daprd.sh: DAPRD=$DAPRD is not an executable file" >&2; exit 1; }
    echo "$DAPRD"
    exit 0
fi
# use_found PATH: say (on stderr) which daprd was found and whether it is the pinned
# release, then print its path. A different release is used all the same, with a note:
# `dapr init` users keep the runtime they chose.
use_found() {
    local found version
    found="$1"
    version="$("$found" --version 2>/dev/null | head -n 1 | tr -d '[:space:]')" || version=""
    version="${version#v}"
    if [ "$version" = "$VERSION" ]; then
        echo "daprd.sh: using daprd $version at $found (the pinned release)" >&2
    else
        echo "daprd.sh: using daprd ${version:-of unknown version} at $found; this project pins $VERSION (tools/daprd/go.mod): set DAPRD to another daprd, or 'dapr init --runtime-version $VERSION'" >&2
    fi
    echo "$found"
    exit 0
}
if command -v daprd >/dev/null 2>&1; then
    use_found "$(command -v daprd)"
fi
if [ -x "$HOME/.dapr/bin/daprd" ]; then
    use_found "$HOME/.dapr/bin/daprd"
fi
if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi

command -v go >/dev/null 2>&1 || {
    echo "daprd.sh: no daprd found and no Go toolchain to build one (install Go, or run 'dapr init')" >&2
    exit 1
}
echo "daprd.sh: building daprd $VERSION from the Dapr Go module (first time only, a few minutes)" >&2
mkdir -p "$CACHE"
work="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

# `set -e` does not apply inside an `if` condition: every step says how it fails.
build() {
    cd "$SRC" || return 1
    go mod download github.com/dapr/dapr || return 1
    local dapr_dir
    dapr_dir="$(go list -m -f '{{.Dir}}' github.com/dapr/dapr)" || return 1
    # Built without the `allcomponents` tag, Dapr registers none of its components, but
    # one file of it then panics on purpose. Build from a copy of the module in which
    # that file is our empty one; main.go registers the components we use.
    cp -r "$dapr_dir" "$work/dapr" || return 1
    chmod -R u+w "$work/dapr" || return 1
    cp "$SRC/overlay/components_notag.go" "$work/dapr/cmd/daprd/components/zz_notag.go" || return 1
    cp go.mod go.sum "$work/" || return 1
    go mod edit -modfile="$work/go.mod" -replace "github.com/dapr/dapr=$work/dapr" || return 1
    go build -trimpath -mod=readonly -modfile="$work/go.mod" \
        -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$VERSION -X github.com/dapr/kit/logger.DaprVersion=$VERSION" \
        -o "$work/daprd" . || return 1
}

if ! (build) >&2; then
    echo "daprd.sh: building daprd failed (see above)" >&2
    exit 1
fi
mv "$work/daprd" "$BIN"
echo "daprd.sh: built $BIN in $(( $(date +%s) - start ))s ($(du -h "$BIN" | cut -f1))" >&2
echo "$BIN"
