"""preprocess_image for PyTorch: the shared numpy core, returned as a (1, C, H, W) float32 tensor."""

from __future__ import annotations

from typing import Any

import torch

from vit_common.config import ViTConfig
from vit_common.preprocessing import ImageInput, preprocess_array


def preprocess_image(image: ImageInput, config: ViTConfig | None = None, **kwargs: Any) -> torch.Tensor:
    """Resize to config.image_size, scale to [0, 1], normalize (ImageNet mean/std by default) and
    add the batch dimension: (1, C, H, W). Keyword arguments go to vit_common's preprocess_array."""
    hwc = preprocess_array(image, config, **kwargs)  # (H, W, C)
    return torch.from_numpy(hwc.transpose(2, 0, 1).copy()).unsqueeze(0)  # (1, C, H, W)
