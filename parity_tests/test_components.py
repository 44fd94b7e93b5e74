"""Every component pair on its own and the whole model: same weights, same inputs, same outputs.

Parametrized over tiny configs x {float32, float64} x {torch-initialised -> flax,
flax-initialised -> torch}. Bounds: float64 max |diff| <= 1e-12, float32 <= 1e-5.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch

from parity_tests.twins import (
    ALL_CONFIGS,
    TINY_CONFIGS,
    TOLERANCE,
    Twin,
    make_twin,
    max_diff,
    pixels,
    tokens,
)

DIRECTIONS = ("torch->flax", "flax->torch")


@functools.lru_cache(maxsize=None)
def twin(config_name: str, dtype: str, direction: str) -> Twin:
    return make_twin(ALL_CONFIGS[config_name], dtype, direction)  # type: ignore[arg-type]


def _hidden(t: Twin) -> tuple[int, int, int]:
    return (2, t.config.num_patches + t.config.num_prefix_tokens, t.config.hidden_size)  # (B, T, hidden)


def _mlp(t: Twin) -> tuple[int, int, int]:
    return (2, t.config.num_patches + t.config.num_prefix_tokens, t.config.intermediate_size)


# component name -> (torch module, flax bound module, inputs as (torch args, flax args))
Inputs = Callable[[Twin], tuple[tuple[Any, ...], tuple[Any, ...]]]


def _one(make: Callable[[Twin], tuple[Any, Any]]) -> Inputs:
    return lambda t: tuple((x,) for x in make(t))  # type: ignore[return-value]


def _pixels(t: Twin) -> tuple[Any, Any]:
    return pixels(t.config, t.dtype)


def _tokens(shape: Callable[[Twin], tuple[int, ...]], seed: int = 2) -> Callable[[Twin], tuple[Any, Any]]:
    return lambda t: tokens(shape(t), t.dtype, seed)


def _output_inputs(t: Twin) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    (x_pt, x_fx), (r_pt, r_fx) = tokens(_mlp(t), t.dtype), tokens(_hidden(t), t.dtype, seed=3)
    return (x_pt, r_pt), (x_fx, r_fx)


COMPONENTS: dict[str, tuple[Callable[[Any], Any], Inputs]] = {
    "ViTPatchEmbeddings": (lambda m: m.vit.embeddings.patch_embeddings, _one(_pixels)),
    "ViTEmbeddings": (lambda m: m.vit.embeddings, _one(_pixels)),
    "ViTSelfAttention": (lambda m: m.vit.encoder.layer[0].attention.attention, _one(_tokens(_hidden))),
    "ViTSelfOutput": (lambda m: m.vit.encoder.layer[0].attention.output, _one(_tokens(_hidden))),
    "ViTAttention": (lambda m: m.vit.encoder.layer[0].attention, _one(_tokens(_hidden))),
    "ViTIntermediate": (lambda m: m.vit.encoder.layer[0].intermediate, _one(_tokens(_hidden))),
    "ViTOutput": (lambda m: m.vit.encoder.layer[0].output, _output_inputs),
    "ViTLayerScale": (lambda m: m.vit.encoder.layer[0].layer_scale2, _one(_tokens(_hidden))),
    "ViTLayer": (lambda m: m.vit.encoder.layer[-1], _one(_tokens(_hidden))),
    "ViTEncoder": (lambda m: m.vit.encoder, _one(_tokens(_hidden))),
    "ViTAttentionPool": (lambda m: m.vit.attention_pool, _one(_tokens(_hidden))),
    "VisionTransformer": (lambda m: m.vit, _one(_pixels)),
    "ViTForImageClassification": (lambda m: m, _one(_pixels)),
}


# components only some configs have
NEEDS = {"ViTLayerScale": lambda c: c.layer_scale, "ViTAttentionPool": lambda c: c.pooling == "map"}
CASES = [(component, name) for component in COMPONENTS for name, c in ALL_CONFIGS.items()
         if NEEDS.get(component, lambda c: True)(c)]


# every component both ways in float64, float32 from torch's weights; float32 from Flax's weights
# is in the slow set (the converted weights are bit-equal either way: tests/test_convert.py)
@pytest.mark.parametrize(("dtype", "direction"), [
    ("float64", "torch->flax"), ("float64", "flax->torch"), ("float32", "torch->flax"),
    pytest.param("float32", "flax->torch", marks=pytest.mark.slow)])
@pytest.mark.parametrize(("component", "config_name"), CASES)
def test_component_parity(component: str, config_name: str, dtype: str, direction: str) -> None:
    t = twin(config_name, dtype, direction)
    get, make_inputs = COMPONENTS[component]
    args_pt, args_fx = make_inputs(t)
    with torch.no_grad():
        out_pt = get(t.torch_model)(*args_pt)
    out_fx = get(t.bound)(*args_fx)
    diff = max_diff(out_pt, out_fx)
    assert diff <= TOLERANCE[dtype], (
        f"{component} [{config_name}, {dtype}, {direction}]: max |diff| {diff:.3e} > "
        f"{TOLERANCE[dtype]:g}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config_name", list(ALL_CONFIGS))
def test_forward_features_parity(config_name: str, dtype: str) -> None:
    """All tokens after the final LayerNorm, not just [CLS]: catches a wrong patch order."""
    t = twin(config_name, dtype, "torch->flax")
    x_pt, x_fx = pixels(t.config, dtype)
    with torch.no_grad():
        out_pt = t.torch_model.vit.forward_features(x_pt)
    out_fx = t.bound.vit.forward_features(x_fx)
    assert max_diff(out_pt, out_fx) <= TOLERANCE[dtype]


def test_parity_suite_detects_a_transposed_kernel() -> None:
    """The comparison has teeth: one transposed square kernel must break parity far beyond 1e-5."""
    t = make_twin(TINY_CONFIGS["h48-3heads"], "float32", "torch->flax")
    q = t.params["vit"]["encoder"]["layer"]["0"]["attention"]["attention"]["query"]
    q["kernel"] = q["kernel"].T
    x_pt, x_fx = pixels(t.config, "float32")
    with torch.no_grad():
        out_pt = t.torch_model(x_pt)
    assert max_diff(out_pt, t.flax_model.apply({"params": t.params}, x_fx)) > 1e-3
