"""Benchmark generated models against timm in one process: A/B interleaved, warm-up, medians.

Takes: command-line options (models, modes, passes, precisions, builds, batch, repeats).
Produces: one row per (model, build, precision, mode, pass) with the median milliseconds of
archlang's model, timm's as it ships and (where they differ) timm with fused attention forced
on, their ratios, and the achieved GFLOP/s with its share of the matmul throughput measured
in the same rounds (a 2048^3 matmul of the row's precision is one more contender of every
row; its GFLOP/s is the last column). ``--markdown`` writes the table, with the
command that made it, into docs/benchmarks.md (a section per ``--section``, replaced on
rerunning).

Contenders:

- **timm** is ``timm.create_model(name)`` as it ships: timm 1.0's ``use_fused_attn()`` is on
  by default (``TIMM_FUSED_ATTN`` unset means 1) for "tested" modules (ViT's Attention), but
  Swin's WindowAttention asks for the *experimental* level (2), so shipped Swin-T computes its
  attention explicitly; Swin-V2, MViTv2, Mixer and ResNet have no switch. The script refuses
  to run with ``TIMM_FUSED_ATTN`` set, so that "as shipped" means the default.
- **timm fused** sets ``fused_attn = True`` on every module that has the attribute (what
  ``TIMM_FUSED_ATTN=2`` does at construction); it is listed only where that changes a module.
- **sasa_resnet50** (archlang's local attention ResNet, no timm counterpart) is measured
  against timm's resnet50 and archlang's resnet50: its ratio is SASA / ResNet-50.

Precisions: ``fp32``; ``bf16`` (archlang's model built with ``archlang.build(...,
dtype="bfloat16")`` against ``timm_model.to(torch.bfloat16)``, bf16 inputs); ``autocast``
(fp32 models under ``torch.autocast("cpu", torch.bfloat16)``). Builds: ``default``,
``inference`` (``archlang.build(..., inference=True)``, forward only; skipped with a message
while ``build`` does not accept it) and ``regions`` (``compile_regions=True``: the same code
with repeated blocks marked ``nested_compile_region``, which matters only compiled). Modes: ``eager`` and ``compiled`` (``torch.compile`` of
each contender; slow to warm up on a CPU). Passes: ``fwd`` (eval, no grad) and ``train``
(train mode, forward, backward of the logits' sum, gradients dropped). GFLOP/s counts
archlang's analytic forward FLOPs (equal to ``FlopCounterMode``'s), and three times them for
forward+backward.

    python benchmarks/bench_vs_timm.py                                   # fp32 eager, every model
    python benchmarks/bench_vs_timm.py --models resnet50 sasa_resnet50 --repeats 3 --batch 2
    python benchmarks/bench_vs_timm.py --precisions fp32 bf16 autocast --builds default inference
    python benchmarks/bench_vs_timm.py --modes eager compiled --passes fwd --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import os
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# key: (spec, arch, timm model); sasa_resnet50 runs against resnet50
MODELS: dict[str, tuple[str, str, str]] = {
    "swin_t": ("specs/swin_t.arch", "swin_t", "swin_tiny_patch4_window7_224"),
    "vit_b16": ("specs/vit_b16.arch", "vit_b16", "vit_base_patch16_224"),
    "mixer_b16": ("specs/mixer_b16.arch", "mixer_b16", "mixer_b16_224"),
    "swinv2_t": ("specs/swinv2_t.arch", "swinv2_t", "swinv2_tiny_window8_256"),
    "mvitv2_t": ("specs/mvitv2_t.arch", "mvitv2_t", "mvitv2_tiny"),
    "resnet50": ("specs/resnet50.arch", "resnet50", "resnet50"),
    "sasa_resnet50": ("specs/sasa_resnet50.arch", "sasa_resnet50", "resnet50"),
}
PRECISIONS = ("fp32", "bf16", "autocast")


# ----------------------------------------------------------------------------- measuring


def matmul_peak(dtype, n: int = 2048, repeats: int = 5, clock: Callable[[], float] = time.perf_counter) -> float:
    """FLOP/s of an n^3 matmul in ``dtype`` (median of ``repeats`` after one warm-up)."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = clock()
        torch.mm(a, b)
        times.append(clock() - t0)
    return 2 * n**3 / statistics.median(times)


MATMUL_N = 2048


