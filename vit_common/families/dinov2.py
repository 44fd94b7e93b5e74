"""DINOv2 (HF `Dinov2Model`, `Dinov2WithRegistersModel`; timm `vit_*_dinov2`): LayerScale, a mask
token, SwiGLU on the giant size, registers; the MLP width stated as mlp_ratio."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vit_common.canonical import LAYER
from vit_common.families.base import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    Family,
    Fields,
    HFModel,
)
from vit_common.families.vit import HF_COPY
from vit_common.naming import Naming, Rename, identity

if TYPE_CHECKING:
    from vit_common.config import ViTConfig

_L = LAYER


def _swiglu(c: ViTConfig) -> bool:
    return c.mlp_type == "swiglu"


def _gelu_mlp(c: ViTConfig) -> bool:
    return c.mlp_type == "mlp"


HF_DINOV2 = Naming("hf-dinov2", tuple(
    r for r in identity(HF_COPY, rename={_L + "layernorm_before": _L + "norm1",
                                         _L + "layernorm_after": _L + "norm2"})
    if r.ours not in (_L + "intermediate.dense", _L + "output.dense")) + (
    Rename(_L + "intermediate.dense", _L + "mlp.fc1", when=_gelu_mlp),
    Rename(_L + "output.dense", _L + "mlp.fc2", when=_gelu_mlp),
    Rename(_L + "intermediate.dense", _L + "mlp.weights_in", when=_swiglu),
    Rename(_L + "output.dense", _L + "mlp.weights_out", when=_swiglu),
), (Rename("classifier", "classifier"),), backbone_prefix="dinov2.",
    markers=("embeddings.patch_embeddings.projection.weight", "encoder.layer.0.layer_scale1.lambda1"))
# with registers: the same names, its classifier's backbone under its own prefix
HF_DINOV2_REGISTERS = Naming(
    "hf-dinov2-registers", HF_DINOV2.backbone, HF_DINOV2.head, backbone_prefix="dinov2_with_registers.",
    markers=(*HF_DINOV2.markers, "embeddings.register_tokens"))


def swiglu_hidden(hidden_size: int, mlp_ratio: float) -> int:
    """DINOv2's SwiGLU width: two thirds of the GELU MLP's, rounded up to a multiple of 8."""
    return (int(int(hidden_size * mlp_ratio) * 2 / 3) + 7) // 8 * 8


def _read(data: Mapping[str, Any]) -> Fields:
    """The MLP width from mlp_ratio (DINOv2's config has no usable intermediate_size)."""
    ratio, hidden, swiglu = data["mlp_ratio"], data["hidden_size"], data["use_swiglu_ffn"]
    if not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio < 1e4
            and isinstance(hidden, int) and isinstance(swiglu, bool)):
        raise ValueError(f"dinov2 config: mlp_ratio {ratio!r}, hidden_size {hidden!r} and "
                         f"use_swiglu_ffn {swiglu!r} must be a positive number, an int and a bool")
    width = swiglu_hidden(hidden, ratio) if swiglu else int(hidden * ratio)
    out: Fields = {"intermediate_size": width, "mlp_type": "swiglu" if swiglu else "mlp",
                   "mask_token": data.get("use_mask_token", True) is not False}
    if "num_register_tokens" in data:
        out["num_register_tokens"] = data["num_register_tokens"]
    return out


def _write(config: ViTConfig) -> Fields:
    d, width = config.hidden_size, config.intermediate_size
    if config.mlp_type == "swiglu":
        ratio: float = next((r for r in (4, 4.0 * width / swiglu_hidden(d, 4), width * 1.5 / d)
                             if swiglu_hidden(d, r) == width), 0)
    else:
        ratio = width // d if width % d == 0 else width / d
        ratio = ratio if int(d * ratio) == width else 0
    if not ratio:
        raise ValueError(f"an HF dinov2 config cannot express an MLP width of {width} at hidden size {d}")
    return {"mlp_ratio": ratio, "use_swiglu_ffn": config.mlp_type == "swiglu",
            "use_mask_token": config.mask_token, "layerscale_value": config.layerscale_value}


def _write_registers(config: ViTConfig) -> Fields:
    return {**_write(config), "num_register_tokens": config.num_register_tokens}


_DEFAULTS = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
                 hidden_act="gelu", layer_norm_eps=1e-6, image_size=224, patch_size=14,
                 qkv_bias=True, layerscale_value=1.0, use_swiglu_ffn=False)
_SWITCHES = {"layer_scale": True, "mask_token": True}
_REGISTERS = {**_SWITCHES, "position_embedding_resampling": "bicubic_antialias"}
_FILES = {"hidden_act": "gelu", "layer_norm_eps": 1e-6}

FAMILY = Family(
    name="dinov2",
    summary="DINOv2: HF Dinov2Model / Dinov2WithRegistersModel and their [CLS; patch mean] classifiers",
    namings=(HF_DINOV2_REGISTERS, HF_DINOV2),
    naming_defaults={"hf-dinov2": {**_FILES, **_SWITCHES}, "hf-dinov2-registers": {**_FILES, **_REGISTERS}},
    hf=(HFModel("dinov2", "dinov2", "Dinov2Model", HF_DINOV2, switches=_SWITCHES, defaults=_DEFAULTS,
                free=("mlp_type", "mask_token"), classifiers={"cls_patch_mean": "Dinov2ForImageClassification"},
                read=_read, write=_write, preset="dinov2",
                example={**_SWITCHES, "classifier_input": "cls_patch_mean"}),
        HFModel("dinov2_with_registers", "dinov2-registers", "Dinov2WithRegistersModel", HF_DINOV2_REGISTERS,
                switches=_REGISTERS, defaults={**_DEFAULTS, "num_register_tokens": 4},
                free=("mlp_type", "num_register_tokens", "mask_token"),
                classifiers={"cls_patch_mean": "Dinov2WithRegistersForImageClassification"},
                read=_read, write=_write_registers, preset="dinov2",
                example={**_REGISTERS, "num_register_tokens": 2, "classifier_input": "cls_patch_mean"})),
    # BitImageProcessor as DINOv2's checkpoints configure it: shorter side to 256, centre crop 224
    presets={"dinov2": {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD, "resample": "bicubic",
                        "crop_pct": 0.875, "crop_mode": "center", "crop_rounding": "floor"}},
    marks=lambda c: c.layer_scale and c.rope_type == "none",
    processors={"BitImageProcessor": {"resample": 3, "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD,
                                      "do_center_crop": True, "size": {"shortest_edge": 224},
                                      "crop_size": {"height": 224, "width": 224}}},
)
