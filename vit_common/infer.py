"""What a canonical state dict says about its model: the shape-level config (`infer_config`) and
the family switches its tensors reveal (`switches_from_state`), for files that carry no config."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

import vit_common.families as families
from vit_common.canonical import (
    ATTENTION_POOL,
    BACKBONE_PREFIX,
    CLASSIFIER_KEY,
    has_classifier,
)
from vit_common.config import SWITCHES, ViTConfig


class NonSquareGrid(ValueError):
    """The token count of the position embeddings is not a square (or there is no table): the
    image size is ambiguous."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


_LAYER_RE = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")
MAX_LAYERS = 1024


def infer_config(state_dict: Mapping[str, Any], with_head: bool | None = None, *,
                 square: bool = True, switches: Mapping[str, Any] | None = None) -> ViTConfig:
    """The shape-level config of a canonical state dict.

    The head count changes no tensor shape, so it cannot be read from the weights; the result has
    num_attention_heads=1, which is fine for checking and converting weights but not for running
    them. The patch grid is assumed square; with `square=False` a non-square token count is read
    as a 1 x N grid, which has the right shapes (all conversion needs) but not the real image size.
    `switches`: family fields known from elsewhere (big_vision's pooling, ...); other fields of
    `switches` (the head count) are ignored here.
    """
    known = {k: v for k, v in (switches or {}).items() if k in SWITCHES}
    layout = ViTConfig(**known)
    if with_head is None:
        with_head = has_classifier(state_dict)
    prefix = BACKBONE_PREFIX if with_head else ""

    def shape(key: str, rank: int) -> tuple[int, ...]:
        full = key if key == CLASSIFIER_KEY else prefix + key
        if full not in state_dict:
            raise ValueError(f"cannot infer the architecture: key {full!r} is missing "
                             f"(got {len(state_dict)} keys, e.g. {sorted(state_dict)[:3]})")
        s = tuple(int(d) for d in np.shape(state_dict[full]))
        if len(s) != rank or not all(s):
            raise ValueError(f"cannot infer the architecture: {full} should be a "
                             f"non-empty rank-{rank} tensor, got shape {s}")
        return s

    hidden, channels, patch, patch_w = shape("embeddings.patch_embeddings.projection.weight", 4)
    if patch != patch_w:
        raise ValueError(f"cannot infer the architecture: patches must be square, the patch "
                         f"kernel is {patch}x{patch_w}")
    if layout.position_embedding_type == "learned":
        tokens = shape("embeddings.position_embeddings", 3)[1] - layout.num_position_prefix
        reason = f"{tokens} patches are not a square grid"
    else:
        tokens, reason = 1, "no position table says the patch grid"
    if tokens < 1:
        raise ValueError("cannot infer the architecture: the position embeddings have no patch slots")
    grid = math.isqrt(tokens)
    if grid * grid == tokens and layout.position_embedding_type == "learned":
        image_size: int | tuple[int, int] = grid * patch
    elif not square:
        image_size = (patch, tokens * patch)
    else:
        raise NonSquareGrid(f"cannot infer image_size: {reason}; pass config=", reason)
    layers = {int(m.group(1)) for k in state_dict if (m := _LAYER_RE.search(k))}
    if layers and max(layers) >= MAX_LAYERS:
        raise ValueError(f"cannot infer the architecture: layer index {max(layers)} is over the "
                         f"limit of {MAX_LAYERS} layers")
    return ViTConfig(
        hidden_size=hidden, num_channels=channels, patch_size=patch, image_size=image_size,
        num_hidden_layers=max(layers) + 1 if layers else 1, num_attention_heads=1,
        intermediate_size=shape("encoder.layer.0.intermediate.dense.weight", 2)[0],
        qkv_bias=prefix + "encoder.layer.0.attention.attention.query.bias" in state_dict,
        num_labels=shape(CLASSIFIER_KEY, 2)[0] if with_head else 0, **known)


def switches_from_state(state_dict: Mapping[str, Any], with_head: bool, naming: str = "",
                        origin: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The family switches a canonical state shows by its tensors alone: prefix tokens, registers,
    pre-norm, patch bias, LayerScale, qk-norm, SwiGLU (the MLP's first matrix twice as wide as
    the second's input), MAP pooling; then what the source family of `naming` reads from its own
    names (`origin`: canonical key -> their key; timm's fc_norm, say). What tensors cannot say (the
    activation, eps, sincos2d, a plain gap model's norm) is left out."""
    p = BACKBONE_PREFIX if with_head else ""

    def has(key: str) -> bool:
        return p + key in state_dict

    out: dict[str, Any] = {
        "class_token": has("embeddings.cls_token"), "distillation_token": has("embeddings.distillation_token"),
        "mask_token": has("embeddings.mask_token"), "pre_norm": has("pre_layernorm.weight"),
        "patch_bias": has("embeddings.patch_embeddings.projection.bias"),
        "layer_scale": has("encoder.layer.0.layer_scale1.lambda1"),
        "qk_norm": has("encoder.layer.0.attention.attention.q_norm.weight")}
    if has("embeddings.register_tokens") and np.ndim(state_dict[p + "embeddings.register_tokens"]) == 3:
        out["num_register_tokens"] = int(np.shape(state_dict[p + "embeddings.register_tokens"])[1])
    fc1, fc2 = (state_dict.get(p + f"encoder.layer.0.{n}.dense.weight") for n in ("intermediate", "output"))
    if fc1 is not None and fc2 is not None and np.ndim(fc1) == np.ndim(fc2) == 2 \
            and np.shape(fc1)[0] == 2 * np.shape(fc2)[1]:
        out["mlp_type"] = "swiglu"
    if has(ATTENTION_POOL + "probe"):
        out["pooling"] = "map"
    family = families.family_of_naming(naming) if naming else None
    if family is not None and family.reveal is not None:
        out.update(family.reveal(state_dict, p, dict(origin or {}), out))
    return out
