"""What both InferenceEngines (vit_torch.inference, vit_flax.inference) share: their output names
and the checks of their arguments."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

OUTPUT_NAMES = ("pooled", "logits")  # the family's pooled embedding; the classifier's logits


class Outputs(dict):
    """The engines' outputs: "pooled" (the family's pooled embedding) and "logits". "cls", the
    pooled embedding's name before it was called what it holds (SigLIP has no [CLS]), still reads
    it for this release, with a DeprecationWarning."""

    def __missing__(self, key: str) -> Any:
        if key == "cls" and "pooled" in self:
            warnings.warn('the engines\' "cls" output is now called "pooled"', DeprecationWarning, stacklevel=2)
            return self["pooled"]
        raise KeyError(key)


def positive_int(value: Any, name: str) -> int:
    """`value` when it is an int >= 1 (not a bool, not a str): else a ValueError naming `name`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


# NaFlex batches (SigLIP 2: patches of images at their own aspect ratios, padded): each step runs
# its images padded to the shortest of these lengths that holds the longest of them, so a stream of
# mixed shapes compiles a few programs (one per length and batch bucket), never one per image shape
NAFLEX_LENGTHS = (16, 64, 256, 1024, 4096, 16384, 65536)
NAFLEX_KEYS = ("pixel_values", "pixel_attention_mask", "spatial_shapes")


def is_naflex_batch(inputs: Any) -> bool:
    """Whether an engine's input is a NaFlex batch (vit_common.preprocessing.naflex_batch's dict)."""
    return isinstance(inputs, Mapping)


def check_naflex_batch(inputs: Mapping[str, Any], width: int) -> tuple[Any, Any, Any]:
    """(patches float32 (B, N, width), mask bool (B, N), shapes int64 (B, 2)) of a NaFlex batch,
    after checking that each image's h * w real rows come first and the rest is padding (the
    processor's layout, which the engines rely on to trim and pad the length)."""
    import numpy as np

    missing = [k for k in NAFLEX_KEYS if k not in inputs]
    if missing:
        raise ValueError(f"a NaFlex batch holds {', '.join(NAFLEX_KEYS)}; missing {', '.join(missing)}")
    values = np.asarray(inputs["pixel_values"], np.float32)
    mask = np.asarray(inputs["pixel_attention_mask"])
    shapes = np.asarray(inputs["spatial_shapes"])
    if values.ndim != 3 or values.shape[-1] != width:
        raise ValueError(f"pixel_values must be (B, N, p*p*C) = (B, N, {width}), got {values.shape}")
    b, n = values.shape[:2]
    if mask.shape != (b, n) or shapes.shape != (b, 2) or not np.issubdtype(shapes.dtype, np.integer):
        raise ValueError(f"pixel_attention_mask must be ({b}, {n}) and spatial_shapes ({b}, 2) integers, got "
                         f"{mask.shape} and {shapes.shape} {shapes.dtype}")
    counts = shapes.astype(np.int64).prod(axis=-1)
    if (shapes < 1).any() or (counts > n).any():
        raise ValueError(f"spatial_shapes must be positive with h * w <= {n}, got {shapes.tolist()}")
    layout = np.arange(n)[None] < counts[:, None]
    if not np.array_equal(mask.astype(bool), layout):
        raise ValueError("pixel_attention_mask must mark each image's first h * w rows (its patches, "
                         "spatial_shapes) and nothing else, as naflex_batch makes it")
    return values, layout, shapes.astype(np.int64)


def naflex_length(longest: int) -> int:
    """The padded length of a NaFlex step whose longest image has `longest` patches."""
    return next((n for n in NAFLEX_LENGTHS if n >= longest), longest)


def naflex_steps(values: Any, mask: Any, shapes: Any, rows_per_step: int, bucket: Any) -> Any:
    """A checked NaFlex batch (check_naflex_batch) cut into steps of at most `rows_per_step` images:
    yields (images in the step, patches (size, length, width), mask (size, length), shapes (size, 2))
    with the step padded to `bucket(images)` rows (padding images: one masked patch each) and to
    the NAFLEX_LENGTHS bucket of its longest image."""
    import numpy as np

    counts = shapes.prod(axis=-1)
    for start in range(0, values.shape[0], rows_per_step):
        rows = min(rows_per_step, values.shape[0] - start)
        size, length = bucket(rows), naflex_length(int(counts[start:start + rows].max()))
        x = np.zeros((size, length, values.shape[-1]), np.float32)
        m = np.zeros((size, length), bool)
        s = np.ones((size, 2), np.int64)
        keep = min(length, values.shape[1])
        x[:rows, :keep] = values[start:start + rows, :keep]
        m[:rows, :keep] = mask[start:start + rows, :keep]
        s[:rows] = shapes[start:start + rows]
        yield rows, x, m, s
