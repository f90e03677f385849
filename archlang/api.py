"""The Python API: ``archlang.parse``, ``archlang.check`` and friends.

Takes: a spec path or source text, an optional arch name and parameter overrides as
keyword arguments. Produces: ASTs, diagnostics and IR graphs. Heavy stages (torch, sympy,
graphviz) are imported only by the functions that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from archlang.check import CheckResult, Program, check_spec, load_source
from archlang.check.elaborate import Elaborator, Frame, show
from archlang.diagnostics import Diagnostic, render_text
from archlang.ir.graph import Graph
from archlang.ir.types import FLOAT_DTYPES
from archlang.syntax import ast as A

if TYPE_CHECKING:
    from archlang.render import Diagram


class SpecError(Exception):
    """A spec failed to parse or check; ``.diagnostics`` holds every problem found."""

    def __init__(self, diagnostics: list[Diagnostic], text: str):
        super().__init__(text)
        self.diagnostics = diagnostics


def parse(spec: str | Path) -> A.Module:
    """Parse a spec (a path, or source text) into its AST; raise :class:`SpecError` on syntax errors."""
    prog = load_source(spec)
    if not prog.ok or prog.main is None:
        raise SpecError(prog.diags, render_text(prog.diags, prog.sources))
    return prog.main


def check(spec: str | Path, arch: str | None = None, **params: Any) -> list[Diagnostic]:
    """Check one arch of a spec and return its diagnostics (empty when clean, notes aside)."""
    return check_spec(spec, arch, params).diagnostics


def graph(spec: str | Path | Program, arch: str | None = None, **params: Any) -> Graph:
    """Elaborate one arch to its IR graph; raise :class:`SpecError` when it does not check."""
    r: CheckResult = check_spec(spec, arch, params)
    if r.graph is None:
        errors = [d for d in r.diagnostics if d.is_error]
        raise SpecError(errors, render_text(errors, r.program.sources))
    return r.graph


def cost(spec: str | Path, arch: str | None = None, *, batch: int = 1, dtype: str = "float32", train: bool = False,
         sizes: dict[str, int] | None = None, device: str = "cpu", inference: bool = False, as_written: bool = False,
         **params: Any):
    """The cost report of one arch, computed from the IR without torch.

    ``.params``, ``.trainable_params``, ``.flops``, ``.activation_bytes``, ``.attention_bytes``,
    ``.nodes`` (per node), ``.breakdown(depth)``, ``.formula(figure)`` (sympy), ``.to_json()``.
    ``sizes`` gives free sizes other than the batch (``{"S": 128}``); ``device`` (``"cpu"`` or
    ``"cuda"``) picks the saved-tensor and optimizer rules of that device (docs/memory.md);
    ``inference=True`` costs the inference build (``build(..., inference=True)``), whose linear
    layers also hold blocked copies of their weights (``.packed_bytes``). The report is of the
    model ``build`` makes, which computes no rows that no output reads (a ViT's last block runs
    on the class token alone: :mod:`archlang.check.rows`); ``as_written=True`` counts every row
    the spec writes, as timm's models compute them and papers count them.
    """
    from archlang.cost import cost_graph

    return cost_graph(graph(spec, arch, **params), batch=batch, dtype=dtype, train=train, sizes=sizes,
                      device=device, inference_build=inference, as_written=as_written)


def render(spec: str | Path, arch: str | None = None, *, depth: int | None = None, cost: bool | str = False,
           collapse: bool = True, **params: Any) -> Diagram:
    """The architecture diagram of one arch, drawn from its IR (torch is never imported).

    Returns a :class:`~archlang.render.Diagram`: ``.dot`` (the DOT source), ``.save(path)``
    (.svg, .png, .pdf or .dot, by suffix; needs Graphviz's ``dot`` except for .dot) and
    ``_repr_svg_()`` for notebooks. ``depth`` counts the levels drawn open (default: the
    deepest that fits one screen); ``cost=True`` colours nodes by their share of FLOPs
    (``"memory"`` or ``"params"`` for those) and annotates params; ``collapse=False`` draws
    every instance of repeated blocks.
    """
    from archlang.render import render_graph

    return render_graph(graph(spec, arch, **params), depth, cost=cost, collapse=collapse)


class BudgetError(SpecError):
    """The estimated memory of a model exceeds ``max_memory``; nothing was allocated."""


DTYPES = tuple(FLOAT_DTYPES)


def available_memory() -> int | None:
    """Bytes of memory this machine can give a new model now (Linux ``MemAvailable``, else
    the free physical pages), or ``None`` when the system does not say."""
    import os

    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def budget_bytes(max_memory: int | str | None) -> int | None:
    """The budget in bytes: ``"auto"`` is the memory available now, ``None`` or ``"off"`` is no
    budget, an int is bytes, a string needs a unit (``"16GiB"``, ``"512MB"``)."""
    if max_memory is None or (isinstance(max_memory, str) and max_memory.strip().lower() in ("off", "none")):
        return None
    if isinstance(max_memory, str) and max_memory.strip().lower() == "auto":
        return available_memory()
    if isinstance(max_memory, bool) or not isinstance(max_memory, int | str):
        raise ValueError(f"max_memory: expected bytes (int) or a size such as \"16GiB\", got {max_memory!r}")
    if isinstance(max_memory, int):
        if max_memory < 1:
            raise ValueError(f"max_memory: {max_memory} bytes is no budget; give at least one byte or \"off\"")
        return max_memory
    from archlang.units import parse_bytes, size_error

    n = parse_bytes(max_memory)
    if n is None:
        raise ValueError(f"max_memory: {size_error(max_memory)}")
    return n


def _check_common(batch: int, dtype: str) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer of at least 1, got {batch!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype is one of {', '.join(DTYPES)}, not {dtype!r}")


def _check_budget(g: Graph, max_memory: int | str | None = "auto", *, batch: int = 1, train: bool = False,
                  dtype: str = "float32", sources=None, inference: bool = False, as_written: bool = False):
    """Raise :class:`BudgetError` (E0901, naming the node and its formula) when the estimated
    peak of ``g`` (``inference``: of its inference build; ``as_written``: every row computed,
    ``keep_dead_rows``) exceeds ``max_memory`` (see
    :func:`budget_bytes`); nothing is allocated. Returns the cost report it computed, or
    ``None`` when there is no budget to check."""
    _check_common(batch, dtype)
    limit = budget_bytes(max_memory)
    if limit is None:
        return None
    from archlang.cost import cost_graph
    from archlang.cost.report import budget_diagnostic

    rep = cost_graph(g, batch=batch, train=train, dtype=dtype, inference_build=inference, as_written=as_written)
    diag = budget_diagnostic(rep, limit)
    if diag is None:
        return rep
    if max_memory == "auto":
        diag.help = (f"{diag.help}; the default budget is the memory available now ({_human(limit)}): "
                     "pass max_memory (\"64GiB\", or \"off\" for none) to change it")
    from archlang.diagnostics import Sources

    raise BudgetError([diag], render_text([diag], sources or Sources()))


def _plan_budget(g: Graph, max_memory: int | str | None = "auto", *, batch: int = 1, train: bool = False,
                 dtype: str = "float32", sources=None, inference: bool = False, as_written: bool = False):
    """The budget check of a build (``as_written``: one that keeps every row): for inference :func:`_check_budget`; for a training step
    the activation-checkpoint plan (:mod:`archlang.cost.plan`) that fits ``max_memory`` with the
    least recomputation, the spec's ``checkpoint`` statements included. Returns ``(report,
    plan)`` (``None`` for what was not computed); raises :class:`BudgetError` (E0901, with the
    largest batch that fits with every block checkpointed) when no plan fits."""
    if not train:
        return _check_budget(g, max_memory, batch=batch, dtype=dtype, sources=sources, inference=inference,
                             as_written=as_written), None
    _check_common(batch, dtype)
    limit = budget_bytes(max_memory)
    from archlang.cost import cost_graph
    from archlang.cost.plan import plan_checkpoints, resolve

    rep = cost_graph(g, batch=batch, train=True, dtype=dtype, as_written=as_written)
    plan = plan_checkpoints(rep, limit, resolve(g))
    if plan.fits:
        return rep, plan
    assert limit is not None
    diag = _no_plan_diagnostic(g, rep, plan, limit, max_memory, as_written=as_written)
    raise BudgetError([diag], render_text([diag], sources or _sources()))


def _sources():
    from archlang.diagnostics import Sources

    return Sources()


def _no_plan_diagnostic(g: Graph, rep, plan, limit: int, max_memory: int | str | None, *,
                        as_written: bool = False) -> Diagnostic:
    """E0901 for a training step that no checkpoint plan fits: the budget diagnostic of the
    unplanned step, what checkpointing every block still needs, and the batch that would fit
    (costed as the build runs: ``as_written``, every row kept, or with the dead rows pruned)."""
    from archlang.cost.plan import fitting_batch
    from archlang.cost.report import budget_diagnostic
    from archlang.diagnostics import Label

    diag = budget_diagnostic(rep, limit) or Diagnostic(
        "E0901", f"a training step needs ~{_human(plan.peak_after)} at batch {rep.batch} ({rep.dtype}) with the "
                 f"spec's checkpointed blocks; over the budget of {_human(limit)}", None)
    if plan.candidates:
        diag.notes.append(Label(f"activation checkpointing of all {plan.candidates} block instances still needs "
                                f"~{_human(plan.peak_after)}"))
    else:
        diag.notes.append(Label("no repeated block instances to activation-checkpoint"))
    fit = (fitting_batch(g, limit, rep.batch, rep.dtype, rep.sizes, as_written=as_written)
           if plan.candidates else None)
    if fit is not None:
        diag.help = (f"batch {fit} fits with every block instance checkpointed (--batch {fit}); or use --dtype "
                     "bfloat16, or raise --max-memory")
    else:
        diag.help = ("not even batch 1 fits with every block instance checkpointed: use --dtype bfloat16, a "
                     "smaller model, or raise --max-memory")
    if max_memory == "auto":
        diag.help += f"; the default budget is the memory available now ({_human(limit)})"
    return diag


def _human(n: int) -> str:
    from archlang.units import human_bytes

    return human_bytes(n)


def build(spec: str | Path | Program, arch: str | None = None, *, compile: bool = False,
          max_memory: int | str | None = "auto", batch: int = 1, train: bool = False, dtype: str = "float32",
          inference: bool = False, attention: str = "auto", compile_regions: bool = False, kernels: str = "auto",
          keep_dead_rows: bool = False, **params: Any):
    """Build the PyTorch model of one arch: ``archlang.build("specs/swin_t.arch", img=384)``.

    The module is executed from the same generated source that ``archc build`` writes; it
    carries ``arch_name`` and ``arch_params``. ``compile=True`` wraps it in
    ``torch.compile(fullgraph=True)``. ``dtype`` ("float32", "bfloat16", "float16") is the
    dtype the model is built in. Before anything is allocated, a model whose estimated peak
    memory at ``batch`` (inference, or a training step with ``train=True``), counting
    parameters, buffers, activations and attention in ``dtype`` (and for ``inference=True`` the
    blocked copies of the linear weights that oneDNN reads), exceeds ``max_memory`` is
    refused with :class:`BudgetError`: by default the budget is the memory available now;
    give bytes or a size ("16GiB"), or ``None``/"off" for no budget.

    ``inference=True`` gives the inference build (:mod:`archlang.lower.inference`), in eval
    mode: BatchNorm folded into the conv before it, LoRA merged, dropout removed, attention
    biases precomputed; it loads the default build's state_dict (folding it as it loads).

    ``attention`` lowers every ``attend``: "sdpa" (``F.scaled_dot_product_attention``), "flex"
    (FlexAttention, fused under ``torch.compile``) or "auto": SDPA, except FlexAttention for
    an ``attend`` whose position mask skips at least 75% of its blocks when ``compile=True``
    (:mod:`archlang.ops.attention`).

    ``compile_regions=True`` marks the forward of the outermost repeated block classes whose
    instances can share code ``@torch.compiler.nested_compile_region``, so that
    ``torch.compile`` compiles one instance and reuses it for those alike
    (:func:`archlang.lower.codegen.compile_regions`): shorter compile times, no fusion across
    block boundaries; eager runs compute the same.

    ``kernels`` "auto" (the default) lets the linear layers call oneDNN's matmul or
    ``F.linear``'s GEMM on the CPU where no gradient is wanted, whichever they measure faster
    at each shape on their first call there (oneDNN 1.2-1.6x faster in float32 on one 2-core
    machine, 0.86-1.55x on an AMX one: ``benchmarks/linear_kernels.py``), also under
    ``torch.compile`` on AVX2 CPUs (through the op ``archlang::onednn_linear``; on AVX-512 ones
    Inductor's GEMMs measured faster: ``_COMPILED_ONEDNN_CAPABILITIES``) (the same parameters,
    hooks and outputs, to float rounding; training, autocast, other devices and export run
    ``F.linear``: :class:`archlang.lower.inference_runtime.OneDnnLinear`); "torch" keeps plain
    ``nn.Linear`` layers (for tools that match that class, such as ``quantize_dynamic``). The
    inference build always uses the oneDNN layers. In a CNN "auto" also keeps the
    convolutions' weights channels-last (:meth:`archlang.ir.graph.Graph.prefers_channels_last`).

    Rows that no output reads are not computed (:mod:`archlang.check.rows`): in a ViT, DeiT or
    AST only the class (and distillation) tokens reach the head, so the last block attends with
    those queries alone (``PrefixAttention``, the same weights) and runs its MLP on them; the
    outputs and gradients are those of the whole computation, and ``cost`` counts what runs.
    ``keep_dead_rows=True`` computes every row, as the spec writes it and timm's models do (for
    hooks that read the last block's other tokens).

    With ``train=True`` the model is built with the activation-checkpoint plan that fits the
    budget with the least recomputation (:func:`archlang.cost.plan.plan_checkpoints`; the
    spec's ``checkpoint "..."`` statements are always in it): ``model.checkpoint_plan`` names
    the blocks, ``model.archlang_checkpoint_plan`` is the plan with its figures, and
    ``model.set_grad_checkpointing(True / False / names)`` switches at run time. E0901
    (:class:`BudgetError`) when even checkpointing every block does not fit; it names the
    largest batch that would.
    """
    from archlang.lower.build import instantiate

    _check_common(batch, dtype)
    prog = spec if isinstance(spec, Program) else load_source(spec)
    g = graph(prog, arch, **params)
    _, plan = _plan_budget(g, max_memory, batch=batch, train=train, dtype=dtype, sources=prog.sources,
                           inference=inference, as_written=keep_dead_rows)
    from archlang.lower.codegen import compile_regions as regions
    from archlang.lower.codegen import dead_rows
    from archlang.ops.attention import attention_lowering

    with attention_lowering(attention, compiled=compile), regions(compile_regions), dead_rows(not keep_dead_rows):
        model, _ = instantiate(planned_graph(g, plan), dtype=dtype, kernels=kernels)
    model.archlang_graph = g  # the spec's IR (what `save` checks); the plan is in the code
    model.archlang_checkpoint_plan = plan
    model.archlang_program = prog  # the sources `save` stores, as they were read for this build
    model.archlang_spec_text = prog.sources.get(prog.main_file) or _spec_text(spec)
    if inference:  # eval-only: BatchNorm folded, LoRA merged, dropout gone (archlang.lower.inference)
        from archlang.lower.inference import fold

        fold(model, g)
    if compile:
        import torch

        return torch.compile(model, fullgraph=True)
    return model


def planned_graph(g: Graph, plan) -> Graph:
    """``g`` with a checkpoint plan's blocks as its ``checkpoint`` selectors (the generated code
    checkpoints them by default); ``g`` itself without a plan or when the plan adds nothing."""
    if plan is None or set(plan.blocks) == set(plan.declared):
        return g
    return g.model_copy(update={"checkpoint": (*g.checkpoint, *(b for b in plan.blocks if b not in plan.declared))})


def _spec_text(spec: str | Path) -> str:
    p = Path(spec) if not (isinstance(spec, str) and ("\n" in spec or "{" in spec)) else None
    if p is not None and p.is_file():
        return p.read_text()
    return str(spec)


def save(model: Any, path: str | Path) -> Path:
    """Write the model's weights with its spec, parameters and IR to a .safetensors file."""
    from archlang.lower.io import save as _save

    folds = getattr(getattr(model, "_orig_mod", model), "inference_folds", None)
    if folds and (folds["conv_bn"] or folds["lora"]):  # its state_dict is not the spec's
        raise ValueError("this is an inference build (BatchNorm or LoRA folded into the weights), which "
                         "`load` could not rebuild: save the default model, and load it with inference=True")
    return _save(model, path)


