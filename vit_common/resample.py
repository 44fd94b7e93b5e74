"""Position-embedding resampling, computed once in numpy and applied identically by both twins.

PyTorch's bicubic interpolation (`F.interpolate(mode="bicubic", align_corners=False)`, what HF's
`interpolate_pos_encoding` and timm's `resample_abs_pos_embed` call) is separable: each output row
is a fixed weighted sum of at most four input rows. Writing those weights as a matrix, one per axis,
turns the resize into two small matmuls that torch and jax compute the same way, so the twins agree
to float64 rounding instead of to the two libraries' interpolation kernels.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vit_common.config import ViTConfig

_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution coefficient


def _cubic(t: float) -> tuple[float, float, float, float]:
    """Weights of the taps at -1, 0, +1, +2 for a fractional offset t in [0, 1)."""
    a = _A

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix M with M @ x == F.interpolate(x, out_size, "bicubic",
    align_corners=False) along one axis (taps beyond the edge clamp to the edge, as PyTorch's)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    m = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    for i in range(out_size):
        src = (i + 0.5) * scale - 0.5  # half-pixel centres, not clamped for cubic
        x0 = math.floor(src)
        for tap, w in zip(range(x0 - 1, x0 + 3), _cubic(src - x0)):
            m[i, min(max(tap, 0), in_size - 1)] += w
    m.setflags(write=False)
    return m


def resize_pos_embed(pos: np.ndarray, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> np.ndarray:
    """Position embeddings (1, 1 + gh*gw, D) for a new (gh, gw) patch grid; the [CLS] slot is kept.
    A permanent resize for fine-tuning at a new resolution (vit-convert --image-size)."""
    pos = np.asarray(pos)
    (gh, gw), (nh, nw) = old_grid, new_grid
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[1] != 1 + gh * gw:
        raise ValueError(f"expected position embeddings (1, 1 + {gh}*{gw}, D), got {pos.shape}")
    grid = pos[0, 1:].reshape(gh, gw, -1).astype(np.float64)
    out = np.einsum("ih,hwd->iwd", bicubic_matrix(gh, nh), grid)
    out = np.einsum("jw,iwd->ijd", bicubic_matrix(gw, nw), out)
    return np.concatenate([pos[:, :1], out.reshape(1, nh * nw, -1).astype(pos.dtype)], axis=1)


def resize_state(state: dict[str, np.ndarray], config: ViTConfig, image_size: int | tuple[int, int]
                 ) -> tuple[dict[str, np.ndarray], ViTConfig]:
    """A canonical state dict and its config moved to a new image size for good: the position
    embeddings resampled as at run time, everything else unchanged."""
    new_config = config.replace(image_size=image_size)
    key = next(k for k in state if k.endswith("embeddings.position_embeddings"))
    state = dict(state)
    state[key] = resize_pos_embed(state[key], config.grid_size, new_config.grid_size)
    return state, new_config


def _aa_cubic(x: float) -> float:
    # the Keys kernel with a = -0.5, which PyTorch's antialiased bicubic path uses (as PIL does)
    a, x = -0.5, abs(x)
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0


@functools.lru_cache(maxsize=64)
def bicubic_antialias_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) M with M @ x == F.interpolate(x, out_size, "bicubic", align_corners=False,
    antialias=True) along one axis: the kernel widened by the scale when shrinking, taps outside
    the input dropped and the rest renormalised (what HF Dinov2WithRegisters and timm's
    dynamic_img_size call)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    m = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    for i in range(out_size):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        w = np.array([_aa_cubic((j - centre + 0.5) * inv) for j in range(lo, hi)])
        m[i, lo:hi] = w / w.sum()
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=64)
def bilinear_antialias_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) M with M @ x == F.interpolate(x, out_size, "bilinear", align_corners=False,
    antialias=True) along one axis: the triangle kernel widened by the scale when shrinking, the
    weights renormalised (SigLIP 2 NaFlex's resize; `bilinear_antialias_weights` is the same rule
    for sizes known only at run time)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    scale = in_size / out_size
    support = max(scale, 1.0)
    centre = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    w = np.clip(1 - np.abs(np.arange(in_size, dtype=np.float64)[None] - centre[:, None]) / support, 0, None)
    m = w / w.sum(axis=1, keepdims=True)
    m.setflags(write=False)
    return m


def resampling_matrices(grid: tuple[int, int], new_grid: tuple[int, int], method: str
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, columns) matrices that move a position table from `grid` to `new_grid`."""
    if method == "bicubic":
        fn = bicubic_matrix
    elif method == "bicubic_antialias":
        fn = bicubic_antialias_matrix
    elif method == "bilinear_antialias":
        fn = bilinear_antialias_matrix
    else:
        raise ValueError(f"position_embedding_resampling must be 'bicubic', 'bicubic_antialias' or "
                         f"'bilinear_antialias', got {method!r}")
    return fn(grid[0], new_grid[0]), fn(grid[1], new_grid[1])


@functools.lru_cache(maxsize=64)
def sincos2d_table(grid: tuple[int, int], dim: int, temperature: float = 10_000.0) -> np.ndarray:
    """big_vision's fixed position embeddings `posemb_sincos_2d`: (gh * gw, dim) float64, token
    t = r * gw + c holding [sin(c w), cos(c w), sin(r w), cos(r w)], w_k = T ** -(k / (dim/4 - 1))."""
    if dim % 4:
        raise ValueError(f"sincos2d position embeddings need hidden_size divisible by 4, got {dim}")
    quarter = dim // 4
    omega = temperature ** -(np.arange(quarter, dtype=np.float64) / max(quarter - 1, 1))
    rows, cols = np.meshgrid(np.arange(grid[0], dtype=np.float64),
                             np.arange(grid[1], dtype=np.float64), indexing="ij")
    c = cols.reshape(-1, 1) * omega
    r = rows.reshape(-1, 1) * omega
    table = np.concatenate([np.sin(c), np.cos(c), np.sin(r), np.cos(r)], axis=1)
    table.setflags(write=False)
    return table
