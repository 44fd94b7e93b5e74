"""torch.save files (.pt / .pth / .bin): unpickled with `weights_only=True` and nothing else, so a
pickle that would run code is refused. The only module of vit_common that imports a framework, and
only when called: the format belongs to torch."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_common.fileio import atomic_write, open_regular

TORCH_SUFFIXES = (".pt", ".pth", ".bin")  # what torch.save files are called


def read_torch(path: str | os.PathLike) -> Any:
    """The unpickled object (tensors and plain containers only)."""
    import torch

    path = os.fspath(path)
    with open_regular(path, "torch checkpoint") as f:
        is_zip = zipfile.is_zipfile(f)
        f.seek(0)
        try:
            if is_zip:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(
                f"{path}: refusing to load: the pickle holds more than tensors and plain "
                f"containers, and unpickling it could run code (torch.load weights_only=True "
                f"said: {str(e).splitlines()[0] if str(e) else 'unpickling error'})") from None
        except RecursionError:
            raise ValueError(f"{path}: not a readable torch checkpoint (nested too deeply)") from None
        except MemoryError:
            raise ValueError(f"{path}: not a readable torch checkpoint (it claims more memory "
                             f"than there is)") from None
        except Exception as e:  # RuntimeError, EOFError, OSError, BadZipFile, ...
            text = str(e).strip()
            raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: "
                             f"{text.splitlines()[0] if text else 'truncated'})") from None


def write_torch(path: str | os.PathLike, state: Mapping[str, np.ndarray], *,
                overwrite: bool = False) -> None:
    import torch

    tensors = {k: to_torch(v) for k, v in state.items()}
    atomic_write(path, lambda f: torch.save(tensors, f), overwrite=overwrite)


def to_torch(array: np.ndarray) -> Any:
    """numpy -> torch tensor, bfloat16 (ml_dtypes) included, which torch.from_numpy refuses. A
    writable, C-ordered copy: jax and memory-mapped files hand out read-only buffers, and a
    transposed view would give torch a strided weight (another GEMM path, other rounding)."""
    import torch

    if array.dtype.name == "bfloat16":
        return torch.from_numpy(np.array(array, order="C").view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, order="C"))
