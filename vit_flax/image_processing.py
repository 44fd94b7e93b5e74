"""preprocess_image for Flax: the shared numpy core, returned as a (1, H, W, C) float32 jax array."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vit_common.config import ViTConfig
from vit_common.preprocessing import ImageInput, preprocess_array


def preprocess_image(image: ImageInput, config: ViTConfig | None = None, **kwargs: Any) -> jax.Array:
    """Resize to config.image_size, scale to [0, 1], normalize (ImageNet mean/std by default) and
    add the batch dimension: (1, H, W, C). Keyword arguments go to vit_common's preprocess_array."""
    hwc = preprocess_array(image, config, **kwargs)  # (H, W, C)
    return jnp.asarray(hwc)[None]  # (1, H, W, C)
