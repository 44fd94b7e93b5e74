"""SigLIP's vision tower (HF `SiglipVisionModel`, the vision half of `SiglipModel`; SigLIP 2 FixRes
files are the same model; timm `vit_*_siglip_*`): no [CLS], a table over the patches only, MAP
pooling (a probe and nn.MultiheadAttention's packed projection), tanh GELU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vit_common.canonical import ATTENTION_POOL
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
_DEFAULTS = {**TOWER_SIZES, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}


def _read(data: Mapping[str, Any]) -> Fields:
    if data.get("vision_use_head", True) is not True:
        raise ValueError("a SigLIP vision tower without its attention-pooling head "
                         "(vision_use_head false) has no pooled output; not supported")
    return {}


FAMILY = Family(
    name="siglip",
    summary="SigLIP vision towers: HF SiglipVisionModel, SiglipModel's vision half, SiglipForImageClassification",
    namings=(HF_SIGLIP,),
    naming_defaults={"hf-siglip": {"hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, **_SWITCHES}},
    hf=(HFModel("siglip_vision_model", "siglip", "SiglipVisionModel", HF_SIGLIP, switches=_SWITCHES,
                defaults=_DEFAULTS, classifiers={"patch_mean": "SiglipForImageClassification"},
                two_tower="siglip", renamed=RENAMED, read=_read, write=lambda c: {"vision_use_head": True},
                preset="siglip", resize_processor="SiglipImageProcessor",
                example={**_SWITCHES, "hidden_act": "gelu_pytorch_tanh", "classifier_input": "patch_mean"}),),
    # SiglipImageProcessor: a straight bicubic resize
    presets={"siglip": {"mean": IMAGENET_STANDARD_MEAN, "std": IMAGENET_STANDARD_STD, "resample": "bicubic"}},
    marks=lambda c: c.pooling == "map" and not c.class_token,
    processors={"SiglipImageProcessor": {"resample": 3, "image_mean": IMAGENET_STANDARD_MEAN,
                                         "image_std": IMAGENET_STANDARD_STD, "do_center_crop": False}},
)
