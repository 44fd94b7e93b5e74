"""safetensors files through the `safetensors` library (its parser is the reference one: it
refuses overlapping or unused byte ranges, trailing bytes and duplicate names).

Reading maps the tensors instead of copying them out: once `safe_open` has validated a file, its
tensors lie back to back in the library's offset order from the end of the header, so each one is
a read-only `np.memmap` of the shape and dtype the library reports. Nothing of the header is parsed
here but its 8-byte length. (The library's own `get_tensor` copies every tensor, which doubled a
conversion's peak memory and added 0.7 s per GiB.)"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from vit_common.fileio import atomic_write_path, open_regular, regular_file_size
from vit_common.formats import blocked_contiguous

_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}


def _dtype(name: str) -> np.dtype | None:
    if name == "BF16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(_NUMPY[name]) if name in _NUMPY else None


class SafetensorsFile(Mapping):
    """{name: numpy array} read lazily: each tensor a read-only memory map of the file."""

    def __init__(self, path: str | os.PathLike) -> None:
        from safetensors import safe_open

        self.path = os.fspath(path)
        size = regular_file_size(self.path, "safetensors file")
        with open_regular(self.path, "safetensors file") as f:  # type checked on the descriptor
            header_len = int.from_bytes(f.read(8), "little")
        try:
            self._file = safe_open(self.path, framework="numpy")
            names = list(self._file.offset_keys())
            self.metadata: dict[str, str] = dict(self._file.metadata() or {})
            specs = [(n, self._file.get_slice(n)) for n in names]
            specs = [(n, s.get_dtype(), tuple(s.get_shape())) for n, s in specs]
        except Exception as e:  # SafetensorError, OSError, and whatever else a bad header raises
            raise ValueError(f"{self.path}: not a valid safetensors file ({_first_line(e)})") from None
        self._spans: dict[str, tuple[int, np.dtype | None, tuple[int, ...]]] = {}
        offset = 8 + header_len
        for name, dtype_name, shape in specs:
            dtype = _dtype(dtype_name)
            self._spans[name] = (offset, dtype, shape)
            if dtype is None:  # a dtype numpy cannot map: the library reads it (and is checked)
                offset = -1
                break
            offset += math.prod(shape) * dtype.itemsize
        if offset != size:  # cannot happen for a file the library accepted; never map blindly
            self._spans = {n: (-1, None, s) for n, _, s in specs}
        self._names = names

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._spans:
            raise KeyError(name)
        offset, dtype, shape = self._spans[name]
        try:
            if offset < 0 or dtype is None:
                return self._file.get_tensor(name)
            if math.prod(shape) == 0:
                return np.zeros(shape, dtype)
            return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)
        except Exception as e:
            raise ValueError(f"{self.path}: tensor {name!r} is unreadable ({_first_line(e)})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def read_safetensors(path: str | os.PathLike) -> SafetensorsFile:
    return SafetensorsFile(path)


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None, *, overwrite: bool = False,
                      progress: Callable[[int], Any] | None = None) -> None:
    from safetensors.numpy import save_file

    arrays = {}
    for name, arr in tensors.items():
        arr = blocked_contiguous(np.asarray(arr))
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        arrays[name] = arr
    meta = {str(k): str(v) for k, v in (metadata or {}).items()} or None

    def write(tmp: str) -> None:
        try:
            save_file(arrays, tmp, metadata=meta)
        except OSError:
            raise
        except Exception as e:
            raise ValueError(f"{path}: cannot be written as safetensors ({_first_line(e)})") from None
        if progress:
            progress(sum(a.nbytes for a in arrays.values()))

    atomic_write_path(path, write, overwrite=overwrite)
