"""archlang.interop: the timm bridge, the Hub folder layout and adapter-only files.

Takes: shipped specs at small sizes. Checks: every round trip gives exactly the same outputs,
the pretrained cfg says what timm expects, and every refusal is clear. No network: Hub repo
ids are never resolved here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("safetensors")

import archlang  # noqa: E402
from archlang.interop import adapters_io, hub  # noqa: E402
from archlang.interop import timm as timm_bridge  # noqa: E402
from archlang.lower.io import LoadError, ir_digest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SMALL_SWIN = {"img": 64, "window": 2, "embed": 24, "classes": 10}


@pytest.fixture(scope="module")
def vit_names() -> list[str]:
    return timm_bridge.register(SPECS / "vit_b16.arch")


def _save_plain(model: torch.nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


# ----------------------------------------------------------------------------- timm


def test_register_lists_every_arch(vit_names: list[str]) -> None:
    assert "archlang_vit_ti16" in vit_names and "archlang_vit_b16_bitfit" in vit_names
    assert set(vit_names) <= set(timm.list_models("archlang_vit*"))
    assert "archlang_vit_ti16" in timm.list_models(module="archlang_models")
    cfg = timm.models.get_pretrained_cfg("archlang_vit_ti16")
    assert cfg.input_size == (3, 224, 224) and cfg.fixed_input_size
    assert cfg.mean == timm.data.IMAGENET_DEFAULT_MEAN and cfg.std == timm.data.IMAGENET_DEFAULT_STD
    assert cfg.classifier == "head" and cfg.num_classes == 1000 and cfg.first_conv == "patch_embed.proj"
    assert not timm.models.is_model_pretrained("archlang_vit_ti16")  # no weights until a file is given


def test_swin_classifier_is_head_fc() -> None:
    info = timm_bridge.arch_info(archlang.graph(SPECS / "swin_t.arch"))
    assert (info.classifier, info.first_conv, info.input_size, info.num_classes) == \
        ("head.fc", "patch_embed.proj", (3, 224, 224), 1000)
    lora = timm_bridge.arch_info(archlang.graph(SPECS / "swin_t_lora.arch", "swin_t_lora"))
    assert lora.classifier == "head.fc" and len(lora.lora) == 2 * 2 * 12  # q and v of 12 blocks, A and B


def test_timm_round_trip_exact(vit_names: list[str], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("archlang_vit_ti16", img_size=32, num_classes=10).eval()
    assert model.num_classes == 10 and model.arch_params["classes"] == 10 and model.arch_params["img"] == 32
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert timm.data.resolve_model_data_config(model)["input_size"] == (3, 32, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    plain = _save_plain(model, tmp_path / "plain.safetensors")
    saved = archlang.save(model, tmp_path / "archlang.safetensors")
    for f in (plain, saved):
        torch.manual_seed(1)  # a different init: only the file can make the outputs equal
        again = timm.create_model("archlang_vit_ti16", img_size=32, num_classes=10, pretrained=True,
                                  pretrained_cfg_overlay=dict(file=str(f))).eval()
        assert again.pretrained_cfg["file"] == str(f)
        with torch.no_grad():
            assert torch.equal(again(x), want)
    # another class count: timm's rule, the classifier is dropped and the rest loads
    five = timm.create_model("archlang_vit_ti16", img_size=32, num_classes=5, pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(saved)))
    assert five.head.weight.shape == (5, 192)
    assert torch.equal(five.blocks[3].mlp.fc1.weight, model.blocks[3].mlp.fc1.weight)


def test_timm_loads_a_save_pretrained_folder(vit_names: list[str], tmp_path: Path) -> None:
    model = archlang.build(SPECS / "vit_b16.arch", "vit_ti16", img=32, depth=2, classes=10).eval()
    folder = hub.save_pretrained(model, tmp_path / "m", diagram=False)
    again = timm.create_model("archlang_vit_ti16", img_size=32, depth=2, num_classes=10, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(folder))).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_timm_refusals(vit_names: list[str], tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="No pretrained weights exist"):
        timm.create_model("archlang_vit_ti16", img_size=32, pretrained=True)
    with pytest.raises(ValueError, match="`wobble` is neither"):
        timm.create_model("archlang_vit_ti16", img_size=32, wobble=3)
    with pytest.raises(ValueError, match="square"):
        timm.create_model("archlang_vit_ti16", img_size=(32, 48))
    with pytest.raises(ValueError, match="features_only"):
        timm.create_model("archlang_vit_ti16", features_only=True)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(LoadError, match="safetensors only"):
        timm.create_model("archlang_vit_ti16", img_size=32, pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))
    with pytest.raises(ValueError, match="local safetensors file only"):
        timm.create_model("archlang_vit_ti16", img_size=32, pretrained=True,
                          pretrained_cfg_overlay=dict(hf_hub_id="someone/weights"))


def test_register_folder_and_num_classes_without_classes(tmp_path: Path) -> None:
    (tmp_path / "tiny.arch").write_text(
        "arch tiny(dim: int = 8) {\n"
        "  in x: [B, 3, 4, 4]\n"
        "  out logits = head: linear(mean(x, dim = [2, 3]), 5)\n"
        "}\n")
    (tmp_path / "broken.arch").write_text("arch broken( {\n")
    with pytest.warns(UserWarning, match="skipped"):
        names = timm_bridge.register(tmp_path)
    assert names == ["archlang_tiny"]
    model = timm.create_model("archlang_tiny")
    assert model.num_classes == 5 and model.pretrained_cfg["classifier"] == "head"
    with pytest.raises(ValueError, match="no `classes` parameter"):
        timm.create_model("archlang_tiny", num_classes=7)
    assert timm_bridge.register(tmp_path / "tiny.arch") == ["archlang_tiny"]  # again: no warning, same name


# ----------------------------------------------------------------------------- hub


def test_hub_folder_round_trip(tmp_path: Path) -> None:
    from archlang.render import dot_available

    torch.manual_seed(0)
    model = archlang.build(SPECS / "vit_digits.arch").eval()
    folder = hub.save_pretrained(model, tmp_path / "vit_digits")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "README.md"} <= names
    assert ("diagram.svg" in names) == dot_available()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format"] == "archlang-hub/1" and cfg["arch"] == "vit_digits" and cfg["params"]["dim"] == 64
    assert cfg["ir_sha256"] == ir_digest(model.archlang_graph)
    assert "std.nn" in cfg["links"][cfg["main"]] and cfg["main"] in cfg["sources"]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: archlang\n")
    rep = archlang.cost(SPECS / "vit_digits.arch")
    assert f"{rep.params:,}" in card and "| **total** |" in card and "peak memory, inference" in card
    assert ("![vit_digits](diagram.svg)" in card) == dot_available()
    again = hub.from_pretrained(folder, max_memory="1GiB").eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert again.arch_name == "vit_digits"


def test_hub_without_diagram(tmp_path: Path) -> None:
    model = archlang.build(SPECS / "vit_digits.arch", depth=1)
    folder = hub.save_pretrained(model, tmp_path / "m", diagram=False)
    assert not (folder / "diagram.svg").exists() and "diagram.svg" not in (folder / "README.md").read_text()


def test_hub_refusals(tmp_path: Path) -> None:
    model = archlang.build(SPECS / "vit_digits.arch", depth=1)
    folder = hub.save_pretrained(model, tmp_path / "m", diagram=False)
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "params": {**cfg["params"], "depth": 2}}))
    with pytest.raises(LoadError, match="disagree on `params`"):
        hub.from_pretrained(folder)
    cfg_path.write_text(json.dumps({**cfg, "format": "something"}))
    with pytest.raises(LoadError, match="not written by archlang's save_pretrained"):
        hub.from_pretrained(folder)
    cfg_path.write_text(json.dumps({**cfg, "arch": "import os"}))
    with pytest.raises(LoadError, match="not an arch name"):
        hub.from_pretrained(folder)
    with pytest.raises(LoadError, match="no such folder"):
        hub.from_pretrained(tmp_path / "missing" / "deeper" / "x")  # not a repo id either: never the network
    with pytest.raises(LoadError, match="is a file"):
        hub.from_pretrained(folder / "model.safetensors")
    with pytest.raises(LoadError, match="memory budget"):
        cfg_path.write_text(json.dumps(cfg))
        hub.from_pretrained(folder, max_memory="1KiB")


def test_hub_repo_paths_through_huggingface_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """push_to_hub and a repo id in from_pretrained go through huggingface_hub's own calls;
    here they are replaced by fakes, so nothing touches the network."""
    hf = pytest.importorskip("huggingface_hub")
    model = archlang.build(SPECS / "vit_digits.arch", depth=1).eval()
    uploads: list[dict] = []
    store = tmp_path / "remote"

    class FakeApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, **kw):
            uploads.append({"create": repo_id, **kw})

        def upload_folder(self, *, repo_id, folder_path, **kw):
            import shutil

            shutil.copytree(folder_path, store)
            uploads.append({"upload": repo_id, "files": sorted(p.name for p in Path(folder_path).iterdir()), **kw})
            return "commit-info"

    def fake_snapshot(repo_id, **kw):
        uploads.append({"download": repo_id, **kw})
        return str(store)

    monkeypatch.setattr(hf, "HfApi", FakeApi)
    monkeypatch.setattr(hf, "snapshot_download", fake_snapshot)
    assert hub.push_to_hub(model, "someone/vit-digits", token="t", private=True, diagram=False) == "commit-info"
    assert uploads[0] == {"create": "someone/vit-digits", "private": True, "repo_type": "model", "exist_ok": True}
    assert uploads[1]["files"] == ["README.md", "config.json", "model.safetensors"]
    assert 'from_pretrained("someone/vit-digits")' in (store / "README.md").read_text()
    again = hub.from_pretrained("someone/vit-digits", revision="main").eval()
    assert uploads[2]["download"] == "someone/vit-digits" and uploads[2]["revision"] == "main"
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


# ----------------------------------------------------------------------------- adapters


@pytest.fixture(scope="module")
def tuned() -> torch.nn.Module:
    torch.manual_seed(0)
    model = archlang.build(SPECS / "swin_t_lora.arch", "swin_t_lora", **SMALL_SWIN)
    with torch.no_grad():  # as if fine-tuned: every trainable tensor moved
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def test_adapters_round_trip_and_size(tuned: torch.nn.Module, tmp_path: Path) -> None:
    path = adapters_io.save_adapters(tuned, tmp_path / "lora.safetensors")
    trainable = sum(p.numel() * p.element_size() for p in tuned.parameters() if p.requires_grad)
    full = sum(p.numel() * p.element_size() for p in tuned.parameters())
    size = os.path.getsize(path)
    assert trainable <= size <= trainable + 32 * 1024 and size < full / 20
    torch.manual_seed(1)
    fresh = archlang.build(SPECS / "swin_t_lora.arch", "swin_t_lora", **SMALL_SWIN).eval()
    base = {k: v for k, v in tuned.state_dict().items() if k not in adapters_io.adapter_state_dict(tuned)}
    fresh.load_state_dict(base, strict=False)  # the shared base checkpoint
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.equal(fresh(x), tuned(x))
        adapters_io.load_adapters(fresh, path)
        assert torch.equal(fresh(x), tuned(x))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["arch"] == "swin_t_lora" and meta["main"].endswith("swin_t_lora.arch")
    assert any("adapt lora(r = 8" in s for s in json.loads(meta["statements"]))
    assert meta["base_sha256"] == adapters_io.base_digest(archlang.graph(SPECS / "swin_t.arch", **SMALL_SWIN))
    assert "layers.0.blocks.0.attn.qkv.lora_q.A" in keys and "head.fc.weight" in keys
    assert "layers.0.blocks.0.attn.qkv.weight" not in keys


def test_adapters_refuse_another_base(tuned: torch.nn.Module, tmp_path: Path) -> None:
    path = adapters_io.save_adapters(tuned, tmp_path / "lora.safetensors")
    spec = SPECS / "swin_t_lora.arch"
    with pytest.raises(adapters_io.AdapterError, match="another base network"):
        adapters_io.load_adapters(archlang.build(spec, "swin_t_lora", **{**SMALL_SWIN, "embed": 48}), path)
    with pytest.raises(adapters_io.AdapterError, match="other LoRA taps"):
        adapters_io.load_adapters(archlang.build(spec, "swin_t_bitfit", **SMALL_SWIN), path)
    with pytest.raises(adapters_io.AdapterError, match="other LoRA taps"):
        adapters_io.load_adapters(archlang.build(SPECS / "swin_t.arch", **SMALL_SWIN), path)
    with pytest.raises(adapters_io.AdapterError, match="whole model"):
        adapters_io.load_adapters(tuned, archlang.save(tuned, tmp_path / "full.safetensors"))
    merged = archlang.merge_adapters(archlang.build(spec, "swin_t_lora", **SMALL_SWIN))
    with pytest.raises(adapters_io.AdapterError, match="merged"):
        adapters_io.save_adapters(merged, tmp_path / "m.safetensors")


def test_bitfit_adapters(tmp_path: Path) -> None:
    model = archlang.build(SPECS / "vit_b16.arch", "vit_b16_bitfit", img=32, dim=48, heads=3, depth=2, classes=10)
    saved = adapters_io.adapter_state_dict(model)
    assert all(k.endswith(".bias") or k.startswith("head.") for k in saved)
    assert sum(v.numel() for v in saved.values()) == archlang.cost(
        SPECS / "vit_b16.arch", "vit_b16_bitfit", img=32, dim=48, heads=3, depth=2, classes=10).trainable_params
    path = adapters_io.save_adapters(model, tmp_path / "bitfit.safetensors")
    plain = archlang.build(SPECS / "vit_b16.arch", "vit_b16", img=32, dim=48, heads=3, depth=2, classes=10)
    with pytest.raises(adapters_io.AdapterError, match="missing from the file"):
        adapters_io.load_adapters(plain, path)  # the plain model trains every weight
    adapters_io.load_adapters(plain, path, strict=False)
    assert torch.equal(plain.head.weight, model.head.weight)


# ----------------------------------------------------------------------------- light imports


def test_interop_package_import_is_light() -> None:
    code = ("import sys, archlang.interop as i; assert 'torch' not in sys.modules, 'torch'; "
            "assert 'timm' not in sys.modules; assert 'huggingface_hub' not in sys.modules; "
            "from archlang.interop import distributed; g = distributed.block_instances; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
