"""Every shipped spec checks, costs, draws, builds at a small size and runs forward and
backward. Small sizes keep this quick; the family tests check full sizes against references."""

from __future__ import annotations

from pathlib import Path

import pytest

import archlang
from archlang.check import choose_arch, load

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.arch"))

# parameter overrides that shrink each spec's default arch (missing: already small enough)
SMALL: dict[str, dict] = {
    "swin_t": {"img": 64, "window": 4, "depths": [1, 1, 2, 1], "embed": 16, "heads": [1, 2, 4, 8]},
    "swin_t_lora": {"img": 64, "window": 4, "depths": [1, 1, 2, 1], "embed": 16, "heads": [1, 2, 4, 8]},
    "swinv2_t": {"img": 64, "window": 4, "depths": [1, 1, 2, 1], "embed": 16, "heads": [1, 2, 4, 8]},
    "vit_b16": {"img": 32, "patch": 8, "depth": 1, "dim": 64, "heads": 2},
    "deit_s_distilled": {"img": 32, "patch": 8, "depth": 1, "dim": 64, "heads": 2},
    "mixer_b16": {"img": 32, "patch": 8, "depth": 1, "dim": 32},
    "resmlp_12": {"img": 32, "patch": 8, "depth": 1, "dim": 32},
    "gmlp_s16": {"img": 32, "patch": 8, "depth": 1},
    "s2mlp": {"img": 56, "depth": 1, "dim": 32},
    "cyclemlp_b1": {"img": 64, "layers": [1, 1, 1, 1], "dims": [16, 32, 64, 128]},
    "mvitv2_t": {"img": 64, "embed": 16, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2]},
    "vit_s_r26_s32": {"img": 64, "layers": [1, 1, 1, 1], "widths": [128, 128, 128, 128], "depth": 1, "dim": 64,
                      "heads": 2},
    "transformer": {"enc_layers": 1, "dec_layers": 1, "d": 32, "heads": 4, "ff": 64, "src_vocab": 50,
                    "tgt_vocab": 50, "max_len": 64},
    "gpt": {"layers": 1, "dim": 32, "heads": 2, "vocab": 64, "block_size": 64},
    "bert": {"layers": 1, "dim": 32, "heads": 2, "vocab": 64, "max_len": 32},
    "igpt": {"res": 4, "layers": 1, "width": 32, "heads": 2, "vocab": 16},
    "conformer": {"layers": 1, "dim": 32, "heads": 2, "vocab": 10},
    "vit_digits": {"depth": 1},
    "ast": {"mel": 32, "frames": 64, "dim": 32, "depth": 1, "heads": 2, "classes": 5},
    "llava": {"img": 28, "patch": 14, "vision_dim": 32, "vision_layers": 1, "vision_heads": 2, "dim": 32, "layers": 1,
              "heads": 2, "ffn": 64, "vocab": 64, "context": 128},
    "unit": {"img": 32, "patch": 8, "vocab": 100, "max_text": 16, "dim": 32, "heads": 4, "ff": 64, "enc_layers": 1,
             "dec_layers": 1, "det_queries": 5, "det_classes": 3, "vqa_answers": 7},
}
SIZES = {"S": 8, "T": 63}  # free sizes; 63 frames give whole strides after Conformer's subsampling


def _arch(spec: Path) -> str:
    name, _ = choose_arch(load(spec), None)
    assert name is not None
    return name


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_spec_checks_costs_and_draws(spec: Path) -> None:
    arch = _arch(spec)
    assert not [d for d in archlang.check(spec, arch) if d.is_error]
    text = spec.read_text()
    assert text.lstrip().startswith("#"), "a spec's header comment names its paper"
    rep = archlang.cost(spec, arch)
    assert rep.params > 0 and rep.flops > 0
    assert "digraph" in archlang.render(spec, arch).dot


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_spec_builds_small_and_trains(spec: Path) -> None:
    torch = pytest.importorskip("torch")
    from archlang.lower.example import example_inputs

    arch = _arch(spec)
    small = SMALL.get(spec.stem, {})
    g = archlang.graph(spec, arch, **small)
    if g.param_count() > 3_000_000:
        pytest.skip(f"{spec.stem} has no small configuration here; its family test covers it")
    torch.manual_seed(0)
    model = archlang.build(spec, arch, **small)
    out = model(*example_inputs(g, batch=2, sizes=SIZES))
    outs = out if isinstance(out, dict) else {"out": out}
    sum(v.float().sum() for v in outs.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
