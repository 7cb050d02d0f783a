#!/usr/bin/env bash
# Install Debian's chromium for the real-browser tests, only if it is missing.
#
# Needs root (apt-get), as CI runs. Idempotent: when a chromium binary already
# answers --version, nothing is installed. Progress goes to stderr; stdout gets
# one shell assignment a caller can eval:
#
#   eval "$(bash .ci/install-chromium.sh)"   # sets CHROMIUM
set -euo pipefail

log() { echo "install-chromium: $*" >&2; }

find_chromium() {
    local candidate
    for candidate in "${CHROMIUM:-}" chromium chromium-browser; do
        [[ -n "$candidate" ]] || continue
        if command -v "$candidate" >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if chromium_bin="$(find_chromium)"; then
    log "$("$chromium_bin" --version 2>/dev/null || echo chromium) already at $chromium_bin"
else
    if [[ "$(id -u)" -ne 0 ]]; then
        log "chromium is missing and installing it needs root (apt-get install chromium)"
        exit 1
    fi
    log "installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends chromium >&2
    chromium_bin="$(find_chromium)" || { log "apt-get installed chromium but no chromium binary is on PATH"; exit 1; }
    log "installed $("$chromium_bin" --version 2>/dev/null || echo chromium) at $chromium_bin"
fi

echo "CHROMIUM=$chromium_bin"
