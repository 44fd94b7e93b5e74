"""Any input resolution: position embeddings resampled bicubically at run time
(interpolate_pos_encoding=True), against HF transformers and across the twins; and the permanent
resize for checkpoints."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch as safetensors_torch
import torch
import transformers

import vit_flax
import vit_torch
from parity_tests.twins import TOLERANCE, max_diff, perturb_torch
from vit_cli.convert_tool import main as convert_main
from vit_common.config import ViTConfig
from vit_common.convert import torch_to_flax
from vit_common.resample import bicubic_matrix, resize_pos_embed, resize_state

CFG = ViTConfig(hidden_size=48, num_attention_heads=3, num_hidden_layers=2, intermediate_size=96,
                image_size=24, patch_size=6, num_labels=5)
# off the patch grid too (25 x 31, 13 x 20): floor(size / 6) patches, the remainder pixels dropped, as HF
SIZES = [(36, 36), (18, 42), (12, 12), (6, 30), (24, 24), (25, 31), (13, 20)]


def _x(h: int, w: int, dtype=np.float32, seed: int = 0):
    x = np.random.default_rng(seed).normal(size=(2, h, w, 3)).astype(dtype)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), jnp.asarray(x)


@pytest.mark.parametrize("in_size, out_size", [(14, 24), (14, 7), (3, 5), (7, 7), (1, 4), (24, 14)])
def test_bicubic_matrix_is_torchs_interpolate(in_size: int, out_size: int) -> None:
    x = torch.randn(1, 3, in_size, 2, dtype=torch.float64)
    want = torch.nn.functional.interpolate(x, size=(out_size, 2), mode="bicubic", align_corners=False)
    got = np.einsum("oi,bciw->bcow", bicubic_matrix(in_size, out_size), x.numpy())
    np.testing.assert_allclose(got, want.numpy(), atol=1e-13, rtol=0)


def test_torch_matches_hf_interpolate_pos_encoding(tmp_path) -> None:
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(transformers.ViTConfig.from_dict(CFG.to_hf())).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf.save_pretrained(tmp_path)
    ours = vit_torch.ViTForImageClassification(CFG).eval()
    ours.load_state_dict(safetensors_torch.load_file(str(tmp_path / "model.safetensors")))
    for h, w in SIZES:
        x, _ = _x(h, w)
        with torch.no_grad():
            want = hf(pixel_values=x, interpolate_pos_encoding=True).logits
            got = ours(x, interpolate_pos_encoding=True)
        assert max_diff(want, got.numpy()) <= 1e-5, (h, w)


@pytest.mark.parametrize("dtype", [pytest.param("float32", marks=pytest.mark.slow), "float64"])
def test_twins_agree_at_other_sizes(dtype: str) -> None:
    config = CFG.replace(image_size=(24, 30))  # a non-square grid to start from, too
    torch_dtype, jax_dtype = (torch.float32, jnp.float32) if dtype == "float32" else (torch.float64, jnp.float64)
    torch.manual_seed(1)
    pt = vit_torch.ViTForImageClassification(config).to(torch_dtype).eval()
    perturb_torch(pt, 1)
    fx = vit_flax.ViTForImageClassification(config, dtype=jax_dtype, param_dtype=jax_dtype)
    params = torch_to_flax(pt.state_dict(), config)
    for h, w in SIZES + [(24, 30)]:
        x_pt, x_fx = _x(h, w, np.float32 if dtype == "float32" else np.float64)
        with torch.no_grad():
            want = pt(x_pt, interpolate_pos_encoding=True)
        got = fx.apply({"params": params}, x_fx, interpolate_pos_encoding=True)
        assert max_diff(want, got) <= TOLERANCE[dtype], (h, w)


def test_sizes_under_one_patch_are_refused() -> None:
    pt = vit_torch.VisionTransformer(CFG)
    with pytest.raises(ValueError, match="at least the patch size 6"):
        pt(torch.zeros(1, 3, 5, 24), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match=r"got \(1, 3, 36, 36\)"):
        pt(torch.zeros(1, 3, 36, 36))  # without the flag, only the config's size
    fx = vit_flax.VisionTransformer(CFG)
    params = fx.init(__import__("jax").random.key(0), jnp.zeros((1, 24, 24, 3), jnp.float32))
    with pytest.raises(ValueError, match="at least the patch size 6"):
        fx.apply(params, jnp.zeros((1, 24, 4, 3), jnp.float32), interpolate_pos_encoding=True)


@pytest.mark.parametrize("twin", ["torch", "flax"])
def test_remainder_pixels_are_dropped(twin: str) -> None:
    """A size off the patch grid is the image cropped to floor(size / p) patches (bottom and right
    pixels dropped), in a config (So400m/14 at 384) and at run time."""
    config = CFG.replace(image_size=(27, 29))  # 4 x 4 patches of 6, 3 and 5 pixels left over
    assert config.grid_size == (4, 4) and config.num_patches == 16
    x = np.random.default_rng(4).normal(size=(2, 27, 29, 3)).astype(np.float32)
    crop = x[:, :24, :24]
    if twin == "torch":
        torch.manual_seed(4)
        pt = vit_torch.ViTForImageClassification(config).eval()
        perturb_torch(pt, 4)
        with torch.no_grad():
            full = pt(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
            cropped = pt(torch.from_numpy(crop.transpose(0, 3, 1, 2).copy()), interpolate_pos_encoding=True)
            shifted = pt(torch.from_numpy(np.roll(x, 1, axis=1).transpose(0, 3, 1, 2).copy()))
    else:
        fx = vit_flax.ViTForImageClassification(config)
        params = fx.init(__import__("jax").random.key(4), jnp.asarray(x))
        full = fx.apply(params, jnp.asarray(x))
        cropped = fx.apply(params, jnp.asarray(crop), interpolate_pos_encoding=True)
        shifted = fx.apply(params, jnp.asarray(np.roll(x, 1, axis=1)))
    full, cropped, shifted = (np.asarray(a) for a in (full, cropped, shifted))
    assert np.abs(full - cropped).max() <= 1e-6
    assert np.abs(full - shifted).max() > 1e-3  # the kept pixels are the top-left ones


def test_permanent_resize_equals_run_time_resize(tmp_path) -> None:
    torch.manual_seed(2)
    pt = vit_torch.ViTForImageClassification(CFG).double().eval()
    perturb_torch(pt, 2)
    state = {k: v.numpy() for k, v in pt.state_dict().items()}
    new_state, new_config = resize_state(state, CFG, (36, 48))
    assert new_config.image_hw == (36, 48) and new_state["vit.embeddings.position_embeddings"].shape == (1, 49, 48)
    resized = vit_torch.ViTForImageClassification(new_config).double().eval()
    vit_torch.load_numpy_state_dict(resized, new_state)
    x, _ = _x(36, 48, np.float64)
    with torch.no_grad():
        assert max_diff(pt(x, interpolate_pos_encoding=True), resized(x).numpy()) <= 1e-12
    with pytest.raises(ValueError, match=r"expected position embeddings \(1, 1 \+ 4\*4, D\)"):
        resize_pos_embed(np.zeros((1, 10, 4)), (4, 4), (2, 2))


def test_vit_convert_image_size(tmp_path, capsys) -> None:
    torch.manual_seed(3)
    vit_torch.save_pretrained(vit_torch.ViTForImageClassification(CFG).eval(), tmp_path / "src")
    assert convert_main([str(tmp_path / "src"), "-o", str(tmp_path / "dst"), "--image-size", "36",
                         "--verify"]) == 0
    out = capsys.readouterr().out
    assert "resampled to image size 36" in out and "verify: OK" in out
    assert vit_torch.from_pretrained(tmp_path / "dst").config.image_size == 36
    assert convert_main([str(tmp_path / "src"), "-o", str(tmp_path / "bad"), "--image-size", "5"]) == 2
    assert "at least patch_size" in capsys.readouterr().err
