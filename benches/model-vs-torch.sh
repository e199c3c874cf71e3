#!/usr/bin/env bash
# shirabe's Qwen module against PyTorch transformers, same random-weight
# shapes, same run. Installs torch + transformers into a venv of its own.
# Usage: benches/model-vs-torch.sh [PRESET] [DTYPES]   (default qwen3-0.6b f32,bf16)
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-qwen3-0.6b}
dtypes=${2:-f32,bf16}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shirabe/target}"
venv="${TMPDIR:-/tmp}/shirabe-torch-venv"
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" -q install torch transformers; }
cargo build --release --quiet
args=(--preset "$preset" --dtypes "$dtypes" --prefill 512,2048 --embed-batch 1,8 --decode 32)
ours=$("$CARGO_TARGET_DIR/release/shirabe" bench model "${args[@]}" --json)
theirs=$("$venv/bin/python" benches/model_torch.py "${args[@]}")
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{ours['preset']}: shirabe (our Qwen module and kernels) vs PyTorch {theirs['torch']} ({theirs['threads']} threads); read bandwidth {ours['bandwidth_gbs']:.1f} GB/s")
for o, t in zip(ours["runs"], theirs["runs"]):
    print(f"  {o['dtype']}:")
    for k in sorted(k for k in o if k.endswith("_per_s") and "bound" not in k):
        if k in t:
            print(f"    {k:32} shirabe {o[k]:9.2f}   torch {t[k]:9.2f}   ratio {o[k] / t[k]:.2f}")
    if "decode_fraction_of_bound" in o:
        print(f"    decode: {100 * o['decode_fraction_of_bound']:.0f}% of the bound set by the weights "
              f"({o['decode_bandwidth_bound_tokens_per_s']:.1f} tokens/s at {o['decode_read_bandwidth_gbs']:.1f} GB/s read), "
              f"{100 * o['decode_fraction_of_bound_with_kv']:.0f}% counting the KV cache; peak RSS {o['peak_rss_mb']:.0f} MB")
PY
