"""Loading the numpy state dicts that vit_common produces into torch modules."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch import nn

from vit_common.formats.torch_codec import to_torch


def load_numpy_state_dict(model: nn.Module, state: Mapping[str, np.ndarray]) -> nn.Module:
    """Load a {key: numpy array} state dict strictly (every key present, none extra, same shapes)."""
    model.load_state_dict({k: to_torch(v) for k, v in state.items()}, strict=True)
    return model


__all__ = ["load_numpy_state_dict", "to_torch"]
