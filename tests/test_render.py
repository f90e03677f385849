"""Diagrams (`archc render`, `archlang.render`): drawn from the IR without torch; clusters,
nodes and ×N badges at each depth; shapes on edges; residual and cross-attention edges; one
drawing rule per op; deterministic DOT; no overlapping labels. The DOT is always tested; the
SVG/PNG parts skip when Graphviz's `dot` is not installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

import archlang
from archlang.cli import app
from archlang.ir.ops import op_classes
from archlang.render import DRAW_RULES, Diagram, DotNotFoundWarning, render_graph
from archlang.render.rules import look

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"

NODE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" \[label=<(.*)>, (.*)\];$', re.M)
EDGE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)" \[(.*)\];$', re.M)
CLUSTER = re.compile(r'^\s*subgraph "(cluster_[^"]*)" \{\n\s*graph \[label=<(.*)>, ', re.M)


@pytest.fixture(scope="module")
def swin() -> archlang.Graph:
    return archlang.graph(ROOT / "specs/swin_t.arch")


@pytest.fixture(scope="module")
def transformer() -> archlang.Graph:
    return archlang.graph(ROOT / "specs/transformer.arch")


def nodes(dot: str) -> dict[str, str]:
    """DOT node id -> its whole statement (label and attributes)."""
    return {m.group(1): m.group(0) for m in NODE.finditer(dot)}


def edges(dot: str) -> dict[tuple[str, str], str]:
    return {(m.group(1), m.group(2)): m.group(3) for m in EDGE.finditer(dot)}


def clusters(dot: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in CLUSTER.finditer(dot)}


def svg_of(d: Diagram) -> ET.Element:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed")
    return ET.fromstring(d.svg())


def svg_parts(root: ET.Element) -> tuple[list[str], list[str], list[str], str]:
    """Titles of the clusters, nodes and edges of an SVG from dot, and all its text."""
    def titles(cls: str) -> list[str]:
        return [g.find(f"{SVG}title").text or "" for g in root.iter(f"{SVG}g") if g.get("class") == cls]
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    return titles("cluster"), titles("node"), titles("edge"), text


# --------------------------------------------------------------------------- rules and imports


def test_every_op_has_a_drawing_rule() -> None:
    assert [c.__name__ for c in op_classes() if c not in DRAW_RULES] == []


def test_every_op_of_the_all_ops_spec_is_drawn() -> None:
    g = archlang.graph(ROOT / "tests/specs/all_ops.arch")
    for n in g.nodes:
        lk = look(n.op, [g.type_of(r) for r in n.inputs], n.outputs)
        assert lk.title, n.name
    # deepest level, every instance, dropout shown: one DOT node per IR node
    d = render_graph(g, 10, collapse=False, dropout=True)
    assert set(nodes(d.dot)) == {n.name for n in g.nodes}


def test_render_and_check_never_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys, archlang\n"
        "from typer.testing import CliRunner\n"
        "from archlang.cli import app\n"
        "d = archlang.render('specs/swin_t.arch', depth=3, cost=True)\n"
        "assert d.dot.startswith('digraph')\n"
        "archlang.graph('specs/transformer.arch')._repr_svg_()\n"
        "archlang.check('specs/vit_b16.arch')\n"
        "r = CliRunner().invoke(app, ['render', 'specs/mixer_b16.arch', '-o', sys.argv[1]])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'graphviz'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.svg")], cwd=ROOT, check=True)


# --------------------------------------------------------------------------- hierarchy per depth

SWIN_DEPTHS = {
    1: ([], ["x", "patch_embed", "layers.0", "layers.1", "layers.2", "layers.3", "norm", "mean", "head.fc",
             "logits"]),
    2: (["cluster_patch_embed", "cluster_layers.0", "cluster_layers.1", "cluster_layers.2", "cluster_layers.3"],
        ["x", "patch_embed.proj", "patch_embed.rearrange", "patch_embed.norm", "layers.0.blocks.0-1",
         "layers.1.downsample", "layers.1.blocks.0-1", "layers.2.downsample", "layers.2.blocks.0-5",
         "layers.3.downsample", "layers.3.blocks.0-1", "norm", "mean", "head.fc", "logits"]),
}
# depth 3: stem, 4 stages, 3 patch mergings, blocks 2 + 2 + (a ×3 pair: 1 + 2) + 1 (the last stage's two
# blocks are identical: the shift is clamped to 0 on its 7×7 grid) -> 16 clusters; 4 + 6 per block
# (norm1, attn, +, norm2, mlp, +; drop-path elided) x 7 drawn blocks + 3 x 3 merging ops + 5 -> 59 nodes
SWIN_COUNTS = {1: (0, 10), 2: (5, 15), 3: (16, 59)}


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_swin_clusters_and_nodes_per_depth_dot(swin: archlang.Graph, depth: int) -> None:
    d = render_graph(swin, depth)
    n_clusters, n_nodes = SWIN_COUNTS[depth]
    assert (len(clusters(d.dot)), len(nodes(d.dot))) == (n_clusters, n_nodes)
    assert (d.cluster_count, d.node_count) == (n_clusters, n_nodes)
    if depth in SWIN_DEPTHS:
        want_clusters, want_nodes = SWIN_DEPTHS[depth]
        assert list(clusters(d.dot)) == want_clusters
        assert list(nodes(d.dot)) == want_nodes


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_swin_clusters_and_nodes_per_depth_svg(swin: archlang.Graph, depth: int) -> None:
    cl, nd, _, text = svg_parts(svg_of(render_graph(swin, depth)))
    assert (len(cl), len(nd)) == SWIN_COUNTS[depth]
    if depth in SWIN_DEPTHS:
        assert cl == SWIN_DEPTHS[depth][0]
        assert nd == SWIN_DEPTHS[depth][1]
    if depth == 3:
        assert {"cluster_layers.2.blocks.0-5", "cluster_layers.0.blocks.1"} <= set(cl)
        assert "W-MSA" in text and "SW-MSA" in text


def test_depth_1_is_stem_stages_head(swin: archlang.Graph) -> None:
    ns = nodes(render_graph(swin, 1).dot)
    assert "patch_embed_grid" in ns["patch_embed"]
    assert "patch_merge → swin_block" in ns["layers.2"] and "×6" in ns["layers.2"]
    assert "Linear" in ns["head.fc"] and "768 → 1000" in ns["head.fc"]


def test_default_depth_fits_a_screen(swin: archlang.Graph, transformer: archlang.Graph) -> None:
    assert render_graph(swin).depth == 1
    assert render_graph(transformer).depth == 2
    assert render_graph(archlang.graph(ROOT / "specs/vit_b16.arch")).depth == 1
    assert render_graph(swin, 99).depth == 4  # clamped to the deepest level


# --------------------------------------------------------------------------- repeats


def test_swin_badges(swin: archlang.Graph) -> None:
    d2 = nodes(render_graph(swin, 2).dot)
    stage3 = d2["layers.2.blocks.0-5"]
    assert "swin_block" in stage3 and "<b>×6</b>" in stage3 and "blocks.0–5" in stage3
    assert "heads 12" in stage3 and "shift 0, 3 alternating" in stage3
    assert "<b>×2</b>" in d2["layers.0.blocks.0-1"] and "shift 0, 3" in d2["layers.0.blocks.0-1"]
    last = d2["layers.3.blocks.0-1"]  # on a 7×7 grid the shift of 3 is clamped to 0: identical blocks
    assert "shift 0" in last and "shift 0, 3" not in last
    assert 'shape="box3d"' in stage3
    d3 = clusters(render_graph(swin, 3).dot)
    assert "×3" in d3["cluster_layers.2.blocks.0-5"] and "6 swin_block in pairs" in d3["cluster_layers.2.blocks.0-5"]
    assert "×2" in d3["cluster_layers.3.blocks.0"]


def test_swin_badges_svg(swin: archlang.Graph) -> None:
    _, _, _, text = svg_parts(svg_of(render_graph(swin, 2)))
    assert text.count("×2") == 3 and text.count("×6") == 1
    assert "swin_block" in text


def test_vit_block_stack_is_one_box_then_one_open_block() -> None:
    g = archlang.graph(ROOT / "specs/vit_b16.arch")
    assert "<b>×12</b>" in nodes(render_graph(g, 1).dot)["blocks.0-11"]
    d3 = render_graph(g, 3).dot
    assert "×12" in clusters(d3)["cluster_blocks.0"]
    assert not any(n.startswith("blocks.1.") for n in nodes(d3))


def test_no_collapse_draws_every_instance(swin: archlang.Graph) -> None:
    ns = nodes(render_graph(swin, 2, collapse=False).dot)
    assert [n for n in ns if n.startswith("layers.2.blocks")] == [f"layers.2.blocks.{i}" for i in range(6)]


STACKS = """
arch stacks(n: int = 3) {
  in x: [B, 16]
  for i in 0 .. n {
    x = stages[i].a: linear(x, 16)
    x = stages[i].b: linear(gelu(x), 16)
  }
  out y = head: linear(x, 4)
}
"""


def test_containers_own_their_unlabelled_ops_and_collapse() -> None:
    g = archlang.graph(STACKS)  # `gelu`, `gelu_1`, ... are named at the top level, between stages[i].a and .b
    d1 = render_graph(g, 1).dot
    assert list(nodes(d1)) == ["x", "stages.0-2", "head", "y"]
    assert "Linear → GELU → Linear" in nodes(d1)["stages.0-2"] and "<b>×3</b>" in nodes(d1)["stages.0-2"]
    d2 = render_graph(g, 2).dot
    assert list(clusters(d2)) == ["cluster_stages.0"] and "<b>stages</b>" in clusters(d2)["cluster_stages.0"]
    assert ("stages.0.a", "gelu") in edges(d2) and ("stages.0.b", "head") in edges(d2)
    assert len(nodes(render_graph(g, 1, collapse=False).dot)) == 6  # no box feeds itself: no gelu between


# --------------------------------------------------------------------------- edges


def test_shape_labels(swin: archlang.Graph) -> None:
    d1 = render_graph(swin, 1).dot
    assert 'label="[B, 56, 56, 96]"' in edges(d1)[("layers.0", "layers.1")]
    assert 'label="[B, 768]"' in edges(d1)[("mean", "head.fc")]
    assert "[B, 3, 224, 224]" in nodes(d1)["x"]  # inputs and outputs show their type
    e2 = edges(render_graph(swin, 2).dot)
    assert 'label="[B, 96, 56, 56]"' in e2[("patch_embed.proj", "patch_embed.rearrange")]
    assert 'label="[B, 28, 28, 192]"' in e2[("layers.1.downsample", "layers.1.blocks.0-1")]
    tr = edges(render_graph(archlang.graph(ROOT / "specs/transformer.arch"), 1).dot)
    assert 'label="[B, S, 512]"' in tr[("src_embed", "scale")]  # free sizes stay symbolic


def test_shape_labels_svg(swin: archlang.Graph) -> None:
    _, _, es, text = svg_parts(svg_of(render_graph(swin, 1)))
    for shape in ("[B, 56, 56, 96]", "[B, 28, 28, 192]", "[B, 14, 14, 384]", "[B, 7, 7, 768]", "[B, 768]"):
        assert shape in text
    assert "layers.2->layers.3" in es


def test_residual_edges_are_drawn(swin: archlang.Graph) -> None:
    e = edges(render_graph(swin, 3).dot)
    skip = e[("patch_embed.norm", "layers.0.blocks.0.add")]
    assert 'color="#999999"' in skip and "label=" not in skip
    assert 'color="#999999"' in e[("layers.0.blocks.0.add", "layers.0.blocks.0.add_1")]
    assert 'color="#999999"' not in e[("layers.0.blocks.0.attn", "layers.0.blocks.0.add")]


def test_inputs_and_outputs_look_distinct(swin: archlang.Graph) -> None:
    ns = nodes(render_graph(swin, 1).dot)
    assert 'shape="ellipse"' in ns["x"] and 'shape="ellipse"' in ns["logits"]
    assert ns["x"].count("#d5e8d4") == 1 and ns["logits"].count("#f8cecc") == 1
    assert "shape=" not in ns["norm"]  # ops are the default rounded boxes


def test_cross_attention_edges_reach_every_decoder_layer(transformer: archlang.Graph) -> None:
    layers = [f"decoder.layers.{i}" for i in range(6)]
    e = edges(render_graph(transformer, 2, collapse=False).dot)
    for layer in layers:
        assert 'color="#2f6db5"' in e[("encoder.norm", layer)]
    e3 = edges(render_graph(transformer, 3, collapse=False).dot)
    assert all(("encoder.norm", f"{layer}.multihead_attn") in e3 for layer in layers)
    # collapsed: the one box stands for the six layers, and the memory edge goes to it
    collapsed = render_graph(transformer, 2)
    memory = edges(collapsed.dot)[("encoder.norm", "decoder.layers.0-5")]
    assert 'label="memory [B, S, 512]"' in memory and 'color="#2f6db5"' in memory
    assert "<b>×6</b>" in nodes(collapsed.dot)["decoder.layers.0-5"]
    # depth 3, collapsed: the open decoder layer's cross-attention reads the encoder output
    assert ("encoder.norm", "decoder.layers.0.multihead_attn") in edges(render_graph(transformer, 3).dot)


def test_cross_attention_edges_svg(transformer: archlang.Graph) -> None:
    _, _, es, _ = svg_parts(svg_of(render_graph(transformer, 2, collapse=False)))
    assert all(f"encoder.norm->decoder.layers.{i}" in es for i in range(6))


# --------------------------------------------------------------------------- determinism, cost


def test_rendering_twice_gives_identical_dot(swin: archlang.Graph) -> None:
    assert render_graph(swin, 3, cost=True).dot == render_graph(swin, 3, cost=True).dot
    assert archlang.render(ROOT / "specs/swin_t.arch").dot == render_graph(swin).dot
    assert "0x" not in render_graph(swin, 3).dot


def test_dot_is_the_same_across_processes() -> None:
    code = ("import archlang, sys; sys.stdout.write(archlang.render('specs/transformer.arch', depth=3, cost=True).dot"
            " + archlang.render('specs/swin_t.arch', depth=3).dot)")
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed},
                           capture_output=True, text=True, check=True).stdout for seed in ("1", "2")}
    assert len(outs) == 1


def test_cost_colours_and_params(swin: archlang.Graph) -> None:
    d = render_graph(swin, 1, cost=True).dot
    ns = nodes(d)
    assert "10.96M params · 48.6% FLOPs" in ns["layers.2"]
    assert 'fillcolor="#b30000"' in ns["layers.2"]  # the largest share gets the darkest colour
    assert "share of FLOPs" in d
    assert "% activation memory" in render_graph(swin, 1, cost="memory").dot
    assert "15.37M params · 54.3%" in nodes(render_graph(swin, 1, cost="params").dot)["layers.3"]


def test_cost_without_the_cost_module_colours_by_params(swin: archlang.Graph,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "archlang.cost", None)  # `from archlang.cost import ...` -> ImportError
    d = render_graph(swin, 1, cost=True).dot
    assert "share of params" in d and "FLOPs need archlang.cost" in d


# --------------------------------------------------------------------------- CLI, files, notebooks


def test_cli_render_default_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["render", str(ROOT / "specs/swin_t.arch")])
    assert r.exit_code == 0, r.output
    if shutil.which("dot") is None:
        assert (tmp_path / "swin_t.dot").exists()
        return
    root = ET.parse(tmp_path / "swin_t.svg").getroot()
    assert len(svg_parts(root)[1]) == 10


def test_cli_render_options(tmp_path: Path) -> None:
    out = tmp_path / "t.dot"
    r = CliRunner().invoke(app, ["render", "specs/transformer.arch", "--depth", "3", "--no-collapse", "--cost",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    e = edges(out.read_text())
    assert all(("encoder.norm", f"decoder.layers.{i}.multihead_attn") in e for i in range(6))
    assert CliRunner().invoke(app, ["render", "specs/swin_t.arch", "-o", str(tmp_path / "x.jpg")]).exit_code == 2
    assert CliRunner().invoke(app, ["render", "specs/swin_t.arch", "--depth", "0"]).exit_code == 2
    assert CliRunner().invoke(app, ["render", "specs/swin_t.arch", "--cost", "--cost-by", "x"]).exit_code == 2


def test_without_dot_the_dot_is_written_and_one_line_says_how_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    r = CliRunner().invoke(app, ["render", "specs/swin_t.arch", "-o", str(tmp_path / "s.svg")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s.dot").read_text().startswith('digraph "swin_t"')
    assert not (tmp_path / "s.svg").exists()
    (line,) = r.output.strip().splitlines()
    assert "apt-get install graphviz" in line and "brew install graphviz" in line
    with pytest.warns(DotNotFoundWarning):
        assert archlang.render("specs/swin_t.arch").save(tmp_path / "a.png") == tmp_path / "a.dot"
    assert archlang.graph("specs/swin_t.arch")._repr_svg_() is None


def test_build_writes_the_diagram_beside_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["build", "specs/vit_b16.arch", "--arch", "vit_ti16", "--set", "depth=2"]
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    if shutil.which("dot") is not None:
        assert (tmp_path / "a" / "vit_ti16.svg").read_text().lstrip().startswith("<?xml")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dot`: the build still succeeds
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b" / "vit_ti16.py").exists() and (tmp_path / "b" / "vit_ti16.dot").exists()
    assert len([ln for ln in r.output.splitlines() if "graphviz" in ln]) == 1


def test_save_formats_and_notebook_repr(swin: archlang.Graph, tmp_path: Path) -> None:
    d = render_graph(swin)
    assert d.save(tmp_path / "s.gv").read_text() == d.dot
    with pytest.raises(ValueError, match="format"):
        d.save(tmp_path / "s.bmp")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed")
    assert d.save(tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert d.save(tmp_path / "s.pdf").read_bytes()[:4] == b"%PDF"
    assert swin._repr_svg_() == d._repr_svg_() == d.svg()


# --------------------------------------------------------------------------- readability


def _text_boxes(ops: list[dict] | None) -> list[tuple[float, float, float, float, str]]:
    out, size = [], 14.0
    for op in ops or []:
        if op["op"] == "F":
            size = op["size"]
        elif op["op"] == "T":
            (x, y), w = op["pt"], op["width"]
            x0 = {"c": x - w / 2, "l": x, "r": x - w}[op["align"]]
            out.append((x0, y - 0.2 * size, x0 + w, y + 0.75 * size, op["text"]))
    return out


def _bezier(points: list[list[float]], steps: int = 12) -> list[tuple[float, float]]:
    """Points along a piecewise cubic Bézier curve (dot's edge splines)."""
    out = []
    for i in range(0, len(points) - 3, 3):
        p0, p1, p2, p3 = points[i:i + 4]
        for k in range(steps + 1):
            t = k / steps
            c = ((1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3)
            out.append((sum(w * p[0] for w, p in zip(c, (p0, p1, p2, p3), strict=True)),
                        sum(w * p[1] for w, p in zip(c, (p0, p1, p2, p3), strict=True))))
    return out


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] + 0.5 < b[2] and b[0] + 0.5 < a[2] and a[1] + 0.5 < b[3] and b[1] + 0.5 < a[3]


def overlaps(dot: str) -> list[tuple[str, str]]:
    """Label boxes that overlap another label, a node, or an edge's curve, in dot's own layout."""
    layout = json.loads(subprocess.run(["dot", "-Tjson"], input=dot.encode(), capture_output=True,
                                       check=True).stdout)
    boxes, labels, curves = [], [], []
    for o in layout.get("objects", []):
        if o["name"].startswith("cluster"):
            labels += [(*b[:4], f"{o['name']}: {b[4]}") for b in _text_boxes(o.get("_ldraw_"))]
        else:
            x, y = map(float, o["pos"].split(","))
            w, h = float(o["width"]) * 36, float(o["height"]) * 36
            boxes.append((x - w, y - h, x + w, y + h, o["name"]))
    for e in layout.get("edges", []):
        labels += [(*b[:4], f"edge {e['tail']}->{e['head']}: {b[4]}") for b in _text_boxes(e.get("_ldraw_"))]
        for op in e.get("_draw_", []):
            if op["op"] == "b":
                curves.append(_bezier(op["points"]))
    found = []
    for i, a in enumerate(labels):
        same_label = a[4].split(": ")[0]
        found += [(a[4], b[4]) for b in labels[i + 1:] if _overlap(a, b) and b[4].split(": ")[0] != same_label]
        found += [(a[4], n[4]) for n in boxes if _overlap(a, n)]
        if a[4].startswith("edge") and any(a[0] + 1 < px < a[2] - 1 and a[1] + 1 < py < a[3] - 1
                                           for pts in curves for px, py in pts):
            found.append((a[4], "an edge"))
    return found


@pytest.mark.parametrize(("spec", "depth"), [("swin_t", None), ("swin_t", 2), ("swin_t", 3), ("vit_b16", 2),
                                             ("transformer", 3), ("mixer_b16", 2)])
def test_no_overlapping_labels(spec: str, depth: int | None) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed")
    assert overlaps(archlang.render(ROOT / f"specs/{spec}.arch", depth=depth, cost=depth == 2).dot) == []


def test_readme_shows_the_reference_diagrams() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("swin_t", "vit_b16", "transformer", "mixer_b16"):
        assert f"docs/{name}.png" in readme
        assert (ROOT / "docs" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "archc render" in readme
