"""The [CLS] token's last-layer attention over the patches (vit_torch.visualize is its twin)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vit_flax.model import ViTForImageClassification


def cls_attention(model: Any, params: Any, pixel_values: jax.Array,
                  interpolate_pos_encoding: bool = False) -> np.ndarray:
    """Attention of [CLS] to every patch in the last layer, averaged over heads: (B, gh, gw)."""
    params = params["params"] if set(params) == {"params"} else params
    bound = model.bind({"params": params})
    vit = bound.vit if isinstance(model, ViTForImageClassification) else bound
    x = vit.embeddings(pixel_values, False, interpolate_pos_encoding)
    layers = list(vit.encoder.layer)
    for layer in layers[:-1]:
        x = layer(x)
    last = layers[-1]
    attn = last.attention.attention
    h = last.layernorm_before(x)
    b, n, _ = h.shape

    def split(t: jax.Array) -> jax.Array:
        return t.reshape(b, n, attn.num_heads, attn.head_dim).transpose(0, 2, 1, 3)  # (B, heads, N, head_dim)

    q, k = split(attn.query(h)), split(attn.key(h))
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(attn.head_dim)
    probs = jax.nn.softmax(scores, axis=-1)  # (B, heads, N, N)
    p = vit.embeddings.patch_embeddings.patch_size
    grid = (pixel_values.shape[1] // p, pixel_values.shape[2] // p)
    out = probs[:, :, 0, 1:].mean(axis=1).reshape(b, *grid)
    return np.asarray(out.astype(jnp.promote_types(out.dtype, jnp.float32)))
