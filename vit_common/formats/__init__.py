"""One codec per checkpoint file format: bytes on disk <-> {name: numpy array} (or a params tree).

Codecs know nothing of ViT names; `vit_common.convert` maps names and `vit_common.checkpoints`
decides what to read and write. Every reader refuses non-regular files by type, checks sizes a file
claims against the file's real size before allocating, and fails with one ValueError naming the file.

- `safetensors_codec`: through the `safetensors` library, read lazily with `safe_open`.
- `torch_codec`: torch.save pickles, unpickled with `weights_only=True` only (imports torch lazily:
  the one framework import left in vit_common, for the format that belongs to torch).
- `msgpack_codec`: flax's msgpack layout, written as a stream without jax, chunked over 1 GiB.
- `npz_codec`: .npz archives, members memory-mapped or read within their stated sizes.
"""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def blocked_contiguous(arr: np.ndarray, block: int = 128) -> np.ndarray:
    """`arr` in C order. A transposed matrix (what every torch <-> flax kernel is) is copied in
    square blocks that stay in cache: about twice numpy's element-order copy."""
    if arr.flags.c_contiguous:
        return arr
    if arr.ndim != 2 or not arr.flags.f_contiguous:
        return np.ascontiguousarray(arr)
    out = np.empty(arr.shape, arr.dtype)
    for i in range(0, arr.shape[0], block):
        for j in range(0, arr.shape[1], block):
            out[i:i + block, j:j + block] = arr[i:i + block, j:j + block]
    return out


def write_c_order(f: Any, arr: np.ndarray, block: int = 128) -> None:
    """Write `arr`'s bytes in C order without a whole C-ordered copy: a transposed matrix goes out
    in bands of `block` rows, each assembled from cache-sized squares in one reused buffer (no
    fresh memory per tensor: on this machine the page faults of a new 1 GiB copy cost more than
    the copy)."""
    if arr.flags.c_contiguous:
        f.write(memoryview(arr.reshape(-1).view(np.uint8)))
        return
    if arr.ndim != 2 or not arr.flags.f_contiguous:
        f.write(memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8)))
        return
    rows, cols = arr.shape
    # two bands: the next is assembled on a second thread while this one is written (numpy's
    # copies and the file writes both release the GIL)
    bands = [np.empty((min(block, rows), cols), arr.dtype) for _ in range(2)]

    def fill(k: int, i: int) -> np.ndarray:
        band = bands[k][:min(block, rows - i)]
        for j in range(0, cols, block):
            band[:, j:j + block] = arr[i:i + band.shape[0], j:j + block]
        return band

    starts = list(range(0, rows, block))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fill, 0, starts[0])
        for n in range(len(starts)):
            band = pending.result()
            if n + 1 < len(starts):
                pending = pool.submit(fill, (n + 1) % 2, starts[n + 1])
            f.write(memoryview(band.reshape(-1).view(np.uint8)))
