"""from_pretrained / save_pretrained for the Flax twin: every format vit_common reads, HF Flax
directories out."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vit_common.checkpoints import ConfigSource, load_checkpoint, save_hf_flax
from vit_common.config import AttentionImpl
from vit_common.convert import stack_layers, torch_to_flax, unstack_layers
from vit_flax.model import VisionTransformer, ViTForImageClassification


def from_pretrained(path: str | os.PathLike, config: ConfigSource = None, *,
                    dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                    attention_impl: AttentionImpl = "eager", drop_pre_logits: bool = False,
                    scan_layers: bool = False, remat: bool = False
                    ) -> tuple[VisionTransformer | ViTForImageClassification, dict[str, Any]]:
    """Load any supported checkpoint (see vit_torch.from_pretrained) as (model, params); params are
    jax arrays in `param_dtype`, the model computes in `dtype`. `scan_layers=True` stacks the
    layers' parameters for the scanned encoder; `remat=True` rematerialises each layer."""
    ckpt = load_checkpoint(path, config, drop_pre_logits=drop_pre_logits)
    cls = ViTForImageClassification if ckpt.has_head else VisionTransformer
    model = cls(ckpt.config, dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl,
                scan_layers=scan_layers, remat=remat)
    tree = torch_to_flax(ckpt.state, ckpt.config)
    if scan_layers:
        tree = stack_layers(tree)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=param_dtype), tree)
    return model, params


def save_pretrained(model: VisionTransformer | ViTForImageClassification, params: Any,
                    directory: str | os.PathLike, *, overwrite: bool = False) -> None:
    """An HF Flax save_pretrained directory: config.json + flax_model.msgpack."""
    with_head = isinstance(model, ViTForImageClassification)
    tree = jax.tree_util.tree_map(np.asarray, unstack_layers(params))
    save_hf_flax(tree, model.config, directory, with_head=with_head, overwrite=overwrite)