def matmul_step(dtype) -> Callable[[], None]:
    """One 2048^3 ``torch.mm`` in ``dtype``: a contender of every row, timed in the same
    rounds as the models, so that each row's "% peak" is of the matmul throughput measured
    while that row ran (this machine's speed drifted by 1.5x within one run)."""
    import torch

    a, b = torch.randn(MATMUL_N, MATMUL_N, dtype=dtype), torch.randn(MATMUL_N, MATMUL_N, dtype=dtype)
    return lambda: torch.mm(a, b)


def make_step(model, x, train: bool, autocast: bool) -> Callable[[], None]:
    """One call of the model: eval forward under no_grad, or a training forward + backward."""
    import torch

    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else nullcontext
    model.train(train)
    if train:
        params = [p for p in model.parameters() if p.requires_grad]

        def step() -> None:
            with ctx():
                out = model(x)
            if isinstance(out, dict):
                out = out["logits"]
            out.float().sum().backward()
            for p in params:
                p.grad = None
    else:
        def step() -> None:
            with torch.no_grad(), ctx():
                model(x)
    return step


def round_orders(n: int) -> list[list[int]]:
    """Orders of ``n`` contenders, one per round, in which each contender comes right after each
    other one equally often (a Williams design: ``n`` rounds for an even ``n``, ``2n`` for an
    odd one): what ran just before a call moves its time (the allocator's state, caches, and
    possibly the clock after a matmul). Plain rotation (A B C, B C A, C A B) put A right after
    C in two rounds of three and never after B: with the matmul the third contender, archlang
    came right after the matmul in two rounds of three, timm in none (within a round)."""
    first = [0]
    lo, hi = 1, n - 1
    while len(first) < n:
        first.append(lo)
        lo += 1
        if len(first) < n:
            first.append(hi)
            hi -= 1
    orders = [[(c + r) % n for c in first] for r in range(n)]
    return orders if n % 2 == 0 else orders + [o[::-1] for o in orders]