def load(path: str | Path, *, inference: bool = False, **kwargs: Any) -> Any:
    """Rebuild a model saved by :func:`save` from its spec (parsed and checked again, never
    from code or names in the file), check it against the file, and load its weights;
    ``max_memory`` as for :func:`build`; ``inference=True`` then folds it (see :func:`build`)."""
    from archlang.lower.io import load as _load

    model = _load(path, **kwargs)
    if inference:
        from archlang.lower.inference import fold

        fold(model)
    return model


def load_timm_weights(model: Any, timm_state_dict: Any) -> Any:
    """Load a timm state_dict strictly; raises with every unmatched or mismatched key."""
    from archlang.lower.weights import load_timm_weights as _load

    return _load(model, timm_state_dict)


def load_torch_transformer(model: Any, transformer: Any) -> Any:
    """Load a ``torch.nn.Transformer`` (or its state_dict) into a generated encoder-decoder."""
    from archlang.lower.weights import load_torch_transformer as _load

    return _load(model, transformer)


def merge_adapters(model: Any) -> Any:
    """Fold LoRA updates into the base weights and remove the adapters (in place)."""
    from archlang.lower.adapters import merge_adapters as _merge

    return _merge(model)


def param_groups(model: Any, weight_decay: float = 0.05) -> list[dict]:
    """AdamW parameter groups of the trainable parameters, with timm's no-decay rules."""
    from archlang.lower.adapters import param_groups as _groups

    return _groups(model, weight_decay)


