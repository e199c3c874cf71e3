#!/usr/bin/env python3
"""Prefill once, ask many times: time to first token with pinned documents.

Runs, against an index and a local model, with an empty prompt cache
directory of its own:

1. `shirabe chat --doc GLOB... --json` with three questions: the first
   reads the pinned documents (the prefill paid once), the next two are
   follow-ups in the same process;
2. `shirabe ask --doc GLOB...` in a new process, twice: once with
   `--json` (cached tokens, time to first token from the question) and
   once streaming, timed from the process's start to the first byte of
   the answer (model load included).

Prints one line per step and a summary. Loopback and local files only.

    python3 benches/pinned_followup.py target/release/shirabe MODEL.gguf \
        --index DIR --doc '*natbib*' --doc '*ifdraft*'
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

QUESTIONS = [
    "Which command produces a textual author-year citation?",
    "And which option sorts multiple citations?",
    "How do I get numerical citations?",
    "Which command gives an author-year citation in parentheses?",
]


def chat(args, env, questions):
    cmd = [args.shirabe, "chat", "--json", "--model", args.model,
           "--max-tokens", str(args.max_tokens)]
    for d in args.doc:
        cmd += ["--doc", d]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env, text=True)
    out = []
    for q in questions:
        p.stdin.write(q + "\n")
        p.stdin.flush()
        line = p.stdout.readline()
        if not line:
            sys.exit("chat ended early")
        out.append(json.loads(line))
    p.stdin.close()
    p.wait(timeout=60)
    return out


def ask_json(args, env, q):
    cmd = [args.shirabe, "ask", q, "--json", "--model", args.model,
           "--max-tokens", str(args.max_tokens)]
    for d in args.doc:
        cmd += ["--doc", d]
    t = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout), time.time() - t


def ask_first_byte(args, env, q):
    cmd = [args.shirabe, "ask", q, "--model", args.model,
           "--max-tokens", str(args.max_tokens)]
    for d in args.doc:
        cmd += ["--doc", d]
    t = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    first = None
    c = p.stdout.read(1)
    if c:
        first = time.time() - t
    p.stdout.read()
    p.wait()
    return first, time.time() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shirabe")
    ap.add_argument("model")
    ap.add_argument("--index", required=True)
    ap.add_argument("--doc", action="append", required=True)
    ap.add_argument("--max-tokens", type=int, default=120)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shirabe-kv-") as kv:
        env = dict(os.environ, SHIRABE_INDEX=args.index, SHIRABE_KV_CACHE=kv)
        turns = chat(args, env, QUESTIONS[:3])
        for i, t in enumerate(turns):
            c = t["context"]
            print(f"chat turn {i + 1}: prompt {c['tokens']} tokens, cached {c['cached_tokens']}, "
                  f"pinned {c['pinned']}, ttft {t['timings']['ttft_s']:.2f} s, "
                  f"total {t['timings']['total_s']:.2f} s")
        size = sum(os.path.getsize(os.path.join(d, f))
                   for d, _, fs in os.walk(kv) for f in fs)
        print(f"disk cache: {size / 2**20:.0f} MB")
        v, wall = ask_json(args, env, QUESTIONS[3])
        print(f"new process (ask --json): prompt {v['context']['tokens']} tokens, "
              f"cached {v['context']['cached_tokens']} (from disk: {v['usage']['cached_from_disk']}), "
              f"ttft {v['timings']['ttft_s']:.2f} s from the question, process {wall:.2f} s")
        first, wall = ask_first_byte(args, env, QUESTIONS[3])
        print(f"new process (ask, streamed): first byte of the answer {first:.2f} s after "
              f"the process started (model load included), done {wall:.2f} s")
        print(json.dumps({
            "first_prefill_ttft_s": turns[0]["timings"]["ttft_s"],
            "same_process_ttft_s": [t["timings"]["ttft_s"] for t in turns[1:]],
            "new_process_ttft_s": v["timings"]["ttft_s"],
            "new_process_first_byte_s": first,
            "pinned_tokens": turns[0]["context"]["tokens"],
        }))


if __name__ == "__main__":
    main()
