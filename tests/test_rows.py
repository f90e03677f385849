"""Dead-row pruning (archlang.check.rows): which nodes it shortens, and the models lowered from
the pruned graph (both builds) against the interpreter of the spec's own (unpruned) graph:
outputs and gradients, in eval and train mode, in float64; ``keep_dead_rows`` and the
inference build of ViT against each other."""

from __future__ import annotations

from pathlib import Path

import pytest

import archlang
from archlang.check.rows import prune_dead_rows
from archlang.cost import cost_graph
from archlang.ir import ops as O

SPEC = """
use std.nn

arch cls_net(depth: int = 3, causal: bool = false, index: int = 0, drop: float = 0.0) {
  in x: [B, 9, 16]
  t = x
  for i in 0 .. depth {
    t = blocks[i]: transformer_block(t, heads = 2, causal = causal, drop = drop)
  }
  t = norm: layernorm(t)
  out y = head: linear(take(t, index, dim = 1), 5)
}

# the first three tokens are read: the last block attends with three queries
arch prefix_net(depth: int = 2) {
  in x: [B, 9, 16]
  t = x
  for i in 0 .. depth {
    t = blocks[i]: transformer_block(t, heads = 2)
  }
  out y = mean(t[:, 0:3], dim = 1)
}

# every token is an output: nothing to leave out
arch seq_net(depth: int = 2) {
  in x: [B, 9, 16]
  t = x
  for i in 0 .. depth {
    t = blocks[i]: transformer_block(t, heads = 2)
  }
  out seq = t
  out y = take(t, 0, dim = 1)
}
"""

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.arch"
    path.write_text(SPEC)
    return path


def _queries(g) -> dict[str, int]:
    return {n.name: n.op.queries for n in g.nodes if isinstance(n.op, O.Attention)}


def test_the_last_block_attends_with_the_rows_read(spec: Path) -> None:
    g = archlang.graph(spec, "cls_net")
    pruned = prune_dead_rows(g)
    assert _queries(pruned) == {"blocks.0.attn": 0, "blocks.1.attn": 0, "blocks.2.attn": 1}
    changed = {n.name for n in pruned.nodes} ^ {n.name for n in g.nodes}
    assert changed == {"blocks.2.add_rows"}  # the residual's slice: x[:, :1] + attn(...)
    before, after = g.by_name, pruned.by_name
    for name in ("blocks.2.mlp.fc1", "norm", "blocks.2.add_1"):
        assert after[name].outputs[0].shape[1] == 1 and before[name].outputs[0].shape[1] == 9
    assert after["blocks.1.add_1"].outputs == before["blocks.1.add_1"].outputs
    assert pruned.param_count() == g.param_count()
    # the cost rules follow: the last block's projection, MLP and scores on one token
    full, cut = cost_graph(g, batch=2, as_written=True), cost_graph(g, batch=2)
    assert cut.params == full.params
    b, n, c = 2, 9, 16
    saved = 2 * b * (n - 1) * (c * c + 2 * 4 * c * c) + 4 * b * 2 * (n - 1) * n * 8  # proj + MLP; scores
    assert full.flops - cut.flops == saved


@pytest.mark.parametrize(("arch", "params", "queries"), [
    ("cls_net", {"index": 2}, 3),
    ("cls_net", {"causal": True}, 1),
    ("prefix_net", {}, 3),
])
def test_the_rows_read_decide_the_queries(spec: Path, arch: str, params: dict, queries: int) -> None:
    q = _queries(prune_dead_rows(archlang.graph(spec, arch, **params)))
    assert max(q.values()) == queries and list(q.values()).count(queries) == 1


def test_nothing_is_left_out_where_every_row_is_read(spec: Path) -> None:
    g = archlang.graph(spec, "seq_net")
    assert prune_dead_rows(g) is g


def test_dropout_is_not_shortened(spec: Path) -> None:
    """A dropout with p > 0 draws one number per element: shortened, a seeded run would draw
    other numbers than the whole graph does. The MLP's dropouts and what feeds them stay whole."""
    pruned = prune_dead_rows(archlang.graph(spec, "cls_net", drop=0.1))
    assert all(n.outputs[0].shape[1] == 9 for n in pruned.nodes if n.scope == "blocks.2.mlp")
    assert _queries(pruned)["blocks.2.attn"] == 0  # its projection dropout is p > 0 too


