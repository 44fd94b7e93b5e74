"""Google's checkpoints: google-research/vision_transformer's .npz (also read by timm and
big_vision) and big_vision's ViT (other block numbering, a table without the [CLS] slot, gap / MAP
pooling, sincos2d, scanned blocks), under the prefixes their trainers save them with."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from vit_common.canonical import ATTENTION_POOL, LAYER
from vit_common.families.base import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    Family,
    Fields,
)
from vit_common.naming import Naming, Rename

_L, _P = LAYER, ATTENTION_POOL
MAX_LAYERS = 1024  # a scanned array claiming more layers than this is refused before it is viewed
PREFIXES = ("", "opt/target/", "params/", "params/img/")  # where trainers put the model's arrays


class UnsupportedCheckpoint(ValueError):
    """A checkpoint that holds a model this ViT cannot represent (and says why)."""


def _google(mha: str, ln2: str, mlp: str, *pos: Rename) -> tuple[Rename, ...]:
    block = "Transformer/encoderblock_{i}/"
    return (
        Rename("embeddings.cls_token", "cls", "param"),
        *pos,
        Rename("embeddings.patch_embeddings.projection", "embedding", "conv"),
        *(Rename(_L + f"attention.attention.{n}", f"{block}{mha}/{n}", "heads_in")
          for n in ("query", "key", "value")),
        Rename(_L + "attention.output.dense", f"{block}{mha}/out", "heads_out"),
        Rename(_L + "layernorm_before", block + "LayerNorm_0", "norm"),
        Rename(_L + "layernorm_after", f"{block}{ln2}", "norm"),
        Rename(_L + "intermediate.dense", f"{block}{mlp}/Dense_0", "linear"),
        Rename(_L + "output.dense", f"{block}{mlp}/Dense_1", "linear"),
        Rename("layernorm", "Transformer/encoder_norm", "norm"),
    )


# google-research/vision_transformer .npz (also read by timm and big_vision)
NPZ = Naming("npz", _google("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3",
                            Rename("embeddings.position_embeddings",
                                   "Transformer/posembed_input/pos_embedding", "param")),
             (Rename("classifier", "head", "linear"),), sep="/",
             markers=("embedding/kernel", "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"))
# big_vision's ViT: blocks numbered differently, position embeddings without the [CLS] slot
BIG_VISION = Naming("big_vision", _google("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0",
                                          Rename("embeddings.position_embeddings", "pos_embedding",
                                                 "pos_no_cls", when=lambda c: c.num_position_prefix > 0),
                                          Rename("embeddings.position_embeddings", "pos_embedding",
                                                 "param", when=lambda c: c.num_position_prefix == 0)) + (
    # pool_type 'map': big_vision's MAPHead
    Rename(_P + "probe", "MAPHead_0/probe", "param"),
    *(Rename(_P + f"attention.attention.{n}", f"MAPHead_0/MultiHeadDotProductAttention_0/{n}", "heads_in")
      for n in ("query", "key", "value")),
    Rename(_P + "attention.output.dense", "MAPHead_0/MultiHeadDotProductAttention_0/out", "heads_out"),
    Rename(_P + "layernorm", "MAPHead_0/LayerNorm_0", "norm"),
    Rename(_P + "intermediate.dense", "MAPHead_0/MlpBlock_0/Dense_0", "linear"),
    Rename(_P + "output.dense", "MAPHead_0/MlpBlock_0/Dense_1", "linear")),
                    (Rename("classifier", "head", "linear"),), sep="/",
                    markers=("embedding/kernel", "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"))


class _Prefixed(Mapping):
    """The arrays under `prefix`, names without it; scanned blocks ("encoderblock", a leading
    layer axis) shown as per-layer "encoderblock_{i}" views."""

    def __init__(self, arrays: Any, prefix: str, source: str) -> None:
        self.arrays, self.prefix = arrays, prefix
        self.names: dict[str, tuple[str, int | None]] = {}
        scanned = prefix + "Transformer/encoderblock/"
        layers = None
        for name in arrays:
            if not name.startswith(prefix):
                continue
            if name.startswith(scanned):
                shape = _shape(arrays, name)
                if len(shape) < 1 or (layers is not None and shape[0] != layers):
                    raise ValueError(f"{source}: scanned block array {name!r} has shape {shape}; "
                                     f"expected a leading layer axis of {layers or 'the same'} length")
                layers = shape[0]
                if layers > MAX_LAYERS:
                    raise ValueError(f"{source}: {layers} scanned layers, over the limit of "
                                     f"{MAX_LAYERS}")
                rest = name[len(scanned):]
                for i in range(layers):
                    self.names[f"Transformer/encoderblock_{i}/{rest}"] = (name, i)
            else:
                self.names[name[len(prefix):]] = (name, None)
        self.scanned = layers is not None

    def __getitem__(self, key: str) -> np.ndarray:
        name, i = self.names[key]
        arr = self.arrays[name]
        return arr if i is None else arr[i]

    def shape(self, key: str) -> tuple[int, ...]:
        name, i = self.names[key]
        s = _shape(self.arrays, name)
        return s if i is None else s[1:]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, key: object) -> bool:
        return key in self.names


def _shape(arrays: Any, name: str) -> tuple[int, ...]:
    shapes = getattr(arrays, "shapes", None)
    return tuple(shapes[name]) if shapes is not None else tuple(np.shape(arrays[name]))


@dataclasses.dataclass
class NpzModel:
    """What an npz archive holds: its arrays under their prefix (a per-layer view), the naming, the
    arrays outside the model, and the switches and head count its arrays show."""

    view: Mapping[str, Any]
    prefix: str  # the model's arrays' prefix in the archive
    naming: Naming
    unplaced: list[str]
    switches: Fields
    described: str


def open_npz(archive: Mapping[str, Any], weights: str, drop_pre_logits: bool, notes: list[str]) -> NpzModel:
    prefix = next((p for p in PREFIXES if f"{p}embedding/kernel" in archive), None)
    if prefix is None:
        raise ValueError(f"{weights}: not a ViT npz checkpoint (no 'embedding/kernel' under any of "
                         f"the prefixes {PREFIXES})")
    arrays = _Prefixed(archive, prefix, weights)
    unplaced = [k for k in archive if not k.startswith(prefix)]
    naming = next((n for n in (NPZ, BIG_VISION) if n.markers[1] in arrays), None)
    if naming is None:
        raise ValueError(f"{weights}: no attention block in Transformer/encoderblock_0 (expected "
                         f"MultiHeadDotProductAttention_1 or _0 with a query kernel)")
    q_shape = arrays.shape(naming.markers[1])  # (hidden, heads, head_dim)
    if len(q_shape) != 3 or q_shape[1] < 1:
        raise ValueError(f"{weights}: {naming.markers[1]} should be (hidden, heads, head_dim), got "
                         f"shape {q_shape}")
    view: Mapping[str, Any] = arrays
    if "pre_logits/kernel" in arrays:
        if not drop_pre_logits:
            raise UnsupportedCheckpoint(
                f"{weights}: has a pre_logits representation layer (dense + tanh between [CLS] and "
                f"the head, as in the ImageNet-21k checkpoints), which this ViT does not have. Load "
                f"the backbone without it and without the head: drop_pre_logits=True (vit-convert "
                f"--drop-pre-logits)")
        view = {k: arrays[k] for k in arrays if not k.startswith(("pre_logits/", "head/"))}
        notes.append("dropped the pre_logits layer and the head above it (drop_pre_logits)")
    # big_vision's switches, read from which arrays exist: pool_type 'tok' has a cls token, 'map'
    # a MAPHead, 'gap' neither; posemb 'learn' stores pos_embedding, 'sincos2d' stores nothing
    switches: Fields = {
        "class_token": "cls" in arrays,
        "pooling": "map" if "MAPHead_0/probe" in arrays else ("cls" if "cls" in arrays else "gap"),
        "position_embedding_type": "learned" if "pos_embedding" in arrays or naming is NPZ else "sincos2d"}
    if naming is NPZ and not switches["class_token"]:
        raise UnsupportedCheckpoint(f"{weights}: a vision_transformer npz without its 'cls' token")
    if switches["position_embedding_type"] == "sincos2d":
        notes.append(f"{weights}: no pos_embedding: read as big_vision's fixed sincos2d table")
    described = f"npz ({'vit' if naming is NPZ else 'big_vision'}{', scanned' if arrays.scanned else ''})"
    return NpzModel(view, prefix, naming, unplaced,
                    {"num_attention_heads": int(q_shape[1]), **switches}, described)


def big_vision_refusal(config: Any) -> str | None:
    """Why big_vision's ViT cannot hold this model (None when it can)."""
    defaults = config.switch_defaults()
    wrong = [f"{k}={getattr(config, k)!r}" for k in ("distillation_token", "num_register_tokens",
                                                     "pre_norm", "layer_scale", "qk_norm", "mask_token")
             if getattr(config, k) != defaults[k]]
    if wrong or config.mlp_type != "mlp" or config.final_norm != "tokens" or not config.patch_bias:
        return (f"big_vision's ViT cannot express {', '.join(wrong) or 'this model'} "
                f"(final_norm={config.final_norm!r}, mlp_type={config.mlp_type!r}, "
                f"patch_bias={config.patch_bias})")
    return None


_FILES = {"hidden_act": "gelu_new", "layer_norm_eps": 1e-6}  # flax's tanh GELU, flax's eps
FAMILY = Family(
    name="google",
    summary="Google's .npz: vision_transformer's layout and big_vision's (scanned or not)",
    namings=(NPZ, BIG_VISION),
    naming_defaults={"npz": _FILES, "big_vision": _FILES},
    # mean = std = 0.5: Google's ViT checkpoints (and HF's ViTImageProcessor)
    presets={"inception": {"mean": IMAGENET_STANDARD_MEAN, "std": IMAGENET_STANDARD_STD}},
    file_preset="inception",
)
