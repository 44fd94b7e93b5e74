"""Loading the numpy state dicts that vit_common.convert produces into torch modules."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from vit_common.convert import to_torch


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """numpy -> torch, bfloat16 (ml_dtypes) included (vit_common.convert.to_torch)."""
    return to_torch(array)


def load_numpy_state_dict(model: nn.Module, state: Mapping[str, np.ndarray]) -> nn.Module:
    """Load a {key: numpy array} state dict strictly (every key present, none extra, same shapes)."""
    model.load_state_dict({k: to_tensor(v) for k, v in state.items()}, strict=True)
    return model
