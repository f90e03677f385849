"""How archlang's stages scale with the size of a spec: check, cost, generate (and, with
--build, instantiate the module; with --archc, the whole `archc build` command).

    python benchmarks/scale.py                   # 5k, 20k and 100k nodes, two spec shapes
    python benchmarks/scale.py --nodes 5000 --archc

Spec shapes: "chain", a loop of labelled linear layers (one node per step, no blocks), and
"blocks", a loop of std.nn transformer blocks (12 nodes per block, each block a scope).
Every stage should take time linear in the node count.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {
    "chain": (1, "arch big(n: int = {n}) {{\n  in x: [B, 8]\n  for i in 0 .. n {{ x = blocks[i]: linear(x, 8) }}\n"
                 "  out y = x\n}}\n"),
    "blocks": (12, "use std.nn\narch big(n: int = {n}) {{\n  in x: [B, 16, 32]\n"
                   "  for i in 0 .. n {{ x = blocks[i]: transformer_block(x, heads = 2) }}\n  out y = x\n}}\n"),
}


def spec_text(shape: str, nodes: int) -> str:
    per, text = SHAPES[shape]
    return text.format(n=max(1, nodes // per))


def run(shape: str, nodes: int, build: bool, archc: bool) -> dict[str, float | int]:
    from archlang.check import check_spec, load
    from archlang.cost import cost_graph
    from archlang.lower.codegen import generate

    text = spec_text(shape, nodes)
    row: dict[str, float | int] = {}
    t = time.perf_counter()
    r = check_spec(load("<scale>", text=text), "big")
    row["check"] = time.perf_counter() - t
    assert r.graph is not None, [d.message for d in r.diagnostics]
    row["nodes"] = len(r.graph.nodes)
    t = time.perf_counter()
    cost_graph(r.graph)
    row["cost"] = time.perf_counter() - t
    t = time.perf_counter()
    source, _ = generate(r.graph)
    row["generate"] = time.perf_counter() - t
    row["lines"] = source.count("\n")
    if build:
        from archlang.lower.build import instantiate

        t = time.perf_counter()
        instantiate(r.graph, device="meta")
        row["build (meta)"] = time.perf_counter() - t
    if archc:
        with tempfile.TemporaryDirectory() as d:
            spec = Path(d) / "big.arch"
            spec.write_text(text)
            t = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "archlang.cli", "build", str(spec), "-o", str(Path(d) / "out")],
                                  capture_output=True, text=True, cwd=ROOT)
            row["archc build"] = time.perf_counter() - t
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, nargs="*", default=[5_000, 20_000, 100_000])
    ap.add_argument("--shape", choices=sorted(SHAPES), nargs="*", default=sorted(SHAPES))
    ap.add_argument("--build", action="store_true", help="also execute the source and build the model on meta")
    ap.add_argument("--archc", action="store_true", help="also time `archc build` end to end (a subprocess)")
    args = ap.parse_args()
    cols = ["check", "cost", "generate"] + (["build (meta)"] if args.build else []) + (
        ["archc build"] if args.archc else [])
    print(f"{'shape':<8} {'nodes':>8} {'lines':>8} " + " ".join(f"{c:>13}" for c in cols))
    for shape in args.shape:
        for n in args.nodes:
            row = run(shape, n, args.build, args.archc)
            print(f"{shape:<8} {row['nodes']:>8,} {row['lines']:>8,} "
                  + " ".join(f"{row[c]:>12.2f}s" if c in row else f"{'-':>13}" for c in cols), flush=True)


if __name__ == "__main__":
    main()
