"""Framework-neutral parts of the twin ViT: config, weight conversion, preprocessing core.

Imports neither torch nor jax: functions that need one import it when called.
"""

from vit_common.config import PRESETS, ViTConfig

__all__ = ["PRESETS", "ViTConfig"]
__version__ = "0.1.0"
