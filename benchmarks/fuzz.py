"""Longer fuzz runs than the CI test: mutants of the shipped specs and generated programs
through check, cost and render (DOT); prints a summary table and every finding with its
shrunk reproducer.

    .venv/bin/python benchmarks/fuzz.py --seed 1 --mutants 20000 --programs 10000
    .venv/bin/python benchmarks/fuzz.py --seed 7 --mutants 2000 --programs 0 --out findings.md

Exit code 1 when there are findings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuzz.runner import campaign, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mutants", type=int, default=2000)
    ap.add_argument("--programs", type=int, default=1000)
    ap.add_argument("--skew", type=float, default=1.0, help="mutate cheap specs more: weight 1 / cost ** skew")
    ap.add_argument("--shrink-seconds", type=float, default=60.0, help="time to shrink each finding")
    ap.add_argument("--out", type=Path, help="append each finding's report to this file as it is found")
    args = ap.parse_args(argv)

    def on_finding(f) -> None:
        print(f"\nFINDING {f.signature}\n{f.report()}", flush=True)
        if args.out:
            with args.out.open("a") as fh:
                fh.write(f"\n## {f.signature}\n\nseed {args.seed}\n\n```\n{f.report()}```\n")

    stats, findings = campaign(args.seed, args.mutants, args.programs, skew=args.skew, shrink_seconds=args.shrink_seconds,
                               progress=lambda s: print(s, flush=True), on_finding=on_finding)
    print()
    print(summary(stats, findings))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
