"""Flax's msgpack format (flax.serialization), read and written with the msgpack package alone.

Layout: nested maps with str keys; each array an ext record of type 1 holding msgpack
[shape, dtype name, C-order bytes]; an array over `CHUNK_BYTES` is stored as a map
{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0": flat0, ...}} (flax's
layout for large arrays, which one ext record cannot hold). The writer streams: one array in memory
at a time, no jax import, no whole-file buffer (flax's own writer builds the file in memory).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import IO, Any

import numpy as np

from vit_common.fileio import atomic_write, read_bytes, regular_file_size
from vit_common.formats import blocked_contiguous, write_c_order

_NDARRAY = 1
_CHUNKED = "__msgpack_chunked_array__"
CHUNK_BYTES = 2**30  # flax.serialization's MAX_CHUNK_SIZE
MAX_DEPTH = 64  # a ViT params tree is 6 levels deep
_DTYPES = ("float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
           "uint8", "uint16", "uint32", "uint64", "bool")


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def read_msgpack(path: str | os.PathLike) -> dict[str, Any]:
    """The params tree of a flax msgpack file, arrays as numpy (chunked arrays joined)."""
    import msgpack

    path = os.fspath(path)
    data = read_bytes(path, regular_file_size(path, "Flax msgpack file"), "Flax msgpack file")

    def ext_hook(code: int, payload: bytes) -> Any:
        if code != _NDARRAY:
            raise ValueError(f"unsupported msgpack ext type {code}")
        record = msgpack.unpackb(payload, raw=True)
        if not (isinstance(record, (list, tuple)) and len(record) == 3):
            raise ValueError("an array record is not [shape, dtype, bytes]")
        shape, dtype, buffer = record
        return _array(shape, dtype.decode() if isinstance(dtype, bytes) else dtype, buffer)

    try:
        tree = msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=True)
        if not isinstance(tree, Mapping):
            raise ValueError(f"expected a params tree (a map), got {type(tree).__name__}")
        return _tree(tree, 0)
    except RecursionError:
        raise ValueError(f"{path}: not a readable Flax msgpack file (nested too deeply)") from None
    except Exception as e:  # msgpack raises many types for garbage or truncated input
        raise ValueError(f"{path}: not a readable Flax msgpack file ({type(e).__name__}: {e})") from None


def _array(shape: Any, dtype: Any, buffer: Any) -> np.ndarray:
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported array dtype {dtype!r}")
    if not (isinstance(shape, (list, tuple)) and len(shape) <= 8 and
            all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise ValueError(f"malformed array shape {shape!r}")
    if not isinstance(buffer, bytes):
        raise ValueError("array data is not a byte string")
    dt = _np_dtype(dtype)
    if math.prod(shape) * dt.itemsize != len(buffer):
        raise ValueError(f"array of shape {tuple(shape)} {dtype} needs "
                         f"{math.prod(shape) * dt.itemsize} bytes, the record holds {len(buffer)}")
    return np.frombuffer(buffer, dtype=dt).reshape(shape)


def _tree(node: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError(f"the tree is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, Mapping):
        if not isinstance(node, np.ndarray):
            raise ValueError(f"a leaf is a {type(node).__name__}, expected an array")
        return node
    if node.get(_CHUNKED) is True:
        return _unchunk(node)
    return {str(k): _tree(v, depth + 1) for k, v in node.items()}


def _unchunk(node: Mapping[str, Any]) -> np.ndarray:
    shape_map, chunk_map = node.get("shape"), node.get("chunks")
    if not (isinstance(shape_map, Mapping) and isinstance(chunk_map, Mapping)):
        raise ValueError("a chunked array lacks its 'shape' or 'chunks' map")
    try:
        shape = [shape_map[str(i)] for i in range(len(shape_map))]
        chunks = [chunk_map[str(i)] for i in range(len(chunk_map))]
    except KeyError as e:
        raise ValueError(f"a chunked array misses entry {e}") from None
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"a chunked array has a malformed shape {shape!r}")
    if not chunks or not all(isinstance(c, np.ndarray) and c.ndim == 1 and c.dtype == chunks[0].dtype
                             for c in chunks):
        raise ValueError("a chunked array's chunks are not flat arrays of one dtype")
    if sum(c.size for c in chunks) != math.prod(shape):
        raise ValueError(f"a chunked array of shape {tuple(shape)} has "
                         f"{sum(c.size for c in chunks)} elements in its chunks")
    return np.concatenate(chunks).reshape(shape)


def write_msgpack(path: str | os.PathLike, params: Mapping[str, Any], *, overwrite: bool = False,
                  progress: Callable[[int], Any] | None = None,
                  chunk_bytes: int = CHUNK_BYTES) -> None:
    import msgpack

    packer = msgpack.Packer(use_bin_type=True)

    def ext(f: IO[bytes], arr: np.ndarray) -> None:
        # ext record (type 1) around msgpack [shape, dtype name, bin]; headers packed here so the
        # array's bytes go to the file straight from its buffer
        inner = (packer.pack_array_header(3) + packer.pack(list(arr.shape)) +
                 packer.pack(arr.dtype.name) + b"\xc6" + arr.nbytes.to_bytes(4, "big"))  # bin 32
        f.write(b"\xc9" + (len(inner) + arr.nbytes).to_bytes(4, "big") + bytes([_NDARRAY]) + inner)
        write_c_order(f, arr)

    def emit(f: IO[bytes], node: Any) -> None:
        if isinstance(node, Mapping):
            f.write(packer.pack_map_header(len(node)))
            for key, value in node.items():
                f.write(packer.pack(str(key)))
                emit(f, value)
            return
        arr = np.asarray(node)
        if arr.nbytes > chunk_bytes:  # flax's chunked layout
            arr = blocked_contiguous(arr)
            per_chunk = max(1, chunk_bytes // arr.dtype.itemsize)
            flat = arr.reshape(-1)
            starts = range(0, flat.size, per_chunk)
            f.write(packer.pack_map_header(3) + packer.pack(_CHUNKED) + packer.pack(True))
            f.write(packer.pack("shape") + packer.pack({str(i): d for i, d in enumerate(arr.shape)}))
            f.write(packer.pack("chunks") + packer.pack_map_header(len(starts)))
            for i, s in enumerate(starts):
                f.write(packer.pack(str(i)))
                ext(f, flat[s:s + per_chunk])
        else:
            ext(f, arr)
        if progress:
            progress(arr.nbytes)

    atomic_write(path, lambda f: emit(f, params), overwrite=overwrite)
