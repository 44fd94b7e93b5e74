"""ViTConfig: the one architecture description both frameworks read.

Field names are HF transformers' ``ViTConfig`` names, so an HF ``config.json`` reads without
translation. The config holds architecture only: mode (train / eval), dtype and output options are
call or module arguments, never config fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

HiddenAct = Literal["gelu", "gelu_new", "gelu_pytorch_tanh"]
# How both twins compute attention (a module argument like dtype, not a config field): einsum /
# matmul + softmax, or the framework's fused scaled-dot-product attention
AttentionImpl = Literal["eager", "sdpa"]
SUPPORTED_ACTS: tuple[str, ...] = get_args(HiddenAct)

# HF config.json keys that are architecture fields of ours; everything else in a config.json is kept
# verbatim in `ViTConfig.extra` so that `from_hf(...).to_hf()` loses nothing.
_HF_DEFAULT_NUM_LABELS = 2  # what HF assumes when a config.json names no labels at all
# Documented limits: a config read from a file cannot ask for more than this (a 4096 x 4096 image
# at patch 16 has 65,536 patches; a 80,000-pixel image would need a 25-million-token sequence).
MAX_PATCHES = 65_536
MAX_LABELS = 1_000_000


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: HiddenAct = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    image_size: int | tuple[int, int] = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    num_labels: int = 1000
    # HF metadata carried through unchanged (id2label, architectures, model_type, ...). Not part of
    # the architecture, so it takes no part in equality or hashing.
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ValueError(f"ViTConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_real(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if isinstance(self.image_size, (list, tuple)):
            object.__setattr__(self, "image_size", tuple(self.image_size))
            if len(self.image_size) != 2 or not all(is_int(s) and s > 0 for s in self.image_size):
                fail("image_size", "a positive int or a (height, width) pair of positive ints")
            if self.image_size[0] == self.image_size[1]:
                object.__setattr__(self, "image_size", self.image_size[0])
        elif not (is_int(self.image_size) and self.image_size > 0):
            fail("image_size", "a positive int or a (height, width) pair of positive ints")
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "patch_size", "num_channels"):
            if not (is_int(getattr(self, name)) and getattr(self, name) > 0):
                fail(name, "a positive int")
        if not (is_int(self.num_labels) and self.num_labels >= 0):
            fail("num_labels", "an int >= 0 (0 means no classifier head)")
        if self.hidden_act not in SUPPORTED_ACTS:
            fail("hidden_act", f"one of {SUPPORTED_ACTS}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not (is_real(getattr(self, name)) and 0.0 <= getattr(self, name) < 1.0):
                fail(name, "a probability in [0, 1)")
        if not (is_real(self.layer_norm_eps) and self.layer_norm_eps > 0):
            fail("layer_norm_eps", "a finite float > 0")
        if not (is_real(self.initializer_range) and self.initializer_range > 0):
            fail("initializer_range", "a finite float > 0")
        if not isinstance(self.qkv_bias, bool):
            fail("qkv_bias", "a bool")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"ViTConfig: hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})")
        for side, size in zip(("height", "width"), self.image_hw):
            if size % self.patch_size:
                raise ValueError(
                    f"ViTConfig: image_size {side} ({size}) must be divisible by patch_size "
                    f"({self.patch_size})")
        if self.num_patches > MAX_PATCHES:
            raise ValueError(
                f"ViTConfig: image_size {self.image_size} at patch_size {self.patch_size} makes "
                f"{self.num_patches:,} patches, over the limit of {MAX_PATCHES:,}")
        if self.num_labels > MAX_LABELS:
            fail("num_labels", f"at most {MAX_LABELS:,}")
        if not isinstance(self.extra, Mapping):
            fail("extra", "a mapping of extra HF config.json keys")
        object.__setattr__(self, "extra", dict(self.extra))
        id2label = self.extra.get("id2label")
        if id2label is not None and not isinstance(id2label, Mapping):
            raise ValueError(f"ViTConfig: extra['id2label'] must map label ids to names, got "
                             f"{type(id2label).__name__}")
        if id2label is not None and len(id2label) != self.num_labels:
            raise ValueError(
                f"ViTConfig: extra['id2label'] has {len(id2label)} labels but num_labels is "
                f"{self.num_labels}")

    # --- derived sizes -------------------------------------------------------------------------
    @property
    def image_hw(self) -> tuple[int, int]:
        s = self.image_size
        return (s, s) if isinstance(s, int) else s

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches along (height, width)."""
        h, w = self.image_hw
        return h // self.patch_size, w // self.patch_size

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def replace(self, **changes: Any) -> ViTConfig:
        return dataclasses.replace(self, **changes)

    # --- presets -------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ViTConfig:
        """A ViT paper model ("B/16"; also "b16", "vit-b16", "ViT-B/16", "vit-base-patch16-384")."""
        if not isinstance(name, str):
            raise ValueError(f"a preset name is a str such as 'B/16', got {type(name).__name__}")
        m = _PRESET_RE.match(name.strip().lower())
        if m is None or _SIZE_ALIASES.get(m["size"]) not in _SIZES:
            raise ValueError(f"unknown ViT preset {name!r}; expected one of {', '.join(MODEL_PRESETS)}")
        size = _SIZE_ALIASES[m["size"]]
        key = f"{size}/{m['patch']}"
        if key not in MODEL_PRESETS:
            raise ValueError(f"unknown ViT preset {name!r} (read as {key}); "
                             f"expected one of {', '.join(MODEL_PRESETS)}")
        fields: dict[str, Any] = dict(_SIZES[size], patch_size=int(m["patch"]))
        if m["res"]:
            fields["image_size"] = int(m["res"])
        fields.update(overrides)
        return cls(**fields)

    # --- HF config.json ------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, source: str | os.PathLike | Mapping[str, Any]) -> ViTConfig:
        """Read an HF ViT config.json (a path to the file or its directory, or the parsed dict).
        Every problem is one ValueError naming the file."""
        if isinstance(source, Mapping):
            return cls._from_hf_dict(dict(source))
        from vit_common.fileio import read_json

        path = os.fspath(source)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        data = read_json(path, "config.json")
        try:
            return cls._from_hf_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def _from_hf_dict(cls, data: Any) -> ViTConfig:
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        model_type = data.get("model_type", "vit")
        if model_type != "vit":
            raise ValueError(f"expected an HF config with model_type 'vit', got {model_type!r}")
        arch = {f.name for f in dataclasses.fields(cls)} - {"num_labels", "extra"}
        fields = {k: data[k] for k in arch if k in data}
        extra = {k: v for k, v in data.items() if k not in arch and k != "num_labels"}
        # HF derives num_labels from id2label; a bare "num_labels" key is also honoured.
        if "id2label" in data:
            extra["id2label"] = _int_keyed(data["id2label"], "id2label")
            num_labels = len(extra["id2label"])
        else:
            num_labels = data.get("num_labels", _HF_DEFAULT_NUM_LABELS)
        if "label2id" in data:
            label2id = data["label2id"]
            if not isinstance(label2id, dict) or not all(
                    isinstance(v, (int, str)) and not isinstance(v, bool) and str(v).lstrip("-").isdigit()
                    for v in label2id.values()):
                raise ValueError("label2id must map label names to integer ids")
            extra["label2id"] = {str(k): int(v) for k, v in label2id.items()}
        return cls(**fields, num_labels=num_labels, extra=extra)

    def to_hf(self, path: str | os.PathLike | None = None, *, overwrite: bool = False) -> dict[str, Any]:
        """This config as an HF ViT config.json dict; also written to `path` when given (an
        existing file is replaced only with overwrite=True)."""
        data: dict[str, Any] = {"model_type": "vit"}
        data.update(self.extra)
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "num_labels"):
                value = getattr(self, f.name)
                data[f.name] = list(value) if isinstance(value, tuple) else value
        id2label = self.extra.get("id2label") or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        data["id2label"] = {str(k): v for k, v in id2label.items()}
        data["label2id"] = self.extra.get("label2id") or {v: int(k) for k, v in id2label.items()}
        if path is not None:
            from vit_common.fileio import atomic_write_text

            atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n",
                              overwrite=overwrite)
        return data


