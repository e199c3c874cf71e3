#!/usr/bin/env python3
"""What reading PDFs in worker processes costs an ingest.

Runs `shirabe ingest --no-embed` over the same folders into fresh indexes,
alternating the default (PDFs parsed in worker processes) with
`--in-process`, and prints the median wall time, CPU time (the process
and its workers) and peak RSS of each, with the ratio workers/in-process.

    python3 benches/pdf_workers.py [--runs 3] [--ocr never] [--bomb-in-process] [FOLDER...]

Default folders: the Debian corpus (`corpora/fetch-debian-pdfs.sh`).

Then a hostile file: a small PDF whose object stream holds 40 million
numbers (written here). Ingested with workers it must fail alone, within
the worker's allowance; `--bomb-in-process` also reads it with `shirabe
extract` in-process (about 10 GB of memory: only on a machine that has it).
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time

from pdfgen import write_pdf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binary():
    target = os.environ.get(
        "CARGO_TARGET_DIR", os.path.expanduser("~/.cache/shirabe/target")
    )
    return os.path.join(target, "release", "shirabe")


def run(exe, folders, extra, ocr):
    index = tempfile.mkdtemp(prefix="shirabe-bench-")
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        out = subprocess.run(
            [exe, "--index", index, "ingest", *folders, "--no-embed", "--ocr", ocr, "--json", *extra],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode not in (0, 1):
            raise SystemExit(out.stderr)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu, out.stdout
    finally:
        shutil.rmtree(index, ignore_errors=True)


def peak_rss(exe, folders, extra, ocr):
    """Peak RSS (MB) of the ingest and, separately, of any one worker."""
    index = tempfile.mkdtemp(prefix="shirabe-bench-")
    try:
        out = subprocess.run(
            ["/usr/bin/time", "-f", "%M", exe, "--index", index, "ingest", *folders,
             "--no-embed", "--ocr", ocr, *extra],
            capture_output=True,
            text=True,
        )
        return int(out.stderr.strip().splitlines()[-1]) / 1024
    finally:
        shutil.rmtree(index, ignore_errors=True)


def bomb_pdf(path, numbers=40_000_000):
    """A one-page PDF plus an unreferenced object stream of `numbers` zeros."""
    import zlib

    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        None,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    text = b"BT /F1 12 Tf 72 770 Td (The bomb's page reads fine.) Tj ET"
    objs[3] = b"<< /Length %d >>\nstream\n" % len(text) + text + b"\nendstream"
    head = b"7 0 "
    data = zlib.compress(head + b"[" + b"0 " * numbers + b"]", 9)
    objs.append(
        b"<< /Type /ObjStm /N 1 /First %d /Filter /FlateDecode /Length %d >>\nstream\n"
        % (len(head), len(data)) + data + b"\nendstream"
    )
    write_pdf(path, objs, b"1.5")


def bomb(exe, in_process):
    folder = tempfile.mkdtemp(prefix="shirabe-bomb-")
    index = tempfile.mkdtemp(prefix="shirabe-bench-")
    try:
        path = os.path.join(folder, "objstm-bomb.pdf")
        bomb_pdf(path)
        print(f"\nobjstm-bomb.pdf: {os.path.getsize(path) / 1e3:.0f} KB")
        t = time.perf_counter()
        out = subprocess.run(
            ["/usr/bin/time", "-f", "%M", exe, "--index", index, "ingest", folder,
             "--no-embed", "--json"],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t
        rss = int(out.stderr.strip().splitlines()[-1]) / 1024
        failed = json.loads(out.stdout)["failed"]
        why = failed[0]["error"] if failed else "(not reported!)"
        print(f"ingest (workers): {wall:.2f} s, peak RSS {rss:.0f} MB, exit {out.returncode}: {why}")
        if in_process:
            t = time.perf_counter()
            out = subprocess.run(
                ["/usr/bin/time", "-f", "%M", exe, "extract", path],
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t
            rss = int(out.stderr.strip().splitlines()[-1]) / 1024
            print(f"extract (in-process): {wall:.2f} s, peak RSS {rss:.0f} MB, exit {out.returncode}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(index, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ocr", default="never")
    ap.add_argument("--bomb-in-process", action="store_true")
    ap.add_argument("folders", nargs="*")
    a = ap.parse_args()
    folders = a.folders or [
        os.path.join(ROOT, "corpora/debian/en"),
        os.path.join(ROOT, "corpora/debian/cjk"),
    ]
    exe = binary()
    modes = {"workers": [], "in-process": ["--in-process"]}
    results = {m: [] for m in modes}
    chunks = {}
    for i in range(a.runs):
        for name, extra in modes.items():
            wall, cpu, out = run(exe, folders, extra, a.ocr)
            results[name].append((wall, cpu))
            r = json.loads(out)
            chunks[name] = (r["indexed"], r["pages"], r["chunks"], len(r["failed"]))
            print(f"run {i + 1} {name:10} wall {wall:6.2f} s  cpu {cpu:6.2f} s", flush=True)
    same = chunks["workers"] == chunks["in-process"]
    print(f"\nindexed, pages, chunks, failed: {chunks['workers']} with workers, "
          f"{chunks['in-process']} in-process (same: {same})")
    print("\n| mode | wall s (median) | CPU s (median) | peak RSS MB |")
    print("|---|---|---|---|")
    med = {}
    for name, extra in modes.items():
        w = statistics.median(r[0] for r in results[name])
        c = statistics.median(r[1] for r in results[name])
        med[name] = (w, c)
        rss = peak_rss(exe, folders, extra, a.ocr)
        print(f"| {name} | {w:.2f} | {c:.2f} | {rss:.0f} |")
    w = med["workers"][0] / med["in-process"][0]
    c = med["workers"][1] / med["in-process"][1]
    print(f"\nworkers / in-process: wall {w:.2f}x, CPU {c:.2f}x")
    bomb(exe, a.bomb_in_process)


if __name__ == "__main__":
    main()
