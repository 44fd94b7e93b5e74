"""Looking at what a ViT sees: a preprocessed image rendered back to a picture, and the [CLS]
token's last-layer attention over the patches drawn on top of it. The attention maps themselves
come from each framework (vit_torch.visualize / vit_flax.visualize, same numbers); this module
only draws."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from vit_common.config import ViTConfig
from vit_common.fileio import atomic_write
from vit_common.preprocessing import Preprocessing, preprocessing_for


def denormalize(pixels: np.ndarray, config: ViTConfig | None = None,
                settings: Preprocessing | None = None) -> np.ndarray:
    """One preprocessed image, (H, W, C) or (C, H, W) float, back to uint8 (H, W, 3)."""
    x = np.asarray(pixels, np.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"expected one image (H, W, C) or (C, H, W), got shape {x.shape}")
    if x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    s = settings or preprocessing_for(config)
    c = x.shape[-1]
    mean = np.resize(np.asarray(s.mean, np.float32), c)
    std = np.resize(np.asarray(s.std, np.float32), c)
    rgb = np.clip((x * std + mean) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(rgb, 3, axis=-1) if c == 1 else rgb


def overlay_attention(image: np.ndarray, attention: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """`attention` (gh, gw), upsampled to the image and drawn as a heat map over it: uint8 (H, W, 3)."""
    image = np.asarray(image, np.uint8)
    att = np.asarray(attention, np.float64)
    if att.ndim != 2:
        raise ValueError(f"expected one attention map (gh, gw), got shape {att.shape}")
    att = (att - att.min()) / max(att.max() - att.min(), 1e-12)
    heat = Image.fromarray((att * 255).astype(np.uint8)).resize(
        (image.shape[1], image.shape[0]), Image.Resampling.BILINEAR)
    h = np.asarray(heat, np.float32)[..., None] / 255.0
    colour = np.concatenate([h, h ** 3, 0.2 * (1 - h)], axis=-1) * 255.0  # dark blue -> red -> yellow
    out = (1 - alpha) * image.astype(np.float32) + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def save_png(path: str | os.PathLike, image: np.ndarray, *, overwrite: bool = False) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    atomic_write(path, lambda f: f.write(buf.getvalue()), overwrite=overwrite)
