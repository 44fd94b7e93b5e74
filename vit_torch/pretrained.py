"""from_pretrained / save_pretrained for the PyTorch twin: every format vit_common reads, HF
directories out."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from vit_common.canonical import to_numpy
from vit_common.checkpoints import (
    MAX_SHARD_SIZE,
    ConfigSource,
    load_checkpoint,
    save_hf,
)
from vit_common.config import AttentionImpl
from vit_common.formats.torch_codec import to_torch
from vit_torch.model import VisionTransformer, ViTForImageClassification


def from_pretrained(path: str | os.PathLike, config: ConfigSource = None, *,
                    dtype: torch.dtype = torch.float32, attention_impl: AttentionImpl = "sdpa",
                    drop_pre_logits: bool = False) -> VisionTransformer | ViTForImageClassification:
    """Load any supported checkpoint (HF directory, .safetensors / .pt / .bin in HF or timm naming,
    HF Flax .msgpack, Google .npz) into the model class it holds, in eval mode.

    `config` supplies what the weights cannot say (the head count, for timm and bare HF state
    dicts): a ViTConfig, a preset name such as "B/16" (a str) or a config file (a pathlib.Path).
    """
    ckpt = load_checkpoint(path, config, drop_pre_logits=drop_pre_logits)
    cls = ViTForImageClassification if ckpt.has_head else VisionTransformer
    with torch.device("meta"):  # no random init of weights about to be replaced
        model = cls(ckpt.config, attention_impl)
    model.load_state_dict({k: to_torch(v) for k, v in ckpt.state.items()}, strict=True, assign=True)
    return model.to(dtype).eval()


def save_pretrained(model: VisionTransformer | ViTForImageClassification,
                    directory: str | os.PathLike, *, overwrite: bool = False,
                    max_shard_size: int = MAX_SHARD_SIZE) -> None:
    """An HF save_pretrained directory (config.json + model.safetensors, or HF's shards and index
    above max_shard_size bytes) that the family's HF class loads with no missing or unexpected keys."""
    state = {k: to_numpy(v) for k, v in model.state_dict().items()}
    save_hf(state, model.config, directory, framework="torch", overwrite=overwrite,
            max_shard_size=max_shard_size)


def load_numpy_state_dict(model: nn.Module, state: Mapping[str, np.ndarray]) -> nn.Module:
    """Load a {key: numpy array} state dict strictly (every key present, none extra, same shapes)."""
    model.load_state_dict({k: to_torch(v) for k, v in state.items()}, strict=True)
    return model
