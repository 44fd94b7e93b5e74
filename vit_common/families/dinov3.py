"""DINOv3 (HF `DINOv3ViTModel`; timm's `vit_*_dinov3` are in `families.eva`): [CLS], registers and
patches without a position table, rotary positions on the patch tokens (patch centres in [-1, 1],
theta 100, rotate-half), no key bias, LayerScale, a plain or gated (SwiGLU) MLP, eps 1e-5; the
pooled embedding is [CLS] after the final norm."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vit_common.families.base import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Family, Fields, HFModel
from vit_common.naming import Naming, Rename

if TYPE_CHECKING:
    from vit_common.config import ViTConfig

_L = "encoder.layer.{i}."
_D = "layer.{i}."  # save_pretrained's names (in memory: model.layer.{i}.)


def _gated(c: ViTConfig) -> bool:
    return c.mlp_type == "swiglu"


HF_DINOV3 = Naming("hf-dinov3", (
    Rename("embeddings.cls_token", "embeddings.cls_token", "param"),
    Rename("embeddings.mask_token", "embeddings.mask_token", "token_3d"),
    Rename("embeddings.register_tokens", "embeddings.register_tokens", "param"),
    Rename("embeddings.patch_embeddings.projection", "embeddings.patch_embeddings"),
    *(Rename(_L + f"attention.attention.{n}", _D + f"attention.{t}_proj")
      for n, t in (("query", "q"), ("key", "k"), ("value", "v"))),
    Rename(_L + "attention.output.dense", _D + "attention.o_proj"),
    Rename(_L + "layernorm_before", _D + "norm1"),
    Rename(_L + "layernorm_after", _D + "norm2"),
    Rename(_L + "layer_scale1", _D + "layer_scale1", "scale"),
    Rename(_L + "layer_scale2", _D + "layer_scale2", "scale"),
    Rename(_L + "intermediate.dense", _D + "mlp.up_proj", when=lambda c: not _gated(c)),
    # the gated MLP's gate_proj and up_proj are the two halves of our packed [gate; up]
    Rename(_L + "intermediate.dense", (_D + "mlp.gate_proj", _D + "mlp.up_proj"), when=_gated),
    Rename(_L + "output.dense", _D + "mlp.down_proj"),
    Rename("layernorm", "norm"),
), (), markers=("embeddings.patch_embeddings.weight", "layer.0.attention.q_proj.weight"),
    empty=lambda c: {} if c.num_register_tokens else {"embeddings.register_tokens": (1, 0, c.hidden_size)})


def _flag(data: Mapping[str, Any], key: str, default: bool = True) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"dinov3_vit config: {key} must be a bool, got {value!r}")
    return value


def _read(data: Mapping[str, Any]) -> Fields:
    """Biases, the gated MLP (silu: our SwiGLU) and the rotary base from a DINOv3 config.json."""
    query, value = _flag(data, "query_bias"), _flag(data, "value_bias")
    if query != value:
        raise ValueError(f"dinov3_vit config: query_bias {query} with value_bias {value} is not expressible "
                         f"(one qkv_bias for both, key_bias apart)")
    gated = _flag(data, "use_gated_mlp", False)
    act = data.get("hidden_act", "gelu")
    out: Fields = {"qkv_bias": query, "key_bias": _flag(data, "key_bias", False), "proj_bias": _flag(data, "proj_bias"),
                   "mlp_bias": _flag(data, "mlp_bias"), "rope_theta": data.get("rope_theta", 100.0),
                   "mlp_type": "swiglu" if gated else "mlp",
                   "num_register_tokens": data.get("num_register_tokens", 0)}
    if gated:
        if act != "silu":
            raise ValueError(f"dinov3_vit config: a gated MLP with hidden_act {act!r} is not expressible "
                             f"(SwiGLU: silu)")
        out["hidden_act"] = "gelu"  # unused by SwiGLU; silu is no activation of the plain MLP here
    elif act == "silu":
        raise ValueError("dinov3_vit config: hidden_act 'silu' without use_gated_mlp is not expressible")
    return out


def _write(config: ViTConfig) -> Fields:
    gated = config.mlp_type == "swiglu"
    out: Fields = {"query_bias": config.qkv_bias, "value_bias": config.qkv_bias,
                   "key_bias": config.qkv_bias and config.key_bias, "proj_bias": config.proj_bias,
                   "mlp_bias": config.mlp_bias, "rope_theta": config.rope_theta, "use_gated_mlp": gated,
                   "num_register_tokens": config.num_register_tokens,
                   "layerscale_value": config.layerscale_value}
    if gated:
        out["hidden_act"] = "silu"
    return out


SWITCHES = {"position_embedding_type": "none", "layer_scale": True, "mask_token": True, "rope_type": "dinov3",
            "rope_layout": "halves", "rope_axis_order": "yx"}
_DEFAULTS = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                 hidden_act="gelu", layer_norm_eps=1e-5, image_size=224, patch_size=16, num_channels=3,
                 layerscale_value=1.0)
# DINOv3ViTImageProcessor: a straight 224 x 224 bilinear resize, ImageNet mean / std; torchvision's
# resize of the image as floats (HF has no PIL DINOv3 processor), never rounded back to 8 bits
PRESET = {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD, "resample": "bilinear", "crop_pct": None,
          "resize_in_float": True}

FAMILY = Family(
    name="dinov3",
    summary="DINOv3: HF DINOv3ViTModel (rotary positions, registers, no key bias, gated MLP on the big sizes)",
    namings=(HF_DINOV3,),
    naming_defaults={"hf-dinov3": {"hidden_act": "gelu", "layer_norm_eps": 1e-5, **SWITCHES, "key_bias": False}},
    hf=(HFModel("dinov3_vit", "dinov3", "DINOv3ViTModel", HF_DINOV3, switches=SWITCHES, defaults=_DEFAULTS,
                free=("qkv_bias", "key_bias", "proj_bias", "mlp_bias", "mlp_type", "rope_theta",
                      "num_register_tokens"),
                renamed={"attention_dropout": "attention_probs_dropout_prob"},
                omits=("qkv_bias", "hidden_dropout_prob"), read=_read, write=_write, preset="dinov3",
                resize_processor="DINOv3ViTImageProcessor",
                example={**SWITCHES, "key_bias": False, "num_register_tokens": 4, "layer_norm_eps": 1e-5}),),
    presets={"dinov3": PRESET},
    marks=lambda c: c.rope_type == "dinov3",
    processors={"DINOv3ViTImageProcessor": {"resample": 2, "image_mean": IMAGENET_DEFAULT_MEAN,
                                            "image_std": IMAGENET_DEFAULT_STD, "size": {"height": 224, "width": 224},
                                            "resize_in_float": True}},
)
