"""Where a model's forward spends its time: torch.profiler's operator table, archlang against timm.

Takes: command-line options (model, build, precision, mode, batch, calls, threads, depth).
Produces: for archlang's model (timm's random weights loaded, as in bench_vs_timm.py) and,
with ``--timm``, timm's, the profiler's table of operators by self CPU time over ``--calls``
eval forwards under ``no_grad``, after warm-up (compiled: each ``torch.compile``'d first). It
answers "why is this row slower", not "how fast": times under the profiler are inflated, so
speed claims come from bench_vs_timm.py.

    python benchmarks/profile_model.py --model vit_b16 --build inference --threads 2
    python benchmarks/profile_model.py --model swinv2_t --mode compiled --timm --depth 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vs_timm import MODELS, ROOT, example_input


def _depth_kwargs(key: str, depth: int | None) -> dict:
    """Fewer blocks for a quicker compile: ``depth`` per stage (hierarchical models) or in all."""
    if depth is None:
        return {}
    if key in ("swin_t", "swinv2_t"):
        return {"depths": [depth] * 4}
    if key in ("vit_b16", "mixer_b16"):
        return {"depth": depth}
    raise SystemExit(f"error: --depth is not supported for {key} (swin_t, swinv2_t, vit_b16, mixer_b16)")


def models(key: str, build: str, precision: str, depth: int | None, with_timm: bool) -> dict:
    import timm
    import torch

    import archlang

    spec, arch, timm_name = MODELS[key]
    kw = _depth_kwargs(key, depth)
    ref = timm.create_model(timm_name, **kw)
    ours = archlang.build(ROOT / spec, arch, max_memory=None, inference=build == "inference",
                          dtype="bfloat16" if precision == "bf16" else "float32", **kw)
    out = {"archlang": archlang.load_timm_weights(ours, ref.state_dict()).eval()}
    if with_timm:
        out["timm"] = (ref.to(torch.bfloat16) if precision == "bf16" else ref).eval()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_b16", choices=[k for k in MODELS if k != "sasa_resnet50"])
    ap.add_argument("--build", choices=["default", "inference"], default="default")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--mode", choices=["eager", "compiled"], default="eager")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--calls", type=int, default=3, help="forwards profiled (after warm-up)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--depth", type=int, default=None, help="blocks per stage (or in all), for a quicker compile")
    ap.add_argument("--timm", action="store_true", help="profile timm's model too")
    ap.add_argument("--rows", type=int, default=20)
    args = ap.parse_args(argv)
    if args.batch < 1 or args.calls < 1 or args.rows < 1 or (args.depth is not None and args.depth < 1):
        ap.error("--batch, --calls, --rows and --depth must be at least 1")
    import torch
    from torch.profiler import ProfilerActivity, profile

    if args.threads:
        torch.set_num_threads(args.threads)
    x = example_input(args.model, args.batch, args.precision)
    for name, model in models(args.model, args.build, args.precision, args.depth, args.timm).items():
        fn = torch.compile(model) if args.mode == "compiled" else model
        with torch.no_grad():
            for _ in range(3):
                fn(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.calls):
                    fn(x)
        print(f"===== {name}: {args.model} {args.build} {args.precision} {args.mode}, batch {args.batch}, "
              f"{args.calls} forwards, {torch.get_num_threads()} threads")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