def bench(contenders: dict[str, Callable[[], None]], repeats: int, warmup: int,
          clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call of each contender, run interleaved, round ``r`` in the order
    ``round_orders(n)[r % len]`` (each contender after each other one equally often over a
    full cycle of rounds; where a call falls, and what ran before it, moved its time by up to
    5% on one machine); ``clock`` is wall time, or ``time.process_time`` (CPU seconds of all
    threads)."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    orders = round_orders(len(names))
    for r in range(repeats):
        for i in orders[r % len(orders)]:
            name = names[i]
            t0 = clock()
            contenders[name]()
            times[name].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# ----------------------------------------------------------------------------- the contenders


def inference_supported() -> bool:
    import archlang

    return "inference" in inspect.signature(archlang.build).parameters


def build_ours(key: str, precision: str, build: str, spec: str | None = None, arch: str | None = None):
    import archlang

    spec_, arch_, _ = MODELS[key]
    kwargs = {"inference": True} if build == "inference" else {"compile_regions": True} if build == "regions" else {}
    dtype = "bfloat16" if precision == "bf16" else "float32"
    return archlang.build(ROOT / (spec or spec_), arch or arch_, max_memory=None, dtype=dtype, **kwargs)


def fused_switches(model) -> list:
    """The modules of a timm model that carry timm's ``fused_attn`` switch turned off."""
    return [m for m in model.modules() if getattr(m, "fused_attn", None) is False]


def build_timm(name: str, precision: str, fused: bool, state: dict | None = None):
    """timm's model (fused attention forced on with ``fused``), with ``state`` loaded if given."""
    import timm
    import torch

    model = timm.create_model(name)
    if state is not None:
        model.load_state_dict(state)
    if fused:
        for m in fused_switches(model):
            m.fused_attn = True
    return model.to(torch.bfloat16) if precision == "bf16" else model


def contenders_for(key: str, precision: str, build: str) -> dict:
    """name -> model for one row: archlang, timm (as shipped) and timm fused where it differs;
    for sasa_resnet50 also archlang's resnet50. Every contender computes with the same weights,
    timm's random initialisation loaded into archlang's model (``load_timm_weights``): run time
    depends on the values (one run of Swin-V2-T took 5% longer with archlang's own
    initialisation than with timm's weights in the same model), so each row compares code
    alone. SASA keeps its own (it has no timm counterpart)."""
    import archlang

    _, _, timm_name = MODELS[key]
    ref = build_timm(timm_name, "fp32", fused=False)
    state = ref.state_dict()
    ours = build_ours(key, precision, build)
    out = {"archlang": ours if key == "sasa_resnet50" else archlang.load_timm_weights(ours, state)}
    if key == "sasa_resnet50":
        out["archlang resnet50"] = archlang.load_timm_weights(build_ours("resnet50", precision, build), state)
    out["timm"] = build_timm(timm_name, precision, fused=False, state=state)
    if fused_switches(ref):
        out["timm fused"] = build_timm(timm_name, precision, fused=True, state=state)
    if build == "inference":
        for m in out.values():
            m.eval()
    return out


def example_input(key: str, batch: int, precision: str):
    import torch

    import archlang
    from archlang.lower.example import example_inputs

    spec, arch, _ = MODELS[key]
    (x,) = example_inputs(archlang.graph(ROOT / spec, arch), batch=batch)
    return x.to(torch.bfloat16) if precision == "bf16" else x


def forward_flops(key: str, batch: int, ref: bool = False) -> int:
    """The forward FLOPs the model computes: archlang's builds leave out the rows no output reads
    (ViT's last block runs on the class token), timm's models (``ref``) compute every row, so
    each side's GFLOP/s count what it runs."""
    import archlang

    spec, arch, _ = MODELS["resnet50" if ref and key == "sasa_resnet50" else key]
    return archlang.cost(ROOT / spec, arch, batch=batch, as_written=ref).flops


def training_peaks(key: str, batch: int) -> str:
    """One line: each contender's peak memory over a training step (forward, backward, AdamW)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from memory_truth import measure_training_peak

    peaks = {}
    for name, model in contenders_for(key, "fp32", "default").items():
        x = example_input(key, batch, "fp32")
        peaks[name] = measure_training_peak(model, lambda x=x: (x,))
    ref = peaks["timm"]
    parts = [f"{k} {v / 2**20:,.0f} MiB ({v / ref:.2f}x timm)" for k, v in peaks.items()]
    return f"{key} training-step peak memory, batch {batch}: " + ", ".join(parts)


# ----------------------------------------------------------------------------- the table


COLUMNS = ("model", "build", "precision", "mode", "pass", "archlang ms", "timm ms", "ratio", "timm fused ms",
           "ratio fused", "archlang GFLOP/s", "% peak", "timm GFLOP/s", "timm % peak", "matmul GFLOP/s")


def row_cells(key, build, precision, mode, pas, med, flops, peak) -> list[str]:
    a, t = med["archlang"], med["timm"]
    f = med.get("timm fused")
    ref_flops = flops["ref"]
    cells = [key, build, precision, mode, pas, f"{a * 1e3:.1f}", f"{t * 1e3:.1f}", f"{a / t:.3f}",
             f"{f * 1e3:.1f}" if f else "", f"{a / f:.3f}" if f else "",
             f"{flops['ours'] / a / 1e9:.1f}", f"{100 * flops['ours'] / a / peak:.1f}",
             f"{ref_flops / t / 1e9:.1f}", f"{100 * ref_flops / t / peak:.1f}", f"{peak / 1e9:.1f}"]
    if "archlang resnet50" in med:  # SASA: also against archlang's own resnet50
        r = med["archlang resnet50"]
        cells[8], cells[9] = f"{r * 1e3:.1f} (archlang resnet50)", f"{a / r:.3f}"
    return cells


def markdown(rows: list[list[str]], header: str) -> str:
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_markdown(path: Path, text: str, section: str = "main") -> None:
    """Replace the generated section ``section`` of ``path`` (between its markers) or append it."""
    doc = path.read_text() if path.exists() else "# Generated models vs timm: speed\n"
    begin, end = f"<!-- bench_vs_timm:{section}:begin -->", f"<!-- bench_vs_timm:{section}:end -->"
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--modes", nargs="+", default=["eager"], choices=["eager", "compiled"])
    ap.add_argument("--passes", nargs="+", default=["fwd", "train"], choices=["fwd", "train"])
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=list(PRECISIONS))
    ap.add_argument("--builds", nargs="+", default=["default"], choices=["default", "inference", "regions"],
                    help="default; inference (archlang.build(..., inference=True)); regions (the default build "
                         "with compile_regions=True: repeated blocks compiled once)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--markdown", type=Path, default=None, help="write the table into this file (docs/benchmarks.md)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall time, or the process's CPU time (steadier on a shared machine; counts every "
                         "thread, so ms and GFLOP/s are per core-second)")
    ap.add_argument("--section", default="main", help="the name of the generated section --markdown replaces")
    ap.add_argument("--memory", action="store_true",
                    help="also the training step's peak memory of each contender (fp32, default build; "
                         "benchmarks/memory_truth.py's profiler method)")
    ap.add_argument("--compiled", action="store_true", help="same as adding `compiled` to --modes")
    ap.add_argument("--no-train", action="store_true", help="same as --passes fwd")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        ap.error("--batch, --repeats and --threads must be at least 1, --warmup at least 0")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.section):
        ap.error(f"--section {args.section!r}: letters, digits, '_' and '-' only (it names HTML comment markers)")
    if args.compiled and "compiled" not in args.modes:
        args.modes.append("compiled")
    if args.no_train:
        args.passes = [p for p in args.passes if p != "train"] or ["fwd"]

    if "TIMM_FUSED_ATTN" in os.environ:
        print("error: TIMM_FUSED_ATTN is set; unset it so that `timm` means timm as it ships", file=sys.stderr)
        return 2
    import timm
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    # only the matmuls of the precisions asked for: a 2048^3 bf16 matmul takes seconds on a CPU
    # without bf16 instructions (AVX2 only)
    kinds = sorted({"fp32" if p == "fp32" else "bf16" for p in args.precisions}, reverse=True)
    peaks = {k: matmul_peak(torch.float32 if k == "fp32" else torch.bfloat16, clock=clock) for k in kinds}
    matmuls = {p: matmul_step(torch.float32 if p == "fp32" else torch.bfloat16) for p in args.precisions}
    command = "python benchmarks/bench_vs_timm.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    header = (f"`{command.strip()}`, {datetime.date.today().isoformat()}: torch {torch.__version__}, timm "
              f"{timm.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.repeats} interleaved "
              f"repeats after {args.warmup} warm-up, medians of {args.clock} time; ratio = archlang / timm. 2048^3 matmul: "
              + ", ".join(f"{peaks[k] / 1e9:.1f} GFLOP/s {k}" for k in kinds) + " at the start; % peak is "
              "of the precision's matmul timed in the same rounds as the row (its last column; autocast counts "
              "against bf16).")
    print(header, flush=True)
    print(" | ".join(COLUMNS), flush=True)
    rows: list[list[str]] = []
    memory: list[str] = []
    for key in args.models:
        flops = {"ours": forward_flops(key, args.batch), "ref": forward_flops(key, args.batch, ref=True)}
        if args.memory:
            memory.append(training_peaks(key, args.batch))
            print(memory[-1], flush=True)
        for build in args.builds:
            if build == "inference" and not inference_supported():
                print(f"{key}: inference build skipped: archlang.build does not accept inference= yet", flush=True)
                continue
            for precision in args.precisions:
                models = contenders_for(key, precision, build)
                x = example_input(key, args.batch, precision)
                for mode in args.modes:
                    impls = models
                    if mode == "compiled":
                        torch._dynamo.reset()
                        impls = {k: torch.compile(m) for k, m in models.items()}
                    for pas in args.passes:
                        if pas == "train" and build == "inference":
                            print(f"{key} inference {precision} {mode} train: skipped (the inference build is "
                                  "eval-only)", flush=True)
                            continue
                        train = pas == "train"
                        steps = {k: make_step(m, x, train, precision == "autocast") for k, m in impls.items()}
                        steps["matmul"] = matmuls[precision]
                        med = bench(steps, args.repeats, args.warmup + (1 if mode == "compiled" else 0),
                                    clock)
                        peak = 2 * MATMUL_N**3 / med.pop("matmul")
                        mult = 3 if train else 1
                        cells = row_cells(key, build, precision, mode, "fwd+bwd" if train else "fwd", med,
                                          {k: v * mult for k, v in flops.items()}, peak)
                        rows.append(cells)
                        print(" | ".join(cells), flush=True)
    if args.markdown is not None:
        memory_lines = "\n\n" + "\n".join(f"- {m}" for m in memory) if memory else ""
        write_markdown(args.markdown, markdown(rows, header) + memory_lines, args.section)
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
