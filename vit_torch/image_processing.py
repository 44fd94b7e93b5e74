"""preprocess_image for PyTorch: the shared numpy core, returned as a (N, C, H, W) float32 tensor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vit_common.config import ViTConfig
from vit_common.preprocessing import ImageInput, preprocess_batch


def preprocess_image(image: ImageInput | Sequence[ImageInput], config: ViTConfig | None = None,
                     **kwargs: Any) -> torch.Tensor:
    """Resize to the model's image size, scale to [0, 1], normalize, add the batch dimension:
    (1, C, H, W), or (N, C, H, W) for a list of N images. Keyword arguments (image_size, preset
    "imagenet" | "inception", resample "bilinear" | "bicubic", crop_pct, mean, std) go to
    vit_common.preprocessing.preprocess_array; without them a from_pretrained model's config
    supplies its checkpoint's own settings."""
    nhwc = preprocess_batch(image, config, **kwargs)  # (N, H, W, C)
    return torch.from_numpy(nhwc.transpose(0, 3, 1, 2).copy())  # (N, C, H, W)
