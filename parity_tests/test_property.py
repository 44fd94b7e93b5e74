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
    family = draw(switches())
    # sin/cos of rows and columns: hidden (sincos2d) or head_dim (rotary) divisible by 4
    width = 4 if family["position_embedding_type"] == "sincos2d" or family["rope_type"] != "none" else 1
    return ViTConfig(
        hidden_size=heads * width * draw(st.integers(1, 8 // width)),
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
        **family,
    )


@st.composite
def switches(draw: st.DrawFn) -> dict:
    """A random combination of the family switches, every valid one reachable."""
    class_token = draw(st.booleans())
    distillation = class_token and draw(st.booleans())
    pooling = "cls" if distillation else draw(st.sampled_from(["cls", "gap", "map", "probe"] if class_token
                                                                else ["gap", "map", "probe"]))
    rope = draw(st.sampled_from(["none", "dinov3", "axial", "mixed"]))
    return dict(
        class_token=class_token, distillation_token=distillation, pooling=pooling,
        final_norm="tokens" if distillation else draw(st.sampled_from(["tokens", "pooled"])),
        num_register_tokens=draw(st.integers(0, 2)),
        position_embedding_type=draw(st.sampled_from(["learned", "sincos2d", "none"])),
        position_embedding_covers_prefix=draw(st.booleans()),
        pre_norm=draw(st.booleans()), patch_bias=draw(st.booleans()),
        layer_scale=draw(st.booleans()), layerscale_value=draw(st.floats(0.2, 1.0)),
        mlp_type=draw(st.sampled_from(["mlp", "swiglu"])), qk_norm=draw(st.booleans()),
        mask_token=draw(st.booleans()),
        rope_type=rope, rope_theta=draw(st.sampled_from([10.0, 100.0, 1e4])),
        rope_layout="pairs" if rope == "mixed" else draw(st.sampled_from(["halves", "pairs"])),
        rope_axis_order=draw(st.sampled_from(["yx", "xy"])), rope_grid_offset=draw(st.sampled_from([0.0, 1.0])),
        rope_ref_grid=draw(st.sampled_from([None, (3, 2)])) if rope == "axial" else None,
        norm_type=draw(st.sampled_from(["layernorm", "rmsnorm"])), key_bias=draw(st.booleans()),
        proj_bias=draw(st.booleans()), mlp_bias=draw(st.booleans()), attention_norm=draw(st.booleans()),
        mlp_norm=draw(st.booleans()), patch_norm=draw(st.booleans()), map_num_heads=draw(st.sampled_from([0, 1])),
        classifier_input=draw(st.sampled_from(["pooled", "cls", "patch_mean", "cls_patch_mean"]
                                              if class_token else ["pooled", "patch_mean"])),
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
