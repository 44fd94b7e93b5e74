"""The rotary generation, as its libraries write it with random weights: HF DINOv3ViTModel
(plain and gated MLP), timm's Eva class (DINOv3, EVA-02 plain and CLIP, PE core, RoPE ViTs axial
and mixed) and AIMv2 (HF Aimv2VisionModel with its pooling head, timm aimv2_*) load in both twins from the files alone and reproduce the source; each is written back
in a form its library reads (transformers with no missing key, timm strictly), reproducing it; the
published architectures have the source's parameter count in both twins."""

from __future__ import annotations

import json
import warnings

import jax
import numpy as np
import pytest
import timm
import torch
import transformers

import vit_flax
import vit_torch
from tests.test_hub_formats import _close, _flax, _perturb, _pixels, _timm_folder, _timm_outputs, _timm_reads, _torch
from vit_cli.convert_tool import main as convert_main
from vit_common import checkpoints
from vit_common.config import ViTConfig


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


_TINY = dict(depth=2, embed_dim=64, num_heads=4)
EVA_CASES = {
    "vit_small_patch16_dinov3_qkvb": dict(_TINY, img_size=(32, 48), num_classes=3),  # q_bias / v_bias, a head
    "vit_small_plus_patch16_dinov3": dict(_TINY, img_size=32),  # SwiGLU as fc1_g / fc1_x, no qkv bias
    "eva02_small_patch14_336": dict(_TINY, img_size=28, num_classes=4),  # packed SwiGLU, pos table + axial
    "eva02_base_patch14_448": dict(_TINY, img_size=28, ref_feat_shape=(3, 3)),  # q/k/v_proj, SwiGLU norm
    "eva02_base_patch16_clip_224": dict(_TINY, img_size=32),  # the attention's norm, [CLS] pooling
    "vit_pe_core_base_patch16_224": dict(_TINY, img_size=32, ref_feat_shape=(3, 3)),  # MAP with 8 heads
    "vit_base_patch16_rope_224": dict(_TINY, img_size=32),  # AttentionRope, xy, theta 100
    "vit_base_patch16_rope_mixed_ape_224": dict(_TINY, img_size=32),  # learned frequencies, pos table
    "vit_base_patch16_rope_reg1_gap_256": dict(_TINY, img_size=32),  # ref grid 16, register, fc_norm
    "aimv2_large_patch14_224": dict(_TINY, img_size=28),  # RMSNorm, the patch norm, SwiGLU, no biases
}


@pytest.mark.parametrize("name", list(EVA_CASES))
def test_timm_eva_hub_folder_both_ways(name: str, tmp_path) -> None:
    model = _timm_folder(name, EVA_CASES[name], tmp_path / "src")
    h, w = model.patch_embed.img_size
    x = _pixels(h, w)
    want = _timm_outputs(model, x)
    ours = vit_torch.from_pretrained(tmp_path / "src")
    assert ours.config.rope_type != "none" or ours.config.norm_type == "rmsnorm"
    got = _torch(ours, x)
    if not model.num_classes:
        want.pop("pooled")
    _close({k: v for k, v in want.items() if k in got}, got)
    _close({k: v for k, v in want.items() if k in got}, _flax(tmp_path / "src", x))
    # written back by vit-convert --verify as a timm hub folder: timm builds it strictly and
    # reproduces the source exactly
    assert convert_main([str(tmp_path / "src"), "-o", str(tmp_path / "back"), "--to", "timm", "--verify"]) == 0
    back = _timm_reads(tmp_path / "back")
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    assert vit_torch.from_pretrained(tmp_path / "back").config == ours.config


