"""Imports a script of benchmarks/ as a module, for tests of its pure functions (nothing timed).

Takes: the script's file name. Produces: the module, under a name of its own (``bench_<stem>``),
so that a test can call its functions without running its ``main``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>`` loaded as a module (its ``if __name__ == "__main__"`` block skipped)."""
    path = BENCHMARKS / name
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None, path
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
