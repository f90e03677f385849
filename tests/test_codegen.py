"""Generated code: golden files and properties of the emitter.

The generated source of a few shipped specs is compared with
tests/golden/codegen/<arch>.py.expected; after a deliberate change, review the diff and
re-bless with

    ARCHLANG_BLESS=1 pytest tests/test_codegen.py
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import archlang
from archlang.lower.codegen import generate

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "codegen"
ARCHS = ["swin_t", "vit_b16", "gpt", "transformer", "mvitv2_t"]


def _source(spec: str | Path, arch: str | None = None, **params) -> str:
    return generate(archlang.graph(spec, arch, **params))[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_golden(arch: str) -> None:
    got = _source(ROOT / "specs" / f"{arch}.arch")
    expected = GOLDEN / f"{arch}.py.expected"
    if os.environ.get("ARCHLANG_BLESS"):
        expected.write_text(got)
    assert expected.exists(), f"no golden file for {arch}; run with ARCHLANG_BLESS=1"
    assert got == expected.read_text()


def test_same_output_from_any_working_directory(tmp_path: Path) -> None:
    """The source does not depend on the working directory, on how the spec path is written,
    or on the hash seed."""
    code = ("import sys; from archlang.lower.codegen import generate; import archlang; "
            "sys.stdout.write(generate(archlang.graph(sys.argv[1]))[0])")
    outs = set()
    for cwd, path, seed in [(ROOT, "specs/swin_t.arch", "0"), (ROOT / "specs", "swin_t.arch", "1"),
                            (tmp_path, str(ROOT / "specs" / "swin_t.arch"), "2")]:
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        outs.add(subprocess.run([sys.executable, "-c", code, path], cwd=cwd, env=env, capture_output=True,
                                text=True, check=True).stdout)
    assert len(outs) == 1


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "t.arch"
    p.write_text(text)
    return p


PRECEDENCE = """
arch t() {
  in a: [B, 4]
  in b: [B, 4]
  in c: [B, 4]
  out y = (a + b) * c
  out z = (a - b) / (c + 3)
  out w = c * (a - b) + a
  out u = a - (b - c)
}"""


def test_precedence_is_kept(tmp_path: Path) -> None:
    src = _source(_write(tmp_path, PRECEDENCE))
    assert "(a + b) * c" in src and "a - (b - c)" in src
    torch = pytest.importorskip("torch")
    model = archlang.build(_write(tmp_path, src_spec := PRECEDENCE))
    a, b, c = (torch.randn(2, 4) for _ in range(3))
    out = model(a, b, c)
    for k, want in {"y": (a + b) * c, "z": (a - b) / (c + 3), "w": c * (a - b) + a, "u": a - (b - c)}.items():
        assert torch.allclose(out[k], want), (k, src_spec)


def test_no_text_surgery_left() -> None:
    """Precedence comes from the expression trees: no substring tests or regexes over code."""
    for name in ("codegen.py", "rules.py"):
        text = (ROOT / "archlang" / "lower" / name).read_text()
        assert "_needs_parens" not in text and "def p(" not in text
        assert "import re\n" not in text or name == "rules.py"  # rules: `ident` mangles IR names only
        assert "re.search" not in text and "re.sub" not in text


def _classes(src: str) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in ast.parse(src).body if isinstance(n, ast.ClassDef)}


def test_repeated_blocks_are_a_loop() -> None:
    src = _source(ROOT / "specs" / "mixer_b16.arch")
    assert "for blk in self.blocks:" in src
    assert "for _ in range(12)\n" in src
    assert "self.blocks[1]" not in src
    # ViT's last block runs on the class token alone (archlang.check.rows): a class of its own
    src = _source(ROOT / "specs" / "vit_b16.arch")
    assert "for blk in self.blocks[:11]:" in src
    assert "nn.ModuleList([TransformerBlock(D=768, heads=12) for _ in range(11)] + [TransformerBlock2()])" in src
    assert "self.attn = PrefixAttention(dim=768, heads=12, head_dim=64, queries=1)" in src


def test_partial_runs_loop_over_a_slice() -> None:
    src = _source(ROOT / "specs" / "resnet50.arch")
    assert "for blk in self.layer3[1:6]:" in src


def test_loop_with_a_shared_second_input() -> None:
    src = _source(ROOT / "specs" / "transformer.arch")
    assert "t = blk(t, memory)" in src


def test_drop_path_schedule_is_the_expression_that_made_it() -> None:
    src = _source(ROOT / "specs" / "swin_t.arch")
    assert "dpr = [0.2 * k / 11 for k in range(12)]" in src
    assert "0.018181818181818184" not in src
    # the expression gives exactly the values of the IR
    g = archlang.graph(ROOT / "specs" / "swin_t.arch")
    want = sorted({p.value for s in g.scopes if s.block == "swin_block" for p in s.args if p.name == "dpr"})
    assert [0.2 * k / 11 for k in range(12)] == want


def test_schedule_not_linear_stays_literal(tmp_path: Path) -> None:
    src = _source(_write(tmp_path, """
