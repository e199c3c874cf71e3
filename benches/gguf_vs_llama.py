"""shirabe against llama.cpp on the same GGUF file: prefill and decode speed.

Runs `shirabe generate --json` and llama-cpp-python (built by
benches/llama-cpp.sh) on the same chat prompt, alternating, with the same
thread count, and prints each run and the median ratio.

usage: python benches/gguf_vs_llama.py SHIRABE_BIN MODEL.gguf [ROUNDS] [REPEATS]
(run with the venv python that benches/llama-cpp.sh prints)
"""

import json
import os
import statistics
import subprocess
import sys
import time

import llama_cpp

shirabe, model = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 40
threads = os.cpu_count()
decode_n = 64

notes = " ".join(
    ["The warehouse in Osaka expanded its storage capacity by twenty percent "
     "after the board approved the budget."] * repeats)
user = "Summarize the following notes, then list every open question. " + notes
prompt = (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
          f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")

llm = llama_cpp.Llama(model_path=model, n_ctx=4096, n_threads=threads,
                      n_threads_batch=threads, n_batch=512, verbose=False)
tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)


def llama_run():
    llm.reset()
    t = time.perf_counter()
    llm.eval(tokens)
    prefill = len(tokens) / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(decode_n):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
    decode = decode_n / (time.perf_counter() - t)
    return prefill, decode


def shirabe_run():
    out = subprocess.run(
        [shirabe, "generate", "--model", model, "--raw", "--prompt", prompt,
         "--max-tokens", str(decode_n), "--json"],
        check=True, capture_output=True, text=True).stdout
    v = json.loads(out)
    return v["prefill_tokens_per_s"], v["decode_tokens_per_s"]


llama_run()  # warm-up: page the weights in
rows = {"shirabe": [], "llama.cpp": []}
for r in range(rounds):
    for name, run in (("shirabe", shirabe_run), ("llama.cpp", llama_run)):
        p, d = run()
        rows[name].append((p, d))
        print(f"round {r + 1} {name:9s} prefill {p:7.1f} tok/s  decode {d:6.1f} tok/s",
              flush=True)
print(f"\n{os.path.basename(model)}, {len(tokens)}-token prompt, {decode_n} decoded, "
      f"{threads} threads, {rounds} alternating rounds (medians)")
for i, what in enumerate(("prefill", "decode")):
    s = statistics.median(x[i] for x in rows["shirabe"])
    l = statistics.median(x[i] for x in rows["llama.cpp"])
    print(f"{what:8s} shirabe {s:7.1f}  llama.cpp {l:7.1f}  ratio {s / l:.2f}x")
