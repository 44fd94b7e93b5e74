"""External oracle: HF transformers' ViT with random weights (no download).

Our torch model loads HF's saved checkpoint strictly, with no renaming, and reproduces HF's outputs;
our Flax model reproduces them after conversion; HF loads our weights with nothing missing or extra.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import safetensors.torch as safetensors_torch
import torch
import transformers

import vit_flax  # noqa: E402
import vit_torch  # noqa: E402
from parity_tests.twins import TINY_CONFIGS, max_diff, pixels  # noqa: E402
from vit_common.config import ViTConfig  # noqa: E402
from vit_common.convert import torch_to_flax  # noqa: E402

FP32 = 1e-5


def _hf_config(config: ViTConfig) -> object:
    return transformers.ViTConfig.from_dict(config.to_hf())


def _save_hf(model: torch.nn.Module, tmp_path) -> dict[str, torch.Tensor]:
    """HF's save_pretrained output: the on-disk (checkpoint) names, which transformers 5 keeps in the
    classic `encoder.layer.N.attention.attention.query` form although its modules are renamed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(tmp_path)
    return safetensors_torch.load_file(str(tmp_path / "model.safetensors"))


@pytest.mark.parametrize("config_name", list(TINY_CONFIGS))
def test_hf_vitmodel(config_name: str, tmp_path) -> None:
    config = TINY_CONFIGS[config_name]
    torch.manual_seed(0)
    hf = transformers.ViTModel(_hf_config(config), add_pooling_layer=False).eval()
    state = _save_hf(hf, tmp_path)
    ours = vit_torch.VisionTransformer(config).eval()
    ours.load_state_dict(state, strict=True)
    x_pt, x_fx = pixels(config, "float32")
    with torch.no_grad():
        want = hf(pixel_values=x_pt).last_hidden_state  # after the final LayerNorm
        got_features = ours.forward_features(x_pt)
        got_cls = ours(x_pt)
    assert max_diff(want, got_features.numpy()) <= FP32
    assert max_diff(want[:, 0], got_cls.numpy()) <= FP32
    fx = vit_flax.VisionTransformer(config)
    cls_fx = fx.apply({"params": torch_to_flax(state, config)}, x_fx)
    assert max_diff(want[:, 0], cls_fx) <= FP32


@pytest.mark.parametrize("config_name", list(TINY_CONFIGS))
def test_hf_image_classification(config_name: str, tmp_path) -> None:
    config = TINY_CONFIGS[config_name]
    torch.manual_seed(1)
    hf = transformers.ViTForImageClassification(_hf_config(config)).eval()
    state = _save_hf(hf, tmp_path)
    ours = vit_torch.ViTForImageClassification(config).eval()
    ours.load_state_dict(state, strict=True)
    x_pt, x_fx = pixels(config, "float32")
    with torch.no_grad():
        want = hf(pixel_values=x_pt).logits
        got = ours(x_pt)
    assert max_diff(want, got.numpy()) <= FP32
    logits_fx = vit_flax.ViTForImageClassification(config).apply(
        {"params": torch_to_flax(state, config)}, x_fx)
    assert max_diff(want, logits_fx) <= FP32


def test_hf_loads_our_weights(tmp_path) -> None:
    """Our state dict is an HF checkpoint: from_pretrained reports nothing missing or unexpected."""
    config = TINY_CONFIGS["nonsquare-noqkvbias-tanh"]
    torch.manual_seed(2)
    ours = vit_torch.ViTForImageClassification(config).eval()
    config.to_hf(tmp_path / "config.json")
    safetensors_torch.save_file(ours.state_dict(), str(tmp_path / "model.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf, info = transformers.ViTForImageClassification.from_pretrained(
            tmp_path, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    x_pt, _ = pixels(config, "float32")
    with torch.no_grad():
        assert max_diff(hf.eval()(pixel_values=x_pt).logits, ours(x_pt).numpy()) <= FP32


def test_hf_config_round_trip(tmp_path) -> None:
    """HF reads our config.json and writes one we read back to the same architecture."""
    config = TINY_CONFIGS["1channel-pttanh-eps1e-12"]
    hf_config = _hf_config(config)
    assert hf_config.num_labels == config.num_labels
    assert hf_config.hidden_act == config.hidden_act
    hf_config.save_pretrained(tmp_path)
    back = ViTConfig.from_hf(tmp_path / "config.json")
    assert back == config
    assert np.array_equal(back.image_hw, config.image_hw)


@pytest.mark.parametrize("layer", [0, -1])
def test_attention_maps_are_hfs_attentions(layer: int, tmp_path) -> None:
    """Both twins' attention probabilities, taken from the layers themselves, equal HF's
    output_attentions (eager attention) for the same layer."""
    config = TINY_CONFIGS["h48-3heads"]
    torch.manual_seed(1)
    hf_config = _hf_config(config)
    hf_config._attn_implementation = "eager"  # the probabilities are returned by eager attention
    hf = transformers.ViTModel(hf_config, add_pooling_layer=False).eval()
    state = _save_hf(hf, tmp_path)
    ours = vit_torch.VisionTransformer(config).eval()
    ours.load_state_dict(state, strict=True)
    x_pt, x_fx = pixels(config, "float32")
    with torch.no_grad():
        want = hf(pixel_values=x_pt, output_attentions=True).attentions[layer]  # (B, heads, N, N)
        got = ours.attention_maps(x_pt, layer=layer)
    assert got.shape == want.shape == (x_pt.shape[0], config.num_attention_heads,
                                       config.num_patches + 1, config.num_patches + 1)
    assert max_diff(want, got.numpy()) <= FP32
    fx = vit_flax.VisionTransformer(config)
    got_fx = fx.apply({"params": torch_to_flax(state, config)}, x_fx, layer=layer,
                      method=fx.attention_maps)
    assert max_diff(want, got_fx) <= FP32
    with pytest.raises(IndexError):
        ours.attention_maps(x_pt, layer=config.num_hidden_layers)
