"""Sharded training checkpoints (orbax): written from a (2, 4) mesh, restored exactly onto (2, 4),
(8, 1) and one device; a run interrupted and resumed follows the uninterrupted one step for step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax, numpy as np, optax, torch
import vit_flax, vit_torch
from vit_common.config import ViTConfig
from vit_common.convert import flatten_params, torch_to_flax
from vit_flax.training import restore_train_state, save_train_state
from vit_flax.sharding import make_mesh, make_train_step, shard_params

out = sys.argv[1]
cfg = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64,
                image_size=16, patch_size=4, num_labels=5, layer_scale=True, layerscale_value=0.5)
torch.manual_seed(0)
params = torch_to_flax(vit_torch.ViTForImageClassification(cfg).state_dict(), cfg)
model = vit_flax.ViTForImageClassification(cfg)
tx = optax.adamw(1e-3, weight_decay=0.05)
rng = np.random.default_rng(0)
batches = [(rng.normal(size=(8, 16, 16, 3)).astype(np.float32), rng.integers(0, 5, 8)) for _ in range(4)]
mesh = make_mesh(2, 4)
step = make_train_step(model, tx, mesh)

def run(p, o, todo):
    losses = []
    for x, y in todo:
        p, o, loss = step(p, o, x, y)
        losses.append(float(loss))
    return p, o, losses

p0 = shard_params(params, mesh)
_, _, whole = run(p0, step.init(p0), batches)
p, o, first = run(p0, step.init(p0), batches[:2])
save_train_state(os.path.join(out, "ckpt"), p, o, 2)
result = {"whole": whole, "first": first}
try:
    save_train_state(os.path.join(out, "ckpt"), p, o, 2)
    result["refused"] = False
except FileExistsError:
    result["refused"] = True
for name, target_mesh in (("2x4", mesh), ("8x1", make_mesh(8, 1)), ("1x1", make_mesh(1, 1, jax.devices()[:1]))):
    like = shard_params(params, target_mesh)
    target_step = make_train_step(model, tx, target_mesh)
    rp, ro, rs = restore_train_state(os.path.join(out, "ckpt"), like, target_step.init(like))
    a, b = flatten_params(rp), flatten_params(p)
    exact = all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in b)
    moments = all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in
                  zip(jax.tree_util.tree_leaves(ro), jax.tree_util.tree_leaves(o)))
    devices = {len(leaf.sharding.device_set) for leaf in jax.tree_util.tree_leaves(rp)}
    entry = {"step": rs, "exact": exact, "moments": moments, "devices": sorted(devices)}
    if name == "2x4":
        _, _, rest = run(rp, ro, batches[2:])
        entry["resumed"] = first + rest
    result[name] = entry
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path_factory.mktemp("orbax"))],
                         capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT "):])


def test_restores_exactly_onto_any_mesh(measured) -> None:
    for name, devices in (("2x4", [8]), ("8x1", [8]), ("1x1", [1])):
        entry = measured[name]
        assert entry["step"] == 2 and entry["exact"] and entry["moments"], (name, entry)
        assert entry["devices"] == devices, (name, entry["devices"])


def test_resumed_run_follows_the_uninterrupted_one(measured) -> None:
    assert measured["2x4"]["resumed"] == measured["whole"]  # bit for bit, the same mesh
    assert len(measured["whole"]) == 4


def test_existing_checkpoint_is_not_replaced(measured) -> None:
    assert measured["refused"]


def test_missing_checkpoint_is_a_clear_error(tmp_path) -> None:
    from vit_flax.training import restore_train_state

    with pytest.raises(ValueError, match="no such checkpoint directory"):
        restore_train_state(tmp_path / "nope", {}, {})
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("not orbax")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        restore_train_state(tmp_path / "junk", {"a": 1.0}, {})
