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
    # the encoder's layers as one nn.scan over a ViTLayer whose parameters are stacked on a leading
    # layer axis (compile time flat in depth), and / or each layer rematerialised in the backward
    # pass (REMAT_POLICY); the unrolled per-layer tree is HF's
    scan_layers: bool = False
    remat: bool = False

    @property
    def module_args(self) -> dict[str, Any]:
        """The fields every child module is built with."""
        return {"config": self.config, "dtype": self.dtype, "param_dtype": self.param_dtype,
                "attention_impl": self.attention_impl, "scan_layers": self.scan_layers, "remat": self.remat}

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


# Rematerialisation: inside a layer nothing is saved for the backward pass; each layer's input is
# (it is the scan carry, or the previous layer's output), so a step keeps one activation per layer
# and recomputes the layer's insides once more during the backward pass.
REMAT_POLICY = jax.checkpoint_policies.nothing_saveable


def layer_stack(block: type[nn.Module], length: int, remat: bool, scan: bool,
                per_layer_rope: bool = False) -> type[nn.Module]:
    """The class the encoder builds its layers from: `block` as is, rematerialised (nn.remat, the
    `train` flag static), and / or scanned `length` times (nn.scan, parameters stacked on axis 0,
    a fresh dropout key per layer; rotary tables broadcast, or scanned over their layer axis when
    every layer has its own: mixed RoPE). A scanned class returns (x, None), as nn.scan needs."""
    cls = block
    if scan:
        class Scanned(block):  # type: ignore[misc, valid-type]
            def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None,
                         rope: Any = None) -> tuple[jax.Array, None]:
                return super().__call__(x, train, mask, rope), None

        Scanned.__name__ = Scanned.__qualname__ = block.__name__
        cls = Scanned
    if remat:
        cls = nn.remat(cls, policy=REMAT_POLICY, prevent_cse=not scan, static_argnums=(2,))
    if scan:
        cls = nn.scan(cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                      in_axes=(nn.broadcast, nn.broadcast, 0 if per_layer_rope else nn.broadcast), length=length)
    return cls
