"""Looking at it: de-normalised images and [CLS] attention maps, the same in both twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vit_flax
import vit_flax.visualize
import vit_torch
import vit_torch.visualize
from parity_tests.twins import TINY_CONFIGS, TOLERANCE, make_twin, pixels
from vit_common.preprocessing import PIPELINES, demo_image, preprocess_array
from vit_common.visualize import denormalize, overlay_attention, save_png


@pytest.mark.parametrize("dtype", [pytest.param("float32", marks=pytest.mark.slow), "float64"])
@pytest.mark.parametrize("config_name", ["h48-3heads", "nonsquare-noqkvbias-tanh", "deep-eps1e-6"])
def test_cls_attention_twins_agree(config_name: str, dtype: str) -> None:
    t = make_twin(TINY_CONFIGS[config_name], dtype, "torch->flax")
    x_pt, x_fx = pixels(t.config, dtype)
    a = vit_torch.visualize.cls_attention(t.torch_model, x_pt)
    b = vit_flax.visualize.cls_attention(t.flax_model, t.params, x_fx)
    assert a.shape == (2, *t.config.grid_size) and a.dtype == b.dtype
    assert float(np.abs(a - b).max()) <= TOLERANCE[dtype]
    assert np.all(a >= 0) and np.all(a.sum(axis=(1, 2)) < 1)  # the rest is [CLS] attending itself
    # at another resolution too
    h, w = t.config.image_hw
    x_pt2, x_fx2 = pixels(t.config.replace(image_size=(2 * h, w)), dtype)
    a2 = vit_torch.visualize.cls_attention(t.torch_model, x_pt2, interpolate_pos_encoding=True)
    b2 = vit_flax.visualize.cls_attention(t.flax_model, t.params, x_fx2, interpolate_pos_encoding=True)
    assert a2.shape[1:] == (2 * t.config.grid_size[0], t.config.grid_size[1])
    assert float(np.abs(a2 - b2).max()) <= TOLERANCE[dtype]


def test_attention_matches_the_models_own_softmax() -> None:
    """An independent route: hook the last ViTSelfAttention's query/key inputs in torch."""
    t = make_twin(TINY_CONFIGS["h48-3heads"], "float64", "torch->flax")
    vit = t.torch_model.vit
    seen = {}
    vit.encoder.layer[-1].attention.attention.register_forward_hook(
        lambda mod, inp, out: seen.setdefault("x", inp[0]))
    x_pt, _ = pixels(t.config, "float64")
    with torch.no_grad():
        vit(x_pt)
        attn = vit.encoder.layer[-1].attention.attention
        q = attn.query(seen["x"]).view(2, -1, 3, 16).transpose(1, 2)
        k = attn.key(seen["x"]).view(2, -1, 3, 16).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)[:, :, 0, 1:].mean(1)
    got = vit_torch.visualize.cls_attention(t.torch_model, x_pt)
    np.testing.assert_allclose(got.reshape(2, -1), probs.numpy(), atol=1e-12)


def test_denormalize_round_trip_and_pngs(tmp_path) -> None:
    image = demo_image(64)
    for preset in ("imagenet", "inception"):
        x = preprocess_array(image, image_size=64, preset=preset)
        back = denormalize(x, settings=PIPELINES[preset])
        assert back.dtype == np.uint8 and back.shape == (64, 64, 3)
        assert int(np.abs(back.astype(int) - image.astype(int)).max()) <= 1
    chw = preprocess_array(image, image_size=64).transpose(2, 0, 1)
    np.testing.assert_array_equal(denormalize(chw), denormalize(chw.transpose(1, 2, 0)))
    att = np.zeros((4, 4))
    att[1, 2] = 1.0
    over = overlay_attention(image, att)
    assert over.shape == image.shape and over[24, 40].sum() > over[56, 8].sum()  # hot patch brighter
    save_png(tmp_path / "a.png", over)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), over)
    with pytest.raises(FileExistsError):
        save_png(tmp_path / "a.png", over)
