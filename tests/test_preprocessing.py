"""preprocess_image: the classic resize -> ToTensor -> Normalize -> batch, in both frameworks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as transforms
from PIL import Image

import vit_flax
import vit_torch
from vit_common.config import ViTConfig
from vit_common.preprocessing import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    demo_image,
    preprocess_array,
)

CONFIG = ViTConfig(hidden_size=16, num_attention_heads=2, num_hidden_layers=1, intermediate_size=16,
                   image_size=(48, 64), patch_size=16)


def _random_image(h: int = 37, w: int = 53, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _torchvision(pil: Image.Image, size: tuple[int, int], mean, std) -> torch.Tensor:
    """The classic pipeline spelled with torchvision: an independent oracle."""
    pipeline = transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    return pipeline(pil).unsqueeze(0)


@pytest.mark.parametrize("mean, std", [(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
                                       (IMAGENET_STANDARD_MEAN, (0.5, 0.5, 0.5))])
def test_matches_torchvision_pipeline(mean, std) -> None:
    image = _random_image()
    got = vit_torch.preprocess_image(image, CONFIG, mean=mean, std=std)
    want = _torchvision(Image.fromarray(image), (48, 64), mean, std)
    assert got.shape == (1, 3, 48, 64) and got.dtype == torch.float32
    assert float((got - want).abs().max()) <= 1e-6


def test_frameworks_give_identical_numbers_for_every_input_kind(tmp_path) -> None:
    image = _random_image()
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    results = []
    for source in (image, Image.fromarray(image), str(path), path):
        pt = vit_torch.preprocess_image(source, CONFIG)
        fx = vit_flax.preprocess_image(source, CONFIG)
        assert pt.shape == (1, 3, 48, 64) and fx.shape == (1, 48, 64, 3)
        np.testing.assert_array_equal(pt.numpy().transpose(0, 2, 3, 1), np.asarray(fx))
        results.append(np.asarray(fx))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_modes_are_converted() -> None:
    rgb = _random_image()
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(preprocess_array(rgba, CONFIG), preprocess_array(rgb, CONFIG))
    gray = rgb[..., 0]
    out = preprocess_array(gray, CONFIG)  # grayscale -> RGB, three equal planes
    np.testing.assert_allclose(out[..., 0] * IMAGENET_DEFAULT_STD[0] + IMAGENET_DEFAULT_MEAN[0],
                               out[..., 2] * IMAGENET_DEFAULT_STD[2] + IMAGENET_DEFAULT_MEAN[2],
                               atol=1e-6)
    one = preprocess_array(rgb, CONFIG.replace(num_channels=1), mean=(0.5,), std=(0.5,))
    assert one.shape == (48, 64, 1)


def test_default_size_is_the_configs() -> None:
    assert vit_torch.preprocess_image(demo_image(300)).shape == (1, 3, 224, 224)
    assert vit_flax.preprocess_image(demo_image(300), image_size=32).shape == (1, 32, 32, 3)


def test_bad_inputs(tmp_path) -> None:
    with pytest.raises(ValueError, match="uint8.*or a float image.*got dtype int16"):
        preprocess_array(np.zeros((8, 8, 3), np.int16))
    with pytest.raises(ValueError, match=r"values in \[0, 1\], got range \[2, 2\]"):
        preprocess_array(np.full((8, 8, 3), 2.0, np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*got \(8, 8, 5\)"):
        preprocess_array(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(ValueError, match=r"got \(2, 8, 8, 3\)"):
        preprocess_array(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        preprocess_array(tmp_path / "nope.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        preprocess_array(broken)
    with pytest.raises(TypeError, match="got list"):  # one image; lists go to preprocess_image
        preprocess_array([[0, 1]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mean must be 1 or 3 finite numbers, got .0.5, 0.5."):
        preprocess_array(_random_image(), mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="std must be positive"):
        preprocess_array(_random_image(), std=(0.5, 0.0, 0.5))
