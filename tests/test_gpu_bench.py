"""benchmarks/gpu.py without a GPU: it says that it skips and exits 0; at toy sizes on the CPU
its FlexAttention twins of window and local attention agree with archlang's modules (slow:
FlexAttention compiles).

Takes: the script, run as a subprocess. Checks: exit status and what it prints.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run")
def test_skips_without_cuda() -> None:
    r = _run()
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "benchmarks/gpu.py: no CUDA device here; skipped (run it on a GPU machine)"


@pytest.mark.slow
def test_flex_twins_agree_on_the_cpu() -> None:
    r = _run("--device", "cpu", "--quick", "--only", "attention", "--repeats", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if "FlexAttention" in ln]
    assert len(lines) == 2 and all("outputs agree to" in ln for ln in lines), r.stdout
