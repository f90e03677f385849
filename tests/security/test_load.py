"""archlang.load() trusts nothing in a file: it rebuilds the model from the stored spec
sources (checked again, in memory), refuses unless the IR digest and the tensor header
match, applies the memory budget, and only then allocates. Crafted files (made here from a
saved model) fail with a LoadError, run no payload and allocate nothing large."""

from __future__ import annotations

import hashlib
import json
import resource
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import archlang  # noqa: E402
from archlang.check import check_spec  # noqa: E402
from archlang.check.program import load_sources  # noqa: E402
from archlang.lower.io import FORMAT, LoadError, load, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VIT = ROOT / "specs/vit_digits.arch"
PAYLOAD = '__import__("os").system("touch PWNED")'


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path, so a payload that ran would leave ./PWNED there."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not (tmp_path / "PWNED").exists()


def _saved(where: Path, spec: Path = VIT, arch: str | None = None, **params) -> tuple[Path, torch.nn.Module]:
    model = archlang.build(spec, arch, **({"depth": 1} if spec == VIT else {}), **params).eval()
    return save(model, where / "m.safetensors"), model


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def _write(path: Path, meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> Path:
    out = path.with_name("crafted.safetensors")
    save_file(tensors, str(out), metadata=meta)
    return out


def _digest_of(main: str, sources: dict[str, str], links: dict, arch: str, params: dict) -> str:
    r = check_spec(load_sources(main, sources, links), arch, params)
    assert r.graph is not None, [d.message for d in r.diagnostics]
    return hashlib.sha256(r.graph.model_dump_json().encode()).hexdigest()


# ----------------------------------------------------------------------------- what works


def test_round_trip_reads_nothing_from_disk(here: Path) -> None:
    spec = here / "net.arch"
    spec.write_text(VIT.read_text())
    path, model = _saved(here, spec, arch="vit_digits", depth=1)
    meta, _ = _read(path)
    assert meta["format"] == FORMAT and "ir" not in meta
    assert set(json.loads(meta["sources"])) == {"net.arch", *json.loads(meta["links"])["net.arch"].values()}
    spec.unlink()  # the spec is gone: load uses the stored sources
    loaded = load(path).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    again = save(loaded, here / "again.safetensors")  # the loaded model carries its program
    assert _read(again)[0]["ir_sha256"] == meta["ir_sha256"]
    assert isinstance(archlang.load(again, max_memory="1GiB"), torch.nn.Module)


def test_spec_given_as_text_and_a_spec_changed_before_saving(here: Path) -> None:
    text = VIT.read_text()
    model = archlang.build(text, "vit_digits", depth=1).eval()
    loaded = load(save(model, here / "text.safetensors")).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    spec = here / "net.arch"
    spec.write_text(text)
    model = archlang.build(spec, "vit_digits", depth=1)
    spec.write_text(text.replace("mlp_ratio = 2.0", "mlp_ratio = 3.0"))
    # the model keeps the sources it was built from: editing the file afterwards changes nothing
    loaded = load(save(model, here / "changed.safetensors")).eval()
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    del model.archlang_program  # a model whose program is unknown re-reads the spec, and notices the edit
    with pytest.raises(ValueError, match="changed since the model was built"):
        save(model, here / "changed2.safetensors")


def test_round_trip_with_a_local_module(here: Path) -> None:
    small = {"img": 64, "window": 4, "depths": [1, 1, 2, 1], "embed": 16, "heads": [1, 2, 4, 8]}
    path, model = _saved(here, ROOT / "specs/swin_t_lora.arch", **small)
    loaded = load(path).eval()
    assert sum(p.requires_grad for p in loaded.parameters()) == sum(p.requires_grad for p in model.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_bfloat16_is_built_in_bfloat16(here: Path) -> None:
    from archlang.lower.build import instantiate

    g = archlang.graph(VIT, depth=1)
    model, _ = instantiate(g, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model(torch.randn(2, 1, 16, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16
    model.archlang_graph = g
    model.archlang_spec_text = VIT.read_text()
    path = save(model, here / "bf16.safetensors")
    assert _read(path)[0]["dtype"] == "bfloat16"
    loaded = load(path)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_built_in_the_dtype_not_cast(dtype: str) -> None:
    """No float32 copy of a weight is ever created: the peak is the model in ``dtype``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from archlang.lower.build import instantiate

    class Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.float32: list[tuple[str, tuple[int, ...]]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else [out]:
                if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.numel() > 256:
                    self.float32.append((str(func), tuple(t.shape)))
            return out

    g = archlang.graph(ROOT / "specs/resnet50.arch", img=64)
    with Record() as rec:
        model, _ = instantiate(g, dtype=dtype)
    assert rec.float32 == []
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}
    assert torch.get_default_dtype() == torch.float32  # restored


def test_swinv2_buffers_follow_the_dtype() -> None:
    """A helper's float32 table (Swin-V2 coordinates) ends in the model's dtype."""
    from archlang.lower.build import instantiate

    g = archlang.graph(ROOT / "specs/swinv2_t.arch", img=64, window=4, depths=[1, 1, 1, 1], embed=16,
                       heads=[1, 2, 4, 8])
    model, _ = instantiate(g, dtype="bfloat16")
    floats = {b.dtype for b in model.buffers() if b.is_floating_point()}
    assert floats == {torch.bfloat16}
    assert {b.dtype for b in model.buffers() if not b.is_floating_point()} == {torch.int64}
    model(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16))


# ----------------------------------------------------------------------------- crafted files


def test_old_format_with_code_in_the_ir_is_refused(here: Path) -> None:
    path, model = _saved(here)
    meta, tensors = _read(path)
    ir = json.loads(model.archlang_graph.model_dump_json())
    ir["scopes"][0]["block"] = f'mlp""";{PAYLOAD};"""'
    old = {"format": "archlang/1", "arch": "vit_digits", "params": meta["params"], "spec": "", "ir": json.dumps(ir)}
    with pytest.raises(LoadError, match="format `archlang/1`"):
        load(_write(path, old, tensors))


def test_an_ir_in_the_metadata_is_never_used(here: Path) -> None:
    path, model = _saved(here)
    meta, tensors = _read(path)
    ir = json.loads(model.archlang_graph.model_dump_json())
    ir["scopes"][0]["block"] = f'mlp""";{PAYLOAD};"""'
    ir["file"] = f'x"""\n{PAYLOAD}\n"""'
    loaded = load(_write(path, {**meta, "ir": json.dumps(ir)}, tensors))
    assert "PWNED" not in loaded.archlang_source


@pytest.mark.parametrize("edit", [
    lambda s: s + f'\n"""; {PAYLOAD}; """\n',  # a syntax error
    lambda s: s.replace("mlp_ratio = 2.0", "mlp_ratio = 3.0"),  # checks, but another model
    lambda s: s.replace("in x:", f"# {PAYLOAD}\n  in x:"),  # a comment: spans move, the digest differs
])
def test_tampered_spec_text(here: Path, edit) -> None:
    path, _ = _saved(here)
    meta, tensors = _read(path)
    sources = json.loads(meta["sources"])
    sources[meta["main"]] = edit(sources[meta["main"]])
    with pytest.raises(LoadError, match=r"does not check|different IR"):
        load(_write(path, {**meta, "sources": json.dumps(sources)}, tensors))


def test_tampered_standard_library_source(here: Path) -> None:
    path, _ = _saved(here)
    meta, tensors = _read(path)
    sources = json.loads(meta["sources"])
    std = next(k for k in sources if k.endswith("nn.arch"))
    sources[std] = sources[std].replace("gelu", "relu")
    with pytest.raises(LoadError, match="different IR"):
        load(_write(path, {**meta, "sources": json.dumps(sources)}, tensors))


def test_consistent_forgery_with_a_hostile_file_name_runs_nothing(here: Path) -> None:
    """A forger can recompute the digest. Then the spec checks, so the model is archlang's own
    code from a checked spec, and the hostile file name stays inside an escaped docstring."""
    path, _ = _saved(here)
    meta, tensors = _read(path)
    sources, links = json.loads(meta["sources"]), json.loads(meta["links"])
    name = f'A"""+\'\'\'\nfrom torch import nn\n{PAYLOAD}\n#.arch'
    sources[name] = sources.pop(meta["main"])
    links[name] = links.pop(meta["main"])
    params = json.loads(meta["params"])
    digest = _digest_of(name, sources, links, "vit_digits", params)
    forged = {**meta, "main": name, "sources": json.dumps(sources), "links": json.dumps(links), "ir_sha256": digest}
    loaded = load(_write(path, forged, tensors))
    assert PAYLOAD not in loaded.archlang_source
    compile(loaded.archlang_source, "<loaded>", "exec")


@pytest.mark.parametrize("links", [
    {"MAIN": {"std.nn": "/etc/passwd", "std.vision": "/etc/hostname"}},
    {"MAIN": {"std.nn": "../../outside.arch"}},
    {"MAIN": {"std.nn": "MAIN", "std.vision": "MAIN"}},  # a cycle
    {},
])
def test_tampered_links(here: Path, links: dict) -> None:
    path, _ = _saved(here)
    meta, tensors = _read(path)
    links = json.loads(json.dumps(links).replace("MAIN", meta["main"]))
    with pytest.raises(LoadError, match="does not check") as e:
        load(_write(path, {**meta, "links": json.dumps(links)}, tensors))
    assert "E0203" in str(e.value) or "E0602" in str(e.value)


def test_tampered_digest(here: Path) -> None:
    path, _ = _saved(here)
    meta, tensors = _read(path)
    with pytest.raises(LoadError, match="sha256 differs"):
        load(_write(path, {**meta, "ir_sha256": "0" * 64}, tensors))
    with pytest.raises(LoadError, match="not a sha256"):
        load(_write(path, {**meta, "ir_sha256": "'; import os"}, tensors))


@pytest.mark.parametrize(("params", "match"), [
    ({"depth": 2}, "do not match"),  # another model, consistent digest needed: see below
    ({"depth": "1\"; drop_path_rate = 1"}, "plain value"),
    ({"depth": {"a": 1}}, "plain value"),
    ({"de pth": 1}, "plain value"),
    ({"nonexistent": 1}, "does not check"),
    ({"depth": 10**30}, "does not check"),
])
def test_tampered_params(here: Path, params: dict, match: str) -> None:
    path, _ = _saved(here)
    meta, tensors = _read(path)
    p = {**json.loads(meta["params"]), **params}
    forged = {**meta, "params": json.dumps(p)}
    if match == "do not match":
        forged["ir_sha256"] = _digest_of(meta["main"], json.loads(meta["sources"]), json.loads(meta["links"]),
                                         "vit_digits", p)
    with pytest.raises(LoadError, match=match):
        load(_write(path, forged, tensors))


@pytest.mark.parametrize(("key", "value", "match"), [
    ("sources", "{not json", "not valid JSON"),
    ("sources", "[" * 200_000 + "]" * 200_000, "not valid JSON|not a map"),
    ("sources", json.dumps({"m": 1}), "not a map"),
    ("links", json.dumps([1, 2]), "not a map"),
    ("params", json.dumps([1]), "not a map"),
    ("sources", json.dumps({"x": "y" * (17 * 2**20)}), "at most"),
    ("arch", 'vit_digits"); import os; ("', "not an arch name"),
    ("main", "elsewhere.arch", "not among the stored sources"),
    ("dtype", "float64", "not one of"),
    ("format", "pickle", "not written by archlang"),
])
def test_malformed_metadata(here: Path, key: str, value: str, match: str) -> None:
    path, _ = _saved(here)
    meta, tensors = _read(path)
    with pytest.raises(LoadError, match=match):
        load(_write(path, {**meta, key: value}, tensors))


def test_missing_metadata_key(here: Path) -> None:
    path, _ = _saved(here)
    meta, tensors = _read(path)
    del meta["links"]
    with pytest.raises(LoadError, match="lacks `links`"):
        load(_write(path, meta, tensors))


def test_tensor_names_shapes_and_dtypes_are_checked(here: Path) -> None:
    path, _ = _saved(here)
    meta, tensors = _read(path)
    renamed = {("head.weightX" if k == "head.weight" else k): v for k, v in tensors.items()}
    with pytest.raises(LoadError, match=r"missing from the file: `head.weight`.*not in the model: `head.weightX`"):
        load(_write(path, meta, renamed))
    reshaped = {**tensors, "head.weight": torch.zeros(11, 64)}
    with pytest.raises(LoadError, match=r"different: `head.weight is float32\[11, 64\] in the file, float32\[10, 64\]"):
        load(_write(path, meta, reshaped))
    extra = {**tensors, "__import__('os')": torch.zeros(1)}
    with pytest.raises(LoadError, match="not in the model"):
        load(_write(path, meta, extra))
    halves = {k: v.half() for k, v in tensors.items()}
    with pytest.raises(LoadError, match=r"is float16\[.*\] in the file, float32"):
        load(_write(path, meta, halves))
    with pytest.raises(LoadError, match="float16"):  # the dtype claimed, against the tensors
        load(_write(path, {**meta, "dtype": "float16"}, tensors))


def test_not_a_safetensors_file(here: Path) -> None:
    path, _ = _saved(here)
    for name, data in (("garbage", b"\xff" * 64), ("empty", b""), ("truncated", path.read_bytes()[:-100]),
                       ("huge_header", (2**62).to_bytes(8, "little") + b"{}")):
        bad = here / name
        bad.write_bytes(data)
        with pytest.raises(LoadError):
            load(bad)
    with pytest.raises(LoadError, match="no such file"):
        load(here / "absent.safetensors")


HUGE = """use std.nn
arch huge(d: int = 1000000, n: int = 64) {
  in x: [B, d]
  for i in 0 .. n { x = layers[i]: linear(x, d) }
  out y = x
}
"""


def test_small_file_describing_a_huge_model(here: Path) -> None:
    """3 KB whose spec describes 64 T parameters: refused before anything is allocated."""
    std = {k: v for k, v in json.loads(_read(_saved(here)[0])[0]["sources"]).items() if k.endswith("nn.arch")}
    std_name = next(iter(std))
    sources = {"huge.arch": HUGE, **std}
    links = {"huge.arch": {"std.nn": std_name}}
    digest = _digest_of("huge.arch", sources, links, "huge", {"d": 1000000, "n": 64})
    meta = {"format": FORMAT, "arch": "huge", "main": "huge.arch", "params": json.dumps({"d": 1000000, "n": 64}),
            "sources": json.dumps({"huge.arch": HUGE}), "links": json.dumps({}), "dtype": "float32",
            "ir_sha256": digest}
    meta["sources"], meta["links"] = json.dumps(sources), json.dumps(links)
    for tensors in ({}, {"layers.0.weight": torch.zeros(2, 2)}):
        path = _write(here / "x", meta, tensors)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        with pytest.raises(LoadError, match="do not match"):
            load(path, max_memory=None)
        with pytest.raises(LoadError, match=r"do not match|budget"):
            load(path)
        assert time.perf_counter() - t < 10
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 512 * 1024  # KiB: < 512 MiB more


def test_memory_budget(here: Path) -> None:
    path, _ = _saved(here)
    with pytest.raises(LoadError, match="E0901") as e:
        load(path, max_memory=1024)
    assert e.value.diagnostics and e.value.diagnostics[0].code == "E0901"
    assert isinstance(e.value, ValueError)
