"""Run fuzz inputs through check, cost and render (DOT), in a watched worker process.

Every input is checked for every arch of its file; each arch that checks clean is costed
(``cost_graph(g).to_json()``) and drawn (``render_graph(g).dot``). A *finding* is an exception
that is not a diagnostic (or a diagnostic with an unknown code or a span outside its file),
an input taking over :data:`SLOW_S` CPU seconds (plus :data:`PER_NODE_S` per node of the
graphs that check) for all its stages, or one still running after
the hard timeout (the worker is then killed and restarted; its stack, dumped by
``faulthandler`` just before, says where it hung). Findings are grouped by a signature
(stage, exception type, innermost ``archlang`` frame) and each group keeps one reproducer,
shrunk by deleting lines and then tokens while the same signature persists.

The worker runs in ``specs/``, so ``use swin_t`` in a mutant loaded from text finds its
sibling file (``load(name, text=...)`` resolves ``use`` from the working directory); it skips
cost and render for a graph identical to one already done.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import random
import signal
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .generate import program
from .mutate import Mutator, join, significant, tokenize

ROOT = Path(__file__).resolve().parent.parent.parent
SPECS = ROOT / "specs"
STDLIB = ROOT / "archlang" / "stdlib" / "std"
SLOW_S = 2.0  # the promise: every input ends within this many CPU seconds of the worker...
PER_NODE_S = 1.0e-3  # ...plus this per node of the graphs that check: a valid spec of 10k nodes (a mutant
#                      that sets depth = 1000) is work in proportion to its size, not bad input. Measured
#                      CPU per node of vit_digits at depth 125..1000 (3k..24k nodes): 0.31 ms on one 2-core
#                      machine, 0.62 ms on a slower one (a 24k-node mutant: 14.8 CPU s in CI), so the bound
#                      is 1.6x the slower machine's rate: still far under what a superlinear pass would take.
#                      CPU time, not wall time: on a shared 2-core machine the wall time of the same input
#                      was 1.6-2x its CPU time
HARD_S = 60.0  # wall seconds: the worker is killed after this (a hang; a valid 24k-node mutant takes 15-30 s
#               of wall time on a loaded 2-core machine)
MEMORY_LIMIT = 6 * 2**30  # address space of the worker: a runaway allocation is a MemoryError, not an OOM kill

# Small archs that call every block of a standard module; a mutant of the module is
# checked as one file: the mutated module's text followed by its driver.
DRIVERS = {
    "nn": """
arch nn_driver(d: int = 16, heads: int = 2) {
  in x: [B, 6, d]
  in m: [B, 4, d]
  x = a: mlp(x, hidden = 2 * d)
  x = b: transformer_block(x, heads = heads, mlp_ratio = 2.0, causal = true)
  x = c: encoder_layer(x, heads = heads, ff = 32)
  x = e: decoder_layer(x, m, heads = heads, ff = 32)
  x = f: prenorm_layer(x, heads = heads, ff = 32)
  x = g: gqa_attention(x, heads = 4, kv_heads = 2, rope_fraction = 0.5, window = 3)
  x = h: llama_layer(x, heads = heads, ffn = 24)
  x = s: swiglu(x, hidden = 24) + ge: geglu(x, hidden = 24, approximate = "tanh")
  x = k: mha(x, heads = heads, causal = true)
  out y = q: cross_mha(x, m, heads = heads)
}
""",
    "vision": """
arch vision_driver(img: int = 16, d: int = 8) {
  in x: [B, 3, img, img]
  t = pe: patch_embed(x, patch = 4, dim = d)
  t = mix: mixer_block(t, tokens_hidden = 8, channels_hidden = 16)
  g = grid: patch_embed_grid(x, patch = 2, dim = d)
  g = sw: swin_block(g, heads = 2, window = 4, shift = 2)
  g = sw2: swinv2_block(g, heads = 2, window = 4)
  g = pm: patch_merge(g)
  g = pm2: patch_merge_v2(g)
  out y = mean(g, dim = [1, 2])
  out z = mean(t, dim = [1])
}
""",
    "attention": """
