#!/usr/bin/env bash
# `make image`: docker build, tagged as k8s/base/kustomization.yaml names the image.
# Where no Docker engine answers, says why and skips (exit 0): building needs one.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE="${IMAGE:-$(awk '
    $1 == "-" && $2 == "name:" { name = $3 }
    $1 == "newName:" { name = $2 }
    $1 == "newTag:" { print name ":" $2; exit }
' "$ROOT/k8s/base/kustomization.yaml")}"
if ! command -v docker >/dev/null 2>&1; then
    echo "make image: skipped: no docker client on PATH (would build $IMAGE)"
    exit 0
fi
if ! reason="$(docker info --format '{{.ServerVersion}}' 2>&1)"; then
    echo "make image: skipped: no Docker engine answers: $(printf '%s' "$reason" | tail -n 1)"
    echo "make image: (would build $IMAGE)"
    exit 0
fi
docker build --tag "$IMAGE" "$ROOT"
echo "make image: built $IMAGE"
