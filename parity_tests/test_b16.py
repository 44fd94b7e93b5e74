"""One full-size check: ViT-B/16 with random weights, fp32, CLS within 2e-5."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import vit_flax
import vit_torch
from parity_tests.twins import max_diff, perturb_torch, pixels
from vit_common.config import ViTConfig
from vit_common.convert import flax_to_torch, torch_to_flax

B16_FP32 = 2e-5


@pytest.mark.slow
def test_b16_cls_parity_fp32() -> None:
    config = ViTConfig.from_preset("B/16", num_labels=1000)
    torch.manual_seed(0)
    pt = vit_torch.ViTForImageClassification(config).eval()
    perturb_torch(pt, seed=0, vectors_only=True)
    state = pt.state_dict()
    params = torch_to_flax(state, config)
    fx = vit_flax.ViTForImageClassification(config)
    x_pt, x_fx = pixels(config, "float32", batch=2)
    with torch.no_grad():
        cls_pt = pt.vit(x_pt)
        logits_pt = pt(x_pt)
    bound = fx.bind({"params": params})
    cls_fx = jax.jit(lambda x: bound.vit(x))(x_fx)
    logits_fx = jax.jit(fx.apply)({"params": params}, x_fx)
    assert max_diff(cls_pt, cls_fx) <= B16_FP32
    # logits sum 768 products of the CLS: same relative bound, scaled by their magnitude
    assert max_diff(logits_pt, logits_fx) <= B16_FP32 * max(1.0, float(logits_pt.abs().max()))
    back = flax_to_torch(params, config)
    assert all(np.array_equal(back[k], v.numpy()) for k, v in state.items())
