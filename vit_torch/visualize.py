"""The [CLS] token's last-layer attention over the patches (vit_flax.visualize is its twin)."""

from __future__ import annotations

import math

import numpy as np
import torch

from vit_torch.model import ViTForImageClassification, VisionTransformer


@torch.no_grad()
def cls_attention(model: VisionTransformer | ViTForImageClassification, pixel_values: torch.Tensor,
                  interpolate_pos_encoding: bool = False) -> np.ndarray:
    """Attention of [CLS] to every patch in the last layer, averaged over heads: (B, gh, gw)."""
    vit = model.vit if isinstance(model, ViTForImageClassification) else model
    x = vit.embeddings(pixel_values, interpolate_pos_encoding)
    for layer in vit.encoder.layer[:-1]:
        x = layer(x)
    last = vit.encoder.layer[-1]
    attn = last.attention.attention
    h = last.layernorm_before(x)
    b, n, _ = h.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, heads, N, head_dim)

    q, k = split(attn.query(h)), split(attn.key(h))
    probs = (q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)).softmax(dim=-1)  # (B, heads, N, N)
    p = vit.embeddings.patch_embeddings.patch_size
    grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
    out = probs[:, :, 0, 1:].mean(dim=1).reshape(b, *grid)
    return (out.float() if out.dtype in (torch.bfloat16, torch.float16) else out).numpy()