def _int_keyed(mapping: Any, name: str) -> dict[int, Any]:
    if not isinstance(mapping, dict):
        raise ValueError(f"{name} must be a JSON object mapping label ids to names, got "
                         f"{type(mapping).__name__}")
    out = {}
    for k, v in mapping.items():
        try:
            out[int(k)] = v
        except (TypeError, ValueError):
            raise ValueError(f"{name} keys must be integer ids, got {k!r}") from None
    if len(out) > MAX_LABELS:
        raise ValueError(f"{name} has {len(out):,} labels, over the limit of {MAX_LABELS:,}")
    return out


# Sizes from the ViT paper (Dosovitskiy et al. 2020, table 1) and DeiT for Ti/S.
_SIZES: dict[str, dict[str, int]] = {
    "Ti": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768),
    "S": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "B": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "L": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "H": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120),
}
_SIZE_ALIASES = {"ti": "Ti", "tiny": "Ti", "s": "S", "small": "S", "b": "B", "base": "B",
                 "l": "L", "large": "L", "h": "H", "huge": "H"}
MODEL_PRESETS: tuple[str, ...] = ("Ti/16", "S/16", "S/32", "B/16", "B/32", "L/16", "L/32", "H/14")
_PRESET_RE = re.compile(
    r"^(?:vit)?[-_/ ]?(?P<size>[a-z]+)[-_/ ]?(?:patch)?(?P<patch>\d+)(?:[-_](?P<res>\d+))?$")
