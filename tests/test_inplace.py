"""In-place ReLU and residual sums in generated code (timm's ``ReLU(inplace=True)`` and ResNet's
``x += shortcut``), and the cases where they must not happen.

Takes: resnet50's generated source and small specs written here. Checks: ResNet's relus and
residual sums are in place; a value read twice, a block input, a value that reaches the
relu through a view or a pass-through read elsewhere, and an activation that keeps its output
are never overwritten (the generated module agrees with the interpreter in eval and train
mode, gradients included); a transformer's residual sum stays out of place. (ResNet itself
agrees with the interpreter in tests/test_interpret.py and with timm in tests/test_zoo_cnn.py.)
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from test_interpret import assert_agree  # noqa: E402

import archlang  # noqa: E402
from archlang.lower.codegen import generate  # noqa: E402


def _forward_lines(spec: str, **params) -> list[str]:
    src, _ = generate(archlang.graph(spec, **params))
    return [line.strip() for line in src.splitlines() if "relu" in line or "add_" in line or " + " in line]


def test_resnet_relus_and_residual_sums_are_in_place() -> None:
    lines = _forward_lines("specs/resnet50.arch")
    relus = [ln for ln in lines if "F.relu(" in ln]
    assert relus and all(ln.count("F.relu(") == ln.count("inplace=True") for ln in relus)
    assert "return F.relu(h.add_(s), inplace=True)" in lines  # downsampling block: into the branch
    assert "return F.relu(self.bn3(self.conv3(h)).add_(x), inplace=True)" in lines  # x is the block input


def test_transformer_residual_stays_out_of_place() -> None:
    lines = _forward_lines("specs/transformer.arch")
    assert any("F.relu(self.linear1(x), inplace=True)" in ln for ln in lines)
    assert not any(".add_(" in ln for ln in lines)


UNSAFE = """
block branch(x: [B, C, H, W]) {
  y = relu(x)                                   # the block's input: not fresh
  return y
}

arch t() {
  in x: [B, 4, 6, 6]
  y = bn: batchnorm(c1: conv2d(x, 4, kernel = 3, padding = 1))
  a = relu(y)                                   # y is read twice: not in place
  b = y * 2.0
  z = drop_path(c2: conv2d(x, 4, kernel = 1), p = 0.0)
  out u = relu(z) + b                           # z passes through drop-path once: in place
  v = c3: conv2d(x, 4, kernel = 1)
  w = rearrange(v, "b c h w -> b c (h w)")
  out p = relu(w)                               # a view of v, read by `q` too: not in place
  out q = v + 1.0
  g = sigmoid(c4: conv2d(x, 4, kernel = 1))      # keeps its output: the sum is not written into it
  out r = g + a + br: branch(x)
}"""


def test_unsafe_values_are_left_alone() -> None:
    lines = _forward_lines(UNSAFE)
    assert sum("inplace=True" in ln for ln in lines) == 1, lines
    assert_agree(UNSAFE, modes=(False, True))

