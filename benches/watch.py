#!/usr/bin/env python3
"""`shirabe watch` figures: how soon a saved file is searchable and
embedded, and what a watcher costs while nothing happens.

Usage:
  benches/watch.py [--shirabe PATH] [--embed-model DIR] [--corpus DIR]
                   [--runs N] [--idle SECONDS] [--burst FILES]

A copy of the corpus (default corpora/sample) is ingested with the
embedding model (default multilingual-e5-small from
../shared/models/fetch-real-models.sh, cached in
~/.cache/shirabe/real-models). Then, for the watcher's default timing
(--debounce 1000 --settle 1000) and a quick one (200 / 300):

1. idle: CPU seconds the watcher uses over --idle seconds with nothing
   changing (from /proc/PID/stat), with filesystem events and with
   `--poll 2` (network mounts);
2. latency: a new Markdown file with a word no other file has is
   written; from its close, the time until `shirabe search --mode bm25`
   in another process finds it, and until the watcher reports its chunks
   embedded (the first file after a start also loads the model). N runs;
3. burst: --burst files (20,000) written at once into a watched folder
   (BM25 only): the time until `status` counts them all, and how many
   batches that took;
4. anchor, after the watchers: a file saved with no watcher, then `shirabe ingest
   DIR` run by hand (what a user or cron does without `watch`): its wall
   time, the floor of that path without the human's delay.

Prints a Markdown table.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime, stime are fields 14 and 15 (1-based) of the whole line.
    return (int(fields[11]) + int(fields[12])) / TICKS


class Watcher:
    def __init__(self, shirabe, env, docs, extra):
        self.p = subprocess.Popen(
            [shirabe, "watch", docs, "--json", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        self.events = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["_at"] = time.perf_counter()
            with self.cv:
                self.events.append(ev)
                self.cv.notify_all()

    def wait(self, kind, since, timeout=300):
        end = time.perf_counter() + timeout
        with self.cv:
            while True:
                for ev in self.events:
                    if ev["event"] == kind and ev["_at"] >= since:
                        return ev
                left = end - time.perf_counter()
                if left <= 0:
                    sys.exit(f"no {kind} event within {timeout} s")
                self.cv.wait(left)

    def stop(self):
        self.p.send_signal(2)
        self.p.wait(timeout=60)


def found(shirabe, env, word):
    out = subprocess.run(
        [shirabe, "search", word, "--json", "--mode", "bm25", "--limit", "1"],
        capture_output=True,
        env=env,
        text=True,
    ).stdout
    return word in out


def new_file(docs, word):
    path = os.path.join(docs, f"{word}.md")
    with open(path, "w") as f:
        f.write(
            f"# Note {word}\n\nThe inspection of depot {word} found the "
            "loading bay repaired and the ledger reconciled.\n"
        )
    return path, time.perf_counter()


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap.add_argument("--shirabe", default=shutil.which("shirabe") or "shirabe")
    ap.add_argument(
        "--embed-model",
        default=os.path.expanduser(
            "~/.cache/shirabe/real-models/multilingual-e5-small"
        ),
    )
    ap.add_argument("--corpus", default=os.path.join(root, "corpora", "sample"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle", type=float, default=30)
    ap.add_argument("--burst", type=int, default=20000)
    a = ap.parse_args()
    if not os.path.isdir(a.embed_model):
        sys.exit(
            f"{a.embed_model} is missing: ../shared/models/fetch-real-models.sh "
            "~/.cache/shirabe/real-models"
        )
    tmp = tempfile.mkdtemp(prefix="shirabe-watch-bench-")
    docs = os.path.join(tmp, "docs")
    shutil.copytree(a.corpus, docs)
    env = dict(os.environ, SHIRABE_INDEX=os.path.join(tmp, "index"))
    subprocess.run(
        [a.shirabe, "ingest", docs, "--embed-model", a.embed_model, "--quiet"],
        env=env,
    )
    rows = []
    serial = [0]

    def word():
        serial[0] += 1
        return f"zorvex{serial[0]}q"

    for label, timing in [
        ("default (1000 / 1000 ms)", []),
        ("quick (200 / 300 ms)", ["--debounce", "200", "--settle", "300"]),
    ]:
        for backend, extra in [("events", []), ("poll 2 s", ["--poll", "2"])]:
            w = Watcher(a.shirabe, env, docs, timing + extra)
            w.wait("watching", 0)
            time.sleep(2)
            c0, t0 = cpu_seconds(w.p.pid), time.perf_counter()
            time.sleep(a.idle)
            idle = (cpu_seconds(w.p.pid) - c0) / (time.perf_counter() - t0)
            if backend != "events":
                w.stop()
                rows.append((label, backend, idle, None, None, None))
                continue
            bm25, embedded, reported = [], [], []
            for _ in range(a.runs):
                wd = word()
                _, t = new_file(docs, wd)
                while not found(a.shirabe, env, wd):
                    time.sleep(0.05)
                bm25.append(time.perf_counter() - t)
                ev = w.wait("embedded", t)
                embedded.append(ev["_at"] - t)
                reported.append(ev["latency_ms"] / 1000)
                time.sleep(1)
            w.stop()
            rows.append((label, backend, idle, bm25, embedded, reported))

    # A burst: thousands of files at once (more events than inotify's
    # default queue of 16,384 holds), BM25 only.
    burst_dir = os.path.join(tmp, "burst")
    os.makedirs(burst_dir)
    # (An index of its own: the anchor must not embed these.)
    benv = dict(env, SHIRABE_INDEX=os.path.join(tmp, "index-burst"))
    w = Watcher(a.shirabe, benv, burst_dir, ["--no-embed"])
    w.wait("watching", 0)
    t = time.perf_counter()
    for i in range(a.burst):
        with open(os.path.join(burst_dir, f"b{i:05}.txt"), "w") as f:
            f.write(f"Burst note {i}: crate {i * 7} of barley.\n")
    wrote = time.perf_counter() - t
    expected = a.burst
    while True:
        st = json.loads(
            subprocess.run(
                [a.shirabe, "status", "--json"], env=benv, capture_output=True, text=True
            ).stdout
        )
        if st["files"] >= expected:
            break
        if time.perf_counter() - t > 600:
            sys.exit(f"burst: {st['files']} of {expected} files after 600 s")
        time.sleep(0.5)
    done = time.perf_counter() - t
    w.stop()
    batches = sum(1 for ev in w.events if ev["event"] == "batch" and ev["_at"] >= t)
    lost = sum(1 for ev in w.events if ev["event"] == "error" and ev["_at"] >= t)

    # The anchor: save, then ingest by hand.
    manual = []
    for _ in range(a.runs):
        wd = word()
        _, t = new_file(docs, wd)
        # Exit 1: some file failed (the sample's damaged.pdf), as intended.
        rc = subprocess.run([a.shirabe, "ingest", docs, "--quiet"], env=env).returncode
        assert rc in (0, 1), rc
        assert found(a.shirabe, env, wd)
        manual.append(time.perf_counter() - t)

    med = statistics.median
    print(f"corpus: {a.corpus}; model: {os.path.basename(a.embed_model)}; "
          f"{a.runs} files per row; idle over {a.idle:.0f} s\n")
    print("| watcher timing | backend | idle CPU | saved → BM25 search (median, max) | saved → embedded (median, max) |")
    print("|---|---|---|---|---|")
    for label, backend, idle, bm25, emb, _ in rows:
        if bm25 is None:
            print(f"| {label} | {backend} | {100 * idle:.2f}% | – | – |")
        else:
            print(
                f"| {label} | {backend} | {100 * idle:.2f}% | "
                f"{med(bm25):.2f} s, {max(bm25):.2f} s | {med(emb):.2f} s, {max(emb):.2f} s |"
            )
    print(
        f"\nanchor, `shirabe ingest DIR` by hand after the save (embeds too): "
        f"median {med(manual):.2f} s, max {max(manual):.2f} s"
    )
    print(
        f"\nburst: {a.burst} files written in {wrote:.1f} s, all searchable "
        f"{done:.1f} s after the first ({a.burst / done:.0f} files/s), "
        f"{batches} batches, {lost} overflow reports"
    )
    quick = [r for r in rows if r[3] is not None]
    for label, _, _, bm25, emb, _ in quick:
        print(f"ratio {label} embedded / by hand: {med(emb) / med(manual):.2f}×")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
