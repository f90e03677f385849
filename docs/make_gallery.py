"""Regenerate the README's gallery table and the diagrams it links (docs/gallery/*.svg).

    python docs/make_gallery.py > /tmp/gallery.md

Figures come from the cost model at batch 1, fp32, each spec's default arch and size (free
sequence lengths at 128); diagrams from `archc render` at its default depth.
"""

from __future__ import annotations

from pathlib import Path

import archlang
from archlang.check import choose_arch, load
from archlang.cost.view import human_bytes, human_count

ROOT = Path(__file__).resolve().parent.parent
ROWS = [
    ("Transformer (encoder-decoder)", "transformer", "torch.nn.Transformer core, exact"),
    ("GPT (decoder-only)", "gpt", "block stack = nn.TransformerEncoder(norm_first, gelu), causal"),
    ("BERT (encoder-only)", "bert", "BERT-base size (109.5M with the MLM transform)"),
    ("iGPT (pixels)", "igpt", "course figure: 768 GiB of attention at res 128"),
    ("ViT", "vit_b16", "timm vit_base_patch16_224, exact"),
    ("ViT hybrid R26+S/32", "vit_s_r26_s32", "timm vit_small_r26_s32_224, exact"),
    ("DeiT (distilled)", "deit_s_distilled", "timm deit_small_distilled_patch16_224, exact"),
    ("Swin", "swin_t", "timm swin_tiny_patch4_window7_224, exact"),
    ("Swin-V2", "swinv2_t", "timm swinv2_tiny_window8_256, exact"),
    ("MViTv2", "mvitv2_t", "timm mvitv2_tiny, exact"),
    ("MLP-Mixer", "mixer_b16", "timm mixer_b16_224, exact"),
    ("ResMLP", "resmlp_12", "timm resmlp_12_224, exact"),
    ("gMLP", "gmlp_s16", "timm gmlp_s16_224, exact"),
    ("S2-MLP", "s2mlp", "paper: 71M (S2-MLP-wide), +1.5%"),
    ("CycleMLP", "cyclemlp_b1", "paper: 15.2M params, 2.1G MACs (B1), -0.3%"),
    ("ResNet-50", "resnet50", "timm resnet50, exact"),
    ("Non-local ResNet-50 (idea 1)", "nonlocal_resnet50", "-"),
    ("SASA ResNet-50 (idea 2)", "sasa_resnet50", "-"),
    ("AST (audio)", "ast", "AST authors' forward on timm DeiT, exact"),
    ("Conformer (audio, CTC)", "conformer", "paper's S/M/L encoder sizes"),
    ("UniT (multimodal)", "unit", "-"),
    ("BEiT", "beit", "timm beit_base_patch16_224, exact"),
    ("CaiT (talking heads, class attention)", "cait", "timm cait_xxs24_224, exact"),
    ("Llama (decoder LM, GQA, RoPE)", "llama", "HF LlamaForCausalLM (Llama-2-7B), exact"),
    ("Mistral (sliding window)", "mistral", "HF MistralForCausalLM (Mistral-7B-v0.1), exact"),
    ("LLaVA (multimodal)", "llava", "HF LlavaForConditionalGeneration (llava-1.5-7b-hf), exact"),
    ("Swin-T + LoRA", "swin_t_lora", "910,312 trainable"),
]


HEADER = ("| family | spec | params | GFLOPs | attention memory | diagram | reference |\n"
          "|---|---|---|---|---|---|---|")


def rows(draw: bool = False) -> list[str]:
    """The gallery table's rows (``draw`` also writes each diagram to docs/gallery/)."""
    out = []
    for family, stem, ref in ROWS:
        spec = ROOT / "specs" / f"{stem}.arch"
        arch, _ = choose_arch(load(spec), None)
        rep = archlang.cost(spec, arch, as_written=True)  # every row, as the references compute them
        if draw:
            archlang.render(spec, arch).save(ROOT / "docs" / "gallery" / f"{arch}.svg")
        attn = human_bytes(rep.attention_bytes) if rep.attention_bytes else "-"
        out.append(f"| {family} | `specs/{stem}.arch` | {human_count(rep.params)} | {rep.flops / 1e9:.2f} | {attn} | "
                   f"[{arch}](docs/gallery/{arch}.svg) | {ref} |")
    return out


def main() -> None:
    print(HEADER)
    print("\n".join(rows(draw=True)))


if __name__ == "__main__":
    main()
