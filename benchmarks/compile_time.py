"""How long ``torch.compile`` takes to give the first output: archlang's generated model against timm's.

Takes: command-line options (models of benchmarks/bench_vs_timm.py's table, passes, build, batch,
repeats, threads). Produces: one row per (model, pass) with the median compile seconds of archlang's
model and of timm's (``first_s - steady_s``: the first compiled call, less the median of the next
three), their ratio archlang / timm, the median first-call seconds, graph breaks, FX graphs compiled
and steady-state compiled milliseconds of each; ``--markdown`` writes the table, with the command
that made it, into docs/benchmarks.md (the section ``--section``, replaced on rerunning, by
bench_vs_timm.py's section writer).

Method. Each trial is a fresh subprocess (``--worker``, internal) with a fresh, empty inductor
cache dir (``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR`` in a new temporary directory,
removed afterwards; ``TORCHINDUCTOR_FX_GRAPH_CACHE=0``, ``TORCHINDUCTOR_AUTOGRAD_CACHE=0``), so no
trial reuses another's compiled artefacts; the worker refuses to run if its cache dir is not empty.
In the worker: the model is built (not timed), called once eagerly (``eager_s``, warms the
allocator), then, unless ``--no-warm-compiler``, a tiny function is compiled and run (not timed) so
that inductor's one-time start-up (imports, C++ toolchain probe, compile worker pool) is charged to
neither contender; then ``torch._dynamo.reset()``, dynamo's counters cleared, ``m =
torch.compile(model)``, the first call timed (``first_s``), three more timed (``steady_s`` is their
median). It prints one JSON line. The parent runs the trials interleaved (archlang, timm, archlang,
timm, ...) ``--repeats`` times per (model, pass) and reports medians (and, for several repeats, the
range of the compile seconds). Passes: ``fwd`` (eval mode, ``torch.no_grad()``) and ``train`` (train
mode, forward, backward of the output's sum, gradients dropped; bench_vs_timm's ``make_step``).
fp32, on the CPU. ``sasa_resnet50`` runs against timm's resnet50.

    python benchmarks/compile_time.py                                    # swin_t, vit_b16, resnet50; fwd
    python benchmarks/compile_time.py --models resnet50 --repeats 1 --batch 1
    python benchmarks/compile_time.py --passes fwd train --markdown docs/benchmarks.md --section compile_time
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_vs_timm import MODELS, build_ours, build_timm, example_input, make_step, write_markdown  # noqa: E402

DEFAULT_MODELS = ("swin_t", "vit_b16", "resnet50")
CONTENDERS = ("archlang", "timm")
PASSES = ("fwd", "train")
STEADY_CALLS = 3
MARKER = "COMPILE_TIME_JSON "  # the worker's result line starts with this
RESULT_KEYS = ("model", "contender", "pass", "batch", "eager_s", "first_s", "steady_s", "compile_s",
               "graph_breaks", "graphs", "threads", "compile_threads", "torch", "timm")
COLUMNS = ("model", "pass", "archlang compile s", "timm compile s", "ratio", "archlang first s", "timm first s",
           "archlang graph breaks", "timm graph breaks", "archlang graphs", "timm graphs",
           "archlang compiled ms", "timm compiled ms", "archlang eager ms", "timm eager ms")


# ----------------------------------------------------------------------------- the worker (one trial)


def worker(contender: str, key: str, pas: str, batch: int, build: str, threads: int | None,
           warm_compiler: bool) -> dict[str, Any]:
    """One trial in this process: build, one eager call, compile, the first and three more calls."""
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not cache or not Path(cache).is_dir() or any(Path(cache).iterdir()):
        raise SystemExit("compile_time.py --worker: TORCHINDUCTOR_CACHE_DIR must name an existing, empty "
                         "directory (run the script without --worker; the parent makes one per trial)")
    import timm
    import torch
    import torch._dynamo
    import torch._inductor.config
    from torch._dynamo.utils import counters

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_ours(key, "fp32", build) if contender == "archlang" else build_timm(MODELS[key][2], "fp32", False)
    x = example_input(key, batch, "fp32")
    train = pas == "train"

    t0 = time.perf_counter()
    make_step(model, x, train, False)()
    eager_s = time.perf_counter() - t0

    if warm_compiler:
        torch.compile(lambda t: (t.sin() + 1).sum())(torch.randn(3, 5))
    torch._dynamo.reset()
    counters.clear()
    step = make_step(torch.compile(model), x, train, False)
    t0 = time.perf_counter()
    step()
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(STEADY_CALLS):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    steady_s = statistics.median(times)
    breaks = counters["graph_break"]
    return {
        "model": key, "contender": contender, "pass": pas, "batch": batch, "build": build,
        "eager_s": eager_s, "first_s": first_s, "steady_s": steady_s, "compile_s": first_s - steady_s,
        "graph_breaks": sum(breaks.values()), "graph_break_reasons": sorted(breaks)[:5],
        "graphs": counters["stats"]["unique_graphs"],
        "cache_files": sum(len(files) for _, _, files in os.walk(cache)),
        "threads": torch.get_num_threads(), "compile_threads": torch._inductor.config.compile_threads,
        "warm_compiler": warm_compiler, "torch": torch.__version__, "timm": timm.__version__,
    }


def parse_worker_output(stdout: str) -> dict[str, Any]:
    """The result of one trial from the worker's stdout: its last line that starts with MARKER
    (anything else the libraries printed is ignored). ValueError if none, or keys are missing."""
    lines = [ln[len(MARKER):] for ln in stdout.splitlines() if ln.startswith(MARKER)]
    if not lines:
        raise ValueError("the worker printed no result line")
    result = json.loads(lines[-1])
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        raise ValueError(f"the worker's result lacks {', '.join(missing)}")
    return result


# ----------------------------------------------------------------------------- the parent


def trial_env(cache_dir: str) -> dict[str, str]:
    """The environment of one trial: a fresh inductor/triton cache, FX graph and autograd caches off."""
    env = dict(os.environ)
    env.update(TORCHINDUCTOR_CACHE_DIR=cache_dir, TRITON_CACHE_DIR=os.path.join(cache_dir, "triton"),
               TORCHINDUCTOR_FX_GRAPH_CACHE="0", TORCHINDUCTOR_AUTOGRAD_CACHE="0",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    return env


def run_trial(contender: str, key: str, pas: str, args: argparse.Namespace) -> dict[str, Any]:
    """One trial in a fresh subprocess with a fresh cache dir; RuntimeError with the worker's
    stderr's tail if it fails."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", contender, "--models", key,
           "--passes", pas, "--batch", str(args.batch), "--build", args.build]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if not args.warm_compiler:
        cmd.append("--no-warm-compiler")
    cache = tempfile.mkdtemp(prefix="archlang_compile_time_")
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=trial_env(cache), capture_output=True, text=True,
                           timeout=args.timeout)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{key} {contender} {pas}: the trial ran past --timeout {args.timeout} s") from e
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{key} {contender} {pas}: the worker exited {r.returncode}:\n{tail}")
    try:
        return parse_worker_output(r.stdout)
    except ValueError as e:
        raise RuntimeError(f"{key} {contender} {pas}: {e}; its stdout ends:\n{r.stdout[-2000:]}") from e


