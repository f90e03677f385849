"""archlang.interop.distributed: block instances from the IR, activation checkpointing, and
FSDP2 / DDP across 2 CPU processes (gloo) agreeing with one process on the same data.

Takes: specs/vit_digits.arch (drop-path off, so a step is deterministic). The 2-process
run goes through ``torchrun --standalone`` in a subprocess (about 10 s); it is skipped where
torch.distributed or gloo is unavailable.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import archlang  # noqa: E402
from archlang.interop.distributed import block_instances, checkpoint_blocks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

# One script for both sides: run under torchrun it trains on each rank's half of the batch
# (FSDP2, FSDP2 with checkpointing, DDP) and rank 0 writes the mean losses; loaded with
# runpy, its run() is the single-process reference on the whole batch.
WORKER = '''
import json, os, sys
import torch
import torch.distributed as dist
import torch.nn.functional as F
import archlang
from archlang.interop.distributed import checkpoint_blocks, ddp, fsdp2_shard

SPEC = os.path.join({root!r}, "specs", "vit_digits.arch")
STEPS = 3


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 1, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)


def run(mode, rank=0, world=1):
    torch.manual_seed(0)
    model = archlang.build(SPEC, "vit_digits", drop_path_rate=0.0)
    if "ckpt" in mode:
        checkpoint_blocks(model)
    if mode.startswith("fsdp2"):
        fsdp2_shard(model)
        assert type(model.blocks[0]).__name__.startswith("FSDP") and type(model).__name__.startswith("FSDP")
        assert type(model.blocks[0].mlp.fc1.weight).__name__ == "DTensor"
    elif mode == "ddp":
        model = ddp(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = data()
    xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
    losses = []
    for _ in range(STEPS):
        loss = F.cross_entropy(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mean = loss.detach().clone()
        if world > 1:
            dist.all_reduce(mean)
            mean /= world
        losses.append(mean.item())
    return losses


if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = {{m: run(m, rank, world) for m in ("fsdp2", "fsdp2+ckpt", "ddp")}}
    if rank == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(out, f)
    # both ranks leave together: a rank tearing gloo down while the other still talks to it
    # aborted once ("terminate called without an active exception") under a loaded machine
    dist.barrier()
    dist.destroy_process_group()
'''


def test_block_instances_from_scopes() -> None:
    assert block_instances(archlang.graph(SPECS / "vit_digits.arch")) == [f"blocks.{i}" for i in range(4)]
    swin = block_instances(archlang.graph(SPECS / "swin_t.arch"))
    assert swin[:3] == ["layers.0.blocks.0", "layers.0.blocks.1", "layers.1.downsample"]
    assert "layers.2.blocks.5" in swin and "patch_embed" not in swin and len(swin) == 12 + 3
    assert "patch_embed" in block_instances(archlang.graph(SPECS / "swin_t.arch"), repeated=False)
    model = archlang.build(SPECS / "vit_digits.arch", depth=2)
    assert block_instances(model) == ["blocks.0", "blocks.1"]


def test_checkpoint_blocks_recomputes_and_keeps_names() -> None:
    torch.manual_seed(0)
    plain = archlang.build(SPECS / "vit_digits.arch", depth=2, drop_path_rate=0.0)
    torch.manual_seed(0)
    ckpt = checkpoint_blocks(archlang.build(SPECS / "vit_digits.arch", depth=2, drop_path_rate=0.0))
    checkpoint_blocks(ckpt)  # twice is harmless
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    calls = []
    ckpt.blocks[0].mlp.register_forward_pre_hook(lambda *a: calls.append(1))  # recompute may stop early
    x = torch.randn(4, 1, 16, 16)
    out_p, out_c = plain(x), ckpt(x)
    assert torch.equal(out_p, out_c) and len(calls) == 1
    out_p.sum().backward()
    out_c.sum().backward()
    assert len(calls) == 2  # the block ran again in backward
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    with torch.no_grad():
        ckpt(x)
    assert len(calls) == 3  # no recomputation without grad


def _distributed_ok() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()


@pytest.mark.skipif(not _distributed_ok(), reason="torch.distributed with gloo is not available")
def test_fsdp2_and_ddp_match_one_process(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT)))
    out = tmp_path / "losses.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(out.read_text())
    worker = runpy.run_path(str(script))  # not __main__: only the definitions
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = worker["run"]("single")
    finally:
        torch.set_num_threads(threads)
    assert want[0] != want[-1]  # the steps changed the weights
    for mode, losses in got.items():
        assert losses == pytest.approx(want, abs=1e-5), mode
