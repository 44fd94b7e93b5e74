"""The torch twin under DDP and FSDP2 (fully_shard) with gloo on two local CPU processes: one
AdamW step on half the batch each equals the single-process step on the whole batch; the sharded
checkpoint both ranks write (torch.distributed.checkpoint) restores into one process and resumes
exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vit_torch
from vit_common.config import ViTConfig

ROOT = Path(__file__).resolve().parents[1]
CFG = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64,
                image_size=16, patch_size=4, num_labels=5, layer_scale=True, layerscale_value=0.5)

WORKER = r"""
import json, sys
import numpy as np, torch, torch.distributed as dist, torch.nn.functional as F
import vit_torch
from vit_common.config import ViTConfig
mode, out, cfg = sys.argv[1], sys.argv[2], ViTConfig(**json.loads(sys.argv[3]))
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = vit_torch.ViTForImageClassification(cfg).double()
g = np.random.default_rng(0)
x = torch.from_numpy(g.normal(size=(8, 3, *cfg.image_hw)))
y = torch.from_numpy(g.integers(0, cfg.num_labels, 8))
mine = slice(rank * 8 // world, (rank + 1) * 8 // world)
if mode == "ddp":
    wrapped = torch.nn.parallel.DistributedDataParallel(model)
else:
    from vit_torch.distributed import fully_shard_vit
    wrapped = fully_shard_vit(model)
opt = torch.optim.AdamW(wrapped.parameters(), lr=1e-3, weight_decay=0.05)
F.cross_entropy(wrapped(x[mine]), y[mine]).backward()
opt.step()
local = {k: [v.to_local().numel(), v.numel(), v.shape[0]] for k, v in wrapped.named_parameters()
         if hasattr(v, "to_local")}
state = {k.removeprefix("module."): (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().numpy()
         for k, v in wrapped.state_dict().items()}
if rank == 0:
    np.savez(out + ".npz", **state)
from vit_torch.distributed import save_sharded_checkpoint
save_sharded_checkpoint(wrapped, opt, out + ".dcp")  # every rank writes its own shards
with open(f"{out}.{rank}.json", "w") as f:
    json.dump(local, f)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = np.random.default_rng(0)
    x = torch.from_numpy(g.normal(size=(8, 3, *CFG.image_hw)))
    return x, torch.from_numpy(g.integers(0, CFG.num_labels, 8))


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    x, y = _batch()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = vit_torch.ViTForImageClassification(CFG).double()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)


def _single_process_step() -> dict[str, np.ndarray]:
    model, opt = _fresh()
    _step(model, opt)
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_two_process_step_equals_one_process(mode: str, tmp_path) -> None:
    import dataclasses

    fields = {f.name: getattr(CFG, f.name) for f in dataclasses.fields(CFG) if f.name != "extra"}
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "PYTHONPATH": str(ROOT)}
    out = str(tmp_path / mode)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, mode, out, json.dumps(fields)],
                              env={**env, "RANK": str(r)}, stderr=subprocess.PIPE, text=True) for r in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors[0][-2000:]
    got = np.load(out + ".npz")
    want = _single_process_step()
    assert set(got.files) == set(want)
    worst = max(float(np.abs(got[k] - want[k]).max()) for k in want)
    assert worst <= 1e-12, worst  # float64
    if mode == "fsdp2":  # every parameter split on dimension 0: each rank holds its half
        ranks = [json.loads(Path(f"{out}.{r}.json").read_text()) for r in range(2)]
        assert set(ranks[0]) == set(ranks[1]) == set(want)
        for name, (mine, total, rows) in ranks[0].items():
            theirs = ranks[1][name][0]
            assert mine + theirs == total, name
            assert abs(mine - theirs) <= total // rows, name  # at most one row apart


def test_sharded_torch_checkpoint_restores_into_one_process_and_resumes(tmp_path) -> None:
    """The FSDP2 ranks each wrote their shards (torch.distributed.checkpoint); one process without a
    process group loads them into a plain model and AdamW: parameters and moments equal the
    single-process step's, and the next step equals the uninterrupted run's (fp64 <= 1e-12).
    Writing into a directory that holds files is refused; a directory without .metadata too."""
    import dataclasses

    from vit_torch.distributed import load_sharded_checkpoint, save_sharded_checkpoint

    fields = {f.name: getattr(CFG, f.name) for f in dataclasses.fields(CFG) if f.name != "extra"}
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "PYTHONPATH": str(ROOT)}
    out = str(tmp_path / "fsdp2")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, "fsdp2", out, json.dumps(fields)],
                              env={**env, "RANK": str(r)}, stderr=subprocess.PIPE, text=True) for r in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors[0][-2000:]
    ckpt = Path(out + ".dcp")
    assert sorted(p.name for p in ckpt.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    uninterrupted, opt_u = _fresh()
    _step(uninterrupted, opt_u)
    restored, opt_r = _fresh()
    before = {k: v.clone() for k, v in restored.state_dict().items()}
    load_sharded_checkpoint(restored, opt_r, str(ckpt))
    for k, v in uninterrupted.state_dict().items():
        assert float((restored.state_dict()[k] - v).abs().max()) <= 1e-12, k
    assert any(float((restored.state_dict()[k] - before[k]).abs().max()) > 1e-6 for k in before)
    moments_u = [opt_u.state[p]["exp_avg_sq"] for p in uninterrupted.parameters()]
    moments_r = [opt_r.state[p]["exp_avg_sq"] for p in restored.parameters()]
    assert max(float((a - b).abs().max()) for a, b in zip(moments_u, moments_r)) <= 1e-12
    _step(uninterrupted, opt_u)
    _step(restored, opt_r)
    for k, v in uninterrupted.state_dict().items():
        assert float((restored.state_dict()[k] - v).abs().max()) <= 1e-12, k

    with pytest.raises(FileExistsError, match="already holds files"):
        save_sharded_checkpoint(restored, opt_r, str(ckpt))
    with pytest.raises(FileNotFoundError, match="no .metadata"):
        load_sharded_checkpoint(restored, opt_r, str(tmp_path))