use std.nn
arch t(rates: [float] = [0.0, 0.1, 0.15, 0.3]) {
  in x: [B, 5, 16]
  for i in 0 .. 4 { x = blocks[i]: transformer_block(x, heads = 2, dpr = rates[i]) }
  out y = x
}"""))
    assert "0.15" in src and "k in range" not in src


def test_shared_classes_take_sizes() -> None:
    src = _source(ROOT / "specs" / "swin_t.arch")
    cls = _classes(src)
    init = next(f for f in cls["Mlp"].body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    assert [a.arg for a in init.args.args] == ["self", "C", "hidden"]  # not `out` for the input width
    assert "self.mlp = Mlp(C=C, hidden=4 * C)" in src
    assert "PatchMerge(C=96, out=192)" in src and "nn.LayerNorm(4 * C)" in src


def test_no_duplicate_classes_and_no_shadowed_builtins() -> None:
    import builtins

    for spec in sorted((ROOT / "specs").glob("*.arch")):
        src = _source(spec)
        tree = ast.parse(src)
        bodies = [ast.dump(ast.Module(body=c.body, type_ignores=[])) for c in tree.body if isinstance(c, ast.ClassDef)]
        assert len(bodies) == len(set(bodies)), spec.name
        for n in ast.walk(tree):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                assert n.id not in dir(builtins), (spec.name, n.id)
            if isinstance(n, ast.arg):
                assert n.arg not in dir(builtins), (spec.name, n.arg)


def test_constant_slice_length_is_computed(tmp_path: Path) -> None:
    src = _source(_write(tmp_path, """
