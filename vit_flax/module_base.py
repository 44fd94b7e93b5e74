"""Two small linen pieces the model files need but PyTorch gives for free.

- `ViTModule`: the fields every module of vit_flax/model.py carries (the torch twin gets `config`
  through `__init__` and its dtype from `.to(dtype)`).
- `ModuleList`: linen's counterpart of `torch.nn.ModuleList`, whose children are named "0", "1", ...
  exactly as in HF's Flax ViT tree (`encoder/layer/0/...`). A list assigned in `setup` would name
  them "layer_0", ...; modules adopted by this class keep the names they were built with.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vit_common.config import AttentionImpl, ViTConfig

Dtype = Any


class ViTModule(nn.Module):
    config: ViTConfig
    dtype: Dtype = jnp.float32  # computation dtype
    param_dtype: Dtype = jnp.float32  # storage dtype of the parameters
    attention_impl: AttentionImpl = "eager"  # einsum + softmax, or jax.nn.dot_product_attention

    @property
    def module_args(self) -> dict[str, Any]:
        """The fields every child module is built with."""
        return {"config": self.config, "dtype": self.dtype, "param_dtype": self.param_dtype,
                "attention_impl": self.attention_impl}

    def __post_init__(self) -> None:
        wants_64 = any(jnp.dtype(d) == jnp.float64 for d in (self.dtype, self.param_dtype))
        if wants_64 and not jax.config.jax_enable_x64:
            raise ValueError(f"{type(self).__name__}: float64 needs "
                             "jax.config.update('jax_enable_x64', True) before the model is built; "
                             "without it JAX silently computes in float32")
        super().__post_init__()


class ModuleList(nn.Module):
    """Children given at construction, built with `parent=None, name=str(i)`, kept under those names."""

    preserve_adopted_names = True  # read by linen when it adopts the modules below
    modules: Sequence[nn.Module]

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    def __getitem__(self, index: int) -> nn.Module:
        return self.modules[index]
