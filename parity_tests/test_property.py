"""Property: for any valid config, the whole model agrees across frameworks in float64."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vit_flax
import vit_torch
from parity_tests.twins import TOLERANCE, max_diff, perturb_torch, pixels
from vit_common.config import SUPPORTED_ACTS, ViTConfig
from vit_common.convert import torch_to_flax

# HYPOTHESIS_EXAMPLES=200 make test-slow for a longer search
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "20"))


@st.composite
def configs(draw: st.DrawFn) -> ViTConfig:
    heads = draw(st.integers(1, 4))
    patch = draw(st.integers(1, 6))
    return ViTConfig(
        hidden_size=heads * draw(st.integers(1, 8)),
        num_attention_heads=heads,
        num_hidden_layers=draw(st.integers(1, 3)),
        intermediate_size=draw(st.integers(1, 48)),
        image_size=(patch * draw(st.integers(1, 4)), patch * draw(st.integers(1, 4))),
        patch_size=patch,
        num_channels=draw(st.sampled_from([1, 3])),
        hidden_act=draw(st.sampled_from(SUPPORTED_ACTS)),
        layer_norm_eps=draw(st.sampled_from([1e-12, 1e-6, 1e-5])),
        qkv_bias=draw(st.booleans()),
        num_labels=draw(st.integers(0, 5)),
    )


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), seed=st.integers(0, 2**16))
def test_whole_model_float64_parity(config: ViTConfig, seed: int) -> None:
    torch.manual_seed(seed)
    if config.num_labels:
        pt, fx = vit_torch.ViTForImageClassification(config), vit_flax.ViTForImageClassification
    else:
        pt, fx = vit_torch.VisionTransformer(config), vit_flax.VisionTransformer
    pt = pt.double().eval()
    perturb_torch(pt, seed)
    params = torch_to_flax(pt.state_dict(), config)
    x_pt, x_fx = pixels(config, "float64", batch=2, seed=seed)
    with torch.no_grad():
        out_pt = pt(x_pt)
    out_fx = fx(config, dtype="float64", param_dtype="float64").apply({"params": params}, x_fx)
    assert max_diff(out_pt, out_fx) <= TOLERANCE["float64"]
