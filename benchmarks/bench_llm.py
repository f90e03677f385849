"""archlang's Llama/Mistral against Hugging Face transformers, in one process: interleaved, warm-up, medians.

Takes: command-line options (width, layers, sequence length, batch, repeats). Produces: a
table of median eager forward times (fp32, ``torch.inference_mode``, CPU threads as torch
sets them) of the model archlang generates from specs/llama.arch (or specs/mistral.arch)
and of HF's LlamaForCausalLM / MistralForCausalLM with ``attn_implementation`` "sdpa" and
"eager", on the same random weights (loaded strictly), with the ratio HF / archlang (above
1: archlang is faster). The logits are compared first (the largest difference is printed).

    python benchmarks/bench_llm.py                                   # Llama, dim 512, 4 layers, T 512
    python benchmarks/bench_llm.py --model mistral --window 128 --seq 1024 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import transformers

import archlang

ROOT = Path(__file__).resolve().parent.parent


def _hf(model: str, a: argparse.Namespace, attn: str) -> torch.nn.Module:
    name = "Llama" if model == "llama" else "Mistral"
    extra = {"sliding_window": a.window} if model == "mistral" else {}
    cfg = getattr(transformers, f"{name}Config")(
        hidden_size=a.dim, num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
        intermediate_size=a.ffn, vocab_size=a.vocab, rms_norm_eps=1e-5, max_position_embeddings=max(a.seq, 2048),
        rope_parameters={"rope_type": "default", "rope_theta": a.theta}, head_dim=a.dim // a.heads,
        attn_implementation=attn, **extra)
    torch.manual_seed(0)
    return getattr(transformers, f"{name}ForCausalLM")(cfg).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("llama", "mistral"), default="llama")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=1376)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--theta", type=float, default=500000.0)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()

    spec = ROOT / "specs" / f"{a.model}.arch"
    params = dict(vocab=a.vocab, dim=a.dim, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads, ffn=a.ffn,
                  rope_theta=a.theta, norm_eps=1e-5)
    if a.model == "mistral":
        params["window"] = a.window
    refs = {f"HF {attn}": _hf(a.model, a, attn) for attn in ("sdpa", "eager")}
    ours = archlang.build(spec, a.model, **params).eval()
    ours.load_state_dict(next(iter(refs.values())).state_dict(), strict=True)
    for m in refs.values():
        m.load_state_dict(ours.state_dict(), strict=True)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=torch.Generator().manual_seed(0))
    runs = {"archlang": lambda: ours(ids), **{k: (lambda m=m: m(input_ids=ids).logits) for k, m in refs.items()}}
    with torch.inference_mode():
        want = runs["HF sdpa"]()
        for k, f in runs.items():
            print(f"{k:10s} max |logits - HF sdpa| = {(f() - want).abs().max().item():.2e}")
        times: dict[str, list[float]] = {k: [] for k in runs}
        for f in runs.values():  # warm-up
            f()
        for _ in range(a.repeats):  # interleaved
            for k, f in runs.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["archlang"])
    print(f"\n{a.model}: dim {a.dim}, {a.layers} layers, {a.heads} heads / {a.kv_heads} kv, T {a.seq}, batch {a.batch}, "
          f"{torch.get_num_threads()} threads, median of {a.repeats}")
    print("| model | median ms | HF / archlang |\n|---|--:|--:|")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"| {k} | {med * 1e3:.1f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
