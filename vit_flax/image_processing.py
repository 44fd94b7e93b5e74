"""preprocess_image for Flax: the shared numpy core, returned as a (N, H, W, C) float32 jax array."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from vit_common.config import ViTConfig
from vit_common.preprocessing import ImageInput, preprocess_batch


def preprocess_image(image: ImageInput | Sequence[ImageInput], config: ViTConfig | None = None,
                     **kwargs: Any) -> jax.Array:
    """Resize to the model's image size, scale to [0, 1], normalize, add the batch dimension:
    (1, H, W, C), or (N, H, W, C) for a list of N images; the same numbers as vit_torch's.
    Keyword arguments as vit_torch.preprocess_image."""
    return jnp.asarray(preprocess_batch(image, config, **kwargs))  # (N, H, W, C)
