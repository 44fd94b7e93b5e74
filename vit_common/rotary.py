"""Rotary position embeddings as numpy tables, shared by both twins (as resample.py's matrices are).

A rotary embedding turns each head's query and key channels in pairs by angles that depend on the
patch's (row, column): head_dim / 4 frequencies per axis, each rotating one pair of channels. The
twins compute the rotation; this module says the angles, once per patch grid (cached), in float64
so that both twins read the very same table:

- coordinates per axis (`rope_type`): DINOv3's patch centres `((i + 0.5 + offset) / s) * 2 - 1`,
  each axis by its own size, times 2 pi; or axial integer positions `i + offset`, rescaled
  `t / s * ref` to a reference grid when the model has one (EVA-02, PE); mixed (timm rope_mixed)
  takes the integer positions and learned frequencies, so its angles are made in the model;
- frequencies `theta ** -(k / bands)`, k = 0 .. bands - 1, bands = head_dim / 4 (DINOv3 writes
  them as periods `theta ** (4k / head_dim)`, the same numbers);
- axis order: the first axis's frequencies fill the first half of the angles (`yx`: rows first,
  as meshgrid 'ij'; `xy`: columns first);
- layout: a frequency's two channels are the two halves of head_dim (`halves`, rotate-half,
  `[a, a]`) or adjacent (`pairs`, interleaved, `[a0, a0, a1, a1, ...]`).

The tables have a row for every token: the prefix tokens ([CLS], registers), which the sources
leave unrotated, get angle 0 (sin 0, cos 1 exactly), so the twins rotate the whole sequence
without slicing it apart and joining it again.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vit_common.config import ViTConfig


def rope_coords(config: ViTConfig, grid: tuple[int, int]) -> np.ndarray:
    """The (prefix + gh * gw, 2) positions: zeros for the prefix tokens, then the patches in
    row-major order, in the model's axis order."""
    return _coords(config.rope_type, config.rope_axis_order, config.rope_ref_grid, config.rope_grid_offset,
                   tuple(grid), config.num_prefix_tokens)


@functools.lru_cache(maxsize=64)
def _coords(kind: str, order: str, ref: tuple[int, int] | None, offset: float,
            grid: tuple[int, int], prefix: int) -> np.ndarray:
    axes = []
    for size, ref_size in zip(grid, ref or (None, None)):
        if kind == "dinov3":
            t = ((np.arange(size, dtype=np.float64) + 0.5 + offset) / size) * 2.0 - 1.0
        elif kind in ("axial", "mixed"):
            t = np.arange(size, dtype=np.float64) + offset
            if ref_size is not None:
                t = t / size * ref_size  # EVA's rescaling to the pretraining grid
        else:
            raise ValueError(f"no rotary positions for rope_type {kind!r}")
        axes.append(t)
    ys, xs = np.meshgrid(axes[0], axes[1], indexing="ij")  # (gh, gw) each
    pair = (ys, xs) if order == "yx" else (xs, ys)
    out = np.stack([a.reshape(-1) for a in pair], axis=-1)  # (N, 2)
    out = np.concatenate([np.zeros((prefix, 2)), out])  # angle 0 for the prefix tokens
    out.setflags(write=False)
    return out


def rope_bands(config: ViTConfig) -> np.ndarray:
    """The head_dim / 4 frequencies of one axis: theta ** -(k / bands)."""
    bands = config.head_dim // 4
    return config.rope_theta ** -(np.arange(bands, dtype=np.float64) / bands)


def expand_layout(angles: np.ndarray, layout: str) -> np.ndarray:
    """(..., head_dim / 2) angles -> (..., head_dim): a frequency's two channels as halves or pairs."""
    if layout == "halves":
        return np.concatenate([angles, angles], axis=-1)
    elif layout == "pairs":
        return np.repeat(angles, 2, axis=-1)
    else:
        raise ValueError(f"unsupported rope_layout {layout!r}")


