#!/usr/bin/env bash
# Embedding throughput against sentence-transformers (PyTorch), same model,
# same passages, alternating (benches/embed_vs_st.py). Installs torch and
# sentence-transformers from PyPI into a venv cached outside the clone.
# Usage: benches/embed-vs-st.sh MODEL_DIR [SOURCE.pdf] [extra args]
#   MODEL_DIR: corpora/models/all-MiniLM-L6-v2 (corpora/fetch-minilm.sh) or
#   ~/.cache/shirabe/real-models/multilingual-e5-small
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: benches/embed-vs-st.sh MODEL_DIR [SOURCE] [args]}
source=${2:-corpora/sample/quarterly-report.pdf}
shift $(( $# >= 2 ? 2 : 1 ))
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shirabe/target}"
venv="$HOME/.cache/shirabe/st-venv"
[ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sentence_transformers' 2>/dev/null ||
    { python3 -m venv "$venv" && "$venv/bin/pip" -q install torch sentence-transformers; }
cargo build --release --quiet
exec "$venv/bin/python" benches/embed_vs_st.py "$CARGO_TARGET_DIR/release/shirabe" "$model" --source "$source" "$@"
