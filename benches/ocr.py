#!/usr/bin/env python3
"""OCR figures: shirabe against poppler + Tesseract, and what OCR costs
a born-digital ingest.

Usage:
  benches/ocr.py [--shirabe PATH] [--runs N] [--born-digital DIR ...]

1. Scanned pages (`shirabe sample-corpus --scanned`): for each page, one
   run at a time and alternating, wall time and quality of

       shirabe extract --ocr auto FILE
       pdftoppm -r 300 -gray -f 1 -l 1 FILE | tesseract stdin stdout -l LANGS

   with the languages shirabe chose (read from its --json), so both read
   the same pixels' worth with the same models. Quality: word F1
   (English) or character F1 (Japanese) against the typeset text.
2. `shirabe ingest` of all the scans with every core: pages per second.
3. Born-digital PDFs (default: corpora/sample, and corpora/debian when
   fetched): a fresh `ingest --no-embed` with `--ocr never` and with
   `--ocr auto`, alternating; the ratio is what looking for scans costs
   when no page needs OCR.

Prints a Markdown table per part. Needs tesseract (with eng, jpn,
jpn_vert), pdftoppm and the scan fonts; .ci/run installs them.
"""

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata


def f1(got, want):
    g, w = collections.Counter(got), collections.Counter(want)
    tp = sum((g & w).values())
    if not got or not want or not tp:
        return 0.0
    p, r = tp / len(got), tp / len(want)
    return 2 * p * r / (p + r)


def words(t):
    return re.findall(r"\w+", unicodedata.normalize("NFKC", t).lower())


def chars(t):
    return [c for c in unicodedata.normalize("NFKC", t) if not c.isspace()]


def timed(cmd, **kw):
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, check=True, **kw)
    return time.perf_counter() - t, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shirabe", default=os.environ.get("SHIRABE", "target/release/shirabe"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--born-digital", nargs="*", default=None)
    a = ap.parse_args()
    sh = a.shirabe
    for tool in ("tesseract", "pdftoppm"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed (apt install tesseract-ocr poppler-utils)")
    tmp = tempfile.mkdtemp(prefix="shirabe-ocr-bench-")
    scans = os.path.join(tmp, "scans")
    subprocess.run([sh, "sample-corpus", "--scanned", scans], check=True, capture_output=True)
    pdfs = sorted(p for p in os.listdir(scans) if p.endswith(".pdf"))
    env = dict(os.environ, OMP_THREAD_LIMIT="1")

    print("## Scanned pages, one at a time (median of %d runs, alternating)\n" % a.runs)
    print("| page | shirabe s | shirabe, language given s | pdftoppm+tesseract s | ratio | ratio, language given | shirabe F1 | anchor F1 | languages |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios, given_ratios = [], []
    for name in pdfs:
        path = os.path.join(scans, name)
        truth = open(path + ".truth", encoding="utf-8").read()
        ja = "-ja-" in name
        score = (lambda t: f1(chars(t), chars(truth))) if ja else (lambda t: f1(words(t), words(truth)))
        _, js = timed([sh, "extract", "--ocr", "auto", "--json", path])
        langs = json.loads(js)["pages"][0].get("ocr", {}).get("languages", "eng")
        ours, given, theirs = [], [], []
        text_ours = text_theirs = ""
        for _ in range(a.runs):
            t, out = timed([sh, "extract", "--ocr", "auto", path])
            ours.append(t)
            text_ours = out.decode()
            t, _ = timed([sh, "extract", "--ocr", "auto", "--ocr-lang", langs, path])
            given.append(t)
            t0 = time.perf_counter()
            ppm = subprocess.run(
                ["pdftoppm", "-r", "300", "-gray", "-f", "1", "-l", "1", path],
                capture_output=True, check=True).stdout
            res = subprocess.run(
                ["tesseract", "stdin", "stdout", "-l", langs, "--dpi", "300"],
                input=ppm, capture_output=True, check=True, env=env)
            theirs.append(time.perf_counter() - t0)
            text_theirs = res.stdout.decode()
        mo, mt, mg = statistics.median(ours), statistics.median(theirs), statistics.median(given)
        ratios.append(mo / mt)
        given_ratios.append(mg / mt)
        print(f"| {name} | {mo:.2f} | {mg:.2f} | {mt:.2f} | {mo / mt:.2f}× | {mg / mt:.2f}× | "
              f"{score(text_ours):.3f} | {score(text_theirs):.3f} | {langs} |")
    print(f"\nmedian ratio {statistics.median(ratios):.2f}×; with the language given "
          f"{statistics.median(given_ratios):.2f}× (without it, shirabe first runs Tesseract's "
          "script detection, once per document, when the document has no text to tell the "
          "language)\n")

    # 2. Ingest throughput.
    idx = os.path.join(tmp, "index")
    t, out = timed([sh, "--index", idx, "ingest", scans, "--no-embed", "--json"])
    rep = json.loads(out)
    print("## Ingest of the scans, all cores\n")
    print(f"{rep['ocr_pages']} pages read by OCR in {t:.1f} s wall: "
          f"{rep['ocr_pages'] / t:.2f} pages/s ({os.cpu_count()} cores)\n")

    # 3. Born-digital cost.
    dirs = a.born_digital
    if dirs is None:
        dirs = ["corpora/sample"] + [d for d in ("corpora/debian/en", "corpora/debian") if os.path.isdir(d)]
    print("## Born-digital PDFs: --ocr never vs --ocr auto (fresh index, alternating)\n")
    print("| corpus | never s | auto s | ratio | pages needing OCR |")
    print("|---|---|---|---|---|")
    for d in dirs:
        never, auto = [], []
        pending = 0
        for i in range(max(a.runs, 3)):
            for mode, acc in (("never", never), ("auto", auto)):
                ix = os.path.join(tmp, f"bd-{mode}-{i}")
                t0 = time.perf_counter()
                r = subprocess.run([sh, "--index", ix, "ingest", d, "--no-embed", "--ocr", mode,
                                    "--tokenizer", "estimate", "--json"], capture_output=True)
                acc.append(time.perf_counter() - t0)
                if r.stdout:
                    pending = json.loads(r.stdout).get("ocr_pending", 0) + json.loads(r.stdout).get("ocr_pages", 0)
                shutil.rmtree(ix, ignore_errors=True)
        mn, ma = statistics.median(never), statistics.median(auto)
        print(f"| {d} | {mn:.2f} | {ma:.2f} | {ma / mn:.2f}× | {pending} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
