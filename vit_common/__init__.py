"""Framework-neutral parts of the twin ViT, a library only: config, weight naming, file formats,
checkpoint policy, preprocessing, resampling. No module imports torch, jax, optax, matplotlib or
sklearn at import time; the console tools live in `vit_cli`."""

from vit_common.config import MODEL_PRESETS, ViTConfig

__all__ = ["MODEL_PRESETS", "ViTConfig"]
__version__ = "0.1.0"
