"""The README's two commands stay true: CI runs the README's test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## On a fresh machine", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_readme_has_two_commands() -> None:
    cmds = _commands()
    assert len(cmds) == 2
    assert cmds[0].endswith("archc build specs/swin_t.arch")
    assert re.search(r"pytest", cmds[1])


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci


def test_readme_limits_are_the_code_limits() -> None:
    """The Trust section's table of limits is the constants the code enforces."""
    import importlib

    E = importlib.import_module("archlang.check.elaborate")
    P = importlib.import_module("archlang.check.program")
    R = importlib.import_module("archlang.render.diagram")
    S = importlib.import_module("archlang.syntax.parser")

    text = (ROOT / "README.md").read_text().split("## Trust", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\s*\| (.+?) \| (.+?) \|$", text, re.M))
    expected = {
        "nodes in one graph": E.MAX_NODES, "iterations of one loop": E.MAX_LOOP,
        "statements executed while elaborating one arch "
        f"({E.FREE_STEPS:,} plus {E.STEPS_PER_NODE} per node made, at most)": E.MAX_STEPS, "items of a compile-time list": E.MAX_LIST,
        "characters of a compile-time string": E.MAX_STR, "digits of an integer literal": S.MAX_INT_DIGITS,
        "terms / degree": f"{E.MAX_DIM_TERMS} / {E.MAX_DIM_DEGREE}", "one dim of a tensor": f"2**{E.MAX_SIZE.bit_length() - 1}",
        "characters of a `--set` value": S.MAX_SET_CHARS, "characters of a spec file": S.MAX_SOURCE_CHARS,
        "files one program reads": P.MAX_MODULES, "errors per arch before checking stops": E.MAX_DIAGNOSTICS,
        "nodes in one drawing": R.MAX_DRAWN_NODES,
    }
    for prefix, value in expected.items():
        row = [v for k, v in rows.items() if k.startswith(prefix)]
        assert len(row) == 1, f"README's limits table has no row for {prefix!r}"
        shown = value if isinstance(value, str) else f"{value:,}"
        assert row[0] == shown, f"README says {prefix} = {row[0]}, the code says {shown}"


def test_readme_cost_example_is_the_cli_output() -> None:
    """The `archc cost specs/swin_t.arch` block in the README is what the command prints."""
    from typer.testing import CliRunner

    from archlang.cli import app

    text = (ROOT / "README.md").read_text()
    block = text.split("$ archc cost specs/swin_t.arch\n", 1)[1].split("```", 1)[0]
    res = CliRunner().invoke(app, ["cost", "specs/swin_t.arch"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    printed = "\n".join(line.rstrip() for line in res.output.splitlines()) + "\n"
    assert block == printed, "README's cost example is stale: rerun `archc cost specs/swin_t.arch` (COLUMNS=100)"


def test_readme_generated_code_sample_is_generated() -> None:
    """Every line of the README's SwinBlock sample is in the module `archc build` writes."""
    from archlang.check import check_spec
    from archlang.lower.codegen import generate

    text = (ROOT / "README.md").read_text()
    sample = text.split("```python\nclass SwinBlock", 1)[1].split("```", 1)[0]
    r = check_spec(str(ROOT / "specs" / "swin_t.arch"), "swin_t")
    assert r.graph is not None
    source, _ = generate(r.graph)
    for line in ("class SwinBlock" + sample).splitlines():
        if line.strip():
            assert line in source.splitlines(), f"README's generated-code sample is stale: {line!r}"


def test_readme_build_example_is_the_cli_output(tmp_path, monkeypatch) -> None:
    """The `archc build specs/swin_t.arch` block at the top of the README is what it prints."""
    import shutil

    import pytest
    from typer.testing import CliRunner

    from archlang.cli import app

    if shutil.which("dot") is None:
        pytest.skip("the example shows the SVG that Graphviz's dot writes")
    text = (ROOT / "README.md").read_text()
    block = text.split("$ archc build specs/swin_t.arch\n", 1)[1].split("```", 1)[0]
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["build", "specs/swin_t.arch"])
    assert res.exit_code == 0, res.output
    assert block == res.output, "README's build example is stale: rerun `archc build specs/swin_t.arch`"


def test_readme_gallery_is_the_cost_model_output() -> None:
    """The gallery table's figures are what `python docs/make_gallery.py` computes now."""
    import sys

    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_gallery
    finally:
        sys.path.remove(str(ROOT / "docs"))
    text = (ROOT / "README.md").read_text()
    shown = [line for line in text.splitlines() if line.startswith("| ") and "](docs/gallery/" in line]
    assert shown == make_gallery.rows(), "README's gallery is stale: rerun `python docs/make_gallery.py`"


def test_readme_attention_kind_example_is_the_cli_output(tmp_path) -> None:
    """The "Writing a new attention kind" spec checks, and its quoted cost lines are what
    `archc cost` prints for it."""
    from typer.testing import CliRunner

    from archlang.cli import app

    section = (ROOT / "README.md").read_text().split("## Writing a new attention kind", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```")
    spec, quoted = blocks[1].strip("\n"), blocks[3].strip("\n")
    path = tmp_path / "alibi.arch"
    path.write_text(spec + "\n")
    res = CliRunner().invoke(app, ["cost", str(path)], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    printed = [line.rstrip() for line in res.output.splitlines()]
    for line in quoted.splitlines():
        assert line.rstrip() in printed, f"README's attention-kind cost line is stale: {line!r}"


def test_readme_memory_accuracy_is_the_benchmark_table() -> None:
    """The README's accuracy sentence counts the ratios of docs/memory.md's generated table."""
    table = (ROOT / "docs" / "memory.md").read_text().split("<!-- memory_truth: begin -->", 1)[1]
    table = table.split("<!-- memory_truth: end -->", 1)[0]
    rows = [ln.split("|")[1:-1] for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| spec")]
    ratios = [(float(r[3]), float(r[6]), float(r[9])) for r in rows]
    n = len(ratios)
    saved = sum(abs(a - 1) <= 0.03 for a, _, _ in ratios)
    inference = sum(abs(b - 1) <= 0.10 for _, b, _ in ratios)
    training = sum(abs(c - 1) <= 0.10 for _, _, c in ratios)
    text = " ".join((ROOT / "README.md").read_text().split())
    assert (f"saved activations within 3% on {saved} of {n} specs, the inference peak within 10% on {inference} "
            f"of {n} and the training-step peak within 10% on {training} of {n}") in text


def test_readme_checkpoint_plan_is_the_planner_output() -> None:
    """The ViT-B/16 batch-32 plan the README quotes is what the planner chooses (cost only)."""
    import archlang
    from archlang.cost.plan import plan_checkpoints

    rep = archlang.cost(ROOT / "specs" / "vit_b16.arch", batch=32, train=True)
    plan = plan_checkpoints(rep, int(0.6 * rep.peak_training_bytes()[0]))
    assert plan.fits
    text = " ".join((ROOT / "README.md").read_text().split())
    assert (f"checkpoints `{plan.blocks[0]}`-`{plan.blocks[-1]}` ({100 * plan.recompute_share:.1f}% more FLOPs per step)"
            in text)
    assert list(plan.blocks) == [f"blocks.{i}" for i in range(len(plan.blocks))]
