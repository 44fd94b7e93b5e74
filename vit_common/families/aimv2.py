"""AIMv2 (HF `Aimv2VisionModel`; timm `aimv2_*`): no [CLS], a learned table over the patches, RMSNorm
everywhere (also on the patch vectors before the table is added), no qkv / projection / MLP biases,
SwiGLU. HF pools with its attention-pooling head (the probe `head.cls_token` is the query, keys and
values projected, `output_proj`); timm averages the normed tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vit_common.canonical import ATTENTION_POOL, LAYER
from vit_common.families.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Family, Fields, HFModel
from vit_common.naming import Naming, Rename

if TYPE_CHECKING:
    from vit_common.config import ViTConfig

_L, _P, _A, _B = LAYER, ATTENTION_POOL, "encoder.layers.{i}.", "blocks.{i}."

HF_AIMV2 = Naming("hf-aimv2", (
    Rename("embeddings.patch_embeddings.projection", "embeddings.patch_embed"),
    Rename("embeddings.patch_embeddings.layernorm", "embeddings.rms_norm"),
    Rename("embeddings.position_embeddings", "embeddings.position_embedding", "table"),
    *(Rename(_L + f"attention.attention.{n}", _A + f"attention.{t}_proj")
      for n, t in (("query", "q"), ("key", "k"), ("value", "v"))),
    Rename(_L + "attention.output.dense", _A + "attention.out_proj"),
    Rename(_L + "layernorm_before", _A + "rms_norm1"),
    Rename(_L + "layernorm_after", _A + "rms_norm2"),
    Rename(_L + "intermediate.dense", (_A + "ffn.gate_proj", _A + "ffn.up_proj")),
    Rename(_L + "output.dense", _A + "ffn.down_proj"),
    Rename("layernorm", "rms_norm"),
    Rename(_P + "probe", "head.cls_token", "param"),
    Rename(_P + "key", "head.k_proj"),
    Rename(_P + "value", "head.v_proj"),
    Rename(_P + "dense", "head.output_proj"),
), (), markers=("embeddings.patch_embed.weight", "embeddings.rms_norm.weight"))

_TIMM_BASE = dict(patch_size=14, class_token=False, fc_norm=False, global_pool="avg", qkv_bias=False, proj_bias=False,
                  num_classes=0)
# timm 1.0.31's aimv2_* definitions (VisionTransformer with RmsNorm, embed_norm_layer and SwiGLU)
TIMM_DEFINITIONS: dict[str, dict[str, Any]] = {
    f"aimv2_{size}_patch14_{r}": dict(_TIMM_BASE, embed_dim=dim, depth=24, num_heads=heads, mlp_ratio=ratio, img_size=r)
    for size, dim, heads, ratio in (("large", 1024, 8, 2.75), ("huge", 1536, 12, 2.6667), ("1b", 2048, 16, 2.75),
                                    ("3b", 3072, 24, 2.6667))
    for r in (224, 336, 448)}
_TIMM_ARGS = ("img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth", "num_heads",
              "mlp_ratio", "qkv_bias", "proj_bias", "class_token", "fc_norm", "dynamic_img_size")
_IGNORED = ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "pretrained",
            "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "device", "dtype")

TIMM_AIMV2 = Naming("timm-aimv2", (
    Rename("embeddings.patch_embeddings.projection", "patch_embed.proj"),
    Rename("embeddings.patch_embeddings.layernorm", "patch_embed.norm"),
    Rename("embeddings.position_embeddings", "pos_embed", "param"),
    Rename(tuple(_L + f"attention.attention.{n}" for n in ("query", "key", "value")), _B + "attn.qkv"),
    Rename(_L + "attention.output.dense", _B + "attn.proj"),
    Rename(_L + "layernorm_before", _B + "norm1"),
    Rename(_L + "layernorm_after", _B + "norm2"),
    Rename(_L + "intermediate.dense", (_B + "mlp.fc1_g", _B + "mlp.fc1_x")),
    Rename(_L + "output.dense", _B + "mlp.fc2"),
    Rename("layernorm", "norm"),
), (Rename("classifier", "head"),), markers=("patch_embed.norm.weight", "blocks.0.mlp.fc1_g.weight"))


def is_timm_name(name: str) -> bool:
    return name in TIMM_DEFINITIONS


def timm_fields(name: str, kwargs: Mapping[str, Any]) -> Fields:
    """Our fields for `timm.create_model(name, **kwargs)` of an aimv2_* definition."""
    args = {"in_chans": 3, "dynamic_img_size": False, **TIMM_DEFINITIONS[name]}
    for key, value in kwargs.items():
        if key in _IGNORED:
            continue
        if key not in _TIMM_ARGS:
            raise ValueError(f"timm AIMv2 argument {key!r} is not expressible by this ViT")
        args[key] = value
    pools = {"avg": "gap", "token": "cls"}
    if args["global_pool"] not in pools or args["class_token"] != (args["global_pool"] == "token"):
        raise ValueError(f"timm AIMv2 global_pool {args['global_pool']!r} with class_token {args['class_token']} "
                         f"is not expressible")
    dim, ratio = args["embed_dim"], args["mlp_ratio"]
    return dict(hidden_size=dim, num_hidden_layers=args["depth"], num_attention_heads=args["num_heads"],
                intermediate_size=int(dim * ratio), layer_norm_eps=1e-5, image_size=args["img_size"],
                patch_size=args["patch_size"], num_channels=args["in_chans"], qkv_bias=args["qkv_bias"],
                proj_bias=args["proj_bias"], mlp_bias=args["proj_bias"], num_labels=args["num_classes"],
                class_token=args["class_token"], pooling=pools[args["global_pool"]],
                final_norm="pooled" if args["fc_norm"] else "tokens", position_embedding_covers_prefix=False,
                position_embedding_resampling="bicubic_antialias",
                extra={"timm_model": name, "timm_class": "aimv2", "preprocessing": dict(_TIMM_PRESET)},
                norm_type="rmsnorm", patch_norm=True, mlp_type="swiglu")


def is_timm_config(config: Any) -> bool:
    return config.norm_type == "rmsnorm" or config.patch_norm


def timm_hub_args(config: Any) -> tuple[str, dict[str, Any]]:
    """(architecture, model_args) of an aimv2_* definition building a model of `config`."""
    want = {**SWITCHES, "layer_norm_eps": 1e-5, "mlp_bias": config.proj_bias, "pooling": "gap",
            "final_norm": "tokens", "rope_type": "none", "projection_size": 0, "distillation_token": False,
            "num_register_tokens": 0, "key_bias": True, "qk_norm": False, "layer_scale": False}
    wrong = [f"{k}={getattr(config, k)!r}" for k, v in want.items() if getattr(config, k) != v]
    if wrong:
        raise ValueError(f"timm's AIMv2 cannot express {', '.join(wrong)}")
    name = config.extra.get("timm_model")
    from vit_common.families.timm import _exact_ratio

    return (name if is_timm_name(name) else "aimv2_large_patch14_224", dict(
        img_size=list(config.image_hw), patch_size=config.patch_size, in_chans=config.num_channels,
        num_classes=config.num_labels, global_pool="avg", embed_dim=config.hidden_size,
        depth=config.num_hidden_layers, num_heads=config.num_attention_heads,
        mlp_ratio=_exact_ratio(config.intermediate_size, config.hidden_size), qkv_bias=config.qkv_bias,
        proj_bias=config.proj_bias, class_token=False, fc_norm=False))


def _read(data: Mapping[str, Any]) -> Fields:
    if data.get("hidden_act", "silu") != "silu":
        raise ValueError(f"aimv2 config: hidden_act {data.get('hidden_act')!r} is not expressible (SwiGLU: silu)")
    if data.get("is_native", False):
        raise ValueError("aimv2 config: is_native (a fixed sincos table in AIMv2's own layout) is not expressible")
    qkv, mlp, head = data.get("qkv_bias", False), data.get("mlp_bias", False), data.get("use_head", True)
    if not all(isinstance(v, bool) for v in (qkv, mlp, head)):
        raise ValueError(f"aimv2 config: qkv_bias {qkv!r}, mlp_bias {mlp!r}, use_head {head!r} must be bools")
    # HF's out_proj follows qkv_bias; without its head the pooled embedding is the mean of the tokens
    return {"hidden_act": "gelu", "qkv_bias": qkv, "proj_bias": qkv, "mlp_bias": mlp,
            "pooling": "probe" if head else "gap"}


def _write(config: ViTConfig) -> Fields:
    if config.proj_bias != config.qkv_bias:
        raise ValueError(f"an HF aimv2 config ties the output projection's bias to qkv_bias: proj_bias "
                         f"{config.proj_bias} with qkv_bias {config.qkv_bias} is not expressible")
    return {"hidden_act": "silu", "mlp_bias": config.mlp_bias, "use_head": config.pooling == "probe",
            "is_native": False}


SWITCHES = {"class_token": False, "norm_type": "rmsnorm", "patch_norm": True, "mlp_type": "swiglu",
            "position_embedding_covers_prefix": False}
_HF_SWITCHES = {**SWITCHES, "pooling": "probe", "proj_bias": False, "mlp_bias": False}
_DEFAULTS = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=8, num_channels=3,
                 image_size=224, patch_size=14, hidden_act="silu", rms_norm_eps=1e-5)
# AIMv2's processor (CLIPImageProcessor): shorter side to 224, centre crop, CLIP's mean / std
PRESET = {"mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD, "resample": "bicubic", "crop_pct": 1.0,
          "crop_mode": "center", "crop_rounding": "floor"}

# timm's aimv2_* pretrained_cfg: the same, its centre crop rounding the offset
_TIMM_PRESET = {**PRESET, "crop_rounding": "round", "resize_in_float": False}

FAMILY = Family(
    name="aimv2",
    summary="AIMv2: HF Aimv2VisionModel (attention-pooling head) and timm's aimv2_* (RMSNorm, SwiGLU, no biases)",
    namings=(HF_AIMV2, TIMM_AIMV2),
    naming_defaults={"hf-aimv2": {"hidden_act": "gelu", "layer_norm_eps": 1e-5, **_HF_SWITCHES},
                     "timm-aimv2": {"hidden_act": "gelu", "layer_norm_eps": 1e-5, **SWITCHES, "pooling": "gap",
                                    "position_embedding_resampling": "bicubic_antialias"}},
    hf=(HFModel("aimv2_vision_model", "aimv2", "Aimv2VisionModel", HF_AIMV2, switches=_HF_SWITCHES, defaults=_DEFAULTS,
                free=("pooling", "proj_bias", "mlp_bias"),
                renamed={"rms_norm_eps": "layer_norm_eps", "attention_dropout": "attention_probs_dropout_prob"},
                omits=("hidden_dropout_prob",), read=_read, write=_write, preset="aimv2",
                crop_processor="CLIPImageProcessor", example={**_HF_SWITCHES, "qkv_bias": False,
                                                              "layer_norm_eps": 1e-5}),),
    presets={"aimv2": PRESET},
    marks=lambda c: c.patch_norm,
)
