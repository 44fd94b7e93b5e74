"""safetensors files through the `safetensors` library (its parser is the reference one: it
refuses overlapping or unused byte ranges, trailing bytes and duplicate names)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from vit_common.fileio import atomic_write_path, open_regular, regular_file_size
from vit_common.formats import blocked_contiguous


class SafetensorsFile(Mapping):
    """{name: numpy array} read lazily: a tensor's bytes are read when it is looked up."""

    def __init__(self, path: str | os.PathLike) -> None:
        from safetensors import safe_open

        self.path = os.fspath(path)
        regular_file_size(self.path, "safetensors file")
        with open_regular(self.path, "safetensors file"):
            pass  # type checked on an opened descriptor before the library opens it by name
        try:
            self._file = safe_open(self.path, framework="numpy")
            self._names = list(self._file.keys())
            self.metadata: dict[str, str] = dict(self._file.metadata() or {})
        except Exception as e:  # SafetensorError, OSError, and whatever else a bad header raises
            raise ValueError(f"{self.path}: not a valid safetensors file ({_first_line(e)})") from None

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        try:
            return self._file.get_tensor(name)
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