arch attention_driver(d: int = 16, heads: int = 2) {
  in x: [B, 9, d]
  in g: [B, 4, 4, d]
  x = a: sliding_window_mha(x, heads = heads, window = 3)
  x = b: alibi_mha(x, heads = heads)
  x = c: talking_heads_mha(x, heads = heads)
  t = e: class_mha(x, heads = heads)
  x = f: sr_mha(x, heads = heads, grid = [3, 3], sr = 3)
  x = r: rel_pos_mha(x, heads = heads)
  x = p: pooled_mha(x, heads = heads, grid = [3, 3])
  g = w: window_mha(g, heads = heads, window = 2, shift = 1)
  g = l: local_mha(g, heads = heads, kernel = 3)
  g = w2: window_mha_v2(g, heads = heads, window = 2, shift = 1, cpb_hidden = 16)
  out y = x
  out z = g
  out u = t
}
""",
    "cnn": """
arch cnn_driver(c: int = 8) {
  in x: [B, 3, 32, 32]
  x = stem: resnet_stem(x, width = c)
  x = b1: basic_block(x, planes = c)
  x = b2: bottleneck(x, planes = c, stride = 2)
  out y = mean(x, dim = [2, 3])
}
""",
}


# ----------------------------------------------------------------------------- inputs


@dataclass
class Case:
    label: str  # e.g. "mutant 17 of vit_digits.arch (int_edge, name_swap)"
    text: str
    source: str  # the file name given to ``load``
    deep: bool = False  # also draw every level, uncollapsed, with dropout and cost colours (small programs)


@dataclass
class Seed:
    """A file whose mutants are fuzzed: ``prefix`` is mutated, ``suffix`` (a driver) is not."""

    name: str
    prefix: str
    suffix: str
    source: str
    weight: float


# CPU seconds to check, cost and draw every arch of each shipped file (median of 3 interleaved
# runs after a warm-up, time.process_time around run_case, in specs/ as the worker runs, 2-core
# machine); mutants of the cheap files are drawn more often (only the ratios matter). A file
# missing here is estimated from its length.
COST_HINT = {
    "ast.arch": 0.12, "beit.arch": 0.54, "bert.arch": 0.22, "cait.arch": 1.35, "conformer.arch": 0.72,
    "cyclemlp_b1.arch": 0.58, "deit_s_distilled.arch": 0.16, "gmlp_s16.arch": 0.42, "gpt.arch": 0.14,
    "igpt.arch": 0.30, "llama.arch": 0.90, "llava.arch": 1.13, "mistral.arch": 0.38, "mixer_b16.arch": 0.32,
    "mvitv2_t.arch": 0.18, "nonlocal_resnet50.arch": 0.24, "resmlp_12.arch": 0.35, "resnet50.arch": 0.46,
    "s2mlp.arch": 0.08, "sasa_resnet50.arch": 0.21, "swin_t.arch": 0.32, "swin_t_lora.arch": 0.14,
    "swinv2_t.arch": 0.21, "transformer.arch": 0.05, "unit.arch": 0.09, "vit_b16.arch": 0.49,
    "vit_digits.arch": 0.03, "vit_s_r26_s32.arch": 0.14,
    "std/attention.arch": 0.12, "std/nn.arch": 0.06, "std/vision.arch": 0.03, "std/cnn.arch": 0.02,
}


def seeds(skew: float = 1.0) -> list[Seed]:
    """The shipped specs and standard modules, weighted by ``1 / cost ** skew`` (``skew`` 0: uniform)."""
    out = []
    for p in sorted(SPECS.glob("*.arch")):
        text = p.read_text()
        cost = COST_HINT.get(p.name, len(text) / 3000)
        out.append(Seed(p.name, text, "", str(p), cost ** -skew))
    for p in sorted(STDLIB.glob("*.arch")):
        text = p.read_text()
        cost = COST_HINT.get(f"std/{p.name}", len(text) / 3000)
        out.append(Seed(f"std/{p.name}", text, DRIVERS.get(p.stem, ""), str(SPECS / f"std_{p.stem}_mutant.arch"),
                        cost ** -skew))
    return out


def mutants(seed: int, n: int, skew: float = 1.0) -> Iterator[Case]:
    """``n`` distinct mutants (no text twice), deterministic from ``seed``; see :func:`seeds` for ``skew``."""
    rng = random.Random(seed)
    pool = seeds(skew)
    texts = [s.prefix for s in pool]
    mutators = {s.name: Mutator(s.prefix, [t for t in texts if t != s.prefix]) for s in pool}
    seen: set[str] = {s.prefix for s in pool}
    weights = [s.weight for s in pool]
    made, tries = 0, 0
    while made < n and tries < n * 20:
        tries += 1
        s = rng.choices(pool, weights)[0]
        text, edits = mutators[s.name].mutant(rng)
        if text in seen:
            continue
        seen.add(text)
        made += 1
        yield Case(f"mutant {made} of {s.name} ({', '.join(edits)})", text + s.suffix, s.source)


def programs(seed: int, n: int, mutate: float = 0.25) -> Iterator[Case]:
    """``n`` generated programs; a fraction ``mutate`` of them get one or more token edits."""
    rng = random.Random(seed ^ 0x5EED)
    for k in range(n):
        wild = rng.choice((0.0, 0.0, 0.0, 0.1, 0.3))  # some programs get ill-typed expressions
        text = program(random.Random(rng.getrandbits(64)), wild)
        label = f"program {k + 1}" + (f" (wild {wild:g})" if wild else "")
        if rng.random() < mutate:
            text, edits = Mutator(text).mutant(rng)
            label += f" ({', '.join(edits)})"
        yield Case(label, text, str(SPECS / f"generated_{k + 1}.arch"), deep=True)


# ----------------------------------------------------------------------------- one input (in the worker)


@dataclass
class Outcome:
    status: str  # clean (every arch checks), diagnostics, exception, slow, hang
    seconds: float  # wall time
    stage: str = ""  # where: load, check <arch>, cost <arch>, render <arch>, diagnostics
    error: str = ""  # "TypeError: ..." for an exception
    tb: str = ""  # the traceback's tail (or the hung stack)
    where: str = ""  # innermost archlang frame, file:function
    archs: int = 0
    clean: int = 0
    drawn: int = 0  # graphs costed and drawn (not skipped as identical)
    refused: int = 0  # drawings refused with a RenderError (too many nodes)
    nodes: int = 0  # nodes of the graphs that checked (their time allowance)
    times: dict[str, float] = field(default_factory=dict)
    cpu: float = 0.0  # CPU seconds of the worker for this input (what SLOW_S bounds)

    @property
    def finding(self) -> bool:
        return self.status in ("exception", "slow", "hang")

    @property
    def signature(self) -> str:
        if self.status == "slow":
            return f"slow: {max(self.times, key=self.times.__getitem__) if self.times else self.stage}"
        stage = self.stage.split(" ")[0]
        return f"{self.status} in {stage}: {self.error.split(':')[0]} at {self.where}"


def _innermost(tb_entries: list[traceback.FrameSummary]) -> str:
    for fr in reversed(tb_entries):
        if "/archlang/" in fr.filename:
            return f"{fr.filename.split('/archlang/', 1)[1]}:{fr.name}"
    return f"{tb_entries[-1].filename.rsplit('/', 1)[-1]}:{tb_entries[-1].name}" if tb_entries else "?"


class _State:
    """What the worker keeps between inputs: the graphs already costed and drawn.

    (The parser keeps an LRU of ASTs, so the standard library is parsed once per worker.)
    """

    def __init__(self) -> None:
        self.done_graphs: set[str] = set()


def _line_count(sources, file: str) -> int:
    text = sources.get(file) if hasattr(sources, "get") else None
    if isinstance(text, str):
        return text.count("\n") + 1
    n = 0
    while sources.line(file, n + 1) is not None:
        n += 1
    return n


class BadDiagnostic(Exception):
    """A diagnostic with an uncatalogued code, an empty message or a span outside its file."""


def _validate(diags, sources) -> None:
    from archlang.diagnostics import CODES

    for d in diags:
        if d.code not in CODES or not d.message:
            raise BadDiagnostic(f"{d.code} {d.message!r}")
        for sp in [d.span, *(n.span for n in d.notes)]:
            if sp is not None and not 1 <= sp.line <= _line_count(sources, sp.file):
                raise BadDiagnostic(f"{d.code} {d.message}: span {sp} is outside the file")


def run_case(case: Case, state: _State | None = None) -> Outcome:
    """Check, cost and draw every arch of ``case``; never raises."""
    from archlang.check import check_spec, load
    from archlang.cost import cost_graph
    from archlang.diagnostics import render_json, render_text
    from archlang.render import render_graph

    try:
        from archlang.render import RenderError
    except ImportError:  # pragma: no cover - older render
        RenderError = ()  # type: ignore[assignment]

    state = state or _State()
    t0, c0 = time.perf_counter(), time.process_time()
    out = Outcome("diagnostics", 0.0)
    stage = "load"

    def mark(name: str, since: float) -> float:
        now = time.perf_counter()
        out.times[name] = out.times.get(name, 0.0) + now - since
        return now

    try:
        t = time.perf_counter()
        prog = load(case.source, text=case.text)
        _validate(prog.diags, prog.sources)
        t = mark("load", t)
        names = list(dict.fromkeys(a.name for a in prog.main_archs()))
        out.archs = len(names)
        all_diags = list(prog.diags)
        for arch in names:
            stage = f"check {arch}"
            r = check_spec(prog, arch, [])
            _validate(r.diagnostics, prog.sources)
            all_diags += r.diagnostics
            t = mark("check", t)
            if not r.ok:
                continue
            out.clean += 1
            g = r.graph
            out.nodes += len(g.nodes)
            key = hashlib.sha1(g.model_dump_json().encode()).hexdigest()
            t = mark("check", t)
            if key in state.done_graphs:
                continue
            state.done_graphs.add(key)
            out.drawn += 1
            stage = f"cost {arch}"
            cost_graph(g).to_json()
            t = mark("cost", t)
            stage = f"render {arch}"
            try:
                assert render_graph(g).dot.startswith("digraph")
            except RenderError:
                out.refused += 1  # too many nodes: a clean error
            if case.deep and len(g.nodes) <= 400:  # one more drawing, with other options
                k = len(state.done_graphs)
                render_graph(g, 2 + k % 4, collapse=k % 2 == 0, dropout=k % 3 == 0,
                             cost=("flops", "memory", "params", False)[k % 4], max_nodes=None)
            t = mark("render", t)
        stage = "diagnostics"
        render_text(all_diags, prog.sources)
        render_json(all_diags)
        mark("diagnostics", t)
        if out.archs and out.clean == out.archs and prog.ok:
            out.status = "clean"
    except (Exception, RecursionError) as e:
        entries = traceback.extract_tb(e.__traceback__)
        out.status = "exception"
        out.stage = stage
        out.error = f"{type(e).__name__}: {str(e)[:300]}"
        out.where = _innermost(entries)
        out.tb = "".join(traceback.format_list(entries[-6:])) + out.error
    out.seconds = time.perf_counter() - t0
    out.cpu = time.process_time() - c0
    if out.status != "exception" and out.cpu > SLOW_S + PER_NODE_S * out.nodes:
        out.status = "slow"
        out.stage = stage
        out.error = (f"took {out.cpu:.2f} CPU s for {out.nodes:,} nodes ({out.seconds:.2f} s wall: "
                     + ", ".join(f"{k} {v:.2f} s" for k, v in out.times.items()) + ")")
    return out


# ----------------------------------------------------------------------------- the worker process


def _worker(conn, dump_path: str) -> None:
    import faulthandler
    import resource

    os.chdir(SPECS)
    os.environ.setdefault("ARCHLANG_CACHE", "off")
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    state = _State()
    with open(dump_path, "w") as dump:
        while True:
            msg = conn.recv()
            if msg is None:
                return
            case, hard = msg
            dump.seek(0)
            dump.truncate()
            faulthandler.dump_traceback_later(max(hard - 1.0, 0.5), exit=False, file=dump)
            try:
                res = run_case(case, state)
            finally:
                faulthandler.cancel_dump_traceback_later()
            conn.send(res)


def _death(code: int | None) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    return "it exited"


class Worker:
    """One worker process; :meth:`run` kills and restarts it when an input hangs."""

    def __init__(self) -> None:
        # a fresh interpreter, not a fork: forking a process that has loaded torch (as pytest has by
        # the time this test runs in the full suite) copies its threads' locks and its huge address
        # space, and the children then crash or hit the RLIMIT_AS cap
        self._ctx = mp.get_context("spawn")
        fd, self.dump_path = tempfile.mkstemp(prefix="archlang-fuzz-", suffix=".txt")
        os.close(fd)
        self.proc = None
        self.conn = None
        self.restarts = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(target=_worker, args=(child, self.dump_path), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def run(self, case: Case, hard: float = HARD_S) -> Outcome:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        t0 = time.perf_counter()
        assert self.conn is not None and self.proc is not None
        self.conn.send((case, hard))
        if self.conn.poll(hard):
            try:
                return self.conn.recv()
            except EOFError:
                pass  # the worker died (killed for memory, or a crash in C)
        elapsed = time.perf_counter() - t0
        alive = self.proc.is_alive()
        if not alive:
            self.proc.join(1)
        code = self.proc.exitcode
        self.kill()
        stack = Path(self.dump_path).read_text(errors="replace") if os.path.exists(self.dump_path) else ""
        frames = [ln.strip() for ln in stack.splitlines() if ln.strip().startswith("File ")]
        where = next((f for f in frames if "/archlang/" in f), frames[0] if frames else "?")
        where = where.split("/archlang/", 1)[-1].replace('", line ', ":").replace(" in ", ":") if where != "?" else "?"
        status = "hang" if alive else "exception"
        error = f"still running after {elapsed:.0f} s" if alive else f"the worker died (exit code {code}: {_death(code)})"
        return Outcome(status, elapsed, stage="?", error=error, tb="\n".join(frames[:12]), where=where)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join(5)
            self.restarts += 1
        self.proc = None
        self.conn = None

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            assert self.conn is not None
            self.conn.send(None)
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
        self.proc = None
        if os.path.exists(self.dump_path):
            os.unlink(self.dump_path)


# ----------------------------------------------------------------------------- shrinking


def shrink(text: str, still_fails: Callable[[str], bool], budget: int = 200, deadline: float | None = None) -> str:
    """Delete chunks of lines, then of tokens, while ``still_fails``; at most ``budget`` tries."""
    tries = 0

    def passes(candidate: str) -> bool:
        nonlocal tries
        tries += 1
        return still_fails(candidate)

    def out_of_budget() -> bool:
        return tries >= budget or (deadline is not None and time.perf_counter() > deadline)

    def ddmin(units: list[str], sep: str) -> list[str]:
        n = max(1, len(units) // 2)
        while n >= 1 and not out_of_budget():
            i, changed = 0, False
            while i < len(units) and not out_of_budget():
                cand = units[:i] + units[i + n:]
                if cand and passes(sep.join(cand)):
                    units = cand
                    changed = True
                else:
                    i += n
            if not changed:
                n //= 2
        return units

    lines = ddmin(text.split("\n"), "\n")
    text = "\n".join(lines)
    toks = tokenize(text)
    sig = significant(toks)
    # tokens with the whitespace before them, so deleting one keeps the others apart
    units, start = [], 0
    for i in sig:
        units.append(join(toks[start:i + 1]))
        start = i + 1
    tail = join(toks[start:])
    units = ddmin(units, "")
    return "".join(units) + tail


# ----------------------------------------------------------------------------- a campaign


@dataclass
class Finding:
    signature: str
    case: Case
    outcome: Outcome
    count: int = 1
    reproducer: str = ""

    def report(self) -> str:
        o = self.outcome
        return (f"== {self.signature}  ({self.count} input(s); first: {self.case.label})\n"
                f"stage: {o.stage}\nerror: {o.error}\n--- reproducer (load as {Path(self.case.source).name!r} "
                f"from specs/) ---\n{self.reproducer or self.case.text}\n--- traceback tail ---\n{o.tb}\n")


@dataclass
class Stats:
    inputs: Counter = field(default_factory=Counter)  # kind -> count
    status: Counter = field(default_factory=Counter)  # (kind, status) -> count
    archs: Counter = field(default_factory=Counter)  # kind -> archs checked / clean / drawn
    seconds: Counter = field(default_factory=Counter)  # kind -> seconds
    stage_seconds: Counter = field(default_factory=Counter)
    slowest: list[tuple[float, str]] = field(default_factory=list)
    wall: float = 0.0


def campaign(seed: int, n_mutants: int, n_programs: int, *, skew: float = 1.0, shrink_budget: int = 150,
             shrink_seconds: float = 60.0, shrink_slow: bool = True, progress: Callable[[str], None] | None = None,
             on_finding: Callable[[Finding], None] | None = None) -> tuple[Stats, list[Finding]]:
    """Run ``n_mutants`` mutants and ``n_programs`` generated programs; return stats and findings.

    Each new finding is shrunk for at most ``shrink_budget`` runs and ``shrink_seconds``;
    ``shrink_slow=False`` keeps slow inputs whole (each try of those takes seconds).
    """
    stats = Stats()
    findings: dict[str, Finding] = {}
    worker = Worker()
    t_start = time.perf_counter()
    try:
        streams = [("mutant", mutants(seed, n_mutants, skew)), ("program", programs(seed, n_programs))]
        for kind, cases in streams:
            for k, case in enumerate(cases):
                o = worker.run(case)
                stats.inputs[kind] += 1
                stats.status[kind, o.status] += 1
                stats.archs[kind, "checked"] += o.archs
                stats.archs[kind, "clean"] += o.clean
                stats.archs[kind, "drawn"] += o.drawn
                stats.seconds[kind] += o.seconds
                for st, v in o.times.items():
                    stats.stage_seconds[st] += v
                stats.slowest = sorted([*stats.slowest, (o.seconds, case.label)], reverse=True)[:5]
                if o.finding:
                    f = findings.get(o.signature)
                    if f is not None:
                        f.count += 1
                        continue
                    f = findings[o.signature] = Finding(o.signature, case, o)
                    if shrink_slow or o.status == "exception":
                        f.reproducer = _shrink_finding(worker, f, shrink_budget, shrink_seconds)
                    if on_finding is not None:
                        on_finding(f)
                if progress is not None and (k + 1) % 250 == 0:
                    progress(f"{kind}s: {k + 1} ({time.perf_counter() - t_start:.0f} s, {len(findings)} findings)")
    finally:
        worker.close()
    stats.wall = time.perf_counter() - t_start
    return stats, list(findings.values())


def _shrink_finding(worker: Worker, f: Finding, budget: int, seconds: float) -> str:
    sig = f.signature
    slow = f.outcome.status in ("slow", "hang")
    hard = 4 * SLOW_S if slow else HARD_S
    if slow:
        budget = min(budget, 25)

    def still_fails(text: str) -> bool:
        o = worker.run(Case(f.case.label, text, f.case.source), hard)
        if slow:
            return o.status in ("slow", "hang")
        return o.signature == sig

    return shrink(f.case.text, still_fails, budget, time.perf_counter() + seconds)


def summary(stats: Stats, findings: list[Finding]) -> str:
    rows = [f"{'inputs':<10}{'count':>7}{'clean':>7}{'diags':>7}{'exc':>6}{'slow':>6}{'hang':>6}"
            f"{'archs':>7}{'clean':>7}{'drawn':>7}{'seconds':>9}{'per s':>8}"]
    for kind in ("mutant", "program"):
        n = stats.inputs[kind]
        sec = stats.seconds[kind]
        rows.append(f"{kind + 's':<10}{n:>7}{stats.status[kind, 'clean']:>7}{stats.status[kind, 'diagnostics']:>7}"
                    f"{stats.status[kind, 'exception']:>6}{stats.status[kind, 'slow']:>6}{stats.status[kind, 'hang']:>6}"
                    f"{stats.archs[kind, 'checked']:>7}{stats.archs[kind, 'clean']:>7}{stats.archs[kind, 'drawn']:>7}"
                    f"{sec:>9.1f}{(n / sec if sec else 0):>8.1f}")
    rows.append("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in stats.stage_seconds.most_common()))
    rows.append("slowest: " + "; ".join(f"{s:.2f} s {label}" for s, label in stats.slowest[:3]))
    rows.append(f"wall {stats.wall:.1f} s; {len(findings)} finding(s)")
    for f in findings:
        rows.append(f"  {f.count:>5}  {f.signature}")
    return "\n".join(rows)
