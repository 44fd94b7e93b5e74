"""The [CLS] token's last-layer attention over the patches (vit_flax.visualize is its twin)."""

from __future__ import annotations

import numpy as np
import torch

from vit_torch.model import VisionTransformer, ViTForImageClassification


@torch.no_grad()
def cls_attention(model: VisionTransformer | ViTForImageClassification, pixel_values: torch.Tensor,
                  interpolate_pos_encoding: bool = False) -> np.ndarray:
    """Attention of [CLS] to every patch in the last layer, averaged over heads: (B, gh, gw)."""
    vit = model.vit if isinstance(model, ViTForImageClassification) else model
    probs = vit.attention_maps(pixel_values, interpolate_pos_encoding)  # (B, heads, N + 1, N + 1)
    p = vit.embeddings.patch_embeddings.patch_size
    grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
    out = probs[:, :, 0, 1:].mean(dim=1).reshape(probs.shape[0], *grid)
    return (out.float() if out.dtype in (torch.bfloat16, torch.float16) else out).numpy()
