#!/usr/bin/env bash
# Best effort: installs Debian's chromium for the gateway's browser test. When it cannot
# be installed the test skips and says why; it never passes without a browser.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || [ -n "${CHROMIUM:-}" ]; then
    exit 0
fi
echo "chromium not found: installing Debian's chromium package" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq chromium >&2; }; then
    echo "chromium could not be installed: the browser test will be skipped" >&2
fi
exit 0
