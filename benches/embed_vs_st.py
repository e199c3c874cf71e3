#!/usr/bin/env python3
"""Embedding throughput: shirabe against sentence-transformers (PyTorch),
same model directory, same passages, same 2 threads, alternating.

Three runs per round:
  st      SentenceTransformer(DIR).encode(passages, batch_size=B) in this
          Python (torch.set_num_threads(THREADS)); model load excluded;
  embed   `shirabe embed --embed-model DIR --batch B` (passages on stdin);
  ingest  `shirabe embed-index` over an index of the same passages (one
          .txt file each, BM25 first with `ingest --no-embed`): the
          pipeline `ingest` runs, timed by its own report (`--json`).
`embed` includes loading the model: a run on one short text is timed
too and subtracted (from its CPU times as well, and from embed-index's). Tokens are the model tokenizer's (truncated to
its max_seq_length), so all three divide the same count. CPU time is the
process's user and system time (system time is the kernel's: a spinning
thread pool shows there).

    ~/.cache/shirabe/st-venv/bin/python benches/embed_vs_st.py \\
        target/release/shirabe MODEL_DIR --source FILE.pdf [--passages 64 --words 180]

(`benches/embed-vs-st.sh` makes the venv and runs this.)
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def passages_of(shirabe, source, n, words):
    text = subprocess.run([shirabe, "extract", source], capture_output=True,
                          text=True, check=True).stdout
    ws = text.split()
    if len(ws) < words + 8:
        sys.exit(f"{source}: too little text for passages of {words} words")
    out = []
    i, wraps = 0, 0
    while len(out) < n:
        chunk = ws[i:i + words]
        if len(chunk) < words:
            # Start again one word further on, so no passage repeats (the
            # vector cache would skip a repeat).
            wraps += 1
            i = wraps
            continue
        out.append(" ".join(chunk))
        i += words
    return out


def st_model_dir(model, tmp):
    """The model directory as sentence-transformers can read it: a
    SentencePiece (Unigram) tokenizer.json with no tokenizer_config.json
    (multilingual-e5-small as ../shared/models builds it) is read by
    transformers as a WordPiece one and fails, so such a directory is
    linked into `tmp` with a tokenizer_config.json naming XLM-R's."""
    if os.path.exists(os.path.join(model, "tokenizer_config.json")):
        return model
    try:
        with open(os.path.join(model, "tokenizer.json")) as f:
            kind = json.load(f)["model"]["type"]
    except (OSError, KeyError, ValueError):
        return model
    if kind != "Unigram":
        return model
    copy = os.path.join(tmp, "st-model")
    os.makedirs(copy)
    for name in os.listdir(model):
        os.symlink(os.path.abspath(os.path.join(model, name)), os.path.join(copy, name))
    with open(os.path.join(copy, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "XLMRobertaTokenizerFast", "model_max_length": 512,
                   "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "pad_token": "<pad>", "cls_token": "<s>", "sep_token": "</s>",
                   "mask_token": "<mask>"}, f)
    return copy


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime, r.ru_stime


def timed(cmd, stdin=None, env=None):
    u0, s0 = child_cpu()
    t = time.time()
    subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True, env=env)
    wall = time.time() - t
    u1, s1 = child_cpu()
    return wall, u1 - u0, s1 - s0


