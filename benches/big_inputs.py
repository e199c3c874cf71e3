#!/usr/bin/env python3
"""Memory on big inputs: a text file of 64 MiB, 256 MiB and 1 GiB, and a
PDF holding a 12.5-million-number array nothing references.

Usage:
  benches/big_inputs.py [--shirabe PATH] [--dir DIR] [--sizes 64,256,1024]

Writes the inputs into DIR (default /tmp/shirabe-big; 1.4 GB), then:
- `shirabe ingest FILE --no-embed` into a fresh index per text file:
  wall time, chunks, peak anonymous memory (sampled from /proc/PID/status
  every 0.05 s) and peak RSS;
- `shirabe extract array.pdf` and `pdftotext array.pdf -`, alternating,
  two runs each: wall time and peak RSS.

Prints Markdown tables.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import time

from pdfgen import write_pdf


def write_text(path, size):
    words = (
        "the budget warehouse Osaka board approved expansion quarter ledger "
        "crate depot inspection report minutes committee tender shipment"
    ).split()
    rng = random.Random(1)
    n = written = 0
    with open(path, "w") as f:
        while written < size:
            s = " ".join(rng.choice(words) for _ in range(rng.randint(8, 20)))
            s = s.capitalize() + f" (entry {n}).\n"
            n += 1
            if n % 7 == 0:
                s += "\n"
            f.write(s)
            written += len(s)


def write_array_pdf(path, numbers):
    content = b"BT /F1 12 Tf 72 700 Td (The Osaka warehouse budget was approved.) Tj ET"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"[" + " ".join(str(i % 1000) for i in range(numbers)).encode() + b"]",
    ]
    write_pdf(path, objs)


def measured(cmd, env=None):
    """Wall time, peak anonymous memory (MB) and peak RSS (MB) of `cmd`."""
    t = time.perf_counter()
    p = subprocess.Popen(
        ["/usr/bin/time", "-f", "%M", *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    anon = 0
    while p.poll() is None:
        try:
            kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
            for k in kids:
                for line in open(f"/proc/{k}/status"):
                    if line.startswith("RssAnon:"):
                        anon = max(anon, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - t
    rss = int(p.stderr.read().strip().splitlines()[-1])
    return wall, anon / 1024, rss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shirabe", default=shutil.which("shirabe") or "shirabe")
    ap.add_argument("--dir", default="/tmp/shirabe-big")
    ap.add_argument("--sizes", default="64,256,1024")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    sizes = [int(s) for s in a.sizes.split(",")]
    biggest = os.path.join(a.dir, f"text-{max(sizes)}.txt")
    if not os.path.exists(biggest) or os.path.getsize(biggest) < max(sizes) << 20:
        write_text(biggest, max(sizes) << 20)
    print("| text file | chunks | time | peak anonymous memory | peak RSS |")
    print("|---|---|---|---|---|")
    for mib in sizes:
        path = os.path.join(a.dir, f"text-{mib}.txt")
        if not os.path.exists(path):
            with open(biggest, "rb") as src, open(path, "wb") as dst:
                dst.write(src.read(mib << 20))
        index = os.path.join(a.dir, f"index-{mib}")
        shutil.rmtree(index, ignore_errors=True)
        env = dict(os.environ, SHIRABE_INDEX=index)
        wall, anon, rss = measured(
            [a.shirabe, "ingest", path, "--no-embed", "--quiet"], env
        )
        status = subprocess.run(
            [a.shirabe, "status", "--json"], env=env, capture_output=True, text=True
        )
        chunks = json.loads(status.stdout)["chunks"]
        print(f"| {mib} MiB | {chunks:,} | {wall:.1f} s | {anon:.0f} MB | {rss:.0f} MB |")
        shutil.rmtree(index, ignore_errors=True)

    pdf = os.path.join(a.dir, "array.pdf")
    if not os.path.exists(pdf):
        write_array_pdf(pdf, 12_500_000)
    print(f"\narray.pdf: {os.path.getsize(pdf) / 1e6:.1f} MB\n")
    print("| run | shirabe extract | pdftotext |")
    print("|---|---|---|")
    for run in (1, 2):
        s = measured([a.shirabe, "extract", pdf])
        p = measured(["pdftotext", pdf, "-"])
        print(f"| {run} | {s[0]:.2f} s, {s[2]:.0f} MB | {p[0]:.2f} s, {p[2]:.0f} MB |")


if __name__ == "__main__":
    main()
