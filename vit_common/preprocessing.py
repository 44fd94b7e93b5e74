"""The framework-neutral core of preprocess_image: PIL resize, scale to [0, 1], normalize.

Both frameworks' `preprocess_image` call `preprocess_array` and only change the layout and the
array type, so they give identical numbers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
from PIL import Image

from vit_common.config import ViTConfig

# torchvision / timm's ImageNet statistics, the SEED's "typical for models pre-trained on ImageNet".
IMAGENET_DEFAULT_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# HF ViTImageProcessor's defaults ("IMAGENET_STANDARD"), used by google/vit-* checkpoints.
IMAGENET_STANDARD_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def load_image(image: ImageInput, num_channels: int = 3) -> Image.Image:
    """A path, PIL image or HWC / HW uint8 array as a PIL image with `num_channels` channels."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            with Image.open(path) as f:
                f.load()
                pil = f.copy()
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {path}") from None
        except (OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from None
    elif isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image array (H, W, C) with values 0..255, "
                             f"got dtype {image.dtype}")
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
            raise ValueError(f"expected an image array of shape (H, W), (H, W, 1), (H, W, 3) or "
                             f"(H, W, 4), got {image.shape}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"expected a non-empty image, got shape {image.shape}")
        pil = Image.fromarray(image)
    else:
        raise TypeError(f"expected a path, a PIL.Image.Image or a uint8 numpy array, "
                        f"got {type(image).__name__}")
    if num_channels == 3:
        return pil if pil.mode == "RGB" else pil.convert("RGB")
    if num_channels == 1:
        return pil if pil.mode == "L" else pil.convert("L")
    raise ValueError(f"preprocessing supports 1 or 3 channels, the config has {num_channels}")


def preprocess_array(image: ImageInput, config: ViTConfig | None = None, *,
                     image_size: int | Sequence[int] | None = None,
                     mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
                     std: Sequence[float] = IMAGENET_DEFAULT_STD,
                     resample: Image.Resampling = Image.Resampling.BILINEAR) -> np.ndarray:
    """Resize to the model's image size, scale to [0, 1], normalize: float32 (H, W, C), no batch."""
    config = config or ViTConfig()
    if image_size is None:
        height, width = config.image_hw
    elif isinstance(image_size, int):
        height = width = image_size
    else:
        height, width = image_size
    channels = config.num_channels
    mean_a, std_a = _stats(mean, channels, "mean"), _stats(std, channels, "std")
    if np.any(std_a <= 0):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    pil = load_image(image, channels)
    if pil.size != (width, height):
        pil = pil.resize((width, height), resample=resample)
    pixels = np.asarray(pil, dtype=np.float32).reshape(height, width, channels) / np.float32(255.0)
    return ((pixels - mean_a) / std_a).astype(np.float32)


def _stats(values: Sequence[float], channels: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.shape[0] == 1:
        arr = np.repeat(arr, channels)
    if arr.shape[0] != channels:
        raise ValueError(f"{name} needs {channels} values (one per channel), got {tuple(values)}")
    return arr


def demo_image(size: int = 256, seed: int = 0) -> np.ndarray:
    """A generated RGB test picture (gradients, a disc and noise): uint8 (size, size, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.08).astype(np.float32)
    rgb = np.stack([x, y, 0.5 * (1 - x) + 0.5 * disc], axis=-1) * 200
    rgb += rng.normal(0, 20, size=rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)