def run_st(model, passages, batch):
    u0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.time()
    model.encode(passages, batch_size=batch)
    wall = time.time() - t
    u1 = resource.getrusage(resource.RUSAGE_SELF)
    return wall, u1.ru_utime - u0.ru_utime, u1.ru_stime - u0.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shirabe")
    ap.add_argument("model")
    ap.add_argument("--source", required=True, help="a PDF or text file to cut passages from")
    ap.add_argument("--passages", type=int, default=64)
    ap.add_argument("--words", type=int, default=180)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="f32", help="shirabe's weights: f32, bf16 or auto (PyTorch stays f32)")
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    passages = passages_of(args.shirabe, args.source, args.passages, args.words)
    st_tmp = tempfile.TemporaryDirectory(prefix="shirabe-st-model-")
    st = SentenceTransformer(st_model_dir(args.model, st_tmp.name), device="cpu")
    tok = st.tokenizer
    limit = st.max_seq_length
    tokens = sum(min(len(tok(p)["input_ids"]), limit) for p in passages)
    print(f"{len(passages)} passages, {tokens} tokens ({tokens / len(passages):.0f} each, "
          f"max_seq_length {limit}), batch {args.batch}, {args.threads} threads, "
          f"shirabe in {args.dtype}", flush=True)

    stdin = "\n".join(passages) + "\n"
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    embed = [args.shirabe, "embed", "--embed-model", args.model, "--batch", str(args.batch),
             "--dtype", args.dtype]
    with tempfile.TemporaryDirectory(prefix="shirabe-embed-bench-") as tmp:
        docs = os.path.join(tmp, "docs")
        os.makedirs(docs)
        for i, p in enumerate(passages):
            with open(os.path.join(docs, f"p{i:04}.txt"), "w") as f:
                f.write(p + "\n")
        template = os.path.join(tmp, "bm25")
        subprocess.run([args.shirabe, "ingest", docs, "--no-embed", "-q", "--chunk-tokens", "512"],
                       env=dict(env, SHIRABE_INDEX=template), check=True, capture_output=True)
        results = {"st": [], "embed": [], "ingest": []}
        for r in range(args.rounds):
            wall, u, s = run_st(st, passages, args.batch)
            results["st"].append((wall, u, s))
            load = timed(embed + ["load"], env=env)
            wall, u, s = timed(embed, stdin=stdin, env=env)
            results["embed"].append((wall - load[0], u - load[1], s - load[2]))
            # The pipeline, on a fresh copy of the BM25 index (no vectors,
            # none cached).
            index = os.path.join(tmp, f"index{r}")
            subprocess.run(["cp", "-r", template, index], check=True)
            ienv = dict(env, SHIRABE_INDEX=index)
            u0, s0 = child_cpu()
            out = subprocess.run([args.shirabe, "embed-index", "--embed-model", args.model,
                                  "--embed-dtype", args.dtype, "--json"], env=ienv, capture_output=True, text=True,
                                 check=True).stdout
            u1, s1 = child_cpu()
            rep = json.loads(out.strip().splitlines()[-1])
            assert rep["embedded"] == len(passages), rep
            # Its own clock: the embedding loop, model load excluded.
            results["ingest"].append((rep["seconds"], u1 - u0 - load[1], s1 - s0 - load[2]))
            for k in results:
                w, u, s = results[k][-1]
                print(f"round {r + 1} {k:6}: {w:6.2f} s, {tokens / w:7.0f} tokens/s, "
                      f"cpu user {u:6.2f} s sys {s:5.2f} s ({100 * s / max(u + s, 1e-9):.0f}% sys)",
                      flush=True)
    summary = {}
    for k, v in results.items():
        w = statistics.median(x[0] for x in v)
        u = statistics.median(x[1] for x in v)
        s = statistics.median(x[2] for x in v)
        summary[k] = {"seconds": w, "tokens_per_s": tokens / w, "sys_share": s / max(u + s, 1e-9)}
    st_tps = summary["st"]["tokens_per_s"]
    for k in ("embed", "ingest"):
        summary[k]["vs_st"] = summary[k]["tokens_per_s"] / st_tps
    for k, v in summary.items():
        extra = f", {v['vs_st']:.2f}x sentence-transformers" if "vs_st" in v else ""
        print(f"median {k:6}: {v['tokens_per_s']:7.0f} tokens/s, {100 * v['sys_share']:.0f}% of CPU "
              f"time in the kernel{extra}")
    print(json.dumps({"tokens": tokens, "passages": len(passages), **summary}))


if __name__ == "__main__":
    sys.exit(main())
