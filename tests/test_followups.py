"""Issue 12 follow-ups: tied heads as HF's aliases, ``table[index]`` as gather, the ``archc ops``
listing and the error-code documentation.

Takes the shipped specs and small inline ones; checks generated modules against HF
transformers, the IR interpreter and torch, and the CLI's listing.
"""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")

import archlang  # noqa: E402
from archlang.lower.interpret import interpret  # noqa: E402

LLAMA = "specs/llama.arch"
TINY = {"vocab": 101, "dim": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 172, "norm_eps": 1e-5}


# ----------------------------------------------------------------------------- tied heads


def _tied_llama(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = archlang.build(LLAMA, "llama", **TINY, tie=True).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_a_labelled_tied_head_is_an_alias_of_the_embedding() -> None:
    model = _tied_llama()
    sd = model.state_dict()
    assert "lm_head.weight" in sd and "model.embed_tokens.weight" in sd
    assert sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    names = [n for n, _ in model.named_parameters()]  # de-duplicated: the embedding's name only
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    params = sum(p.numel() for p in model.parameters())
    assert params == archlang.cost(LLAMA, "llama", **TINY, tie=True).params
    # a conversion keeps the tie (`.to(dtype)` converts in place)
    wide = archlang.build(LLAMA, "llama", **TINY, tie=True).double()
    assert wide.lm_head.weight is wide.model.embed_tokens.weight
    assert wide.lm_head.weight.dtype == torch.float64


def test_a_state_dict_without_the_alias_loads_non_strictly() -> None:
    """A checkpoint written before the alias existed (or a safetensors file, which stores a
    shared tensor once) lacks `lm_head.weight`: it loads with strict=False, the only missing
    key is the alias, and the head then holds the loaded embedding."""
    src, dst = _tied_llama(0), _tied_llama(1)
    old = {k: v for k, v in src.state_dict().items() if k != "lm_head.weight"}
    missing, unexpected = dst.load_state_dict(old, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected
    assert torch.equal(dst.lm_head.weight, src.model.embed_tokens.weight)
    ids = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(dst(ids), src(ids))


def test_a_tied_model_saves_and_loads_with_safetensors(tmp_path) -> None:
    model = _tied_llama()
    path = archlang.save(model, tmp_path / "tied.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys  # stored once
    back = archlang.load(path, max_memory=None).eval()
    assert back.lm_head.weight is back.model.embed_tokens.weight
    ids = torch.randint(0, 101, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))


def test_a_tied_head_agrees_with_the_interpreter_and_trains_the_embedding_once() -> None:
    model = _tied_llama().double()
    g = archlang.graph(LLAMA, "llama", **TINY, tie=True)
    ids = torch.randint(0, 101, (2, 7), generator=torch.Generator().manual_seed(4))
    got = model(ids)
    (want,) = interpret(g, dict(model.state_dict()), [ids])
    assert (got - want).abs().max().item() <= 1e-10
    got.square().mean().backward()
    assert model.model.embed_tokens.weight.grad is not None  # both uses flow into one gradient


def test_unlabelled_tied_heads_keep_their_functional_form() -> None:
    """gpt's and bert's heads have no label: no alias key, the same code as before."""
    from archlang.lower.codegen import generate

    src, _ = generate(archlang.graph("specs/gpt.arch", "gpt_mini"))
    assert "F.linear(self.ln_f(x), self.wte.weight)" in src and ".weight = self." not in src
    keys = archlang.build("specs/gpt.arch", "gpt_mini").state_dict()
    assert not any(k.startswith("tied_linear") for k in keys)


# ----------------------------------------------------------------------------- table[index]

SUBSCRIPTS = """
arch t() {
  in x: [B, 5, 7]
  in idx: int[3, 2]
  a = x[:, idx]                                              # dim 1: [B, 3, 2, 7]
  table = table: param([13, 4], init = "normal", std = 1.0)
  b = table[rearrange(12 - arange(12, start = 1), "(a b) -> a b", b = 6)]   # a constant index table
  out y = a * 2.0
  out z = b
  out w = x[..., 4 - idx][:, 1:, 0]                          # a computed index, on the last dim
  out v = table[idx[0] + 5]                                  # dim 0, indexed by a tensor made in the graph
}
"""


def _write(tmp_path, text: str, name: str = "t"):
    path = tmp_path / f"{name}.arch"
    path.write_text(text)
    return path


def test_tensor_subscripts_gather_on_the_right_dim(tmp_path) -> None:
    g = archlang.graph(_write(tmp_path, SUBSCRIPTS), "t")
    gathers = [n for n in g.nodes if n.op.op == "gather"]
    assert [n.op.dim for n in gathers] == [1, 0, 2, 0]
    types = {o: str(g.type_of(n.inputs[0])) for o, n in zip(g.outputs, g.output_nodes(), strict=True)}
    assert types == {"y": "[B, 3, 2, 7]", "z": "[2, 6, 4]", "w": "[B, 4, 2]", "v": "[2, 4]"}


def test_tensor_subscripts_agree_with_the_interpreter(tmp_path) -> None:
    from oracle import perturb
    from test_interpret import compare

    model = archlang.build(_write(tmp_path, SUBSCRIPTS), "t").double()
    perturb(model, 0)
    x = torch.randn(2, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    idx = torch.tensor([[0, 4], [2, 2], [1, 3]])  # valid on dims of 5 and 7, and 4 - idx too
    for train in (False, True):
        out_err, grad_err, worst_out, worst = compare(model, model.archlang_graph, [x, idx], train)
        assert out_err <= 1e-12 and grad_err <= 1e-12, (train, worst_out, worst)


def test_subscripts_run_as_torch_indexing(tmp_path) -> None:
    torch.manual_seed(0)
    model = archlang.build(_write(tmp_path, SUBSCRIPTS), "t").eval()
    x = torch.randn(2, 5, 7)
    idx = torch.tensor([[0, 4], [2, 2], [1, 3]])
    out = model(x, idx)
    assert torch.equal(out["y"], x[:, idx] * 2.0)
    assert torch.equal(out["w"], x[..., 4 - idx][:, 1:, 0])
    assert torch.equal(out["v"], model.table[idx[0] + 5])
    want_z = model.table[torch.arange(11, -1, -1).reshape(2, 6)]  # 12 - arange(1, 13)
    assert torch.equal(out["z"], want_z)


BEIT_STYLE = """
arch t(heads: int = 3) {
  in x: [B, 5, 4]
  index = relative_position_index: identity(rearrange(arange(5), "(n o) -> n o", o = 1)
                                            - rearrange(arange(5), "(o m) -> o m", o = 1) + 4)
  table = relative_position_bias_table: param([9, heads], role = "rel_pos")
  bias = rearrange(GATHER, "n m h -> h n m")
  q = rearrange(x, "b n (h d) -> b h n d", h = 2)
  out y = rearrange(attend(q, q, q, bias = bias[0:2]), "b h n d -> b n (h d)")
}
"""


def _without_spans(v):
    """A graph's JSON with every source position left out (the two spellings differ only there)."""
    if isinstance(v, dict):
        return {k: _without_spans(x) for k, x in v.items() if k not in ("span", "file")}
    if isinstance(v, list):
        return [_without_spans(x) for x in v]
    return v


def test_a_beit_style_table_index_equals_gather(tmp_path) -> None:
    from archlang.lower.codegen import generate

    paths = []
    for d, how in (("a", "table[index]"), ("b", "gather(table, index)")):
        (tmp_path / d).mkdir()
        paths.append(_write(tmp_path / d, BEIT_STYLE.replace("GATHER", how)))
    sub, fun = (archlang.graph(p, "t") for p in paths)
    assert _without_spans(sub.model_dump(mode="json")) == _without_spans(fun.model_dump(mode="json"))
    assert generate(sub)[0] == generate(fun)[0]  # the same code
    torch.manual_seed(0)
    a, b = (archlang.build(p, "t").eval() for p in paths)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 5, 4)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize(("subscript", "message"), [
    ("x[:, f]", "a tensor subscript takes ints and slices, or an int tensor to gather by, got tensor [3]"),
    ("x[idx, idx]", "a subscript takes one index tensor, got 2"),
])
def test_bad_tensor_subscripts_are_diagnosed(tmp_path, subscript: str, message: str) -> None:
    text = f"arch t() {{\n  in x: [B, 5, 7]\n  in f: [3]\n  in idx: int[3]\n  out y = {subscript}\n}}\n"
    diags = archlang.check(_write(tmp_path, text), "t")
    assert [(d.code, d.message) for d in diags] == [("E0401", message)]


# ----------------------------------------------------------------------------- docs/errors.md

# each case the sections of docs/errors.md describe for the new features, as the checker gives it
DOC_CASES = [
    ("E0207", 'c = "-"\n  y = stage{c}: linear(x, 8)', "stage{\"-\" + s}"),
    ("E0304", "y = x[:, 5:2]", "x[:, 5:2]"),
    ("E0304", "y = x[:, 8]", "outside `-n .. n - 1`"),
    ("E0406", "y = x[:, ::-1]", "x[:, ::-1]"),
    ("E0406", "y = x[..., 0, ...]", "more than one `...`"),
    ("E0406", "r = r1: relu(x)\n  y = r1(x)", "a layer\n  that has no weights"),
    ("E0604", "for i in 0 .. 3 {\n    x = pe{4}: linear(x, 8)\n  }\n  y = x", "`pe4` three times"),
    ("E0604", "p = pe1: linear(x, 8)\n  q = q: pe1(x)\n  y = q: pe1(p)", "must not repeat"),
]


@pytest.mark.parametrize(("code", "body", "phrase"), DOC_CASES)
def test_errors_md_describes_the_new_features_codes(tmp_path, code: str, body: str, phrase: str) -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()
    section = doc.split(f"## {code}:")[1].split("\n## ")[0]
    assert phrase in section
    diags = archlang.check(_write(tmp_path, f"arch t() {{\n  in x: [B, 8]\n  {body}\n  out o = x\n}}\n"), "t")
    assert [d.code for d in diags if d.is_error][:1] == [code], [(d.code, d.message) for d in diags]


# ----------------------------------------------------------------------------- archc ops


def _archc(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from archlang.cli import app

    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})
    return r.exit_code, r.output


def _listed_ops(out: str) -> dict[str, tuple[str, str]]:
    """name -> (signature, family) of each op in `archc ops`' output (a signature may wrap)."""
    entries: dict[str, tuple[str, str]] = {}
    head = None  # the signature lines read so far, until its `[family]`
    for line in out.splitlines():
        if not line.startswith(" "):
            head = line.strip()
        elif head is not None:
            head += " " + line.strip()
        else:
            continue  # a doc line
        m = re.fullmatch(r"((\w+)\(.*\))\s+\[([\w. ]+)\]", head)
        if m:
            entries[m.group(2)] = (m.group(1), m.group(3))
            head = None
    return entries


def test_archc_ops_shows_optional_arguments_and_each_ops_family() -> None:
    from pathlib import Path

    from archlang.check.surface import SURFACE

    code, out = _archc("ops")
    assert code == 0 and "None" not in out  # the language has no None
    listed = _listed_ops(out)
    assert set(listed) == set(SURFACE)
    sig, family = listed["attend"]
    assert sig.startswith("attend(q, k, v, [scale], causal=false, dropout=0.0, [bias], [mask], [score])")
    assert family == "archlang.ops.attention"
    ops_dir = Path(__file__).resolve().parents[1] / "archlang" / "ops"
    for name, (_, family) in listed.items():
        if family == "built in":  # an old op: its signature is declared in check/surface.py
            assert SURFACE[name].build.__module__ == "archlang.check.surface", name
        else:  # the family module that declares the op's signature (some declare several in a loop)
            assert (ops_dir / f"{family.removeprefix('archlang.ops.')}.py").is_file(), (name, family)
            assert SURFACE[name].build.__module__ == family, (name, family)


def test_archc_ops_lists_one_family() -> None:
    code, out = _archc("ops", "--family", "attention")
    listed = _listed_ops(out)
    assert code == 0 and "attend" in listed and {f for _, f in listed.values()} == {"archlang.ops.attention"}
    code, out = _archc("ops", "--family", "nope")
    assert code == 2 and "no op family `nope`" in out
