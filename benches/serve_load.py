#!/usr/bin/env python3
"""Load test for `shirabe serve`, on loopback only, bounded in time.

Starts `shirabe serve --port 0` on the index in SHIRABE_INDEX (or --index),
then for --seconds runs --clients clients that mix searches (POST
/v1/search) and answers (POST /v1/chat/completions, model "shirabe", some
streamed), while hostile clients hold sockets: slow-loris ones that send a
header byte every second, idle ones that send nothing, and ones that
claim a 100 GB body. Prints requests, errors, stalled requests (no reply
within --stall seconds), p50/p99 latency per kind, what happened to the
hostile sockets, and the server's peak RSS; then stops the server with
SIGTERM and checks that it exits cleanly. Exits 1 on any error or stall.

    python3 benches/serve_load.py --bin target/release/shirabe --seconds 60
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

QUESTIONS = [
    "How much was the budget for the Osaka warehouse expansion?",
    "Who prepares the tender documents?",
    "What did the board decide about the conveyor?",
    "大阪倉庫の拡張計画について何が決まりましたか？",
    "What are the open questions from the meeting?",
]
QUERIES = ["budget", "warehouse expansion", "tender documents", "conveyor", "倉庫", "research notes"]


def request(host, port, method, path, body, timeout):
    """One HTTP/1.1 request on its own connection; (status, seconds)."""
    t0 = time.monotonic()
    data = json.dumps(body).encode() if body is not None else b""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        s.sendall(head + data)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
        reply = b"".join(chunks)
    finally:
        s.close()
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    if status == 200 and body is not None and body.get("stream") and b"data: [DONE]" not in reply:
        status = -1  # a stream that did not finish
    return status, time.monotonic() - t0


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = {"search": [], "answer": [], "stream": []}
        self.errors = []
        self.stalled = 0

    def add(self, kind, status, secs):
        with self.lock:
            if status == 200:
                self.latency[kind].append(secs)
            else:
                self.errors.append((kind, status))


def client(host, port, deadline, stats, rng, answer_share, stall):
    while time.monotonic() < deadline:
        r = rng.random()
        if r < answer_share:
            stream = rng.random() < 0.5
            kind = "stream" if stream else "answer"
            body = {
                "model": "shirabe",
                "stream": stream,
                "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}],
            }
            path = "/v1/chat/completions"
        else:
            kind = "search"
            body = {"query": rng.choice(QUERIES), "limit": 10}
            path = "/v1/search"
        try:
            status, secs = request(host, port, "POST", path, body, stall)
        except socket.timeout:
            with stats.lock:
                stats.stalled += 1
            continue
        except OSError as e:
            stats.add(kind, f"os error: {e}", 0)
            continue
        stats.add(kind, status, secs)


def slow_loris(host, port, deadline, counts):
    """Sends a header byte a second; counts closes by the server."""
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=5)
        except OSError:
            time.sleep(1)
            continue
        try:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            while time.monotonic() < deadline:
                s.sendall(b"X")
                time.sleep(1)
        except OSError:
            counts["loris_closed"] += 1
        finally:
            s.close()


def idle(host, port, deadline, counts):
    """Connects and sends nothing; counts closes by the server."""
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=2)
        except OSError:
            time.sleep(1)
            continue
        s.settimeout(1)
        try:
            while time.monotonic() < deadline:
                try:
                    if s.recv(1) == b"":
                        counts["idle_closed"] += 1
                        break
                except socket.timeout:
                    continue
        except OSError:
            counts["idle_closed"] += 1
        finally:
            s.close()


def oversized(host, port, deadline, counts):
    """Claims a 100 GB body and trickles it; counts 413 replies."""
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n{\"model\":"
            )
            reply = s.recv(4096)
            if b" 413 " in reply.split(b"\r\n", 1)[0]:
                counts["oversized_413"] += 1
            else:
                counts["oversized_other"] += 1
            s.close()
        except OSError:
            counts["oversized_other"] += 1
        time.sleep(0.5)


def peak_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.expanduser("~/.cache/shirabe/target/release/shirabe"))
    ap.add_argument("--index", default=os.environ.get("SHIRABE_INDEX"))
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=24)
    ap.add_argument("--answer-share", type=float, default=0.3)
    ap.add_argument("--loris", type=int, default=8)
    ap.add_argument("--idle", type=int, default=8)
    ap.add_argument("--oversized", type=int, default=2)
    ap.add_argument("--stall", type=float, default=60, help="seconds without a reply that count as stalled")
    ap.add_argument("serve_args", nargs="*", help="more flags for `shirabe serve`")
    a = ap.parse_args()
    env = dict(os.environ)
    if a.index:
        env["SHIRABE_INDEX"] = a.index
    server = subprocess.Popen(
        [a.bin, "serve", "--port", "0", "--read-timeout", "5", *a.serve_args],
        stdout=subprocess.PIPE,
        env=env,
    )
    line = server.stdout.readline().decode()
    if not line.startswith("listening on http://"):
        print(f"serve did not start: {line!r}", file=sys.stderr)
        server.kill()
        sys.exit(1)
    hostport = line.split("http://", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    port = int(port)
    deadline = time.monotonic() + a.seconds
    stats = Stats()
    counts = {"loris_closed": 0, "idle_closed": 0, "oversized_413": 0, "oversized_other": 0}
    threads = []
    for i in range(a.loris):
        threads.append(threading.Thread(target=slow_loris, args=(host, port, deadline, counts)))
    for i in range(a.idle):
        threads.append(threading.Thread(target=idle, args=(host, port, deadline, counts)))
    for i in range(a.oversized):
        threads.append(threading.Thread(target=oversized, args=(host, port, deadline, counts)))
    for i in range(a.clients):
        rng = random.Random(i)
        threads.append(
            threading.Thread(target=client, args=(host, port, deadline, stats, rng, a.answer_share, a.stall))
        )
    t0 = time.monotonic()
    for t in threads:
        t.daemon = True
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()) + a.stall + 10)
    wall = time.monotonic() - t0
    rss = peak_rss_mb(server.pid)
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        code = "killed after 30 s"
    total = sum(len(v) for v in stats.latency.values()) + len(stats.errors)
    print(f"serve load: {a.clients} clients, {wall:.0f} s, {total} requests, "
          f"{len(stats.errors)} errors, {stats.stalled} stalled")
    for kind, xs in stats.latency.items():
        print(f"  {kind:7} n={len(xs):5}  p50 {pct(xs, 50) * 1000:8.1f} ms  p99 {pct(xs, 99) * 1000:8.1f} ms")
    print(f"  hostile: {a.loris} slow-loris (closed by the server {counts['loris_closed']}x), "
          f"{a.idle} idle (closed {counts['idle_closed']}x), {a.oversized} oversized "
          f"({counts['oversized_413']} refused with 413, {counts['oversized_other']} other)")
    print(f"  server peak RSS {rss:.0f} MB; exit after SIGTERM: {code}")
    if stats.errors:
        print(f"  errors: {stats.errors[:10]}")
    ok = not stats.errors and stats.stalled == 0 and code == 0 and counts["oversized_other"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