def arch_signatures(prog: Program, *, bodies: bool = False) -> list[tuple]:
    """Each arch of the main file with its parameters and effective defaults; with
    ``bodies=True`` also the source lines of a variant's body (its freeze/adapt statements),
    so that two variants of one base do not look identical."""
    out: list[tuple] = []
    for a in prog.main_archs():
        el = Elaborator(prog)
        chain = el.alias_chain(a.name)
        if not chain:
            out.append((a.name, ["<error>"], []) if bodies else (a.name, ["<error>"]))
            continue
        base = chain[-1]
        assert isinstance(base, A.ArchDef)
        fr = Frame(env={}, path="")
        params = el.bind_arch_params(base, chain, [], fr)
        shown = []
        base_defaults = dict(_defaults(prog, base)) if isinstance(a, A.ArchAlias) else {}
        for p in base.params:
            b = fr.env.get(p.name)
            val = show(b.value) if b is not None else "?"
            if isinstance(a, A.ArchAlias):
                if base_defaults.get(p.name) != val:
                    shown.append(f"{p.name} = {val}")
            else:
                shown.append(f"{p.name}: {p.annot} = {val}")
        label = a.name if isinstance(a, A.ArchDef) else f"{a.name} = {base.name}"
        shown = shown if params is not None else [*shown, "<error>"]
        if not bodies:
            out.append((label, shown))
            continue
        body: list[str] = []
        for alias in (c for c in chain if isinstance(c, A.ArchAlias)):
            for st in alias.body:
                line = prog.sources.line(st.span.file, st.span.line) or ""
                text = line[st.span.col - 1:] if st.span.end_line != st.span.line else \
                    line[st.span.col - 1:st.span.end_col - 1]
                body.append(text.strip() + ("" if alias is a else f"   (from {alias.name})"))
        out.append((label, shown, body))
    return out


def _defaults(prog: Program, base: A.ArchDef) -> list[tuple[str, str]]:
    el = Elaborator(prog)
    fr = Frame(env={}, path="")
    el.bind_arch_params(base, [base], [], fr)
    return [(p.name, show(fr.env[p.name].value)) for p in base.params if p.name in fr.env]
