"""A/B of archlang's default build against itself with one kernel choice undone, and timm.

Takes: command-line options (models, precision, mode, batch, repeats, threads). Produces: one
line per model with the median milliseconds of each contender and its ratio to timm:

- ``archlang``: ``archlang.build`` as it ships (``kernels="auto"``);
- ``nn.GELU``: the same build with each :class:`~archlang.lower.inference_runtime.InplaceGELU`
  turned back into ``nn.GELU`` (the MLP's GELU out of place);
- ``SDPA always``: the same build with the generated module's ``sdpa`` helper replaced by
  ``F.scaled_dot_product_attention`` (no written-out attention, no race);
- ``kernels=torch``: ``archlang.build(..., kernels="torch")`` (plain ``nn.Linear``, GELU out of place);
- ``timm`` and, where it differs, ``timm fused``.

With ``--inference``, the inference build instead: ``default`` (the default build),
``inference`` (``archlang.build(..., inference=True)``), ``unpacked`` (the same with each
``OneDnnLinear.pack`` off: oneDNN reads the plain weight, as the default build's layers do),
``rolls`` (Swin: the same with the shifted windows' single gathers undone, rolls and copies
again) and timm.

Every contender computes with timm's random weights (loaded with ``load_timm_weights``), in
eval mode under ``no_grad``, interleaved in carryover-balanced orders
(``bench_vs_timm.round_orders``), after warm-up (compiled: each ``torch.compile``'d separately). The figures quoted in docs/benchmarks.md
part F come from this script.

    python benchmarks/variants.py --models vit_b16 swin_t --precision bf16 --mode compiled
    python benchmarks/variants.py --models mixer_b16 --precision fp32 --repeats 12
    python benchmarks/variants.py --models vit_b16 swin_t --inference --threads 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vs_timm import MODELS, ROOT, bench, build_timm, example_input, fused_switches


def _sdpa_globals(model) -> dict:
    """The namespace of the generated module whose ``sdpa`` the attention modules call."""
    for m in model.modules():
        fn = getattr(type(m), "forward", None)
        if fn is not None and "sdpa" in getattr(fn, "__globals__", {}):
            return fn.__globals__
    return {}


def contenders(key: str, precision: str, inference: bool = False) -> dict:
    import torch

    import archlang
    from archlang.lower.inference_runtime import InplaceGELU, OneDnnLinear

    spec, arch, timm_name = MODELS[key]
    dtype = "bfloat16" if precision == "bf16" else "float32"
    state = build_timm(timm_name, "fp32", fused=False).state_dict()

    def ours(**kw):
        return archlang.load_timm_weights(archlang.build(ROOT / spec, arch, max_memory=None, dtype=dtype, **kw),
                                          state).eval()

    if inference:
        out = {"default": ours(), "inference": ours(inference=True), "unpacked": ours(inference=True),
               "rolls": ours(inference=True)}
        for m in out["unpacked"].modules():
            if type(m) is OneDnnLinear:
                m.pack = False
        for m in out["rolls"].modules():
            if getattr(m, "window_index", None) is not None:  # shifted windows: rolls and copies again
                m.window_index = m.window_index_inverse = None
        if not any(getattr(m, "window_index", None) is not None for m in out["inference"].modules()):
            del out["rolls"]
    else:
        out = {"archlang": ours(), "nn.GELU": ours(), "SDPA always": ours(), "kernels=torch": ours(kernels="torch")}
        for m in out["nn.GELU"].modules():
            if type(m) is InplaceGELU:
                m.__class__ = torch.nn.GELU
    ref = build_timm(timm_name, precision, fused=False, state=state).eval()
    out["timm"] = ref
    if fused_switches(ref):
        out["timm fused"] = build_timm(timm_name, precision, fused=True, state=state).eval()
    return out


def run(key: str, precision: str, mode: str, batch: int, repeats: int, inference: bool = False) -> dict[str, float]:
    """Median milliseconds per contender (eval, no_grad)."""
    import torch
    import torch.nn.functional as F

    models = contenders(key, precision, inference)
    x = example_input(key, batch, precision)
    g = _sdpa_globals(models["SDPA always"]) if "SDPA always" in models else {}
    helper = g.get("sdpa")

    def sdpa_always(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              is_causal=is_causal, scale=scale)

    def step(name: str, fn):
        """One no-grad call; ``SDPA always`` swaps the shared helper around its own call only
        (swapped while compiling alone, Dynamo's guard on it would recompile with the original)."""
        def run_once() -> None:
            with torch.no_grad():
                if name == "SDPA always" and helper is not None:
                    g["sdpa"] = sdpa_always
                    try:
                        fn(x)
                    finally:
                        g["sdpa"] = helper
                else:
                    fn(x)
        return run_once

    steps = {k: step(k, torch.compile(m) if mode == "compiled" else m) for k, m in models.items()}
    med = bench(steps, repeats, warmup=3 if mode == "compiled" else 2)
    return {k: v * 1e3 for k, v in med.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["vit_b16", "swin_t"],
                    choices=[k for k in MODELS if k != "sasa_resnet50"])
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--mode", choices=["eager", "compiled"], default="eager")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--inference", action="store_true",
                    help="the inference build, with and without its packed linear weights, against timm")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        ap.error("--batch and --repeats must be at least 1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.precision}, "
          f"{args.mode}, {args.repeats} balanced rounds, median ms (ratio to timm)"
          + (", inference build" if args.inference else ""))
    for key in args.models:
        med = run(key, args.precision, args.mode, args.batch, args.repeats, args.inference)
        cells = ", ".join(f"{k} {v:.1f} ({v / med['timm']:.3f})" for k, v in med.items())
        print(f"{key}: {cells}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
