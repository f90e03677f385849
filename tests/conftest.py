"""Shared test setup: run from the repository root so spec paths in outputs are stable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Inductor compiles in this process: no pool of compile workers, each importing torch (the few
# Inductor tests build small graphs; the pool cost ~13 CPU-seconds of a cold run)
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    os.environ.setdefault("COLUMNS", "100")