arch t() {
  in x: [B, 300, 4]
  out y = slice(x, 0, 256, dim = 1)
  out z = slice(x, 10, 20, dim = 1)
}"""))
    assert "x.narrow(1, 0, 256)" in src and "x.narrow(1, 10, 10)" in src
    assert " - 0" not in src


REASSIGNED_AFTER_OUTPUT = """
arch net() {
  in x: [B, 2]
  out a = x
  x = relu(x)
  out b = x
  out c = x
  x = tanh(x) + 1
  out d = x
  x = x * 2
  out e = x
}"""


def test_output_survives_reassignment(tmp_path: Path) -> None:
    """A value that is an output keeps its own name until the `return`: reassigning the spec
    variable after `out a = x` must not overwrite `a` (a differential-test finding)."""
    torch = pytest.importorskip("torch")
    from archlang.lower.interpret import interpret

    spec = _write(tmp_path, REASSIGNED_AFTER_OUTPUT)
    src = _source(spec)
    assert "'a': x," in src
    model = archlang.build(spec).eval()
    x = torch.tensor([[-1.0, 2.0], [0.5, -3.0]])
    out = model(x)
    r = torch.relu(x)
    want = {"a": x, "b": r, "c": r, "d": torch.tanh(r) + 1, "e": (torch.tanh(r) + 1) * 2}
    for k, v in want.items():
        assert torch.equal(out[k], v), k
    oracle = dict(zip(model.output_names, interpret(model.archlang_graph, model.state_dict(), [x]), strict=True))
    for k, v in want.items():
        assert torch.equal(oracle[k], v), k


# ----------------------------------------------------------------------------- timm conventions for classifiers

CLASSIFIERS = [
    ("vit_b16", "vit_ti16", {"img": 32}, (2, 3, 32, 32), 192, "head"),
    ("swin_t", None, {"img": 64, "window": 4, "depths": [1, 1, 2, 1], "embed": 16, "heads": [1, 2, 4, 8]},
     (2, 3, 64, 64), 128, "head.fc"),
]


@pytest.mark.parametrize(("spec", "arch", "params", "shape", "features", "classifier"), CLASSIFIERS,
                         ids=[c[0] for c in CLASSIFIERS])
def test_classifier_has_timm_methods(spec, arch, params, shape, features, classifier) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = archlang.build(ROOT / "specs" / f"{spec}.arch", arch, **params).eval()
    keys = list(model.state_dict())
    assert model.num_classes == 1000 and model.default_cfg is model.pretrained_cfg
    assert model.default_cfg["classifier"] == classifier and model.default_cfg["num_classes"] == 1000
    assert model.default_cfg["input_size"] == shape[1:] and model.default_cfg["mean"] == (0.485, 0.456, 0.406)
    x = torch.randn(*shape)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert feats.shape == (shape[0], features)
        assert torch.equal(logits, model.forward_head(feats))
        assert torch.equal(model.forward_head(feats, pre_logits=True), feats)
    assert logits.shape == (shape[0], 1000)
    model.set_grad_checkpointing(False)
    assert list(model.state_dict()) == keys  # nothing new in the state_dict

    model.reset_classifier(10)
    assert model.num_classes == 10 and model.get_submodule(classifier).out_features == 10
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        assert model(x).shape == (shape[0], 10)
    model.reset_classifier(0)
    assert model.num_classes == 0 and isinstance(model.get_submodule(classifier), torch.nn.Identity)
    with torch.no_grad():
        assert torch.equal(model(x), feats)


@pytest.mark.parametrize(("spec", "arch", "params", "shape", "features", "classifier"), CLASSIFIERS,
                         ids=[c[0] for c in CLASSIFIERS])
def test_grad_checkpointing_gives_the_same_loss_and_gradients(spec, arch, params, shape, features,
                                                              classifier) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = archlang.build(ROOT / "specs" / f"{spec}.arch", arch, **{**params, "drop_path_rate": 0.0}).train()
    x = torch.randn(*shape)

    def run(enable: bool):
        model.zero_grad(set_to_none=True)
        model.set_grad_checkpointing(enable)
        assert model.grad_checkpointing is enable
        loss = model(x).square().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss0, grads0 = run(False)
    loss1, grads1 = run(True)
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=1e-7)
    assert grads1.keys() == grads0.keys()
    for n in grads0:
        torch.testing.assert_close(grads1[n], grads0[n], rtol=1e-5, atol=1e-6, msg=n)


def test_only_classifiers_get_timm_methods() -> None:
    for arch in ("gpt", "transformer"):
        src = _source(ROOT / "specs" / f"{arch}.arch")
        assert "forward_features" not in src and "reset_classifier" not in src
        assert "torch.utils.checkpoint" not in src


def test_checkpointing_runs_the_blocks_under_checkpoint(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    import torch.utils.checkpoint as ckpt

    model = archlang.build(ROOT / "specs" / "vit_b16.arch", "vit_ti16", img=32, depth=2).train()
    calls = []
    real = ckpt.checkpoint
    monkeypatch.setattr(ckpt, "checkpoint", lambda *a, **k: calls.append(k) or real(*a, **k))
    x = torch.randn(1, 3, 32, 32)
    model(x).sum().backward()
    assert calls == []
    model.set_grad_checkpointing()
    model(x).sum().backward()
    assert calls == [{"use_reentrant": False}] * 2
    with torch.no_grad():  # no grad: no checkpointing
        model(x)
    assert len(calls) == 2
