"""shirabe against llama.cpp on the same GGUF file: prefill and decode speed.

Runs `shirabe generate --json` and llama-cpp-python (built by
benches/llama-cpp.sh) on the same chat prompts, alternating, with the same
thread count: prefill tokens/s at each prompt length (default 512 and
2,048 tokens), decode tokens/s for 64 tokens after each prompt, and the
peak RSS of each engine. Prints each run, then medians and ratios.

usage: python benches/gguf_vs_llama.py SHIRABE_BIN MODEL.gguf [--rounds N] [--ctx 512,2048]
(run with the venv python that benches/llama-cpp.sh prints)
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import time

import llama_cpp

ap = argparse.ArgumentParser()
ap.add_argument("shirabe")
ap.add_argument("model")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--ctx", default="512,2048", help="prompt lengths in tokens")
ap.add_argument("--decode", type=int, default=64, help="tokens decoded after each prompt")
args = ap.parse_args()
threads = os.cpu_count()
lengths = [int(x) for x in args.ctx.split(",")]

llm = llama_cpp.Llama(model_path=args.model, n_ctx=max(lengths) + args.decode + 64,
                      n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)


def prompt_of(n):
    """A ChatML prompt of about `n` tokens (by the model's own tokenizer)."""
    sentence = ("The warehouse in Osaka expanded its storage capacity by twenty percent "
                "after the board approved the budget. ")
    head = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "Summarize the following notes, then list every open question. ")
    tail = "<|im_end|>\n<|im_start|>assistant\n"
    per = len(llm.tokenize(sentence.encode(), add_bos=False, special=True))
    fixed = len(llm.tokenize((head + tail).encode(), add_bos=False, special=True))
    text = head + sentence * max(1, (n - fixed) // per) + tail
    return text, llm.tokenize(text.encode(), add_bos=False, special=True)


def llama_run(tokens):
    llm.reset()
    t = time.perf_counter()
    llm.eval(tokens)
    prefill = len(tokens) / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(args.decode):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
    return prefill, args.decode / (time.perf_counter() - t)


def shirabe_run(text):
    out = subprocess.run(
        [args.shirabe, "generate", "--model", args.model, "--raw", "--prompt", text,
         "--max-tokens", str(args.decode), "--json"],
        check=True, capture_output=True, text=True).stdout
    v = json.loads(out)
    return v["prefill_tokens_per_s"], v["decode_tokens_per_s"]


prompts = {n: prompt_of(n) for n in lengths}
llama_run(prompts[lengths[0]][1])  # warm-up: page the weights in
rows = {(n, e): [] for n in lengths for e in ("shirabe", "llama.cpp")}
for r in range(args.rounds):
    for n in lengths:
        text, tokens = prompts[n]
        for name, run in (("shirabe", lambda: shirabe_run(text)),
                          ("llama.cpp", lambda: llama_run(tokens))):
            p, d = run()
            rows[(n, name)].append((p, d))
            print(f"round {r + 1} {len(tokens):5d} tokens {name:9s} "
                  f"prefill {p:7.1f} tok/s  decode {d:6.1f} tok/s", flush=True)

print(f"\n{os.path.basename(args.model)}, {args.decode} decoded after each prompt, "
      f"{threads} threads, {args.rounds} alternating rounds (medians)")
for n in lengths:
    size = len(prompts[n][1])
    for i, what in enumerate(("prefill", "decode")):
        s = statistics.median(x[i] for x in rows[(n, "shirabe")])
        l = statistics.median(x[i] for x in rows[(n, "llama.cpp")])
        label = f"{what} {'at' if i == 0 else 'after'} {size}"
        print(f"{label:20s} shirabe {s:7.1f}  llama.cpp {l:7.1f}  ratio {s / l:.2f}x")
rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{'peak RSS':20s} shirabe {rss_children:7.0f}  llama.cpp {rss_self:7.0f}  MB "
      f"(llama.cpp's includes Python)")
