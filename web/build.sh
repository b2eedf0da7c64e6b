#!/usr/bin/env bash
# Build the browser page's JavaScript bundle: static/app.js (one minified file,
# committed, so that running the server needs no Node.js).
#
#   web/build.sh                    install the pinned packages (npm ci) and bundle
#   web/build.sh --no-install OUT   bundle into OUT with the packages already installed
#                                   (tests/test_page_bundle.py: the committed bundle is
#                                   what the sources build)
#
# Needs Node.js >= 18 and npm. Inputs: web/package.json + web/package-lock.json
# (exact versions), web/src/*.js and static/palimpsest.js.
set -euo pipefail
cd "$(dirname "$0")"

OUT=../static/app.js
if [ "${1:-}" = "--no-install" ]; then
  OUT=${2:?usage: build.sh --no-install OUT}
  case "$OUT" in /*) ;; *) OUT="$OLDPWD/$OUT" ;; esac
else
  # --ignore-scripts: nothing needs an install script (esbuild's binary comes from its
  # per-platform npm package; y-websocket's optional server-side deps are never bundled).
  npm ci --ignore-scripts --no-audit --no-fund
fi

npx --no-install esbuild src/main.js \
  --bundle \
  --format=esm \
  --target=es2020 \
  --minify \
  --legal-comments=none \
  --log-level=warning \
  --outfile="$OUT"

echo "built $OUT ($(wc -c < "$OUT") bytes)"
