"""Datasets the tools train and test on: scikit-learn's 8x8 digits and an image folder (one
subdirectory per class), with the seeded split and the seeded batches both twins share.
scikit-learn is imported only when the digits are asked for."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from vit_common.config import ViTConfig

# the image files an image folder (and vit-embed's directories) are made of
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def load_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (shipped with the package): train/test (N, 8, 8, 1) float32 in
    [0, 1] normalised to mean 0.5 / std 0.5, and int labels; a fixed 80/20 split."""
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
    x = (data.images.astype(np.float32) / 16.0 - 0.5) / 0.5
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order][..., None], y[order]
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


class FolderImages:
    """Images of an image folder, preprocessed for `config` when a batch asks for them
    (images[index_array] -> float32 (B, H, W, C)); nothing is decoded up front."""

    def __init__(self, paths: list[str], config: ViTConfig) -> None:
        self.paths, self.config = paths, config

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: Any) -> np.ndarray:
        from vit_common.preprocessing import preprocess_array

        return np.stack([preprocess_array(self.paths[int(i)], self.config) for i in np.atleast_1d(index)])


def load_folder(root: str, seed: int = 0) -> tuple[list[str], list[tuple[str, int]]]:
    """An image-folder dataset: one subdirectory per class (sorted names are the labels 0..K-1),
    its image files sorted. Returns (class names, [(path, label)]); a class with no image, or fewer
    than two classes, is a ValueError naming the folder."""
    if not os.path.isdir(root):
        raise ValueError(f"--data {root}: not a directory")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if len(classes) < 2:
        raise ValueError(f"--data {root}: expected one subdirectory per class (at least two), found "
                         f"{len(classes)}")
    items = []
    for label, name in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(root, name)) if f.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise ValueError(f"--data {root}: class {name!r} has no image files")
        items += [(os.path.join(root, name, f), label) for f in files]
    return classes, items


def split_folder(items: list[tuple[str, int]], config: ViTConfig, seed: int
                 ) -> tuple[FolderImages, np.ndarray, FolderImages, np.ndarray]:
    """A fixed, seeded 80/20 train / test split (every class in both when it has 5+ images)."""
    order = np.random.default_rng(seed).permutation(len(items))
    test = {int(i) for i in order[::5]}
    train_items = [items[i] for i in sorted(set(range(len(items))) - test)]
    test_items = [items[i] for i in sorted(test)]
    return (FolderImages([p for p, _ in train_items], config), np.array([y for _, y in train_items]),
            FolderImages([p for p, _ in test_items], config), np.array([y for _, y in test_items]))


def batches(n: int, batch_size: int, epochs: int, seed: int) -> Iterator[np.ndarray]:
    """The same index batches for both frameworks: a fresh permutation per epoch, full batches."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            yield order[i:i + batch_size]
