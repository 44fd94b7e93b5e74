"""Parity on inputs that expose numerics: what zero-mean, unit-scale noise hides.

Deep layers of trained ViTs carry large per-channel offsets ("massive activations") and scales; a
LayerNorm variance taken as E[x^2] - E[x]^2 agrees with the two-pass one on unit noise but not there.
Pixels at the extremes of their valid range, and sequences of hundreds of tokens (a softmax over
many keys), are checked too. Every component pair and the whole model, float64 and float32, weights
converted both ways. Bound: the suite's absolute bounds relative to the output's size (float32 keeps
~7 digits of a number of any size), widened by 1/20 of the input's centring loss where a LayerNorm
centres it (see `_check`).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from parity_tests.test_components import COMPONENTS, DIRECTIONS
from parity_tests.test_components import twin as component_twin
from parity_tests.twins import (
    DTYPES,
    TINY_CONFIGS,
    TOLERANCE,
    Twin,
    make_twin,
    max_diff,
)
from vit_common.config import ViTConfig
from vit_common.preprocessing import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

LONG = ViTConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=64,
                 image_size=64, patch_size=4, layer_norm_eps=1e-6, num_labels=3)  # 257 tokens
CONFIGS = {**TINY_CONFIGS, "long-257-tokens": LONG}


@functools.lru_cache(maxsize=None)
def twin(config_name: str, dtype: str, direction: str) -> Twin:
    if config_name in TINY_CONFIGS:  # the component suite's twins, built once per worker
        return component_twin(config_name, dtype, direction)
    return make_twin(CONFIGS[config_name], dtype, direction)  # type: ignore[arg-type]


def deep_activations(shape: tuple[int, ...], dtype: str, seed: int = 7) -> tuple[torch.Tensor, object]:
    """Hidden states as deep layers have them, two kinds of token alternating: a residual stream
    drifted far from zero (a shared offset of 300 over small per-channel offsets and scales: the
    case where E[x^2] - E[x]^2 cancels), and tokens with two "massive" channels in the hundreds
    over per-channel offsets and scales."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    channels = shape[-1]
    drifted = 300.0 + rng.normal(0.0, 2.0, channels) + np.exp(rng.normal(0.0, 0.5, channels)) * rng.normal(size=shape)
    offset = rng.normal(0.0, 3.0, channels)
    offset[rng.choice(channels, 2, replace=False)] = [400.0, -250.0]
    massive = offset + np.exp(rng.normal(0.0, 1.0, channels)) * rng.normal(size=shape)
    token = np.arange(shape[-2])[:, None] % 2 == 0  # (N, 1): even tokens drifted, odd massive
    x = np.where(token, drifted, massive).astype(DTYPES[dtype][2])
    return torch.from_numpy(x.copy()), jnp.asarray(x)


def normalized_activations(shape: tuple[int, ...], dtype: str, seed: int = 11) -> tuple[torch.Tensor, object]:
    """What a LayerNorm hands on in a trained model: unit noise under a per-channel scale and
    offset (its learned gamma and beta), two outlier channels scaled by 20."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    channels = shape[-1]
    scale = np.exp(rng.normal(0.0, 0.7, channels))
    scale[rng.choice(channels, 2, replace=False)] *= 20.0
    x = (rng.normal(0.0, 0.5, channels) + scale * rng.normal(size=shape)).astype(DTYPES[dtype][2])
    return torch.from_numpy(x.copy()), jnp.asarray(x)


def centring_loss(x: torch.Tensor) -> float:
    """max over tokens of |mean| / std: centring such a token in floating point loses that factor
    of its relative precision (1 for centred inputs)."""
    v = x.detach().double().numpy()
    return float(max(1.0, (np.abs(v.mean(-1)) / v.std(-1)).max()))


def _check(out_pt: torch.Tensor, out_fx: object, dtype: str, what: str, inputs: torch.Tensor | None = None) -> None:
    """max |diff| <= TOLERANCE x max(1, max |output|) x max(1, centring loss / 20): the suite's
    bound, relative to the output's size, widened only where the input itself cannot be centred
    to the bound's precision. (E[x^2] - E[x]^2 loses the square of the centring loss, and fails.)"""
    scale = max(1.0, float(np.abs(out_pt.detach().double().numpy()).max()))
    widen = 1.0 if inputs is None else max(1.0, centring_loss(inputs) / 20.0)
    diff = max_diff(out_pt, out_fx)
    bound = TOLERANCE[dtype] * scale * widen
    assert diff <= bound, f"{what}: max |diff| {diff:.3e} > {bound:.3e}"


