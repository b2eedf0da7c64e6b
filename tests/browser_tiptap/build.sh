#!/usr/bin/env bash
# Bundle the test pages into OUT (default: ./dist): the Tiptap page (index.html +
# bundle.js), the Quill page (quill.html + quill-bundle.js), the Lexical page
# (lexical.html + lexical-bundle.js) and the Monaco page (monaco.html +
# monaco-bundle.js and .css).
# Inputs: package.json + package-lock.json (exact versions, installed by scripts/test
# with `npm ci`) and src/. Run by tests/test_browser_tiptap.py at set-up.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${1:-dist}
mkdir -p "$OUT"
npx --no-install esbuild src/main.js --bundle --format=esm --target=es2020 \
  --log-level=warning --outfile="$OUT/bundle.js"
npx --no-install esbuild src/quill.js --bundle --format=esm --target=es2020 \
  --log-level=warning --outfile="$OUT/quill-bundle.js"
npx --no-install esbuild src/lexical.js --bundle --format=esm --target=es2020 \
  --log-level=warning --outfile="$OUT/lexical-bundle.js"
npx --no-install esbuild src/monaco.js --bundle --format=esm --target=es2020 \
  --log-level=warning --loader:.ttf=file --outfile="$OUT/monaco-bundle.js"
cp src/index.html "$OUT/index.html"
cp src/monaco.html "$OUT/monaco.html"
cp src/lexical.html "$OUT/lexical.html"
cp src/quill.html "$OUT/quill.html"
