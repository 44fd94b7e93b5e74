"""`python -m vit_flax [PRESET]`: the seed's demo, a forward pass on dummy input."""

import sys

import jax

from vit_common.config import ViTConfig
from vit_flax.model import VisionTransformer


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    config = ViTConfig.from_preset(argv[0]) if argv else ViTConfig()
    model = VisionTransformer(config)
    pixels = jax.random.normal(jax.random.key(1), (1, *config.image_hw, config.num_channels))
    params = jax.jit(model.init)(jax.random.key(0), pixels)["params"]  # (B, H, W, C) input
    cls = jax.jit(model.apply)({"params": params}, pixels)
    print(f"input {tuple(pixels.shape)} -> CLS token {tuple(cls.shape)}")


if __name__ == "__main__":
    main()
