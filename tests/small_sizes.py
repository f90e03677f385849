"""Small sizes of every shipped spec, shared by the tests and the benchmarks that build them all.

Takes: nothing. Produces: ``SMALL`` (parameter overrides that shrink each spec's default arch;
a spec missing from it is small already), ``SMALL_CNNS`` (the ResNet family, which
tests/test_every_spec.py leaves at full size) and ``SIZES`` (values of the free sizes).
"""

from __future__ import annotations

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
    "llava": {"img": 28, "patch": 14, "vision_dim": 32, "vision_layers": 2, "vision_heads": 2, "vision_ffn": 64,
              "dim": 32, "layers": 1, "heads": 2, "kv_heads": 2, "ffn": 64, "vocab": 64, "image_token": 63},
    "llama": {"vocab": 64, "dim": 32, "layers": 1, "heads": 4, "kv_heads": 2, "ffn": 64},
    "mistral": {"vocab": 64, "dim": 32, "layers": 1, "heads": 4, "kv_heads": 2, "ffn": 64, "window": 8},
    "beit": {"img": 32, "patch": 8, "depth": 1, "dim": 32, "heads": 2, "classes": 10},
    "cait": {"img": 32, "patch": 8, "depth": 1, "depth_cls": 1, "dim": 32, "heads": 2, "classes": 10},
    "unit": {"img": 32, "patch": 8, "vocab": 100, "max_text": 16, "dim": 32, "heads": 4, "ff": 64, "enc_layers": 1,
             "dec_layers": 1, "det_queries": 5, "det_classes": 3, "vqa_answers": 7},
}
SIZES = {"S": 8, "T": 63}  # free sizes; 63 frames give whole strides after Conformer's subsampling

SMALL_CNNS: dict[str, dict] = {
    "resnet50": {"img": 64, "layers": [1, 1, 1, 1], "classes": 10},
    "nonlocal_resnet50": {"img": 64, "layers": [1, 2, 2, 1], "nl": [0, 1, 1, 0], "classes": 10},
    "sasa_resnet50": {"img": 64, "layers": [1, 1, 1, 1], "classes": 10},
}
