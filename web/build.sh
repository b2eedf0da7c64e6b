#!/usr/bin/env bash
# Build the browser page's JavaScript bundle: static/app.js (one minified file,
# committed, so that running the server needs no Node.js).
#
#   web/build.sh          install the pinned packages (npm ci) and bundle
#
# Needs Node.js >= 18 and npm. Inputs: web/package.json + web/package-lock.json
# (exact versions), web/src/*.js and static/palimpsest.js.
set -euo pipefail
cd "$(dirname "$0")"

# --ignore-scripts: nothing needs an install script (esbuild's binary comes from its
# per-platform npm package; y-websocket's optional server-side deps are never bundled).
npm ci --ignore-scripts --no-audit --no-fund

npx --no-install esbuild src/main.js \
  --bundle \
  --format=esm \
  --target=es2020 \
  --minify \
  --legal-comments=none \
  --log-level=warning \
  --outfile=../static/app.js

echo "built $(cd .. && pwd)/static/app.js ($(wc -c < ../static/app.js) bytes)"