def test_timm_eva_bare_state_dict_with_its_name(tmp_path) -> None:
    """A bare timm state dict: the model name says what the names cannot (rope, grid, eps)."""
    torch.manual_seed(0)
    kw = dict(_TINY, img_size=32)
    model = timm.create_model("vit_base_patch16_rope_mixed_224", pretrained=False, **kw).eval()
    _perturb(model, 3)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    config = ViTConfig.from_timm("vit_base_patch16_rope_mixed_224", **kw)
    assert (config.rope_type, config.rope_axis_order, config.rope_theta) == ("mixed", "xy", 10.0)
    ours = vit_torch.from_pretrained(tmp_path / "w.pth", config)
    x = _pixels(32, 32)
    with torch.no_grad():
        assert (ours(x) - model(x)).abs().max() <= 2e-5
        # any grid, no table resampled: timm's dynamic size vs ours
        y = _pixels(48, 32, seed=1)
        dyn = timm.create_model("vit_base_patch16_rope_mixed_224", pretrained=False, dynamic_img_size=True, **kw)
        dyn.load_state_dict(model.state_dict())
        assert (ours(y, interpolate_pos_encoding=True) - dyn.eval()(y)).abs().max() <= 2e-5


def _hf_dinov3(gated: bool, tmp_path, registers: int = 4) -> transformers.DINOv3ViTModel:
    torch.manual_seed(0)
    config = transformers.DINOv3ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, image_size=32,
        patch_size=8, num_register_tokens=registers, use_gated_mlp=gated, hidden_act="silu" if gated else "gelu")
    model = transformers.DINOv3ViTModel(config).eval()
    _perturb(model, 4)
    model.save_pretrained(tmp_path / "hf")
    return model


@pytest.mark.parametrize(("gated", "registers"), [(False, 4), (True, 4), (False, 0)],
                         ids=["mlp", "gated", "no-registers"])
def test_hf_dinov3_both_ways(gated: bool, registers: int, tmp_path) -> None:
    hf = _hf_dinov3(gated, tmp_path, registers)
    x = _pixels(32, 48)  # off the config's square: rotary positions of any grid
    with torch.no_grad():
        ref = hf(pixel_values=x)
    want = {"pooled": ref.pooler_output.numpy(), "tokens": ref.last_hidden_state.numpy()}
    ours = vit_torch.from_pretrained(tmp_path / "hf")
    assert (ours.config.rope_type, ours.config.key_bias, ours.config.mlp_type) == (
        "dinov3", False, "swiglu" if gated else "mlp")
    with torch.no_grad():
        got = {"pooled": ours(x, interpolate_pos_encoding=True).numpy(),
               "tokens": ours.forward_features(x, interpolate_pos_encoding=True).numpy()}
    _close(want, got)
    fx, params = vit_flax.from_pretrained(tmp_path / "hf")
    bound = fx.bind({"params": params})
    xf = x.numpy().transpose(0, 2, 3, 1)
    _close(want, {"pooled": np.asarray(bound(xf, interpolate_pos_encoding=True)),
                  "tokens": np.asarray(bound.forward_features(xf, interpolate_pos_encoding=True))})
    # written back: transformers loads ours with nothing missing and reproduces the source
    ckpt = checkpoints.load_checkpoint(tmp_path / "hf")
    checkpoints.save_hf(ckpt.state, ckpt.config, tmp_path / "back")
    back, info = transformers.DINOv3ViTModel.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        assert torch.equal(back.eval()(pixel_values=x).pooler_output, ref.pooler_output)
    # and across libraries: the HF model as a timm hub folder that timm builds
    assert convert_main([str(tmp_path / "hf"), "-o", str(tmp_path / "t"), "--to", "timm", "--verify"]) == 0
    timm_model = _timm_reads(tmp_path / "t")
    with torch.no_grad():
        tokens = timm_model.forward_features(x)
    assert np.abs(tokens.numpy() - want["tokens"]).max() <= 2e-5
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["model_args"]["rope_type"] == "dinov3"