@pytest.mark.parametrize(("arch", "params"), [
    ("cls_net", {}), ("cls_net", {"index": 2, "causal": True}), ("prefix_net", {}), ("cls_net", {"drop": 0.1}),
])
def test_the_built_model_agrees_with_the_interpreter(spec: Path, arch: str, params: dict) -> None:
    """The build lowers the pruned graph; the interpreter runs the spec's graph, every row."""
    from oracle import perturb, rel_err

    from archlang.lower.build import instantiate
    from archlang.lower.interpret import Interpreter

    torch.manual_seed(0)
    graph = archlang.graph(spec, arch, **params)
    model = instantiate(prune_dead_rows(graph))[0].double()
    model.archlang_graph = graph
    assert "PrefixAttention" in type(model.blocks[-1].attn).__name__ or params.get("drop")
    perturb(model)
    oracle = Interpreter(model.archlang_graph, model.state_dict(keep_vars=True))
    assert _queries(model.archlang_graph) == dict.fromkeys(_queries(model.archlang_graph), 0)  # the spec's graph
    for train in (False, True) if not params.get("drop") else (False,):
        model.train(train)
        oracle.train(train)
        x = torch.randn(3, 9, 16, dtype=torch.float64)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        got, want = model(xa), oracle(xb)
        assert rel_err(got, want) <= 1e-6
        w = torch.randn_like(want)
        mine, theirs = dict(model.named_parameters()), oracle.tensors()
        names = list(mine)
        leaves_b = [xb, *(theirs[n] for n in names)]
        ga = torch.autograd.grad((got * w).sum(), [xa, *(mine[n] for n in names)], allow_unused=True)
        gb = torch.autograd.grad((want * w).sum(), leaves_b, allow_unused=True)
        for label, a, b, leaf in zip(["input", *names], ga, gb, leaves_b, strict=True):
            a = torch.zeros_like(leaf) if a is None else a
            b = torch.zeros_like(leaf) if b is None else b
            assert rel_err(a, b) <= 1e-5, label


def test_keep_dead_rows_computes_every_row() -> None:
    """``keep_dead_rows=True`` computes every row (as timm's ViT does); the default and the
    inference builds attend with the class token alone in the last block. All three load each
    other's state_dict and agree; the cost report follows each (``as_written`` for every row)."""
    params = {"img": 32, "patch": 8, "depth": 2}
    torch.manual_seed(0)
    whole = archlang.build("specs/vit_b16.arch", "vit_ti16", max_memory=None, keep_dead_rows=True, **params).eval()
    default = archlang.build("specs/vit_b16.arch", "vit_ti16", max_memory=None, **params).eval()
    fast = archlang.build("specs/vit_b16.arch", "vit_ti16", max_memory=None, inference=True, **params)
    assert type(whole.blocks[-1].attn).__name__ == "Attention"
    for m in (default, fast):
        assert type(m.blocks[-1].attn).__name__ == "PrefixAttention" and m.blocks[-1].attn.queries == 1
        m.load_state_dict(whole.state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = whole(x)
        assert torch.allclose(default(x), want, atol=1e-5, rtol=0)
        assert torch.allclose(fast(x), want, atol=1e-5, rtol=0)
    full = archlang.cost("specs/vit_b16.arch", "vit_ti16", batch=3, as_written=True, **params)
    cut = archlang.cost("specs/vit_b16.arch", "vit_ti16", batch=3, **params)
    assert cut.flops < full.flops and cut.params == full.params


def test_the_last_block_stays_under_timm_checkpointing(monkeypatch) -> None:
    """The last block, a class of its own outside the loop, is checkpointed with the others."""
    import torch.utils.checkpoint as ckpt

    model = archlang.build("specs/vit_b16.arch", "vit_ti16", img=32, depth=3, max_memory=None).train()
    calls = []
    real = ckpt.checkpoint
    monkeypatch.setattr(ckpt, "checkpoint", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    model.set_grad_checkpointing()
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    assert calls == list(model.blocks)
