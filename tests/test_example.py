"""The LoRA fine-tuning example runs (reduced form) and actually learns the shifted task."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "finetune_lora_digits.py"


def test_finetune_lora_digits_quick() -> None:
    spec = importlib.util.spec_from_file_location("finetune_lora_digits", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    r = module.main(["--quick"])
    assert r["base"] > 0.85  # the base model learned digits
    assert r["after"] > r["before"] + 0.2  # LoRA learned the rotated task
    assert r["fraction"] < 0.25  # while training a small part of the model
    assert r["drift"] < 1e-4  # merging keeps the outputs
