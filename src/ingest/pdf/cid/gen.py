#!/usr/bin/env python3
"""Generates the CID -> Unicode tables compiled into shirabe.

Source: Adobe's CMap resources as shipped in Debian's poppler-data package
(/usr/share/poppler/cMap/, BSD-3-Clause, Adobe; see README.md). For each
character collection, Adobe's CID -> UCS-2 CMap (Adobe-*-UCS2) gives the
mapping; CIDs it leaves out are filled by inverting the Unicode -> CID CMap
(Uni*-UTF32-H), preferring the lowest code point outside the CJK
compatibility blocks. (poppler-data's own cidToUnicode files are GPL-2 and
are deliberately not used.)

Each output file is one little-endian u32 per CID: the Unicode scalar value,
or 0 where the collection maps the CID to nothing.

    apt-get install -y poppler-data && python3 src/ingest/pdf/cid/gen.py
"""
import os, re, struct, sys

SRC = "/usr/share/poppler/cMap"
HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTIONS = {
    "Adobe-Japan1": "UniJIS-UTF32-H",
    "Adobe-GB1": "UniGB-UTF32-H",
    "Adobe-CNS1": "UniCNS-UTF32-H",
    "Adobe-Korea1": "UniKS-UTF32-H",
}
HEX = re.compile(r"<([0-9a-fA-F]+)>")


def compat(u):
    return 0xF900 <= u <= 0xFAFF or 0x2F800 <= u <= 0x2FA1F or 0xFE30 <= u <= 0xFE4F


def better(new, old):
    if old == 0:
        return True
    return (compat(new), new) < (compat(old), old)


def ucs2_map(collection):
    """CID -> code point from Adobe's Adobe-*-UCS2 CMap (bfchar/bfrange)."""
    path = os.path.join(SRC, collection, collection + "-UCS2")
    out = {}
    mode = None
    for line in open(path, encoding="latin-1"):
        if "beginbfrange" in line:
            mode = "range"
            continue
        if "beginbfchar" in line:
            mode = "char"
            continue
        if "endbfrange" in line or "endbfchar" in line:
            mode = None
            continue
        if mode is None:
            continue
        h = HEX.findall(line)
        if mode == "range" and len(h) == 3 and "[" not in line:
            lo, hi, dst = int(h[0], 16), int(h[1], 16), int(h[2], 16)
            for i in range(hi - lo + 1):
                out[lo + i] = dst + i
        elif mode == "char" and len(h) == 2 and len(h[1]) == 4:
            out[int(h[0], 16)] = int(h[1], 16)
    return {c: u for c, u in out.items() if u not in (0, 0xFFFD)}


for collection, cmap in COLLECTIONS.items():
    path = os.path.join(SRC, collection, cmap)
    if not os.path.exists(path):
        sys.exit(f"{path} is missing: apt-get install poppler-data")
    primary = ucs2_map(collection)
    table = {}
    mode = None
    for line in open(path, encoding="latin-1"):
        if "begincidrange" in line:
            mode = "range"
            continue
        if "begincidchar" in line:
            mode = "char"
            continue
        if "endcidrange" in line or "endcidchar" in line:
            mode = None
            continue
        if mode is None:
            continue
        codes = [int(h, 16) for h in HEX.findall(line)]
        rest = HEX.sub("", line).split()
        if not rest:
            continue
        cid = int(rest[0])
        if mode == "range" and len(codes) == 2:
            for i, u in enumerate(range(codes[0], codes[1] + 1)):
                if better(u, table.get(cid + i, 0)):
                    table[cid + i] = u
        elif mode == "char" and len(codes) == 1:
            if better(codes[0], table.get(cid, 0)):
                table[cid] = codes[0]
    table.update(primary)
    size = max(table) + 1
    values = [table.get(c, 0) for c in range(size)]
    out = os.path.join(HERE, collection + ".bin")
    with open(out, "wb") as f:
        f.write(struct.pack(f"<{size}I", *values))
    print(f"{collection}: {sum(1 for v in values if v)} of {size} CIDs mapped -> {out}")
