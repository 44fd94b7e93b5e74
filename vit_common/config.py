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
from typing import Any, ClassVar, Literal, get_args

import vit_common.families as families
from vit_common.rotary import check_rope_fields

HiddenAct = Literal["gelu", "gelu_new", "gelu_pytorch_tanh", "quick_gelu"]
# The family switches (DINOv2, CLIP, SigLIP, DeiT, timm's and big_vision's variants); defaults are
# classic ViT. Each is handled in one place in each twin.
PositionEmbedding = Literal["learned", "sincos2d", "none"]
Resampling = Literal["bicubic", "bicubic_antialias", "bilinear_antialias"]
Pooling = Literal["cls", "gap", "map", "probe"]  # probe: AIMv2's head, the probe itself the query
FinalNorm = Literal["tokens", "pooled"]
MlpType = Literal["mlp", "swiglu"]
ClassifierInput = Literal["pooled", "cls", "patch_mean", "cls_patch_mean"]
# The rotary generation (DINOv3, EVA-02, Perception Encoder, timm's RoPE ViTs, AIMv2)
# rotary positions on the patch tokens' q and k (vit_common/rotary.py): DINOv3's patch centres; axial
# integer positions (EVA-02, PE, timm rope); mixed: learned per-layer, per-head frequencies (timm)
RopeType = Literal["none", "dinov3", "axial", "mixed"]
RopeLayout = Literal["halves", "pairs"]  # a frequency's two channels: rotate-half or interleaved pairs
RopeAxes = Literal["yx", "xy"]  # which axis's frequencies come first in head_dim
NormType = Literal["layernorm", "rmsnorm"]
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
MAX_PROJECTION = 65_536
MAX_LAYERS = 4096  # the deepest published ViTs have 48 blocks
# the model_type of our own config.json (every field, for what no HF or timm config expresses)
OWN_MODEL_TYPE = "twin_vit"


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
    # a linear map without bias after the pooled embedding, to this width (CLIP's
    # visual_projection, open_clip's visual.proj): the model's pooled output is the projected
    # embedding, as its source returns it; 0 = none
    projection_size: int = 0
    # --- family switches ---------------------------------------------------------------------
    class_token: bool = True
    distillation_token: bool = False  # DeiT: a second prefix token after [CLS], its own head
    num_register_tokens: int = 0  # DINOv2 registers: after [CLS] (and DIST), no position slot
    # learned: a stored table; sincos2d: big_vision's fixed 2-D table, not stored; none
    position_embedding_type: PositionEmbedding = "learned"
    # the learned table has slots for [CLS] (and DIST) and is added after they are prepended (HF,
    # original timm); otherwise it covers the patches only and is added before (timm no_embed_class)
    position_embedding_covers_prefix: bool = True
    # how interpolate_pos_encoding resamples the table: torch bicubic, or with antialiasing (timm
    # dynamic_img_size, HF Dinov2WithRegisters), or bilinear with antialiasing (SigLIP 2 NaFlex,
    # which resizes the table to every image's own patch grid: the models' patch inputs)
    position_embedding_resampling: Resampling = "bicubic"
    pre_norm: bool = False  # CLIP's pre_layrnorm / timm norm_pre on the embedded tokens
    patch_bias: bool = True
    pooling: Pooling = "cls"  # cls ((CLS + DIST) / 2 with a distillation token), gap over patches, map
    final_norm: FinalNorm = "tokens"  # on every token, or on the pooled vector (CLIP, timm fc_norm)
    layer_scale: bool = False  # LayerScale on both residual branches (DINOv2)
    layerscale_value: float = 1.0  # its initial value (HF's name)
    mlp_type: MlpType = "mlp"  # swiglu: silu(gate) * up with [gate; up] in intermediate.dense
    qk_norm: bool = False  # LayerNorm over head_dim on queries and keys (timm)
    mask_token: bool = False  # DINOv2's mask token: unused at inference, kept through round trips
    # what ViTForImageClassification's linear head reads from the final tokens: the pooled
    # embedding (ViT, timm; DeiT's two heads on CLS and DIST), the [CLS] token alone (HF
    # DeiTForImageClassification), the mean of the patch tokens (HF CLIP / SigLIP classifiers) or
    # [CLS] next to that mean, 2 x hidden wide (HF DINOv2 classifiers)
    classifier_input: ClassifierInput = "pooled"
    # --- the rotary generation ---------------------------------------------------------------
    rope_type: RopeType = "none"
    rope_theta: float = 100.0  # the frequencies' base: period theta ** (k / bands) per axis
    rope_layout: RopeLayout = "halves"
    rope_axis_order: RopeAxes = "yx"
    # axial: positions arange(s) + offset, rescaled t / s * ref to a reference (pretraining) grid
    rope_ref_grid: tuple[int, int] | None = None
    rope_grid_offset: float = 0.0
    norm_type: NormType = "layernorm"  # RMSNorm (AIMv2): no bias, no mean subtracted
    key_bias: bool = True  # with qkv_bias: False drops the key's bias only (DINOv3, EVA)
    proj_bias: bool = True  # the attention output projection's bias
    mlp_bias: bool = True  # the MLP's two (or three) Linears' biases
    attention_norm: bool = False  # a norm on the attention's heads before its projection (EVA CLIP)
    mlp_norm: bool = False  # a norm on the MLP's hidden activations before its second Linear (EVA CLIP)
    map_num_heads: int = 0  # the MAP head's attention heads (0: the encoder's; PE core: 8)
    patch_norm: bool = False  # a norm on the patch vectors before the positions (AIMv2)
    # HF metadata carried through unchanged (id2label, architectures, model_type, ...). Not part of
    # the architecture, so it takes no part in equality or hashing.
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)
    # the family switches (the list is stated here only): fields a family fixes, beside the sizes
    SWITCH_NAMES: ClassVar[tuple[str, ...]] = (
        "class_token", "distillation_token", "num_register_tokens", "position_embedding_type",
        "position_embedding_covers_prefix", "position_embedding_resampling", "pre_norm", "patch_bias",
        "pooling", "final_norm", "layer_scale", "mlp_type", "qk_norm", "mask_token", "rope_type",
        "rope_theta", "rope_layout", "rope_axis_order", "rope_ref_grid", "rope_grid_offset", "norm_type",
        "key_bias", "proj_bias", "mlp_bias", "attention_norm", "mlp_norm", "map_num_heads",
        "patch_norm")

    @classmethod
    def switch_defaults(cls) -> dict[str, Any]:
        """Every switch at classic ViT's value."""
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        return {name: fields[name] for name in cls.SWITCH_NAMES}

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
        if self.num_hidden_layers > MAX_LAYERS:  # a config.json that lies cannot make a load loop for ever
            fail("num_hidden_layers", f"an int in [1, {MAX_LAYERS:,}]")
        if not (is_int(self.projection_size) and 0 <= self.projection_size <= MAX_PROJECTION):
            fail("projection_size", f"an int in [0, {MAX_PROJECTION:,}] (0 means no projection)")
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
        for name in ("class_token", "distillation_token", "position_embedding_covers_prefix",
                     "pre_norm", "patch_bias", "layer_scale", "qk_norm", "mask_token", "key_bias",
                     "proj_bias", "mlp_bias", "attention_norm", "mlp_norm", "patch_norm"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "a bool")
        for name, kind in (("position_embedding_type", PositionEmbedding),
                           ("position_embedding_resampling", Resampling), ("pooling", Pooling),
                           ("final_norm", FinalNorm), ("mlp_type", MlpType), ("rope_type", RopeType),
                           ("rope_layout", RopeLayout), ("rope_axis_order", RopeAxes), ("norm_type", NormType)):
            if getattr(self, name) not in get_args(kind):
                fail(name, f"one of {get_args(kind)}")
        if not (is_int(self.num_register_tokens) and 0 <= self.num_register_tokens <= 1024):
            fail("num_register_tokens", "an int in [0, 1024]")
        if not is_real(self.layerscale_value):
            fail("layerscale_value", "a finite float")
        check_rope_fields(self, fail, is_int, is_real)
        if not self.class_token and not self.distillation_token:
            # nothing to cover: one spelling, so equal models have equal configs
            object.__setattr__(self, "position_embedding_covers_prefix", False)
        if self.classifier_input not in get_args(ClassifierInput):
            fail("classifier_input", f"one of {get_args(ClassifierInput)}")
        if self.classifier_input in ("cls", "cls_patch_mean") and not self.class_token:
            raise ValueError(f"ViTConfig: classifier_input {self.classifier_input!r} reads the [CLS] "
                             f"token: it needs class_token")
        if (self.classifier_input == "cls" and not self.distillation_token
                and (self.pooling, self.final_norm) == ("cls", "tokens")):
            # the pooled embedding is the [CLS] token: one spelling, so equal models have equal configs
            object.__setattr__(self, "classifier_input", "pooled")
        if self.projection_size and self.distillation_token:
            raise ValueError("ViTConfig: a projection after a distilled DeiT's two pooled tokens is "
                             "no source's model: projection_size needs distillation_token False")
        if self.distillation_token and not self.class_token:
            raise ValueError("ViTConfig: distillation_token needs class_token (DeiT has both)")
        if self.distillation_token and (self.pooling, self.final_norm) != ("cls", "tokens"):
            raise ValueError("ViTConfig: distillation_token pools (CLS + DIST) / 2 of the normalised "
                             "tokens: it needs pooling 'cls' and final_norm 'tokens'")
        if self.pooling == "cls" and not self.class_token:
            raise ValueError("ViTConfig: pooling 'cls' needs class_token; pick 'gap' or 'map'")
        if self.position_embedding_type == "sincos2d" and self.hidden_size % 4:
            raise ValueError(f"ViTConfig: sincos2d position embeddings split hidden_size in four "
                             f"(sin / cos of rows and columns): it must be divisible by 4, got "
                             f"{self.hidden_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"ViTConfig: hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})")
        for side, size in zip(("height", "width"), self.image_hw):
            # as HF and timm: floor(size / patch) patches per side, the remainder pixels dropped
            # (a stride-p convolution); So400m/14 at 384 has 27 x 27 patches
            if size < self.patch_size:
                raise ValueError(
                    f"ViTConfig: image_size {side} ({size}) must be at least patch_size "
                    f"({self.patch_size}): it would hold no patch")
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

    @property
    def map_heads(self) -> int:  # the MAP head's attention heads
        return self.map_num_heads or self.num_attention_heads

    # --- derived sizes -------------------------------------------------------------------------
    @property
    def image_hw(self) -> tuple[int, int]:
        s = self.image_size
        return (s, s) if isinstance(s, int) else s

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches along (height, width): floor(size / patch), the remainder pixels dropped."""
        h, w = self.image_hw
        return h // self.patch_size, w // self.patch_size

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens in front of the patches: [CLS], DIST, registers (in this order)."""
        return int(self.class_token) + int(self.distillation_token) + self.num_register_tokens

    @property
    def num_position_prefix(self) -> int:
        """Prefix tokens with a slot in the learned position table ([CLS] and DIST, never registers)."""
        covered = self.position_embedding_type == "learned" and self.position_embedding_covers_prefix
        return int(self.class_token) + int(self.distillation_token) if covered else 0

    @property
    def pooled_size(self) -> int:
        """The width of the pooled output: the projection's when there is one, else hidden_size."""
        return self.projection_size or self.hidden_size

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

    # --- timm names ----------------------------------------------------------------------------
    @classmethod
    def from_timm(cls, model_name: str, **kwargs: Any) -> ViTConfig:
        """The architecture `timm.create_model(model_name, **kwargs)` builds, for timm's
        VisionTransformer / VisionTransformerDistilled names (vit_*, deit_*; DINOv2, CLIP, SigLIP,
        gap and register variants) and kwargs (img_size, patch_size, embed_dim, depth, num_heads,
        mlp_ratio, num_classes, qkv_bias, qk_norm, init_values, class_token, no_embed_class,
        reg_tokens, pre_norm, fc_norm, global_pool, act_layer, ...). What the switches cannot
        express (rope, Eva, max pooling, ...) is a ValueError naming it."""
        if not isinstance(model_name, str):
            raise ValueError(f"a timm model name is a str, got {type(model_name).__name__}")
        return cls(**families.timm.config_fields(model_name, kwargs))

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
        if families.timm.is_hub_config(data):  # a timm hub folder's config.json
            return cls(**families.timm.hub_fields(data))
        if data.get("model_type") == OWN_MODEL_TYPE:
            return cls._from_own(data)
        model_type = data.get("model_type", families.CLASSIC)
        if not isinstance(model_type, str):
            raise ValueError(f"model_type must be a string, got {type(model_type).__name__}")
        if model_type in families.TWO_TOWERS:  # CLIPModel / SiglipModel: the vision tower's config
            vision = data.get("vision_config")
            if not isinstance(vision, dict):
                raise ValueError(f"a {model_type!r} config needs a 'vision_config' object")
            top = {k: data[k] for k in ("architectures", "id2label", "label2id", "num_labels") if k in data}
            vision = {**vision, **top, "model_type": families.TWO_TOWERS[model_type]}  # a classifier's labels
            config = cls._from_hf_dict(vision)
            tower = families.hf_model(families.TWO_TOWERS[model_type])
            projected = tower.projection is not None and not any(
                a in families.CLASSIFIER_INPUTS for a in top.get("architectures") or [])
            size = data.get("projection_dim", 512) if projected else 0  # CLIPModel's visual_projection
            return config.replace(projection_size=size, extra={**config.extra, "vision_tower_of": model_type})
        family = families.hf_model(model_type)
        data = {**family.defaults, **data}
        arch = ({f.name for f in dataclasses.fields(cls)} - {"num_labels", "extra", "classifier_input"}
                - set(cls.SWITCH_NAMES))
        fields = {k: data[k] for k in arch if k in data}
        fields.update(family.switches)
        extra = {k: v for k, v in data.items() if k not in arch and k != "num_labels"
                 and k not in family.defaults}
        extra["model_type"] = model_type
        for theirs, ours in family.renamed.items():  # CLIP's and SigLIP's attention_dropout
            if theirs in data:
                fields[ours] = data[theirs]
                extra.pop(theirs, None)
        architectures = data.get("architectures")
        if isinstance(architectures, list) and architectures and architectures[0] in families.CLASSIFIER_INPUTS:
            fields["classifier_input"] = families.CLASSIFIER_INPUTS[architectures[0]]
        fields.update(family.read(data))
        if family.projection is not None and isinstance(architectures, list) and family.projection in architectures:
            fields["projection_size"] = data.get("projection_dim", 512)  # CLIPVisionModelWithProjection
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

    # --- our own config.json, for a model no HF family and no timm definition expresses --------
    def to_own(self) -> dict[str, Any]:
        """Every field as config.json holds it under model_type "twin_vit" (docs/checkpoints.md):
        `from_hf` reads it back to an equal config, extra included."""
        data: dict[str, Any] = {"model_type": OWN_MODEL_TYPE}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        extra = dict(self.extra)
        if "id2label" in extra:
            extra["id2label"] = {str(k): v for k, v in extra["id2label"].items()}
        data["extra"] = extra
        return data

    @classmethod
    def _from_own(cls, data: Mapping[str, Any]) -> ViTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"model_type"})
        if unknown:
            raise ValueError(f"a {OWN_MODEL_TYPE!r} config has only ViTConfig fields; unknown: {', '.join(unknown)}")
        extra = data.get("extra", {})
        if not isinstance(extra, dict):
            raise ValueError(f"'extra' must be an object, got {type(extra).__name__}")
        if "id2label" in extra:
            extra = {**extra, "id2label": _int_keyed(extra["id2label"], "id2label")}
        return cls(**{k: v for k, v in data.items() if k in names and k != "extra"}, extra=extra)

    @property
    def hf_model_type(self) -> str:
        """The HF family this config is written as: the one it was read from, else the one whose
        switches it has."""
        return families.hf_model_of(self).model_type

    def to_hf(self, path: str | os.PathLike | None = None, *, overwrite: bool = False) -> dict[str, Any]:
        """This config as its HF family's config.json dict (vit, deit, dinov2, ...); also written
        to `path` when given (an existing file is replaced only with overwrite=True). A config no HF
        family expresses (gap pooling, qk-norm, ...) is a ValueError naming the switches."""
        family = families.hf_model_of(self)
        model_type = family.model_type
        wrong = family.mismatches(self)
        if self.projection_size and family.projection is None:
            wrong.append(f"projection_size={self.projection_size}")
        if wrong:
            raise ValueError(f"HF {model_type!r} models cannot express {', '.join(wrong)}; "
                             f"write timm or Flax weights instead")
        data: dict[str, Any] = {k: v for k, v in self.extra.items() if k != "vision_tower_of"}
        data["model_type"] = model_type
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "num_labels", "classifier_input", "layerscale_value", "projection_size") \
                    and f.name not in self.SWITCH_NAMES:
                value = getattr(self, f.name)
                data[f.name] = list(value) if isinstance(value, tuple) else value
        data.update(family.write(self))
        for key in family.omits:
            data.pop(key, None)
        if self.projection_size:
            data["projection_dim"] = self.projection_size
        for theirs, ours in family.renamed.items():
            data[theirs] = data.pop(ours)
        id2label = self.extra.get("id2label") or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        data["id2label"] = {str(k): v for k, v in id2label.items()}
        data["label2id"] = self.extra.get("label2id") or {v: int(k) for k, v in id2label.items()}
        if path is not None:
            from vit_common.fileio import atomic_write_text

            atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n",
                              overwrite=overwrite)
        return data


SWITCHES: dict[str, Any] = ViTConfig.switch_defaults()


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
