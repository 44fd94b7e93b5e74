"""`python -m vit_torch [PRESET]`: the seed's demo, a forward pass on dummy input."""

import sys

import torch

from vit_common.config import ViTConfig
from vit_torch.model import VisionTransformer


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    config = ViTConfig.from_preset(argv[0]) if argv else ViTConfig()
    model = VisionTransformer(config).eval()
    pixels = torch.randn(1, config.num_channels, *config.image_hw)  # (B, C, H, W)
    with torch.no_grad():
        cls = model(pixels)
    print(f"input {tuple(pixels.shape)} -> CLS token {tuple(cls.shape)}")


if __name__ == "__main__":
    main()
