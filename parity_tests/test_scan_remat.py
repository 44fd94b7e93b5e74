"""Scanned layers and rematerialisation: the same function and the same gradients as the unrolled
model, parameters converted exactly between the stacked and the per-layer tree."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

import vit_flax
import vit_torch
from parity_tests.twins import (
    ALL_CONFIGS,
    FAMILY_CONFIGS,
    TINY_CONFIGS,
    make_twin,
    pixels,
)
from vit_common.convert import flatten_params, is_stacked, stack_layers, unstack_layers

# classic ViT and the families whose layers differ (LayerScale / SwiGLU / qk-norm, MAP, DIST)
CONFIGS = {"deep-eps1e-6": TINY_CONFIGS["deep-eps1e-6"],
           **{k: FAMILY_CONFIGS[k] for k in ("dinov2reg-swiglu-qknorm", "siglip-map-noqkvbias",
                                             "deit-distilled-tanh")}}


def _flax(config, params, **kwargs):
    return vit_flax.ViTForImageClassification(config, dtype="float64", param_dtype="float64", **kwargs)


@pytest.mark.parametrize("config_name", list(ALL_CONFIGS))
def test_stacking_is_exact_both_ways(config_name: str) -> None:
    t = make_twin(ALL_CONFIGS[config_name], "float32", "torch->flax")
    stacked = stack_layers(t.params)
    assert is_stacked(stacked) and not is_stacked(t.params)
    layers = t.config.num_hidden_layers
    assert all(np.shape(v)[0] == layers for k, v in flatten_params(stacked).items() if k[1] == "encoder")
    back = unstack_layers(stacked)
    want, got = flatten_params(t.params), flatten_params(back)
    assert set(want) == set(got)
    for k in want:
        assert np.array_equal(np.asarray(want[k]), got[k]), k
    assert unstack_layers(back) == back and stack_layers(stacked) == stacked  # idempotent


def _loss(apply, x, y):
    return jax.jit(jax.value_and_grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        apply({"params": p}, x, train=True), y).mean()))


@functools.lru_cache(maxsize=None)
def _unrolled(config_name: str):
    """The twin, its input and labels, and the unrolled model's logits and gradients."""
    t = make_twin(CONFIGS[config_name], "float64", "torch->flax")
    x = pixels(t.config, "float64", batch=2)[1]
    y = jnp.asarray(np.random.default_rng(3).integers(0, t.config.num_labels, 2))
    base = _flax(t.config, t.params)
    logits = np.asarray(jax.jit(base.apply)({"params": t.params}, x))
    return t, x, y, logits, flatten_params(_loss(base.apply, x, y)(t.params)[1])


@pytest.mark.parametrize(("scan", "remat"), [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("config_name", [n if n in ("deep-eps1e-6", "dinov2reg-swiglu-qknorm")
                                         else pytest.param(n, marks=pytest.mark.slow) for n in CONFIGS])
def test_scanned_and_rematerialised_models_equal_the_unrolled(config_name: str, scan: bool, remat: bool) -> None:
    """Outputs and every gradient (fp64 <= 1e-12) of the scanned and / or rematerialised Flax twin
    against the unrolled one."""
    t, x, y, logits, want = _unrolled(config_name)
    params = stack_layers(t.params) if scan else t.params
    model = _flax(t.config, params, scan_layers=scan, remat=remat)
    np.testing.assert_allclose(np.asarray(jax.jit(model.apply)({"params": params}, x)), logits, rtol=0, atol=1e-12)
    got = flatten_params(unstack_layers(_loss(model.apply, x, y)(params)[1]))
    assert set(got) == set(want)
    worst = max(float(np.abs(np.asarray(want[k]) - got[k]).max()) for k in want)
    assert worst <= 1e-12, worst


def test_torch_gradient_checkpointing_keeps_the_gradients() -> None:
    """gradient_checkpointing=True: every gradient equal to the plain model's (fp64 <= 1e-12), and
    the step keeps fewer activations for the backward pass (bytes saved by autograd, measured)."""
    config = FAMILY_CONFIGS["dinov2reg-swiglu-qknorm"]
    torch.manual_seed(0)
    plain = vit_torch.ViTForImageClassification(config).double().train()
    ckpt = vit_torch.ViTForImageClassification(config, gradient_checkpointing=True).double().train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(3, config.num_channels, *config.image_hw, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    saved = {}
    for name, model in (("plain", plain), ("checkpointed", ckpt)):
        total = [0]

        def pack(t, total=total):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            F.cross_entropy(model(x), y).backward()
        saved[name] = total[0]
    for (k, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        ga = a.grad if a.grad is not None else torch.zeros_like(a)
        gb = b.grad if b.grad is not None else torch.zeros_like(b)
        assert float((ga - gb).abs().max()) <= 1e-12, k
    assert saved["checkpointed"] < saved["plain"]


def test_scanned_checkpoints_and_inference(tmp_path) -> None:
    """from_pretrained(scan_layers=True) stacks an HF checkpoint's layers; save_pretrained of a
    scanned model writes HF's per-layer tree; InferenceEngine runs stacked params as the unrolled."""
    from vit_flax.inference import InferenceEngine

    config = TINY_CONFIGS["deep-eps1e-6"]
    torch.manual_seed(0)
    vit_torch.save_pretrained(vit_torch.ViTForImageClassification(config).eval(), tmp_path / "hf")
    model, params = vit_flax.from_pretrained(tmp_path / "hf")
    scanned, stacked = vit_flax.from_pretrained(tmp_path / "hf", scan_layers=True, remat=True)
    assert scanned.scan_layers and scanned.remat and is_stacked(stacked)
    x = np.random.default_rng(0).normal(size=(4, *config.image_hw, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(scanned.apply({"params": stacked}, x)),
                               np.asarray(model.apply({"params": params}, x)), rtol=0, atol=1e-5)
    vit_flax.save_pretrained(scanned, stacked, tmp_path / "again")
    again = vit_torch.from_pretrained(tmp_path / "again")
    for k, v in vit_torch.from_pretrained(tmp_path / "hf").state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    a = InferenceEngine(config, stacked, batch_size=2)(x)
    b = InferenceEngine(config, params, batch_size=2)(x)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="scan_layers=False"):
        scanned.apply({"params": stacked}, x, method=lambda m, x: m.vit.attention_maps(x))