# components fed by the residual stream in the model get drifted / massive activations; those fed
# by a LayerNorm (attention, MLP in) or by attention get what a LayerNorm hands on
RESIDUAL_FED = ("ViTOutput", "ViTLayer", "ViTEncoder")
NORM_FED = ("ViTSelfAttention", "ViTSelfOutput", "ViTAttention", "ViTIntermediate")
TOKEN_COMPONENTS = NORM_FED + RESIDUAL_FED


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("component", TOKEN_COMPONENTS)
def test_components_on_deep_layer_activations(component: str, config_name: str, dtype: str,
                                              direction: str) -> None:
    t = twin(config_name, dtype, direction)
    n = t.config.num_patches + 1
    if component == "ViTOutput":  # (MLP activations, residual)
        x_pt, x_fx = normalized_activations((2, n, t.config.intermediate_size), dtype)
        r_pt, r_fx = deep_activations((2, n, t.config.hidden_size), dtype, seed=8)
        args_pt, args_fx = (x_pt, r_pt), (x_fx, r_fx)
    else:
        make = deep_activations if component in RESIDUAL_FED else normalized_activations
        x_pt, x_fx = make((2, n, t.config.hidden_size), dtype)
        args_pt, args_fx = (x_pt,), (x_fx,)
    get, _ = COMPONENTS[component]
    with torch.no_grad():
        out_pt = get(t.torch_model)(*args_pt)
    _check(out_pt, get(t.bound)(*args_fx), dtype, f"{component} [{config_name}, {dtype}, {direction}]",
           inputs=args_pt[0] if component in ("ViTLayer", "ViTEncoder") else None)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_final_layernorm_on_deep_layer_activations(config_name: str, dtype: str, direction: str) -> None:
    t = twin(config_name, dtype, direction)
    x_pt, x_fx = deep_activations((2, t.config.num_patches + 1, t.config.hidden_size), dtype)
    with torch.no_grad():
        out_pt = t.torch_model.vit.layernorm(x_pt)
    _check(out_pt, t.bound.vit.layernorm(x_fx), dtype, f"layernorm [{config_name}, {dtype}, {direction}]",
           inputs=x_pt)


def extreme_pixels(config: ViTConfig, dtype: str, seed: int = 9) -> tuple[torch.Tensor, object]:
    """Every pixel black or white (the ends of the valid range after ImageNet normalisation)."""
    import jax.numpy as jnp

    h, w = config.image_hw
    c = config.num_channels
    rng = np.random.default_rng(seed)
    mean = np.resize(np.asarray(IMAGENET_DEFAULT_MEAN), c)
    std = np.resize(np.asarray(IMAGENET_DEFAULT_STD), c)
    x = ((rng.integers(0, 2, (2, h, w, c)) - mean) / std).astype(DTYPES[dtype][2])
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), jnp.asarray(x)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_whole_model_on_extreme_pixels(config_name: str, dtype: str, direction: str) -> None:
    t = twin(config_name, dtype, direction)
    x_pt, x_fx = extreme_pixels(t.config, dtype)
    with torch.no_grad():
        features = t.torch_model.vit.forward_features(x_pt)
        logits = t.torch_model(x_pt)
    what = f"[{config_name}, {dtype}, {direction}]"
    _check(features, t.bound.vit.forward_features(x_fx), dtype, f"forward_features {what}")
    _check(logits, t.bound(x_fx), dtype, f"logits {what}")


def test_deep_activations_expose_the_one_pass_variance() -> None:
    """The inputs above do what they are for: E[x^2] - E[x]^2 in float32 is off by far more than
    the bound on them, while on unit noise it is not."""
    x, _ = deep_activations((2, 17, 48), "float32")
    x = x.numpy()
    two_pass = x.var(axis=-1, dtype=np.float64)
    one_pass = (x * x).mean(axis=-1) - x.mean(axis=-1) ** 2  # float32 throughout
    assert (np.abs(one_pass - two_pass) / two_pass).max() > 10 * TOLERANCE["float32"]
    noise = np.random.default_rng(0).normal(size=(2, 17, 48)).astype(np.float32)
    one_pass = (noise * noise).mean(axis=-1) - noise.mean(axis=-1) ** 2
    two_pass = noise.var(axis=-1, dtype=np.float64)
    assert (np.abs(one_pass - two_pass) / two_pass).max() < TOLERANCE["float32"]
