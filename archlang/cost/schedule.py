"""Peak memory by simulating the schedule: forward, backward and an AdamW step, tensor by tensor.

Takes: a list of :class:`Step` (one per graph node, in graph order: the bytes of the tensors it
makes, which of them are views of an input, its temporaries, what it saves for backward, which
inputs get a gradient, the bytes of its weights' gradients and of its backward's temporaries),
the bytes resident before any input (parameters and buffers), and for a training step the
optimizer's figures. Produces: a :class:`Peak`, the highest total of live bytes with the
phase and the step at which it is reached, and the parts of that total. No torch, no IR: the
cost report (:mod:`archlang.cost.report`) builds the steps from the graph and its cost rules.

The model of the schedule (what eager PyTorch does, one tensor at a time):

- **forward**: each step allocates its outputs (a view shares its input's storage) and, while
  it runs, its temporaries; a tensor is freed after its last use unless a step saved it for
  backward (train mode), and a step's internal saved tensors (norm statistics, probabilities,
  dropout masks) are allocated with it. Storages are reference-counted: views and several
  savers of one tensor keep one storage alive.
- **backward**, in reverse step order, from gradients of the outputs that cost nothing (the
  expanded gradient of ``sum()``): a step whose outputs have gradients allocates the gradients
  of its inputs that need one (a view's is a view of its output's gradient; a second gradient
  of a tensor used twice is added into the first and freed) and those of its trainable weights
  (which persist), holds its backward temporaries, then frees what it saved and its outputs'
  gradients.
- **activation checkpointing** (``checkpointed``, a set of block instances such as
  ``blocks.3``): the steps of such a block save nothing in the forward; the block's inputs
  (tensors made outside it and used inside) are kept instead, until the block's backward is
  done. When the backward reaches the block, its forward runs again, saving as usual (its
  outputs are dropped as soon as the block no longer needs them), so during its backward the
  block's saved tensors are live again, beside the gradients of its outputs. This is
  ``torch.utils.checkpoint(..., use_reentrant=False)`` around each block.
- **optimizer step** (AdamW, first step): the moments (exp_avg and exp_avg_sq, in each
  parameter's dtype) are created for every trainable parameter, then each update holds
  temporaries: on the CPU (torch's single-tensor implementation, the default there) the
  square root of exp_avg_sq and its quotient by the bias correction, two tensors of the
  parameter being updated (so twice the largest trainable parameter); on CUDA (the default
  foreach implementation) the square roots of all of them at once (the trainable bytes
  again). One float32 step counter per parameter tensor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Step:
    """One node of the graph as the schedule sees it; tensors are ids (ints), sizes in bytes."""

    name: str
    inputs: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()
    sizes: tuple[int, ...] = ()  # bytes of each output
    views: tuple[int | None, ...] = ()  # per output: the position of the input it is a view of
    temp: int = 0  # forward temporaries, live while it runs
    saves: tuple[int, ...] = ()  # graph tensors it keeps for backward (train mode)
    saved_internal: int = 0  # bytes of intermediates it keeps for backward
    grads: tuple[bool, ...] = ()  # per input: gets a gradient
    grad_views: tuple[bool, ...] = ()  # per input: its gradient is a view of the output's
    weight_grad: int = 0  # bytes of its trainable weights' gradients (they persist)
    grad_temp: int = 0  # backward temporaries beside the gradients it returns
    block: str = ""  # the checkpointable block instance it belongs to ("" for none)
    is_output: bool = False  # consumes the model's outputs (the loss reads them)
    keeps: tuple[int, ...] = ()  # tensors it holds until it has run without reading them (module arguments)
    eval_temp: int | None = None  # its forward temporaries in inference, where they differ
    eval_view: bool = False  # in inference its outputs are views of its first input (dropout)


@dataclass
class Peak:
    """The highest total of live bytes: ``bytes``, the ``phase`` (``forward``, ``backward``,
    ``recompute``, ``step``) and ``at`` (the step running), and what was live then:
    ``resident`` (parameters and buffers), ``grads`` (weight gradients), ``optimizer`` (AdamW
    moments, step counters and temporaries), ``saved`` (tensors kept for backward, checkpoint
    inputs included), ``transient`` (everything else: activations not saved, gradients of
    activations, temporaries)."""

    bytes: int = 0
    phase: str = "forward"
    at: str = ""
    parts: dict[str, int] = field(default_factory=dict)


@dataclass
class Optimizer:
    """AdamW's first step: ``trainable`` bytes of trainable parameters (its moments are as
    many, twice), ``largest`` bytes of the largest trainable parameter, ``tensors`` the number
    of trainable parameter tensors, ``foreach`` (CUDA's default) or single-tensor (the CPU's)."""

    trainable: int = 0
    largest: int = 0
    tensors: int = 0
    foreach: bool = False

    def state_bytes(self) -> int:
        return 2 * self.trainable + 4 * self.tensors

    def temp_bytes(self) -> int:
        return self.trainable if self.foreach else 2 * self.largest


class _Sim:
    """The running state: live storages (reference-counted), their bytes by kind, the peak."""

    def __init__(self, resident: int):
        self.size: dict[int, int] = {}
        self.refs: dict[int, int] = {}
        self.kind: dict[int, str] = {}
        self.live = {"resident": resident, "grads": 0, "optimizer": 0, "saved": 0, "transient": 0}
        self.total = resident
        self.peak = Peak(bytes=-1)
        self.next_id = 0

    def new(self, nbytes: int, kind: str = "transient") -> int:
        sid = self.next_id
        self.next_id += 1
        self.size[sid], self.refs[sid], self.kind[sid] = nbytes, 1, kind
        self.live[kind] += nbytes
        self.total += nbytes
        return sid

    def ref(self, sid: int) -> None:
        self.refs[sid] += 1

    def unref(self, sid: int) -> None:
        self.refs[sid] -= 1
        if self.refs[sid] == 0:
            nbytes = self.size.pop(sid)
            self.live[self.kind.pop(sid)] -= nbytes
            self.total -= nbytes
            del self.refs[sid]

    def mark_saved(self, sid: int) -> None:
        """Count a storage as saved for backward (from now until it is freed)."""
        k = self.kind[sid]
        if k == "transient":
            self.kind[sid] = "saved"
            self.live["transient"] -= self.size[sid]
            self.live["saved"] += self.size[sid]

    def moment(self, phase: str, at: str, extra: int = 0, kind: str = "transient") -> None:
        total = self.total + extra
        if total > self.peak.bytes:
            parts = dict(self.live)
            parts[kind] += extra
            self.peak = Peak(total, phase, at, parts)


def simulate(steps: list[Step], resident: int, train: bool, optimizer: Optimizer | None = None,
             checkpointed: Iterable[str] = ()) -> Peak:
    """The peak of one inference forward (``train=False``) or of a training step (forward,
    backward of the outputs' sum, AdamW's first step); see the module docstring. Linear in the
    number of steps and tensors."""
    ckpt = frozenset(checkpointed) if train else frozenset()
    sim = _Sim(resident)
    uses: dict[int, int] = {}
    for st in steps:
        for t in (*st.inputs, *st.keeps):
            uses[t] = uses.get(t, 0) + 1
    storage: dict[int, int] = {}  # tensor -> storage
    tsize: dict[int, int] = {}  # tensor -> its own bytes (a view's as well)
    held: dict[tuple[int, int], int] = {}  # (step index, tensor) saved -> storage
    internal: dict[int, int] = {}  # step index -> storage of its internal saved bytes
    block_inputs: dict[str, dict[int, int]] = {}  # checkpointed block -> its input tensors' storages
    produced_in: dict[int, str] = {}  # tensor -> block of the step that made it
    outputs_of_model: list[int] = []
    sim.moment("forward", steps[0].name if steps else "")

    def run_forward(i: int, st: Step, save: bool, phase: str, left: dict[int, int] | None) -> None:
        eval_view = not train and st.eval_view
        for k, t in enumerate(st.outputs):
            v = 0 if eval_view else st.views[k] if k < len(st.views) else None
            if v is not None and v < len(st.inputs) and st.inputs[v] in storage:
                sid = storage[st.inputs[v]]
                sim.ref(sid)
            else:
                sid = sim.new(st.sizes[k] if k < len(st.sizes) else 0)
            storage[t] = sid
            tsize[t] = st.sizes[k] if k < len(st.sizes) else 0
        if save and st.saved_internal:
            internal[i] = sim.new(st.saved_internal, "saved")
        sim.moment(phase, st.name, st.eval_temp if not train and st.eval_temp is not None else st.temp)
        if save:
            for t in st.saves:
                if t in storage and (i, t) not in held:
                    held[(i, t)] = storage[t]
                    sim.ref(storage[t])
                    sim.mark_saved(storage[t])
        counts = uses if left is None else left
        for t in (*st.inputs, *st.keeps):
            if t in counts:
                counts[t] -= 1
                if counts[t] == 0 and t in storage:
                    sim.unref(storage.pop(t))
        for t in st.outputs:
            if counts.get(t, 0) == 0 and t in storage:
                sim.unref(storage.pop(t))

    # -- forward
    for i, st in enumerate(steps):
        if st.is_output:
            outputs_of_model.extend(t for t in st.inputs)
        if st.block in ckpt:
            kept = block_inputs.setdefault(st.block, {})
            for t in st.inputs:
                if produced_in.get(t) != st.block and t in storage and t not in kept:
                    kept[t] = storage[t]
                    sim.ref(storage[t])
                    sim.mark_saved(storage[t])
        for t in st.outputs:
            produced_in[t] = st.block
        run_forward(i, st, train and st.block not in ckpt, "forward", None)
    if not train:
        return sim.peak

    # -- backward
    grad: dict[int, int] = {t: sim.new(0) for t in outputs_of_model}  # tensor -> gradient storage
    first_of: dict[str, int] = {}
    last_of: dict[str, int] = {}
    for i, st in enumerate(steps):
        if st.block in ckpt:
            first_of.setdefault(st.block, i)
            last_of[st.block] = i
    for i in range(len(steps) - 1, -1, -1):
        st = steps[i]
        if st.block in ckpt and last_of[st.block] == i:
            _recompute(steps, first_of[st.block], i, run_forward, storage, block_inputs.get(st.block, {}), sim)
        if any(t in grad for t in st.outputs) and (any(st.grads) or st.weight_grad):
            out_grad = next((grad[t] for t in st.outputs if t in grad), None)
            extra: list[int] = []
            for j, t in enumerate(st.inputs):
                if not (j < len(st.grads) and st.grads[j]):
                    continue
                if j < len(st.grad_views) and st.grad_views[j] and out_grad is not None:
                    sid = out_grad
                    sim.ref(sid)
                else:
                    sid = sim.new(tsize.get(t, 0))
                if t in grad:  # a second gradient is added into the first, then freed
                    extra.append(sid)
                else:
                    grad[t] = sid
            if st.weight_grad:
                sim.new(st.weight_grad, "grads")
            sim.moment("backward", st.name, st.grad_temp)
            for sid in extra:
                sim.unref(sid)
        for t in st.outputs:
            if t in grad:
                sim.unref(grad.pop(t))
        if i in internal:
            sim.unref(internal.pop(i))
        for t in st.saves:
            sid = held.pop((i, t), None)
            if sid is not None:
                sim.unref(sid)
        if st.block in ckpt and first_of[st.block] == i:
            for sid in block_inputs.pop(st.block, {}).values():
                sim.unref(sid)
    for sid in [*grad.values(), *internal.values(), *held.values()]:  # never reached: freed with the graph
        sim.unref(sid)
    grad.clear()

    # -- optimizer step
    opt = optimizer or Optimizer()
    sim.live["optimizer"] += opt.state_bytes()
    sim.total += opt.state_bytes()
    sim.moment("step", "AdamW", opt.temp_bytes(), "optimizer")
    return sim.peak


def _recompute(steps: list[Step], first: int, last: int, run_forward, storage: dict[int, int],
               kept: dict[int, int], sim: _Sim) -> None:
    """The forward of a checkpointed block again, saving as usual, from the inputs the
    checkpoint kept; its tensors are dropped as soon as the block no longer needs them (an
    output used only outside the block at once)."""
    left: dict[int, int] = {}
    for i in range(first, last + 1):
        for t in (*steps[i].inputs, *steps[i].keeps):
            left[t] = left.get(t, 0) + 1
    for t, sid in kept.items():  # each use in the block releases one reference, as in the forward
        if t in left:
            storage[t] = sid
            sim.ref(sid)
    for i in range(first, last + 1):
        run_forward(i, steps[i], True, "recompute", left)
