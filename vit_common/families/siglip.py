"""SigLIP's vision tower (HF `SiglipVisionModel`, the vision half of `SiglipModel`; SigLIP 2 FixRes
files are the same model; timm `vit_*_siglip_*`): no [CLS], a table over the patches only, MAP
pooling (a probe and nn.MultiheadAttention's packed projection), tanh GELU. SigLIP 2 NaFlex (HF
`Siglip2VisionModel`, the vision half of `Siglip2Model`) is the same tower fed patchified images
at their own aspect ratio: its patch embedding a Linear over (row, col, channel) patches, its
position grid resized to every image (bilinear, antialiased), padding masked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vit_common.canonical import ATTENTION_POOL
import math

from vit_common.families.base import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    Family,
    Fields,
    HFModel,
)
from vit_common.families.clip import RENAMED, TOWER_SIZES, clip_layers
from vit_common.naming import Naming, Rename

_P = ATTENTION_POOL
HF_SIGLIP = Naming("hf-siglip", (*clip_layers(),
                                 Rename(_P + "probe", "head.probe", "param"),
                                 Rename(tuple(_P + f"attention.attention.{n}" for n in ("query", "key", "value")),
                                        "head.attention", "in_proj"),
                                 Rename(_P + "attention.output.dense", "head.attention.out_proj"),
                                 Rename(_P + "layernorm", "head.layernorm"),
                                 Rename(_P + "intermediate.dense", "head.mlp.fc1"),
                                 Rename(_P + "output.dense", "head.mlp.fc2")),
                   (Rename("classifier", "classifier"),), backbone_prefix="vision_model.",
                   markers=("head.probe", "encoder.layers.0.self_attn.q_proj.weight"))
_SWITCHES = {"class_token": False, "pooling": "map", "position_embedding_covers_prefix": False}
HF_SIGLIP2 = Naming("hf-siglip2", tuple(
    Rename(r.ours, r.theirs, "patch_linear") if r.theirs == "embeddings.patch_embedding" else r
    for r in HF_SIGLIP.backbone), HF_SIGLIP.head, backbone_prefix="vision_model.", markers=HF_SIGLIP.markers,
    marker_ranks=(("embeddings.patch_embedding.weight", 2),))
_SWITCHES2 = {**_SWITCHES, "position_embedding_resampling": "bilinear_antialias"}
_DEFAULTS2 = {**{k: v for k, v in TOWER_SIZES.items() if k != "image_size"}, "patch_size": 16, "num_patches": 256,
              "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}


def _read2(data: Mapping[str, Any]) -> Fields:
    """The grid of the position table (num_patches = side^2) as our image_size."""
    _read(data)
    n, p = data.get("num_patches", 256), data.get("patch_size", 16)
    if not (isinstance(n, int) and not isinstance(n, bool) and n > 0 and math.isqrt(n) ** 2 == n):
        raise ValueError(f"num_patches must be a square number of patches (the position grid), got {n!r}")
    if not (isinstance(p, int) and not isinstance(p, bool) and p > 0):
        raise ValueError(f"patch_size must be a positive int, got {p!r}")
    return {"image_size": math.isqrt(n) * p}


def _write2(c: Any) -> Fields:
    gh, gw = c.grid_size
    if gh != gw:
        raise ValueError(f"HF Siglip2 keeps a square position grid (num_patches); this one is {gh} x {gw}")
    return {"num_patches": gh * gw, "vision_use_head": True}
_DEFAULTS = {**TOWER_SIZES, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}


def _read(data: Mapping[str, Any]) -> Fields:
    if data.get("vision_use_head", True) is not True:
        raise ValueError("a SigLIP vision tower without its attention-pooling head "
                         "(vision_use_head false) has no pooled output; not supported")
    return {}


FAMILY = Family(
    name="siglip",
    summary="SigLIP vision towers: HF SiglipVisionModel, SiglipModel's vision half, SiglipForImageClassification",
    namings=(HF_SIGLIP2, HF_SIGLIP),
    naming_defaults={"hf-siglip": {"hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, **_SWITCHES},
                     "hf-siglip2": {"hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, **_SWITCHES2}},
    hf=(HFModel("siglip_vision_model", "siglip", "SiglipVisionModel", HF_SIGLIP, switches=_SWITCHES,
                defaults=_DEFAULTS, classifiers={"patch_mean": "SiglipForImageClassification"},
                two_tower="siglip", renamed=RENAMED, read=_read, write=lambda c: {"vision_use_head": True},
                preset="siglip", resize_processor="SiglipImageProcessor",
                example={**_SWITCHES, "hidden_act": "gelu_pytorch_tanh", "classifier_input": "patch_mean"}),
        HFModel("siglip2_vision_model", "siglip2", "Siglip2VisionModel", HF_SIGLIP2, switches=_SWITCHES2,
                defaults=_DEFAULTS2, classifiers={"patch_mean": "Siglip2ForImageClassification"},
                two_tower="siglip2", renamed=RENAMED, read=_read2, write=_write2, omits=("image_size",),
                preset="siglip2", resize_processor="Siglip2ImageProcessor",
                example={**_SWITCHES2, "hidden_act": "gelu_pytorch_tanh", "classifier_input": "patch_mean"})),
    # SiglipImageProcessor: a straight bicubic resize
    presets={"siglip": {"mean": IMAGENET_STANDARD_MEAN, "std": IMAGENET_STANDARD_STD, "resample": "bicubic"},
             # Siglip2ImageProcessor: bilinear (the NaFlex resize rule: vit_common.preprocessing.naflex_batch)
             "siglip2": {"mean": IMAGENET_STANDARD_MEAN, "std": IMAGENET_STANDARD_STD, "resample": "bilinear"}},
    marks=lambda c: c.pooling == "map" and not c.class_token,
    processors={"SiglipImageProcessor": {"resample": 3, "image_mean": IMAGENET_STANDARD_MEAN,
                                         "image_std": IMAGENET_STANDARD_STD, "do_center_crop": False},
                "Siglip2ImageProcessor": {"resample": 2, "image_mean": IMAGENET_STANDARD_MEAN,
                                          "image_std": IMAGENET_STANDARD_STD, "do_center_crop": False}},
)