# the published architectures of the issue: timm's count, both twins (built without memory: meta
# tensors in torch, shapes only in Flax)
PUBLISHED = ["vit_small_patch16_dinov3", "vit_large_patch16_dinov3_qkvb", "vit_huge_plus_patch16_dinov3",
             "vit_7b_patch16_dinov3", "eva02_large_patch14_448", "eva02_large_patch14_clip_336",
             "vit_pe_core_large_patch14_336", "vit_base_patch16_rope_reg1_gap_256", "vit_base_patch16_rope_mixed_224",
             "aimv2_large_patch14_224"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_parameter_counts(name: str) -> None:
    theirs = sum(p.numel() for p in timm.create_model(name, pretrained=False, device="meta").parameters())
    config = ViTConfig.from_timm(name)
    cls = vit_torch.ViTForImageClassification if config.num_labels else vit_torch.VisionTransformer
    with torch.device("meta"):
        ours = sum(p.numel() for p in cls(config).parameters())
    fx = (vit_flax.ViTForImageClassification if config.num_labels else vit_flax.VisionTransformer)(config)
    h, w = config.image_hw
    shapes = jax.eval_shape(fx.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, h, w, 3), np.float32))
    flax_count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes))
    assert ours == theirs == flax_count, (ours, theirs, flax_count)


def test_every_eva_and_aimv2_definition_is_timms() -> None:
    """Every timm Eva and AIMv2 name from_timm accepts, against the model timm builds (meta
    tensors): the parameter count, and the default tag's preprocessing (timm's pretrained_cfg)."""
    from vit_common.families.aimv2 import TIMM_DEFINITIONS
    from vit_common.families.eva import DEFINITIONS
    from vit_common.preprocessing import preprocessing_for

    wrong, refused = {}, set()
    for name in [*DEFINITIONS, *TIMM_DEFINITIONS]:
        try:
            config = ViTConfig.from_timm(name)
        except ValueError as e:  # named, with its reason
            assert "not expressible" in str(e), (name, e)
            refused.add(name)
            continue
        model = timm.create_model(name, pretrained=False, device="meta")
        theirs = sum(p.numel() for p in model.parameters())
        cls = vit_torch.ViTForImageClassification if config.num_labels else vit_torch.VisionTransformer
        with torch.device("meta"):
            ours = sum(p.numel() for p in cls(config).parameters())
        if ours != theirs:
            wrong[name] = (ours, theirs)
        tag, pre = model.pretrained_cfg, preprocessing_for(config)
        if ((pre.mean, pre.std, pre.resample, pre.crop_pct, pre.crop_mode, pre.crop_rounding, pre.resize_in_float)
                != (tag["mean"], tag["std"], tag["interpolation"], tag["crop_pct"], tag["crop_mode"], "round", False)):
            wrong[name] = (pre, tag)
    assert not wrong and len(DEFINITIONS) - len(refused) >= 40 and len(TIMM_DEFINITIONS) >= 12, wrong
    # PE spatial has no final norm at all (its tokens are the output): no switch of ours
    assert refused == {n for n in DEFINITIONS if n.startswith("vit_pe_spatial_")}


def test_hf_aimv2_both_ways(tmp_path) -> None:
    torch.manual_seed(0)
    config = transformers.Aimv2VisionConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                            num_attention_heads=4, image_size=28, patch_size=14)
    hf = transformers.Aimv2VisionModel(config).eval()
    _perturb(hf, 5)
    hf.save_pretrained(tmp_path / "hf")
    x = _pixels(28, 28)
    with torch.no_grad():
        ref = hf(pixel_values=x)
    want = {"pooled": ref.pooler_output.numpy(), "tokens": ref.last_hidden_state.numpy()}
    ours = vit_torch.from_pretrained(tmp_path / "hf")
    assert (ours.config.norm_type, ours.config.pooling, ours.config.patch_norm) == ("rmsnorm", "probe", True)
    _close(want, _torch(ours, x))
    _close(want, _flax(tmp_path / "hf", x))
    assert convert_main([str(tmp_path / "hf"), "-o", str(tmp_path / "back"), "--to", "hf", "--verify"]) == 0
    back, info = transformers.Aimv2VisionModel.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        assert torch.equal(back.eval()(pixel_values=x).pooler_output, ref.pooler_output)
