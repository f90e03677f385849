"""Memory estimates against what torch measures, for every shipped spec.

For each spec's default arch, at a small size (the overrides of tests/test_every_spec.py, and
smaller ResNets here), batch 2, float32, on the CPU:

- **saved**: the bytes of the unique storages that ``torch.autograd.graph.saved_tensors_hooks``
  sees in one forward in train mode, parameters and buffers left out (they are resident),
  against ``archlang.cost(..., train=True).saved_bytes``;
- **inference peak**: parameter and buffer bytes plus the highest running total of the
  profiler's CPU memory events (``torch.profiler.profile(profile_memory=True)``) over one
  forward in eval mode under ``torch.no_grad()`` (the inputs are made inside, so they count),
  against ``peak_inference_bytes()``;
- **training peak**: the same over a train-mode forward, ``backward()`` of the outputs' sum and
  one ``torch.optim.AdamW`` step (its state is made then, so it counts), against
  ``peak_training_bytes()``; the table also says in which phase (forward, backward, step) the
  simulated peak falls.

    .venv/bin/python benchmarks/memory_truth.py [--markdown docs/memory.md] [--only swin_t,gpt]

Takes a few minutes on 2 cores. The functions ``measure_saved``, ``measure_inference_peak``
and ``measure_training_peak`` are the method; tests/test_memory.py uses them too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests"))
from small_sizes import SIZES, SMALL_CNNS  # noqa: E402  (the sizes the tests build)
from small_sizes import SMALL as _SMALL  # noqa: E402

SMALL: dict[str, dict] = {**_SMALL, **SMALL_CNNS}
BATCH = 2


# ----------------------------------------------------------------------------- the method


def _resident_ptrs(model) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}


def resident_bytes(model) -> int:
    """Parameter and buffer bytes (each storage once)."""
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def _outputs_sum(out: Any):
    outs = out if isinstance(out, dict) else {"out": out}
    return sum(v.float().sum() for v in outs.values() if v.is_floating_point())


def measure_saved(model, make_inputs) -> int:
    """Bytes of the unique non-resident storages that autograd saves in one train-mode forward."""
    import torch

    model.train()
    resident = _resident_ptrs(model)
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr and ptr not in resident:
            seen[ptr] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(*make_inputs())
    del out
    return sum(seen.values())


def _allocations(prof) -> list[tuple[int, int]]:
    """The profiler's CPU allocation events (time, bytes; frees negative), in time order."""
    events = []

    def walk(node):
        f = node.extra_fields
        if type(f).__name__ == "_ExtraFields_Allocation" and f.device.type == "cpu":
            events.append((node.start_time_ns, f.alloc_size))
        for c in node.children:
            walk(c)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    return sorted(events, key=lambda e: e[0])


def _peak_of(prof) -> int:
    """The highest running total of the profiler's CPU allocation events, in time order."""
    total = peak = 0
    for _, n in _allocations(prof):
        total += n
        peak = max(peak, total)
    return peak


def _net_of(prof) -> int:
    """The running total of the profiler's CPU allocation events at the end: bytes allocated
    in the window and still held (the inference build's packed weights after a cold call)."""
    return sum(n for _, n in _allocations(prof))


def _profile():
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU], profile_memory=True)


def measure_inference_peak(model, make_inputs) -> int:
    """Resident bytes plus the profiler's peak over one eval-mode, no-grad forward."""
    import torch

    model.eval()
    with torch.no_grad(), _profile() as prof:
        out = model(*make_inputs())
        del out
    return resident_bytes(model) + _peak_of(prof)


def measure_training_peak(model, make_inputs) -> int:
    """Resident bytes plus the profiler's peak over forward, backward and one AdamW step."""
    import torch

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    opt.zero_grad(set_to_none=True)
    with _profile() as prof:
        loss = _outputs_sum(model(*make_inputs()))
        loss.backward()
        del loss
        opt.step()
    peak = resident_bytes(model) + _peak_of(prof)
    opt.zero_grad(set_to_none=True)
    return peak


def measure(spec: str | Path, arch: str | None = None, batch: int = BATCH, sizes: dict | None = None,
            **params: Any) -> dict[str, Any]:
    """The three measurements and their estimates for one arch (CPU rules: ``device="cpu"``),
    and the phase of the step in which the estimated training peak falls."""
    import torch

    import archlang
    from archlang.lower.example import example_inputs

    sizes = SIZES if sizes is None else sizes
    torch.manual_seed(0)
    model = archlang.build(spec, arch, **params)
    g = model.archlang_graph

    def make_inputs():
        return example_inputs(g, batch=batch, sizes=sizes)

    tr = archlang.cost(spec, arch, batch=batch, train=True, sizes=sizes, **params)
    inf = archlang.cost(spec, arch, batch=batch, sizes=sizes, **params)
    return {
        "saved_est": tr.saved_bytes, "saved": measure_saved(model, make_inputs),
        "inference_est": inf.peak_inference_bytes()[0], "inference": measure_inference_peak(model, make_inputs),
        "training_est": tr.peak_training_bytes()[0], "training": measure_training_peak(model, make_inputs),
        "phase": tr.training_parts()["phase"],
    }


# ----------------------------------------------------------------------------- the table


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f}"


def _ratio(est: int, got: int) -> str:
    return f"{est / got:.2f}" if got else "-"


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    head = ("| spec | saved est | saved | ratio | inference est | inference | ratio | training est | training "
            "| ratio | peak in |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
    body = ""
    for name, r in rows:
        body += f"| {name} |"
        for k in ("saved", "inference", "training"):
            body += f" {_kib(r[k + '_est'])} | {_kib(r[k])} | {_ratio(r[k + '_est'], r[k])} |"
        body += f" {r.get('phase', '')} |\n"
    return head + body


def main(argv: list[str] | None = None) -> int:
    from archlang.check import choose_arch, load

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", help="also write the table into this file, between the markers")
    ap.add_argument("--only", help="comma-separated spec names")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    specs = sorted((ROOT / "specs").glob("*.arch"))
    if args.only:
        specs = [s for s in specs if s.stem in args.only.split(",")]
    rows = []
    t0 = time.time()
    for spec in specs:
        arch, _ = choose_arch(load(spec), None)
        t = time.time()
        r = measure(spec, arch, **SMALL.get(spec.stem, {}))
        rows.append((f"{spec.stem}" + (f" ({arch})" if arch != spec.stem else ""), r))
        print(f"{spec.stem:20s} saved {_ratio(r['saved_est'], r['saved']):>5}  inference "
              f"{_ratio(r['inference_est'], r['inference']):>5}  training {_ratio(r['training_est'], r['training']):>5}"
              f"  ({time.time() - t:.1f} s)", file=sys.stderr)
    text = table(rows)
    print(text)
    print(f"{len(rows)} specs in {time.time() - t0:.0f} s", file=sys.stderr)
    if args.markdown:
        path = Path(args.markdown)
        cmd = "python benchmarks/memory_truth.py --markdown docs/memory.md"
        block = (f"<!-- memory_truth: begin -->\nKiB, batch {BATCH}, float32, CPU, torch {torch.__version__}; "
                 f"ratio = estimate / measured. Produced by `{cmd}`.\n\n{text}<!-- memory_truth: end -->")
        old = path.read_text() if path.exists() else ""
        if "<!-- memory_truth: begin -->" in old:
            pre, rest = old.split("<!-- memory_truth: begin -->", 1)
            post = rest.split("<!-- memory_truth: end -->", 1)[1]
            path.write_text(pre + block + post)
        else:
            path.write_text(old + ("\n" if old else "") + block + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
