#!/usr/bin/env python3
"""The PyTorch side of the `model` developer benchmark (`benches/kernels.rs`): Hugging Face transformers on
random weights in the same real Qwen3 shapes, the same measurements.

Usage: model_torch.py --preset qwen3-0.6b [--dtypes f32,bf16] [--prefill 512,2048]
                      [--embed-batch 1,8] [--decode 16]
Prints one JSON object (same keys as its `--json`).
"""
import argparse, json, time

import torch
from transformers import Qwen3Config, Qwen3Model, Qwen3ForCausalLM

PRESETS = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8),
    "qwen3-embedding-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                 num_attention_heads=16, num_key_value_heads=8),
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="qwen3-0.6b")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--prefill", default="512,2048")
    ap.add_argument("--embed-batch", default="1,8")
    ap.add_argument("--decode", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    cfg = Qwen3Config(vocab_size=151936, head_dim=128, max_position_embeddings=40960, rope_theta=1e6,
                      rms_norm_eps=1e-6, tie_word_embeddings=True, **PRESETS[a.preset])
    runs = []
    for name in a.dtypes.split(","):
        dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[name]
        model = Qwen3ForCausalLM(cfg).to(dtype).eval()
        row = {"dtype": name}
        with torch.inference_mode():
            # One untimed pass first, as the shirabe side does (oneDNN
            # generates its kernels on the first call of each shape).
            model.model(input_ids=torch.randint(0, 151000, (1, 512)))
            for b in [int(x) for x in a.embed_batch.split(",")]:
                ids = torch.randint(0, 151000, (b, 512))
                t = time.perf_counter()
                model.model(input_ids=ids).last_hidden_state[:, -1]
                s = time.perf_counter() - t
                row[f"embed_batch{b}_passages_per_s"] = b / s
                row[f"embed_batch{b}_tokens_per_s"] = b * 512 / s
            for n in [int(x) for x in a.prefill.split(",")]:
                ids = torch.randint(0, 151000, (1, n))
                t = time.perf_counter()
                model.model(input_ids=ids, use_cache=True)
                row[f"prefill_{n}_tokens_per_s"] = n / (time.perf_counter() - t)
            if a.decode:
                ids = torch.randint(0, 151000, (1, 2048))
                out = model(input_ids=ids, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                t = time.perf_counter()
                for _ in range(a.decode):
                    out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                    past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                row["decode_tokens_per_s"] = a.decode / (time.perf_counter() - t)
        runs.append(row)
        del model
    print(json.dumps({"preset": a.preset, "torch": torch.__version__, "threads": torch.get_num_threads(), "runs": runs}))


if __name__ == "__main__":
    main()