def rope_tables(config: ViTConfig, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos) of the angles, each (prefix + gh * gw, head_dim) float64, for dinov3 and axial
    rotary embeddings (mixed has learned frequencies: `rope_coords` and the model's own)."""
    if config.rope_type not in ("dinov3", "axial"):
        raise ValueError(f"rope_tables: rope_type {config.rope_type!r} has no fixed table")
    return _tables(config.rope_type, config.rope_theta, config.head_dim, config.rope_layout,
                   config.rope_axis_order, config.rope_ref_grid, config.rope_grid_offset, tuple(grid),
                   config.num_prefix_tokens)


@functools.lru_cache(maxsize=64)
def _tables(kind: str, theta: float, head_dim: int, layout: str, order: str, ref: tuple[int, int] | None,
            offset: float, grid: tuple[int, int], prefix: int) -> tuple[np.ndarray, np.ndarray]:
    coords = _coords(kind, order, ref, offset, grid, prefix)  # (prefix + N, 2)
    bands = head_dim // 4
    freqs = theta ** -(np.arange(bands, dtype=np.float64) / bands)
    scale = 2.0 * math.pi if kind == "dinov3" else 1.0
    angles = (scale * coords[:, :, None] * freqs[None, None, :]).reshape(coords.shape[0], -1)  # (N, head_dim/2)
    angles = expand_layout(angles, layout)
    sin, cos = np.sin(angles), np.cos(angles)
    for t in (sin, cos):
        t.setflags(write=False)
    return sin, cos


def mixed_freqs_init(config: ViTConfig) -> np.ndarray:
    """Mixed RoPE's initial frequencies (2, layers, heads, head_dim / 2): timm's magnitudes
    theta ** -(4k / head_dim) on the first axis for the first half of the pairs and on the second
    for the other half, unrotated (timm draws a random rotation per layer and head; a trained
    checkpoint replaces them all)."""
    c = config
    mag = c.rope_theta ** -(np.arange(0, c.head_dim, 4, dtype=np.float64) / c.head_dim)  # (head_dim / 4,)
    zeros = np.zeros_like(mag)
    first, second = np.concatenate([mag, zeros]), np.concatenate([zeros, mag])
    out = np.stack([first, second])[:, None, None, :]
    return np.broadcast_to(out, (2, c.num_hidden_layers, c.num_attention_heads, c.head_dim // 2)).copy()


def check_rope_fields(config: ViTConfig, fail: Any, is_int: Any, is_real: Any) -> None:
    """ViTConfig's checks of the rotary fields and the MAP head count (called from __post_init__)."""
    if not (is_real(config.rope_theta) and config.rope_theta > 1):
        fail("rope_theta", "a finite float > 1")
    if not is_real(config.rope_grid_offset) or abs(config.rope_grid_offset) > 1e6:
        fail("rope_grid_offset", "a finite float")
    if isinstance(ref := config.rope_ref_grid, list):
        object.__setattr__(self, "rope_ref_grid", ref := tuple(ref))
    if ref is not None and not (isinstance(ref, tuple) and len(ref) == 2
                                and all(is_int(r) and 0 < r <= 65_536 for r in ref)):
        fail("rope_ref_grid", "None or a (height, width) pair of ints in [1, 65536]")
    if not (is_int(config.map_num_heads) and 0 <= config.map_num_heads <= 4096):
        fail("map_num_heads", "an int in [0, 4096] (0: the encoder's head count)")
    if config.map_num_heads and config.hidden_size % config.map_num_heads:
        raise ValueError(f"ViTConfig: hidden_size {config.hidden_size} is not divisible by "
                         f"map_num_heads {config.map_num_heads}")
    if config.rope_type == "none":
        return
    # each axis gets head_dim / 4 frequencies, each rotating a pair of channels
    if config.head_dim % 4:
        raise ValueError(f"ViTConfig: rotary positions split head_dim in four (two axes, sin / cos "
                         f"pairs): it must be divisible by 4, got {config.head_dim}")
    if config.rope_type == "mixed" and config.rope_layout != "pairs":
        raise ValueError("ViTConfig: rope_type 'mixed' rotates adjacent pairs (timm): rope_layout 'pairs'")
    if config.rope_ref_grid is not None and config.rope_type != "axial":
        raise ValueError(f"ViTConfig: rope_ref_grid rescales axial positions (EVA), not {config.rope_type!r} ones")
