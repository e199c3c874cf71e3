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
cargo bench --quiet --features bench-internals --bench kernels --no-run
args=(--preset "$preset" --dtypes "$dtypes" --prefill 512,2048 --embed-batch 1,8 --decode 32)
# The machine's memory bandwidth swings by 2x between minutes, so the two
# sides alternate, ROUNDS times each (default 2), and each keeps its best.
rounds=${ROUNDS:-2}
ours=() theirs=()
for _ in $(seq "$rounds"); do
    ours+=("$(cargo bench --quiet --features bench-internals --bench kernels -- model "${args[@]}" --json)")
    theirs+=("$("$venv/bin/python" benches/model_torch.py "${args[@]}")")
done
python3 - "$rounds" "${ours[@]}" "${theirs[@]}" <<'PY'
import json, sys
n = int(sys.argv[1])
def best(docs):
    """Each run's figures at their best over the rounds."""
    docs = [json.loads(d) for d in docs]
    out = docs[0]
    for i, run in enumerate(out["runs"]):
        for k in list(run):
            if k.endswith("_per_s") and "bound" not in k:
                vals = [d["runs"][i][k] for d in docs]
                run[k] = max(vals)
        # The fraction of the bound: each round's own (its speed over its
        # own bandwidth), the best of them.
        fr = [d["runs"][i].get("decode_fraction_of_bound") for d in docs]
        if fr[0] is not None:
            j = fr.index(max(fr))
            for extra in ("decode_fraction_of_bound", "decode_fraction_of_bound_with_kv",
                          "decode_bandwidth_bound_tokens_per_s", "decode_read_bandwidth_gbs",
                          "decode_fraction_of_best_bound", "decode_best_read_bandwidth_gbs"):
                run[extra] = docs[j]["runs"][i][extra]
    return out
ours, theirs = best(sys.argv[2:2 + n]), best(sys.argv[2 + n:2 + 2 * n])
print(f"{ours['preset']}: shirabe (our Qwen module and kernels) vs PyTorch {theirs['torch']} ({theirs['threads']} threads), best of {n} alternating rounds each; read bandwidth {ours['bandwidth_gbs']:.1f} GB/s")
for o, t in zip(ours["runs"], theirs["runs"]):
    print(f"  {o['dtype']}:")
    for k in sorted(k for k in o if k.endswith("_per_s") and "bound" not in k):
        if k in t:
            print(f"    {k:32} shirabe {o[k]:9.2f}   torch {t[k]:9.2f}   ratio {o[k] / t[k]:.2f}")
    if "decode_fraction_of_bound" in o:
        print(f"    decode ({o.get('cache', '?')} cache): {100 * o['decode_fraction_of_bound']:.0f}% of the bound set by the weights "
              f"({o['decode_bandwidth_bound_tokens_per_s']:.1f} tokens/s at {o['decode_read_bandwidth_gbs']:.1f} GB/s read), "
              f"{100 * o['decode_fraction_of_bound_with_kv']:.0f}% counting the KV cache (medians over tokens, the yardstick "
              f"read after each); {100 * o['decode_fraction_of_best_bound']:.0f}% of the bound at that run's best read "
              f"({o['decode_best_read_bandwidth_gbs']:.1f} GB/s); peak RSS {o['peak_rss_mb']:.0f} MB")
PY
