"""Helpers for the parity tests: build a torch/flax pair holding the same weights."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import torch

import vit_flax
import vit_torch
from vit_common.config import ViTConfig
from vit_common.convert import flax_to_torch, torch_to_flax

Direction = Literal["torch->flax", "flax->torch"]
DTYPES = {"float32": (torch.float32, jnp.float32, np.float32),
          "float64": (torch.float64, jnp.float64, np.float64)}
# The suite's bounds: max |diff| of any output element on the tiny configs
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}

# Tiny configs chosen to catch layout bugs: heads that don't divide evenly into a power of two,
# non-square patch grids (h vs w swaps), no qkv bias, both GELUs, both common eps, one channel.
TINY_CONFIGS: dict[str, ViTConfig] = {
    "h48-3heads": ViTConfig(hidden_size=48, num_attention_heads=3, num_hidden_layers=2,
                            intermediate_size=96, image_size=24, patch_size=6, num_labels=7),
    "nonsquare-noqkvbias-tanh": ViTConfig(
        hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=80,
        image_size=(16, 28), patch_size=4, qkv_bias=False, hidden_act="gelu_new",
        layer_norm_eps=1e-6, num_labels=3),
    "1channel-pttanh-eps1e-12": ViTConfig(
        hidden_size=24, num_attention_heads=2, num_hidden_layers=1, intermediate_size=40,
        image_size=(15, 9), patch_size=3, num_channels=1, hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-12, num_labels=2),
    "deep-eps1e-6": ViTConfig(hidden_size=40, num_attention_heads=5, num_hidden_layers=3,
                              intermediate_size=64, image_size=20, patch_size=5,
                              layer_norm_eps=1e-6, num_labels=4),
}

# The family switches, every value of each in at least one tiny config (classifier_input too)
FAMILY_CONFIGS: dict[str, ViTConfig] = {
    "dinov2reg-swiglu-qknorm": ViTConfig(
        hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=24,
        image_size=(16, 28), patch_size=4, layer_norm_eps=1e-6, num_labels=3, num_register_tokens=2,
        layer_scale=True, layerscale_value=0.5, mask_token=True, mlp_type="swiglu", qk_norm=True,
        position_embedding_resampling="bicubic_antialias", classifier_input="cls_patch_mean"),
    "deit-distilled-tanh": ViTConfig(
        hidden_size=48, num_attention_heads=3, num_hidden_layers=2, intermediate_size=96,
        image_size=24, patch_size=6, hidden_act="gelu_new", layer_norm_eps=1e-6, num_labels=5,
        distillation_token=True),
    "siglip-map-noqkvbias": ViTConfig(
        hidden_size=48, num_attention_heads=3, num_hidden_layers=2, intermediate_size=72,
        image_size=(18, 12), patch_size=6, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
        qkv_bias=False, num_labels=4, class_token=False, pooling="map",
        position_embedding_covers_prefix=False),
    "clip-prenorm-pooled": ViTConfig(
        hidden_size=24, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40,
        image_size=15, patch_size=3, hidden_act="quick_gelu", layer_norm_eps=1e-5, num_labels=2,
        pre_norm=True, patch_bias=False, final_norm="pooled", classifier_input="patch_mean"),
    "bigvision-sincos-gap-reg": ViTConfig(
        hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48,
        image_size=(12, 20), patch_size=4, hidden_act="gelu_new", layer_norm_eps=1e-6,
        num_labels=3, num_register_tokens=1, position_embedding_type="sincos2d", pooling="gap",
        final_norm="pooled"),
    "nopos-map-cls": ViTConfig(
        hidden_size=24, num_attention_heads=3, num_hidden_layers=1, intermediate_size=32,
        image_size=12, patch_size=4, num_labels=2, position_embedding_type="none", pooling="map",
        qk_norm=True, classifier_input="cls"),
}
ALL_CONFIGS: dict[str, ViTConfig] = {**TINY_CONFIGS, **FAMILY_CONFIGS}


@dataclasses.dataclass
class Twin:
    config: ViTConfig
    torch_model: torch.nn.Module  # ViTForImageClassification, eval mode
    flax_model: Any  # vit_flax.ViTForImageClassification
    params: dict[str, Any]
    dtype: str

    @property
    def bound(self) -> Any:
        return self.flax_model.bind({"params": self.params})


def perturb_torch(model: torch.nn.Module, seed: int, vectors_only: bool = False) -> None:
    """Random values in every tensor, biases and LayerNorm scales included: a swapped bias or scale
    is invisible while they are all 0 and 1. `vectors_only` leaves the matrices at their init scale
    (std 0.02): noise of 0.1 on every weight of a 768-wide model is far from any trained model's
    conditioning, and fp32 error then grows with the blown-up activations, not with any bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if vectors_only and p.ndim > 1:
                continue
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))


