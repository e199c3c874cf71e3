#!/usr/bin/env bash
# All of shirabe's figures in one run, on the real corpus:
#   1. extraction quality and speed against pdftotext (benches/extract.py)
#   2. ingest of the whole corpus: pages/s, chunks/s, peak RSS (all cores)
#   3. search latency p50/p99 on a synthetic 100K-chunk index
#   4. Japanese retrieval with CJK bigrams vs a morphological analyser
# Usage: benches/run.sh [CORPUS_DIR]   (default corpora/debian; fetched if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${1:-corpora/debian}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shirabe/target}"
command -v pdftotext >/dev/null || { apt-get update -qq && apt-get install -y -qq poppler-utils >/dev/null; }
[ -d "$corpus/en" ] || corpora/fetch-debian-pdfs.sh "$corpus"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/shirabe"

echo "== 1. extraction vs pdftotext ($corpus)"
python3 benches/extract.py --shirabe "$bin" --corpus "$corpus" --json /tmp/shirabe-extract.json

echo
echo "== 2. ingest (all cores, estimate tokenizer)"
idx=$(mktemp -d)
trap 'rm -rf "$idx"' EXIT
python3 - "$bin" "$idx" "$corpus" <<'PY'
import json, os, subprocess, sys, time
binary, idx, corpus = sys.argv[1:4]
t = time.time()
p = subprocess.Popen([binary, "--index", idx, "ingest", corpus, "--json", "--tokenizer", "estimate"],
                     stdout=subprocess.PIPE)
out = p.stdout.read()
_, status, ru = os.wait4(p.pid, 0)
wall = time.time() - t
r = json.loads(out)
cpu = ru.ru_utime + ru.ru_stime
print(f"  {r['files']} files ({r['indexed']} indexed, {len(r['failed'])} failed), {r['pages']} pages, {r['chunks']} chunks")
print(f"  wall {wall:.1f}s  cpu {cpu:.1f}s  -> {r['pages']/wall:.0f} pages/s, {r['chunks']/wall:.0f} chunks/s")
print(f"  peak RSS {ru.ru_maxrss/1024:.0f} MB")
for f in r["failed"]:
    print(f"  failed: {f['path']}: {f['error']}")
PY

echo
echo "== 3. search latency"
"$bin" bench search --chunks 100000 --queries 2000

echo
echo "== 4. Japanese analysis: CJK bigrams vs morphological (janome, IPADIC)"
venv="${TMPDIR:-/tmp}/shirabe-bench-venv"
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" -q install janome; }
"$venv/bin/python" benches/ja_analyzers.py --shirabe "$bin" --corpus "$corpus" --queries 200
