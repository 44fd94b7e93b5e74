"""open_clip's vision towers (LAION, DataComp, DFN, MetaCLIP; OpenAI's weights in open_clip's
layout): a hub folder (`open_clip_config.json` + `open_clip_model.safetensors` or
`open_clip_pytorch_model.bin`) or a bare state dict of the whole CLIP with a config. The tower is
`visual.*`: CLIP's architecture with a packed attention input projection (`attn.in_proj_weight`
[q; k; v]) and the projection `visual.proj` (width, embed_dim), applied as `x @ proj`. The text
tower and `logit_scale` sit beside it at the top level and are left aside."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vit_common.canonical import LAYER
from vit_common.families.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Family, Fields
from vit_common.naming import Naming, Rename

CONFIG = "open_clip_config.json"
WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
VISUAL = "visual."
_L = LAYER
_B = "transformer.resblocks.{i}."
OPEN_CLIP = Naming("open_clip", (
    Rename("embeddings.cls_token", "class_embedding", "vector"),
    Rename("embeddings.position_embeddings", "positional_embedding", "rows"),
    Rename("embeddings.patch_embeddings.projection", "conv1"),
    Rename("pre_layernorm", "ln_pre"),
    Rename(tuple(_L + f"attention.attention.{n}" for n in ("query", "key", "value")), _B + "attn", "in_proj"),
    Rename(_L + "attention.output.dense", _B + "attn.out_proj"),
    Rename(_L + "layernorm_before", _B + "ln_1"),
    Rename(_L + "layernorm_after", _B + "ln_2"),
    Rename(_L + "layer_scale1", _B + "ls_1", "gamma"),
    Rename(_L + "layer_scale2", _B + "ls_2", "gamma"),
    Rename(_L + "intermediate.dense", _B + "mlp.c_fc"),
    Rename(_L + "output.dense", _B + "mlp.c_proj"),
    Rename("layernorm", "ln_post"),
    Rename("projection", "proj", "matrix"),
), (), markers=("conv1.weight", "transformer.resblocks.0.attn.in_proj_weight"))
# open_clip's LayerNorm (torch's eps) and OpenAI's QuickGELU only where model_cfg says quick_gelu
_SWITCHES = {"pre_norm": True, "patch_bias": False}
DEFAULTS = {"hidden_act": "gelu", "layer_norm_eps": 1e-5, **_SWITCHES}
# CLIPVisionCfg fields and the values this model has (anything else is refused by name)
_PLAIN = {"patch_dropout": 0.0, "attentional_pool": False, "pos_embed_type": "learnable", "output_tokens": False,
          "act_kwargs": None, "norm_kwargs": None, "block_type": None, "qk_norm": False,
          "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
          "scale_fc": False, "timm_model_name": None}
_IGNORED = ("attn_pooler_queries", "attn_pooler_heads", "timm_model_pretrained", "timm_pool", "timm_proj",
            "timm_proj_bias", "timm_drop", "timm_drop_path")


def is_open_clip(raw: Mapping[str, Any]) -> bool:
    """Whether a state dict is a whole open_clip CLIP (its vision tower under `visual.`)."""
    return VISUAL + "conv1.weight" in raw and VISUAL + "class_embedding" in raw


def _number(v: Any, what: str, kind: type = int) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else int):
        raise ValueError(f"{what} must be {'a number' if kind is float else 'an int'}, got {v!r}")
    return v


def config_fields(data: Any) -> tuple[Fields, Fields | None]:
    """(our fields, Preprocessing fields) of an open_clip_config.json (model_cfg.vision_cfg,
    model_cfg.embed_dim and quick_gelu, preprocess_cfg)."""
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg"), dict):
        raise ValueError("expected an open_clip config: an object with a 'model_cfg' object")
    model = data["model_cfg"]
    vision = model.get("vision_cfg")
    if not isinstance(vision, dict):
        raise ValueError("model_cfg needs a 'vision_cfg' object")
    wrong = [f"{k}={vision[k]!r}" for k, v in _PLAIN.items() if k in vision and vision[k] != v]
    if vision.get("pool_type", "tok") not in ("tok", "avg"):
        wrong.append(f"pool_type={vision['pool_type']!r}")
    if model.get("custom_text") is not None and not isinstance(model.get("custom_text"), bool):
        wrong.append("custom_text")
    if wrong:
        raise ValueError(f"this open_clip vision tower is not a plain ViT: {', '.join(wrong)}")
    unknown = sorted(set(vision) - set(_PLAIN) - set(_IGNORED)
                     - {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size",
                        "ls_init_value", "no_ln_pre", "final_ln_after_pool", "pool_type"})
    if unknown:
        raise ValueError(f"vision_cfg keys this reader does not know: {', '.join(unknown)}")
    width = _number(vision.get("width", 768), "vision_cfg.width")
    head_width = _number(vision.get("head_width", 64), "vision_cfg.head_width")
    ratio = _number(vision.get("mlp_ratio", 4.0), "vision_cfg.mlp_ratio", float)
    if head_width <= 0 or width % head_width:
        raise ValueError(f"vision_cfg.width {width} must be a multiple of head_width {head_width}")
    size = vision.get("image_size", 224)
    size = tuple(size) if isinstance(size, list) else size
    ls = vision.get("ls_init_value")
    embed_dim = _number(model.get("embed_dim", 512), "model_cfg.embed_dim")
    avg = vision.get("pool_type", "tok") == "avg"
    fields: Fields = dict(
        hidden_size=width, num_hidden_layers=_number(vision.get("layers", 12), "vision_cfg.layers"),
        num_attention_heads=width // head_width, intermediate_size=int(width * ratio),
        patch_size=_number(vision.get("patch_size", 16), "vision_cfg.patch_size"), image_size=size,
        hidden_act="quick_gelu" if model.get("quick_gelu") else "gelu", layer_norm_eps=1e-5,
        pre_norm=not vision.get("no_ln_pre", False), patch_bias=False,
        pooling="gap" if avg else "cls",
        final_norm="pooled" if vision.get("final_ln_after_pool", False) else "tokens",
        layer_scale=ls is not None, layerscale_value=1.0 if ls is None else ls,
        projection_size=embed_dim, num_labels=0,
        extra={"open_clip_model_cfg": {k: v for k, v in model.items() if k != "vision_cfg"}})
    return fields, preprocess_fields(data.get("preprocess_cfg"))


def preprocess_fields(pre: Any) -> Fields | None:
    """Preprocessing fields of open_clip's preprocess_cfg: mean, std, interpolation and
    resize_mode (shortest: shorter side to the size, centre crop; squash: straight resize)."""
    if not isinstance(pre, dict):
        return None
    mode = pre.get("resize_mode", "shortest")
    resample = pre.get("interpolation", "bicubic")
    if mode not in ("shortest", "squash") or resample not in ("bicubic", "bilinear"):
        raise ValueError(f"preprocess_cfg: resize_mode {mode!r} / interpolation {resample!r} is not one this "
                         f"preprocessing reproduces (shortest, squash; bicubic, bilinear)")
    fields: Fields = {"mean": tuple(pre.get("mean", OPENAI_CLIP_MEAN)), "std": tuple(pre.get("std", OPENAI_CLIP_STD)),
                      "resample": resample}
    if mode == "shortest":
        fields.update(crop_pct=1.0, crop_mode="center", crop_rounding="round")
    return fields


def model_cfg(config: Any) -> dict[str, Any]:
    """open_clip's model_cfg for a CLIP whose vision tower is `config` (the text tower's config
    as read, or open_clip's ViT-B/32 text tower); what its VisionTransformer cannot express is a
    ValueError naming it."""
    want = {"class_token": True, "distillation_token": False, "num_register_tokens": 0,
            "position_embedding_type": "learned", "position_embedding_covers_prefix": True,
            "patch_bias": False, "mlp_type": "mlp", "qk_norm": False, "mask_token": False,
            "qkv_bias": True, "layer_norm_eps": 1e-5}
    wrong = [f"{k}={getattr(config, k)!r}" for k, v in want.items() if getattr(config, k) != v]
    if config.pooling == "map":
        wrong.append("pooling='map'")
    if config.hidden_act not in ("gelu", "quick_gelu"):
        wrong.append(f"hidden_act={config.hidden_act!r}")
    if not config.projection_size:
        wrong.append("no projection (open_clip towers end in visual.proj)")
    if wrong:
        raise ValueError(f"open_clip's VisionTransformer cannot express {', '.join(wrong)}")
    vision: dict[str, Any] = {
        "image_size": list(config.image_hw) if config.image_hw[0] != config.image_hw[1] else config.image_hw[0],
        "layers": config.num_hidden_layers, "width": config.hidden_size, "head_width": config.head_dim,
        "mlp_ratio": config.intermediate_size / config.hidden_size, "patch_size": config.patch_size,
        "no_ln_pre": not config.pre_norm, "pool_type": "avg" if config.pooling == "gap" else "tok",
        "final_ln_after_pool": config.final_norm == "pooled"}
    if config.layer_scale:
        vision["ls_init_value"] = config.layerscale_value
    if int(config.hidden_size * vision["mlp_ratio"]) != config.intermediate_size:
        raise ValueError(f"open_clip computes the MLP width as int(width * mlp_ratio): "
                         f"{config.intermediate_size} is not reachable from width {config.hidden_size}")
    rest = dict(config.extra.get("open_clip_model_cfg") or {
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}})
    return {**rest, "embed_dim": config.projection_size, "quick_gelu": config.hidden_act == "quick_gelu",
            "vision_cfg": vision}


def preprocess_cfg(pre: Mapping[str, Any] | None) -> dict[str, Any]:
    """open_clip's preprocess_cfg for our Preprocessing fields (OpenAI's when there are none)."""
    pre = dict(pre or {"mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD, "resample": "bicubic", "crop_pct": 1.0})
    if pre.get("crop_pct") not in (None, 1.0) or pre.get("crop_mode", "center") != "center":
        raise ValueError(f"open_clip's preprocess_cfg has no crop_pct {pre.get('crop_pct')} / crop_mode "
                         f"{pre.get('crop_mode')!r}")
    return {"mean": list(pre["mean"]), "std": list(pre["std"]), "interpolation": pre.get("resample", "bicubic"),
            "resize_mode": "squash" if pre.get("crop_pct") is None else "shortest"}


FAMILY = Family(
    name="open_clip",
    summary="open_clip's CLIP vision towers: hub folders (open_clip_config.json) and whole-CLIP state dicts",
    namings=(OPEN_CLIP,),
    naming_defaults={"open_clip": DEFAULTS},
    # open_clip's default eval transform: shorter side to the size (bicubic), centre crop, OpenAI's statistics
    presets={"open_clip": {"mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD, "resample": "bicubic",
                           "crop_pct": 1.0, "crop_mode": "center", "crop_rounding": "round"}},
)