def summarize(trials: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """contender -> medians of one (model, pass)'s trials (and the range of compile seconds)."""
    out: dict[str, dict[str, Any]] = {}
    for c in CONTENDERS:
        ts = [t for t in trials if t["contender"] == c]
        if not ts:
            continue
        med = {k: statistics.median(t[k] for t in ts)
               for k in ("eager_s", "first_s", "steady_s", "compile_s", "graph_breaks", "graphs")}
        med["compile_range"] = (min(t["compile_s"] for t in ts), max(t["compile_s"] for t in ts))
        med["n"] = len(ts)
        out[c] = med
    return out


def _int(v: float) -> str:
    return f"{v:g}" if v != int(v) else str(int(v))


def row_cells(key: str, pas: str, summary: dict[str, dict[str, Any]]) -> list[str]:
    """One table row (COLUMNS) from ``summarize``'s result."""
    a, t = summary["archlang"], summary["timm"]

    def compile_cell(s: dict[str, Any]) -> str:
        lo, hi = s["compile_range"]
        return f"{s['compile_s']:.1f}" + (f" ({lo:.1f}–{hi:.1f})" if s["n"] > 1 else "")

    return [key, "fwd+bwd" if pas == "train" else "fwd", compile_cell(a), compile_cell(t),
            f"{a['compile_s'] / t['compile_s']:.2f}", f"{a['first_s']:.1f}", f"{t['first_s']:.1f}",
            _int(a["graph_breaks"]), _int(t["graph_breaks"]), _int(a["graphs"]), _int(t["graphs"]),
            f"{a['steady_s'] * 1e3:.1f}", f"{t['steady_s'] * 1e3:.1f}",
            f"{a['eager_s'] * 1e3:.1f}", f"{t['eager_s'] * 1e3:.1f}"]


def markdown_table(rows: list[list[str]], header: str) -> str:
    """The header paragraph, then the rows as a Markdown table of COLUMNS."""
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def header_text(command: str, first: dict[str, Any], args: argparse.Namespace, load: str) -> str:
    warm = ("a tiny function compiled first in each worker (inductor start-up charged to neither)"
            if args.warm_compiler else "no compiler warm-up (inductor start-up included)")
    return (f"`{command}`, {datetime.date.today().isoformat()}: torch {first['torch']}, timm {first['timm']}, "
            f"fp32 on the CPU, {first['threads']} threads, {first['compile_threads']} inductor compile threads, "
            f"batch {args.batch}, {args.build} build, {args.repeats} interleaved trial(s) per contender, each a "
            f"fresh process with an empty inductor cache (FX graph and autograd caches off); {warm}; "
            f"load average at start {load}. compile s = first compiled call - median of the next "
            f"{STEADY_CALLS} (medians, range in brackets); ratio = archlang / timm; graphs = FX graphs "
            "dynamo compiled.")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="benchmarks/compile_time.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODELS), metavar="MODEL",
                    help=f"models of bench_vs_timm.py's table: {', '.join(MODELS)} (default: "
                         f"{' '.join(DEFAULT_MODELS)})")
    ap.add_argument("--passes", nargs="+", default=["fwd"], choices=list(PASSES),
                    help="fwd: eval forward under no_grad (default); train: forward + backward of the sum")
    ap.add_argument("--build", default="default", choices=["default", "inference", "regions"],
                    help="archlang's build (inference: archlang.build(..., inference=True), fwd only; "
                         "regions: compile_regions=True, repeated blocks compiled once)")
    ap.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    ap.add_argument("--repeats", type=int, default=3, help="trials per contender per (model, pass) (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in each worker (default: torch's)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one trial may take (default 1800)")
    ap.add_argument("--no-warm-compiler", dest="warm_compiler", action="store_false",
                    help="do not compile a tiny function first: charge inductor's start-up to each model")
    ap.add_argument("--markdown", type=Path, default=None, help="write the table into this file (docs/benchmarks.md)")
    ap.add_argument("--section", default="compile_time", help="the generated section --markdown replaces "
                                                              "(default compile_time)")
    ap.add_argument("--worker", choices=list(CONTENDERS), default=None,
                    help="internal: run one trial of this contender in this process (one model, one pass) "
                         "and print its JSON line")
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("batch", "repeats", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            ap.error(f"--{name} must be at least 1, not {v}")
    if args.timeout <= 0:
        ap.error("--timeout must be positive")
    if args.build == "inference" and "train" in args.passes:
        ap.error("--build inference is eval-only: use --passes fwd")
    if args.worker and (len(args.models) != 1 or len(args.passes) != 1):
        ap.error("--worker runs one trial: give exactly one model and one pass")
    if args.markdown is not None and args.markdown.exists() and not args.markdown.is_file():
        ap.error(f"--markdown {args.markdown} is not a file")
    if "TIMM_FUSED_ATTN" in os.environ:
        ap.error("TIMM_FUSED_ATTN is set; unset it so that `timm` means timm as it ships")


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    if args.worker:
        result = worker(args.worker, args.models[0], args.passes[0], args.batch, args.build, args.threads,
                        args.warm_compiler)
        print(MARKER + json.dumps(result), flush=True)
        return 0

    load = "/".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    command = "python benchmarks/compile_time.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    command = command.strip()
    print(f"{command}: {len(args.models) * len(args.passes) * args.repeats * 2} trials, each a fresh process "
          f"(a full-size model takes about a minute on a few CPU cores)", flush=True)
    print(" | ".join(COLUMNS), flush=True)
    rows: list[list[str]] = []
    first: dict[str, Any] | None = None
    failed = False
    for key in args.models:
        for pas in args.passes:
            trials: list[dict[str, Any]] = []
            try:
                for _ in range(args.repeats):
                    for c in CONTENDERS:
                        trials.append(run_trial(c, key, pas, args))
                        t = trials[-1]
                        print(f"  {key} {pas} {c}: compile {t['compile_s']:.1f} s (first {t['first_s']:.1f} s, "
                              f"steady {t['steady_s'] * 1e3:.1f} ms), {t['graph_breaks']} graph breaks, "
                              f"{t['graphs']} graphs, {t['cache_files']} files in its fresh cache", flush=True)
            except RuntimeError as e:
                print(f"error: {e}", file=sys.stderr, flush=True)
                failed = True
                continue
            first = first or trials[0]
            rows.append(row_cells(key, pas, summarize(trials)))
            print(" | ".join(rows[-1]), flush=True)
    if first is None:
        print("error: no trial succeeded; nothing to report", file=sys.stderr)
        return 1
    header = header_text(command, first, args, load)
    print(header, flush=True)
    if args.markdown is not None:
        write_markdown(args.markdown, markdown_table(rows, header), args.section)
        print(f"wrote section {args.section} of {args.markdown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
