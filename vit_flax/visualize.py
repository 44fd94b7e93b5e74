"""The [CLS] token's last-layer attention over the patches (vit_torch.visualize is its twin)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vit_common.convert import unwrap_params
from vit_flax.model import ViTForImageClassification


def cls_attention(model: Any, params: Any, pixel_values: jax.Array,
                  interpolate_pos_encoding: bool = False) -> np.ndarray:
    """Attention of [CLS] to every patch in the last layer, averaged over heads: (B, gh, gw)."""
    bound = model.bind({"params": unwrap_params(params)})
    vit = bound.vit if isinstance(model, ViTForImageClassification) else bound
    probs = vit.attention_maps(pixel_values, interpolate_pos_encoding)  # (B, heads, N + 1, N + 1)
    p = vit.config.patch_size
    grid = (pixel_values.shape[1] // p, pixel_values.shape[2] // p)
    out = probs[:, :, 0, 1:].mean(axis=1).reshape(probs.shape[0], *grid)
    return np.asarray(out.astype(jnp.promote_types(out.dtype, jnp.float32)))
