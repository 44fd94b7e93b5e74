"""DeiT (HF `DeiTModel`, timm `deit_*`): ViT's names under "deit.", a distillation token after
[CLS] and two heads named for their tokens."""

from __future__ import annotations

from vit_common.families.base import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    Family,
    HFModel,
)
from vit_common.families.vit import HF_COPY
from vit_common.naming import Naming, Rename, identity

HF_DEIT = Naming("hf-deit", identity(HF_COPY), (
    Rename("classifier", "cls_classifier", when=lambda c: c.classifier_input == "pooled"),  # WithTeacher
    Rename("classifier", "classifier", when=lambda c: c.classifier_input == "cls"),  # CLS-only head
    Rename("distillation_classifier", "distillation_classifier")),
    backbone_prefix="deit.", markers=("embeddings.distillation_token",))

_SWITCHES = {"distillation_token": True}
FAMILY = Family(
    name="deit",
    summary="DeiT: HF DeiTModel and its two classifiers (distilled, CLS-only)",
    namings=(HF_DEIT,),
    naming_defaults={"hf-deit": {"hidden_act": "gelu", "layer_norm_eps": 1e-12, **_SWITCHES}},
    hf=(HFModel("deit", "deit", "DeiTModel", HF_DEIT, switches=_SWITCHES,
                classifiers={"pooled": "DeiTForImageClassificationWithTeacher",
                             "cls": "DeiTForImageClassification"},
                preset="deit", example={**_SWITCHES}),),
    # DeiTImageProcessor: 256 x 256 (aspect not kept), centre crop 224
    presets={"deit": {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD, "resample": "bicubic",
                      "crop_pct": 0.875, "crop_mode": "squash", "crop_rounding": "floor"}},
    marks=lambda c: c.distillation_token,
    processors={"DeiTImageProcessor": {"resample": 3, "image_mean": IMAGENET_STANDARD_MEAN,
                                       "image_std": IMAGENET_STANDARD_STD, "do_center_crop": True,
                                       "size": {"height": 256, "width": 256},
                                       "crop_size": {"height": 224, "width": 224}}},
)
