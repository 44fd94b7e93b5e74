"""Loading the numpy state dicts that vit_common.convert produces into torch modules."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """numpy -> torch, bfloat16 (ml_dtypes) included, which torch.from_numpy refuses."""
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(np.array(array, order="C").view(np.int16)).view(torch.bfloat16)
    # a writable, C-ordered copy: jax and memory-mapped files hand out read-only buffers, and a
    # transposed view would give torch a strided weight (another GEMM path, other rounding)
    return torch.from_numpy(np.array(array, order="C"))


def load_numpy_state_dict(model: nn.Module, state: Mapping[str, np.ndarray]) -> nn.Module:
    """Load a {key: numpy array} state dict strictly (every key present, none extra, same shapes)."""
    model.load_state_dict({k: to_tensor(v) for k, v in state.items()}, strict=True)
    return model