def perturb_flax(params: Any, seed: int) -> Any:
    """0.1 * N(0, 1) added to every leaf, drawn in numpy (eager jax.random compiles once per shape,
    seconds for a tiny model)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda p: jnp.asarray(np.asarray(p) + 0.1 * rng.standard_normal(p.shape).astype(p.dtype)), params)


def flax_init_values(shapes: Any, config: ViTConfig, seed: int) -> Any:
    """Init-like values for a tree of shapes: LayerNorm scales 1, LayerScale its value, biases 0,
    everything else N(0, initializer_range^2)."""
    rng = np.random.default_rng(seed + 1000)

    def value(path: Any, leaf: Any) -> jax.Array:
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "scale":
            v = np.ones(leaf.shape)
        elif name == "lambda1":
            v = np.full(leaf.shape, config.layerscale_value)
        elif name == "bias":
            v = np.zeros(leaf.shape)
        else:
            v = config.initializer_range * rng.standard_normal(leaf.shape)
        return jnp.asarray(v.astype(leaf.dtype))

    return jax.tree_util.tree_map_with_path(value, shapes)


def make_twin(config: ViTConfig, dtype: str, direction: Direction, seed: int = 0) -> Twin:
    torch_dtype, jax_dtype, _ = DTYPES[dtype]
    fx = vit_flax.ViTForImageClassification(config, dtype=jax_dtype, param_dtype=jax_dtype)
    if direction == "torch->flax":
        torch.manual_seed(seed)
        pt = vit_torch.ViTForImageClassification(config, "eager").to(torch_dtype).eval()  # the written-out maths
        perturb_torch(pt, seed)
        params = jax.tree_util.tree_map(jnp.asarray, torch_to_flax(pt.state_dict(), config))
    elif direction == "flax->torch":
        h, w = config.image_hw
        # the tree's shapes from flax, values drawn in numpy at init's scales (linen's init run op
        # by op dispatches and compiles hundreds of tiny ops: seconds per twin)
        shapes = jax.eval_shape(fx.init, jax.random.key(seed), jnp.zeros((1, h, w, config.num_channels), jax_dtype))
        params = perturb_flax(flax_init_values(shapes["params"], config, seed), seed)
        pt = vit_torch.ViTForImageClassification(config, "eager").to(torch_dtype).eval()  # the written-out maths
        vit_torch.load_numpy_state_dict(pt, flax_to_torch(params, config))
    else:
        raise ValueError(f"unknown direction {direction!r}")
    return Twin(config, pt, fx, params, dtype)


def pixels(config: ViTConfig, dtype: str, batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, jax.Array]:
    """Fresh random pixels: torch (B, C, H, W) and the same values flax-style (B, H, W, C)."""
    h, w = config.image_hw
    x = np.random.default_rng(seed).normal(size=(batch, h, w, config.num_channels))
    x = x.astype(DTYPES[dtype][2])
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), jnp.asarray(x)


def tokens(shape: tuple[int, ...], dtype: str, seed: int = 2) -> tuple[torch.Tensor, jax.Array]:
    x = np.random.default_rng(seed).normal(size=shape).astype(DTYPES[dtype][2])
    return torch.from_numpy(x.copy()), jnp.asarray(x)


def max_diff(a: torch.Tensor, b: jax.Array) -> float:
    a_np = a.detach().numpy()
    b_np = np.asarray(b)
    assert a_np.shape == b_np.shape, f"shapes differ: torch {a_np.shape}, flax {b_np.shape}"
    assert a_np.dtype == b_np.dtype, f"dtypes differ: torch {a_np.dtype}, flax {b_np.dtype}"
    return float(np.abs(a_np - b_np).max())
