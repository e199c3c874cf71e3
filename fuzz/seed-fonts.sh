#!/usr/bin/env bash
# Seeds the `fonts` fuzz target with real ToUnicode CMaps and embedded
# Type1/CFF programs, decompressed from the sample corpus and (when
# fetched) the Debian corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
out=fuzz/corpus/fonts
mkdir -p "$out" /tmp/shirabe-seed-sample
cargo run -q --release -- sample-corpus /tmp/shirabe-seed-sample >/dev/null
python3 - "$out" /tmp/shirabe-seed-sample corpora/debian <<'PY'
import hashlib, pathlib, re, sys, zlib
out = pathlib.Path(sys.argv[1])
kept = 0
for root in sys.argv[2:]:
    for pdf in sorted(pathlib.Path(root).rglob("*.pdf")):
        data = pdf.read_bytes()
        for m in re.finditer(rb"stream\r?\n", data):
            end = data.find(b"endstream", m.end())
            if end < 0:
                continue
            try:
                raw = zlib.decompressobj().decompress(data[m.end():end], 1 << 20)
            except zlib.error:
                raw = data[m.end():end]
            kind = (b"begincmap" in raw[:4096] or raw[:3] == b"\x01\x00\x04"
                    or raw.startswith(b"%!PS-AdobeFont") or raw.startswith(b"%!FontType1"))
            if kind and len(raw) <= 200_000:
                name = hashlib.sha1(raw).hexdigest()[:16]
                (out / name).write_bytes(raw)
                kept += 1
print(f"{kept} seeds in {out}")
PY
