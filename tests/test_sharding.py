"""Sharded parameters on 8 simulated CPU devices (XLA's SPMD partitioner through jax.sharding):
(2, 4) and (8, 1) ("data", "model") meshes give the single-device outputs and optimizer step, and
every device holds 1 / shards of each sharded parameter, read from the arrays themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# runs in a fresh interpreter: the device count is fixed when jax is first imported
SCRIPT = r"""
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np, optax, torch
import vit_flax, vit_torch
from parity_tests.twins import FAMILY_CONFIGS
from vit_common.config import ViTConfig
from vit_common.convert import flatten_params, stack_layers, torch_to_flax
from vit_flax.inference import InferenceEngine
from vit_flax.sharding import make_mesh, make_train_step, shard_params

assert jax.device_count() == 8, jax.devices()
CONFIGS = {
    "classic": ViTConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128,
                         image_size=16, patch_size=4, num_labels=8),
    # LayerScale, SwiGLU, qk-norm, registers; MAP pooling without [CLS]
    "dinov2reg": FAMILY_CONFIGS["dinov2reg-swiglu-qknorm"].replace(hidden_size=64, intermediate_size=64),
    "siglip": FAMILY_CONFIGS["siglip-map-noqkvbias"].replace(hidden_size=48, num_attention_heads=4,
                                                              intermediate_size=64),
}
result = {}
for name, cfg in CONFIGS.items():
    torch.manual_seed(0)
    params = torch_to_flax(vit_torch.ViTForImageClassification(cfg).state_dict(), cfg)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, *cfg.image_hw, 3)).astype(np.float32)
    y = rng.integers(0, cfg.num_labels, 8)
    single = InferenceEngine(cfg, params, batch_size=8, devices=jax.devices()[:1])(x)
    one = make_mesh(1, 1, jax.devices()[:1])
    reference = {}  # the single-device step, once per optimizer
    for scan in ((False, True) if name == "classic" else (False,)):
        p = stack_layers(params) if scan else params
        # classic ViT on both meshes (and scanned); the families' switches on the (2, 4) mesh
        for data, model in ((2, 4), (8, 1)) if name == "classic" else ((2, 4),):
            mesh = make_mesh(data, model)
            tag = f"{name}{'-scan' if scan else ''}-{data}x{model}"
            engine = InferenceEngine(cfg, p, batch_size=8, mesh=mesh)
            out = engine(x)
            entry = {"infer": max(float(np.abs(out[k] - single[k]).max()) for k in single)}
            # every parameter: how many devices hold it whole vs in pieces
            fractions = {}
            for path, a in flatten_params(engine.params).items():
                sizes = {s.data.size for s in a.addressable_shards}
                fractions["/".join(path)] = [a.size, sorted(sizes), len(a.addressable_shards)]
            entry["fractions"] = fractions
            if not scan and name != "siglip":
                for opt, dtype, tx in (("sgd", np.float32, optax.sgd(0.1, momentum=0.9)),
                                       ("adamw", np.float64, optax.adamw(1e-3, weight_decay=0.05))):
                    fx = vit_flax.ViTForImageClassification(cfg, dtype=dtype, param_dtype=dtype)
                    if opt not in reference:
                        ref = make_train_step(fx, tx, one)
                        p1 = shard_params(p, one, dtype=dtype)
                        reference[opt] = ref(p1, ref.init(p1), x.astype(dtype), y)
                    p1, o1, l1 = reference[opt]
                    step = make_train_step(fx, tx, mesh)
                    pn = shard_params(p, mesh, dtype=dtype)
                    pn, on, ln = step(pn, step.init(pn), x.astype(dtype), y)
                    a, b = flatten_params(pn), flatten_params(p1)
                    entry[opt] = {"loss": abs(float(ln) - float(l1)),
                                  "params": max(float(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max()) for k in a),
                                  "kept_sharded": all(pn_leaf.sharding == s for pn_leaf, s in zip(
                                      jax.tree_util.tree_leaves(pn),
                                      jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda t: t.sharding,
                                                                                       shard_params(p, mesh, dtype=dtype)))))}
            result[tag] = entry
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def measured() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900,
                         cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_sharded_inference_equals_one_device(measured) -> None:
    assert len(measured) == 6  # classic ViT on two meshes, scanned too; the families on (2, 4)
    for tag, entry in measured.items():
        assert entry["infer"] <= 1e-5, (tag, entry["infer"])


def test_sharded_training_step_equals_one_device(measured) -> None:
    """One optimizer step on the mesh against one device: SGD with momentum in float32 (<= 1e-5),
    AdamW in float64 (<= 1e-12; in float32 Adam divides each gradient by its own magnitude, so
    parameters whose gradient is rounding noise, such as the key biases, move by +-lr either way);
    parameters and moments keep their shardings."""
    steps = {tag: e for tag, e in measured.items() if "sgd" in e}
    assert len(steps) == 3  # classic ViT on two meshes, DINOv2-reg on (2, 4)
    for tag, entry in steps.items():
        assert entry["sgd"]["loss"] <= 1e-5 and entry["sgd"]["params"] <= 1e-5, (tag, entry["sgd"])
        assert entry["adamw"]["loss"] <= 1e-12 and entry["adamw"]["params"] <= 1e-12, (tag, entry["adamw"])
        assert entry["sgd"]["kept_sharded"] and entry["adamw"]["kept_sharded"], tag


@pytest.mark.parametrize("mesh, shards", [("2x4", {"qkv": 8, "mlp": 8, "attn_out": 8, "norm": 2}),
                                          ("8x1", {"qkv": 8, "mlp": 8, "attn_out": 8, "norm": 8})])
def test_each_device_holds_its_share(measured, mesh: str, shards: dict) -> None:
    """From the arrays' shardings: on (2, 4) the attention and MLP matrices are split 8 ways (hidden
    over "data", heads / MLP width over "model"), vectors of the hidden width 2 ways; on (8, 1)
    FSDP alone splits them 8 ways. No device holds more than its share."""
    for tag, entry in measured.items():
        if not tag.endswith(mesh):
            continue
        fractions = entry["fractions"]
        for path, (size, shard_sizes, count) in fractions.items():
            assert count == 8 and len(shard_sizes) == 1, (tag, path)  # equal pieces on every device
            kind = ("qkv" if path.endswith(("query/kernel", "key/kernel", "value/kernel")) else
                    "mlp" if "intermediate/dense/kernel" in path else
                    "attn_out" if path.endswith("attention/output/dense/kernel") else
                    "norm" if path.endswith("layernorm_before/scale") else None)
            if kind is not None and "attention_pool" not in path:
                assert size == shard_sizes[0] * shards[kind], (tag, path, size, shard_sizes)
