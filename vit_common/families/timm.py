"""timm's VisionTransformer (`vit_*`, `deit_*` names, state dicts as timm writes them): its weight
names (fused qkv, `norm` / `fc_norm`, `attn_pool`), what its names reveal, and its model-name
grammar (`ViTConfig.from_timm`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_common.canonical import ATTENTION_POOL, LAYER
from vit_common.families.aimv2 import is_timm_config as is_aimv2, is_timm_name as is_aimv2_name, timm_fields, timm_hub_args
from vit_common.families.eva import config_fields as eva_fields, hub_args as eva_hub_args, is_eva_config, is_eva_name
from vit_common.families.base import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    Family,
    Fields,
)
from vit_common.naming import Naming, Rename

_L, _P = LAYER, ATTENTION_POOL
TIMM = Naming("timm", (
    Rename("embeddings.cls_token", "cls_token", "param"),
    Rename("embeddings.distillation_token", "dist_token", "param"),
    Rename("embeddings.register_tokens", "reg_token", "param"),
    Rename("embeddings.position_embeddings", "pos_embed", "param"),
    Rename("embeddings.patch_embeddings.projection", "patch_embed.proj"),
    Rename("pre_layernorm", "norm_pre"),
    Rename(tuple(_L + f"attention.attention.{n}" for n in ("query", "key", "value")),
           "blocks.{i}.attn.qkv"),
    Rename(_L + "attention.attention.q_norm", "blocks.{i}.attn.q_norm"),
    Rename(_L + "attention.attention.k_norm", "blocks.{i}.attn.k_norm"),
    Rename(_L + "attention.output.dense", "blocks.{i}.attn.proj"),
    Rename(_L + "layernorm_before", "blocks.{i}.norm1"),
    Rename(_L + "layernorm_after", "blocks.{i}.norm2"),
    Rename(_L + "layer_scale1", "blocks.{i}.ls1", "gamma"),
    Rename(_L + "layer_scale2", "blocks.{i}.ls2", "gamma"),
    Rename(_L + "intermediate.dense", "blocks.{i}.mlp.fc1"),
    Rename(_L + "output.dense", "blocks.{i}.mlp.fc2"),
    # timm normalises the tokens (norm) or the pooled vector (fc_norm, its norm an Identity)
    Rename("layernorm", "norm", when=lambda c: c.final_norm == "tokens"),
    Rename("layernorm", "fc_norm", when=lambda c: c.final_norm == "pooled"),
    Rename(_P + "probe", "attn_pool.latent", "param"),
    Rename(_P + "attention.attention.query", "attn_pool.q"),
    Rename((_P + "attention.attention.key", _P + "attention.attention.value"), "attn_pool.kv"),
    Rename(_P + "attention.output.dense", "attn_pool.proj"),
    Rename(_P + "layernorm", "attn_pool.norm"),
    Rename(_P + "intermediate.dense", "attn_pool.mlp.fc1"),
    Rename(_P + "output.dense", "attn_pool.mlp.fc2"),
), (Rename("classifier", "head"), Rename("distillation_classifier", "head_dist")),
    markers=("patch_embed.proj.weight", "blocks.0.attn.qkv.weight"))


# timm's NaFlexVit (naflexvit_*: SigLIP 2 NaFlex in timm): the patch embedding a Linear over
# (row, col, channel) patches and the position grid (1, gh, gw, D), both under "embeds."
TIMM_NAFLEX = Naming("timm-naflex", tuple(
    Rename(r.ours, {"cls_token": "embeds.cls_token", "reg_token": "embeds.reg_token"}[r.theirs], r.kind)
    if r.theirs in ("cls_token", "reg_token")
    else Rename(r.ours, "embeds.pos_embed", "grid_table") if r.theirs == "pos_embed"
    else Rename(r.ours, "embeds.proj", "patch_linear") if r.theirs == "patch_embed.proj"
    else r
    for r in TIMM.backbone), TIMM.head, markers=("embeds.proj.weight", "blocks.0.attn.qkv.weight"))


def _reveal(state: Mapping[str, Any], p: str, origin: Mapping[str, str], found: Mapping[str, Any]) -> Fields:
    """timm's fc_norm (gap pooling, the norm on the pooled vector), a gap model's plain norm and a
    register model's table without a [CLS] slot (no_embed_class), from the names timm gave them."""
    out: Fields = {}
    norm_origin = origin.get(p + "layernorm.weight", "")
    if found.get("pooling") == "map":
        pass
    elif norm_origin.startswith("fc_norm"):  # the norm of the averaged patch tokens
        out.update(pooling="gap", final_norm="pooled")
    elif norm_origin.startswith("norm") and not found["class_token"]:  # gap without fc_norm
        out["pooling"] = "gap"
    # the table's length must agree (a square grid without the slot, none with it)
    pos = state.get(p + "embeddings.position_embeddings")
    prefix = int(found["class_token"]) + int(found["distillation_token"])
    if origin.get(p + "embeddings.position_embeddings") == "pos_embed" and prefix \
            and found.get("num_register_tokens") and np.ndim(pos) == 3:
        n = int(np.shape(pos)[1])
        if math.isqrt(n - prefix) ** 2 != n - prefix and math.isqrt(n) ** 2 == n:
            out["position_embedding_covers_prefix"] = False
    return out


# timm's sizes: (embed_dim, depth, num_heads, mlp_ratio)
_TIMM_SIZES: dict[str, tuple[int, int, int, float]] = {
    "tiny": (192, 12, 3, 4.0), "small": (384, 12, 6, 4.0), "medium": (512, 12, 8, 4.0),
    "base": (768, 12, 12, 4.0), "large": (1024, 24, 16, 4.0), "huge": (1280, 32, 16, 4.0),
    "giant": (1408, 40, 16, 48 / 11), "so400m": (1152, 27, 16, 3.7362)}
# what each variant suffix adds to timm's VisionTransformer arguments
_TIMM_VARIANTS: dict[str, dict[str, Any]] = {
    "": {},
    # timm's DINOv2 and SigLIP definitions have no classifier (num_classes 0)
    "dinov2": {"init_values": 1e-5, "img_size": 518, "num_classes": 0},
    "clip": {"pre_norm": True, "norm_eps": 1e-5},
    # OpenAI's towers: timm's default tag keeps their 512-wide projection as the head
    "clip_quickgelu": {"pre_norm": True, "norm_eps": 1e-5, "act_layer": "quick_gelu", "num_classes": 512},
    "siglip": {"class_token": False, "global_pool": "map", "num_classes": 0},
    "siglip_gap": {"class_token": False, "global_pool": "avg", "fc_norm": False, "num_classes": 0},
    "gap": {"class_token": False, "global_pool": "avg", "fc_norm": False},
    # a reg<N>_ prefix adds N registers without position slots (timm's no_embed_class)
    "reg_gap": {"class_token": False, "global_pool": "avg"},
    "reg_dinov2": {"init_values": 1e-5, "img_size": 518, "num_classes": 0},
}
# timm definitions that differ from their size and variant (facts from timm 1.0.31's
# vision_transformer.py and its default pretrained tags; every accepted name is checked against
# timm itself in tests/test_config.py)
_TIMM_EXCEPTIONS: dict[str, dict[str, Any]] = {
    "vit_base_patch16_gap_224": {"num_heads": 16},
    # the timm SigLIP definitions that use SigLIP's own (tanh) GELU
    **dict.fromkeys(("vit_base_patch32_siglip_256", "vit_base_patch32_siglip_gap_256", "vit_large_patch16_siglip_512",
                     "vit_large_patch16_siglip_gap_512", "vit_so400m_patch16_siglip_256",
                     "vit_so400m_patch16_siglip_384", "vit_so400m_patch16_siglip_512",
                     "vit_so400m_patch16_siglip_gap_256", "vit_so400m_patch16_siglip_gap_384",
                     "vit_so400m_patch16_siglip_gap_512"), {"act_layer": "gelu_tanh"}),
    **{f"vit_medium_patch16_gap_{r}": {"qkv_bias": False, "init_values": 1e-6} for r in (240, 256, 384)},
    "vit_medium_patch16_reg4_gap_256": {"init_values": 1e-5},
    "vit_medium_patch16_reg1_gap_256": {"init_values": 1e-5},
    # the default pretrained tag's head (0: an in21k / feature tag; CLIP: the tower's projection)
    **dict.fromkeys(("vit_huge_patch14_224", "vit_large_patch32_224", "vit_small_patch8_224",
                     "vit_giant_patch16_gap_224", "vit_huge_patch14_gap_224", "vit_huge_patch16_gap_448"),
                    {"num_classes": 0}),
    "vit_medium_patch16_gap_240": {"qkv_bias": False, "init_values": 1e-6, "num_classes": 11821},
    **dict.fromkeys(("vit_base_patch32_clip_256", "vit_medium_patch16_clip_224", "vit_medium_patch32_clip_224"),
                    {"num_classes": 512}),
    **dict.fromkeys(("vit_giant_patch14_clip_224", "vit_huge_patch14_clip_378", "vit_huge_patch14_clip_quickgelu_224",
                     "vit_huge_patch14_clip_quickgelu_378"), {"num_classes": 1024}),
    **dict.fromkeys(("vit_large_patch14_clip_quickgelu_224", "vit_large_patch14_clip_quickgelu_336"),
                    {"num_classes": 768}),
}
_TIMM_NAME = re.compile(r"^(?P<kind>vit|deit)_(?P<size>[a-z0-9]+)_(?P<distilled>distilled_)?patch(?P<patch>\d+)"
                        r"(?:_(?P<variant>[a-z0-9_]+?))??(?:_(?P<res>\d+))?$")


def model_args(name: str) -> dict[str, Any]:
    """The VisionTransformer arguments `timm.create_model(name)` passes (its size, variant, registers,
    resolution and the definitions' own exceptions)."""
    m = _TIMM_NAME.match(name) if len(name) <= 200 else None
    if m is not None and any(len(m[g] or "") > 5 for g in ("patch", "res")):
        raise ValueError(f"timm model {name[:60]!r}: patch size and resolution must be at most 5 digits")
    if m is None or m["size"] not in _TIMM_SIZES:
        raise ValueError(f"timm model {name[:80]!r} is not a ViT name this config can describe (expected "
                         f"vit_<size>_patch<p>[_<variant>][_<res>] or deit_<size>[_distilled]_patch16_<res>, "
                         f"size one of {', '.join(_TIMM_SIZES)}; Eva, rope and hybrid models are not "
                         f"classic ViTs)")
    variant = (m["variant"] or "").removesuffix("_clip") if m["variant"] != "clip" else "clip"
    registers = re.match(r"reg(\d+)_", variant)
    if registers:
        variant = "reg_" + variant[registers.end():]
    if variant not in _TIMM_VARIANTS or variant.startswith("reg_") and not registers:
        raise ValueError(f"timm model {name!r}: variant {m['variant']!r} is not one of "
                         f"{', '.join(v.replace('reg_', 'reg<N>_') for v in _TIMM_VARIANTS if v)}")
    dim, depth, heads, ratio = _TIMM_SIZES[m["size"]]
    args: dict[str, Any] = dict(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio,
                                patch_size=int(m["patch"]))
    if variant == "gap" and m["size"] == "base":
        args["num_heads"] = 16  # timm's vit_base_patch16_gap_224 has 16 heads
    if "dinov2" in variant and m["size"] == "giant":
        # DINOv2-g: 1536 wide, 24 heads, SwiGLU of width 4096 packed into fc1 as 8192
        args.update(embed_dim=1536, num_heads=24, mlp_ratio=2.66667 * 2, mlp_layer="swiglu_packed")
    args.update(_TIMM_VARIANTS[variant])
    if registers:
        args.update(reg_tokens=int(registers.group(1)), no_embed_class=True)
    args.update(_TIMM_EXCEPTIONS.get(name, {}))
    if m["res"]:
        args["img_size"] = int(m["res"])
    if m["distilled"]:
        args["distilled"] = True
    return args


# timm's NaFlexVit definitions: (embed_dim, depth, num_heads, mlp_ratio) with SigLIP's settings
_NAFLEX = {"naflexvit_base_patch16_siglip": (768, 12, 12, 4.0), "naflexvit_so400m_patch16_siglip": (1152, 27, 16, 3.7362)}
_NAFLEX_ARGS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes", "global_pool", "in_chans",
                "pos_embed_grid_size", "patch_size", "qkv_bias", "qk_norm", "init_values", "act_layer",
                "pos_embed_interp_mode", "pos_embed_antialias", "class_token", "reg_tokens")


def naflex_fields(name: str, kwargs: Mapping[str, Any]) -> Fields:
    """Our fields for `timm.create_model(name, **kwargs)` of a NaFlexVit SigLIP definition."""
    if name not in _NAFLEX:
        raise ValueError(f"timm NaFlexVit {name[:80]!r} is not one this config describes (expected one of "
                         f"{', '.join(_NAFLEX)})")
    dim, depth, heads, ratio = _NAFLEX[name]
    args: dict[str, Any] = dict(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio, patch_size=16,
                                act_layer="gelu_tanh", global_pool="map", pos_embed_interp_mode="bilinear",
                                pos_embed_grid_size=(16, 16), num_classes=0, qkv_bias=True, qk_norm=False,
                                init_values=None, in_chans=3, pos_embed_antialias=True, class_token=False,
                                reg_tokens=0)
    for key, value in kwargs.items():
        if key in _TIMM_IGNORED or key in ("img_size", "dynamic_img_size"):
            continue
        if key not in _NAFLEX_ARGS:
            raise ValueError(f"timm NaFlexVit argument {key!r} is not expressible by this ViT")
        args[key] = value
    if args["pos_embed_interp_mode"] != "bilinear" or args["pos_embed_antialias"] is not True:
        raise ValueError(f"timm NaFlexVit position resizing {args['pos_embed_interp_mode']!r} (antialias "
                         f"{args['pos_embed_antialias']}) is not SigLIP 2's bilinear antialiased resize")
    if args["global_pool"] != "map" or args["class_token"] or args["reg_tokens"]:
        raise ValueError("timm NaFlexVit with prefix tokens or pooling other than 'map' is not one this config "
                         "describes")
    grid = args["pos_embed_grid_size"]
    grid = tuple(grid) if isinstance(grid, (list, tuple)) else (grid, grid)
    if len(grid) != 2 or not all(isinstance(g, int) and not isinstance(g, bool) and 0 < g <= 1024 for g in grid):
        raise ValueError(f"timm NaFlexVit pos_embed_grid_size must be two ints in [1, 1024], got {grid!r}")
    p = args["patch_size"]
    if not isinstance(p, int) or isinstance(p, bool) or not 0 < p <= 1024:
        raise ValueError(f"timm NaFlexVit patch_size must be an int in [1, 1024], got {p!r}")
    fields = fields_from_args({k: args[k] for k in ("embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes",
                                                    "global_pool", "in_chans", "patch_size", "qkv_bias", "qk_norm",
                                                    "init_values", "act_layer", "class_token")})
    fields.update(image_size=(grid[0] * p, grid[1] * p), position_embedding_resampling="bilinear_antialias",
                  position_embedding_covers_prefix=False, extra={"timm_model": name})
    return fields


def naflex_hub_args(config: Any) -> tuple[str, dict[str, Any]]:
    """(architecture, model_args) of a NaFlexVit SigLIP for `config` (a NaFlex model: no prefix
    tokens, MAP pooling, bilinear antialiased per-image resizing)."""
    want = dict(class_token=False, num_register_tokens=0, pooling="map", pre_norm=False, patch_bias=True,
                final_norm="tokens", mlp_type="mlp", projection_size=0, layer_norm_eps=1e-6,
                position_embedding_type="learned")
    wrong = [f"{k}={getattr(config, k)!r}" for k, v in want.items() if getattr(config, k) != v]
    if wrong:
        raise ValueError(f"timm's NaFlexVit SigLIP cannot express {', '.join(wrong)}")
    name = config.extra.get("timm_model")
    arch = name if name in _NAFLEX else "naflexvit_base_patch16_siglip"
    return arch, dict(embed_dim=config.hidden_size, depth=config.num_hidden_layers,
                      num_heads=config.num_attention_heads,
                      mlp_ratio=_exact_ratio(config.intermediate_size, config.hidden_size),
                      num_classes=config.num_labels, global_pool="map", in_chans=config.num_channels,
                      pos_embed_grid_size=list(config.grid_size), patch_size=config.patch_size,
                      qkv_bias=config.qkv_bias, qk_norm=config.qk_norm,
                      init_values=config.layerscale_value if config.layer_scale else None,
                      act_layer=_ACT_NAMES[config.hidden_act])


_TIMM_IGNORED = ("drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "drop_path_rate",
                 "weight_init", "fix_init", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
                 "dynamic_img_pad", "scriptable", "exportable", "no_jit", "checkpoint_path", "device", "dtype")


def fields_from_args(args: dict[str, Any]) -> dict[str, Any]:
    """timm VisionTransformer arguments -> our fields; anything else is refused by name."""
    args = dict(args)
    ratio = args.get("mlp_ratio", 4.0)
    if not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio <= 1e4):
        raise ValueError(f"timm mlp_ratio must be a number in (0, 10000], got {ratio!r}")

    def take(name: str, default: Any) -> Any:
        return args.pop(name, default)

    dim = take("embed_dim", 768)
    ratio = take("mlp_ratio", 4.0)
    mlp = take("mlp_layer", "mlp")
    mlp_name = getattr(getattr(mlp, "func", mlp), "__name__", mlp)
    gate_last = getattr(mlp, "keywords", {}).get("gate_last", True) if hasattr(mlp, "func") else None
    act = take("act_layer", None)
    act_name = act if isinstance(act, str) or act is None else getattr(act, "__name__", repr(act))
    if mlp in ("mlp", "Mlp") or mlp_name == "Mlp":
        mlp_type, width = "mlp", int(dim * ratio)
    elif mlp == "swiglu_packed" or (mlp_name == "GluMlp" and gate_last is False):
        mlp_type, width = "swiglu", int(dim * ratio) // 2  # SwiGLUPacked: fc1 holds [gate; up]
        act_name = None
    else:
        raise ValueError(f"timm mlp_layer {mlp!r} is not expressible (Mlp or SwiGLUPacked)")
    acts = {None: "gelu", "gelu": "gelu", "GELU": "gelu", "quick_gelu": "quick_gelu",
            "QuickGELU": "quick_gelu", "gelu_tanh": "gelu_pytorch_tanh", "GELUTanh": "gelu_pytorch_tanh"}
    if act_name not in acts:
        raise ValueError(f"timm act_layer {act!r} is not expressible (gelu, gelu_tanh, quick_gelu)")
    norm = take("norm_layer", None)
    eps = take("norm_eps", None)
    if eps is None:
        if norm is None:
            eps = 1e-6  # timm's LayerNorm
        elif getattr(norm, "keywords", {}).get("eps") is not None:
            eps = norm.keywords["eps"]
        elif getattr(norm, "__name__", "") == "LayerNorm" and getattr(norm, "__module__", "").startswith("torch"):
            eps = 1e-5
        elif getattr(getattr(norm, "func", norm), "__name__", "") == "LayerNorm":
            eps = 1e-6
        else:
            raise ValueError(f"timm norm_layer {norm!r} is not expressible (a LayerNorm)")
    pool = take("global_pool", "token")
    pools = {"token": "cls", "avg": "gap", "map": "map"}
    if pool not in pools:
        raise ValueError(f"timm global_pool {pool!r} is not expressible ({', '.join(pools)})")
    fc_norm = take("fc_norm", None)
    fc_norm = pool == "avg" if fc_norm is None else fc_norm
    pos = take("pos_embed", "learn")
    if pos not in ("learn", "none"):
        raise ValueError(f"timm pos_embed {pos!r} is not expressible (learn or none; rope is not a ViT switch)")
    init_values = take("init_values", None)
    class_token = take("class_token", True)
    distilled = take("distilled", False)
    reg = take("reg_tokens", 0)
    no_embed_class = take("no_embed_class", False)
    if reg and not no_embed_class:
        raise ValueError("timm reg_tokens without no_embed_class (position slots for registers) is "
                         "not expressible")
    pre_norm = take("pre_norm", False)
    if not take("final_norm", True):
        raise ValueError("timm final_norm=False is not expressible")
    for name, ok in (("proj_bias", True), ("scale_attn_norm", False), ("scale_mlp_norm", False),
                     ("pool_include_prefix", False), ("embed_norm_layer", None)):
        if name in args and args.pop(name) != ok:
            raise ValueError(f"timm {name} other than {ok!r} is not expressible")
    fields = dict(
        hidden_size=dim, num_hidden_layers=take("depth", 12), num_attention_heads=take("num_heads", 12),
        intermediate_size=width, hidden_act=acts[act_name], layer_norm_eps=eps,
        image_size=take("img_size", 224), patch_size=take("patch_size", 16),
        num_channels=take("in_chans", 3), qkv_bias=take("qkv_bias", True),
        num_labels=take("num_classes", 1000), class_token=class_token, distillation_token=distilled,
        num_register_tokens=reg, position_embedding_type="learned" if pos == "learn" else "none",
        position_embedding_covers_prefix=not no_embed_class,
        # timm resamples position tables with antialiasing (dynamic_img_size, checkpoint loading)
        position_embedding_resampling="bicubic_antialias", pre_norm=pre_norm,
        patch_bias=not pre_norm, pooling=pools[pool], final_norm="pooled" if fc_norm else "tokens",
        layer_scale=init_values is not None,
        layerscale_value=1.0 if init_values is None else init_values, mlp_type=mlp_type,
        qk_norm=take("qk_norm", False), attention_probs_dropout_prob=take("attn_drop_rate", 0.0))
    take("dynamic_img_size", False)
    for name in _TIMM_IGNORED:
        args.pop(name, None)
    if isinstance(fields["patch_size"], (tuple, list)):
        ph, pw = fields["patch_size"]
        if ph != pw:
            raise ValueError(f"timm patch_size {fields['patch_size']} is not square")
        fields["patch_size"] = ph
    if args:
        raise ValueError(f"timm arguments not expressible by this ViT: {', '.join(sorted(args))}")
    return fields


def config_fields(model_name: str, kwargs: Mapping[str, Any]) -> Fields:
    """Our fields for `timm.create_model(model_name, **kwargs)`; what the switches cannot express
    (rope, Eva, max pooling, ...) is a ValueError naming it."""
    name = model_name.split(".")[0]
    if is_eva_name(name) or is_aimv2_name(name):  # timm's Eva class (DINOv3, EVA-02, PE, RoPE ViTs), AIMv2
        return (eva_fields if is_eva_name(name) else timm_fields)(name, kwargs)
    if name.startswith("naflexvit_"):
        try:
            return naflex_fields(name, kwargs)
        except (TypeError, OverflowError) as e:
            raise ValueError(f"timm model {model_name[:80]!r}: {e}") from None
    args = model_args(name)
    args.update(kwargs)
    try:
        return {**fields_from_args(args), "extra": {"timm_model": name}}
    except (TypeError, OverflowError) as e:
        raise ValueError(f"timm model {model_name[:80]!r}: {e}") from None


# timm's default eval transform of its ViTs (pretrained_cfg of vit_*: inception mean / std,
# bicubic, crop_pct 0.9, the centring offset rounded)
PRESET = {"mean": IMAGENET_STANDARD_MEAN, "std": IMAGENET_STANDARD_STD, "resample": "bicubic",
          "crop_pct": 0.9, "crop_mode": "center", "crop_rounding": "round"}

FAMILY = Family(
    name="timm",
    summary="timm's VisionTransformer: state dicts in timm's names and its vit_* / deit_* model names",
    namings=(TIMM_NAFLEX, TIMM),
    # timm resamples position tables with antialiasing (dynamic_img_size, resample_abs_pos_embed)
    naming_defaults={"timm": {"hidden_act": "gelu", "layer_norm_eps": 1e-6,
                              "position_embedding_resampling": "bicubic_antialias"},
                     "timm-naflex": {"hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "class_token": False,
                                     "pooling": "map", "position_embedding_covers_prefix": False,
                                     "position_embedding_resampling": "bilinear_antialias"}},
    reveal=_reveal,
    presets={"timm": PRESET},
)


# ---------------------------------------------------------------------------------------------
# timm hub folders (timm.models.save_for_hf, what push_to_hf_hub uploads): config.json with the
# model name in "architecture", model_args, global_pool, num_classes and the preprocessing in
# "pretrained_cfg"; the weights in timm's names (model.safetensors or pytorch_model.bin)

HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# the timm definitions our writer names: their VisionTransformer class (distilled DeiT has its own;
# SwiGLUPacked is a class, which only a definition can pass), every size in model_args
# and the norm's eps is the definition's norm_layer (timm's LayerNorm 1e-6, CLIP's torch LayerNorm 1e-5)
_HUB_BASE = {("plain", 1e-6): "vit_base_patch16_224", ("plain", 1e-5): "vit_base_patch16_clip_224",
             ("distilled", 1e-6): "deit_base_distilled_patch16_224", ("swiglu", 1e-6): "vit_giant_patch14_dinov2"}
_ACT_NAMES = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}


def is_hub_config(data: Any) -> bool:
    """Whether a parsed config.json is timm's (a model name in "architecture", no HF model_type)."""
    return isinstance(data, dict) and isinstance(data.get("architecture"), str) and "model_type" not in data


def hub_fields(data: Mapping[str, Any]) -> Fields:
    """Our fields for a timm hub config.json: `timm.create_model(architecture, num_classes=...,
    global_pool=..., **model_args)`, as timm itself reads the folder."""
    args = data.get("model_args") or {}
    if not isinstance(args, dict):
        raise ValueError(f"timm config.json: model_args must be an object, got {type(args).__name__}")
    kwargs = {**args}
    for key in ("num_classes", "global_pool"):
        if key in data:
            kwargs[key] = data[key]
    if isinstance(kwargs.get("img_size"), list):
        kwargs["img_size"] = tuple(kwargs["img_size"])
    return config_fields(data["architecture"], kwargs)


def hub_preprocessing(data: Mapping[str, Any]) -> Fields | None:
    """The Preprocessing fields of a timm config.json's pretrained_cfg (mean, std, interpolation,
    crop_pct, crop_mode), or None when it has none."""
    cfg = data.get("pretrained_cfg")
    if not isinstance(cfg, dict) or not {"mean", "std"} <= set(cfg):
        return None
    resample = cfg.get("interpolation", "bicubic")
    crop_pct = cfg.get("crop_pct", 0.875)
    mode = cfg.get("crop_mode", "center")
    if resample not in ("bicubic", "bilinear") or mode not in ("center", "squash"):
        raise ValueError(f"timm pretrained_cfg: interpolation {resample!r} / crop_mode {mode!r} is not one "
                         f"this preprocessing reproduces (bicubic, bilinear; center, squash)")
    return {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]), "resample": resample,
            "crop_pct": crop_pct,
            "crop_mode": mode, "crop_rounding": "round"}


def _exact_ratio(width: int, dim: int) -> float:
    """The mlp_ratio for which timm's int(dim * ratio) is `width` (width / dim, nudged up where the
    float product falls just under)."""
    ratio = width / dim
    while int(dim * ratio) < width:
        ratio = float(np.nextafter(ratio, np.inf))
    return ratio


def is_naflex(config: Any) -> bool:
    """Whether timm writes this model as a NaFlexVit (SigLIP 2 NaFlex's per-image resizing)."""
    return config.position_embedding_resampling == "bilinear_antialias"


def hub_args(config: Any) -> tuple[str, dict[str, Any]]:
    """(architecture, model_args) for which `timm.create_model` builds a model of `config`: the
    definition it was read from (or a plain one of the right class), every size and switch stated.
    What timm's VisionTransformer cannot express is a ValueError naming it."""
    if is_naflex(config) or is_eva_config(config) or is_aimv2(config):
        return (naflex_hub_args if is_naflex(config) else timm_hub_args if is_aimv2(config) else eva_hub_args)(config)
    wrong = []
    if config.position_embedding_type == "sincos2d":
        wrong.append("position_embedding_type='sincos2d'")
    if config.patch_bias == config.pre_norm:
        wrong.append(f"patch_bias={config.patch_bias} with pre_norm={config.pre_norm} (timm ties "
                     f"the patch bias to no pre-norm)")
    if config.mask_token:
        wrong.append("mask_token=True")
    if config.projection_size:
        wrong.append(f"projection_size={config.projection_size}")
    if config.num_labels and config.classifier_input != "pooled":
        wrong.append(f"classifier_input={config.classifier_input!r}")
    if config.num_register_tokens and config.position_embedding_covers_prefix and config.num_position_prefix:
        wrong.append("registers beside a table with a [CLS] slot")
    if wrong:
        raise ValueError(f"timm's VisionTransformer cannot express {', '.join(wrong)}")
    kind = "distilled" if config.distillation_token else "swiglu" if config.mlp_type == "swiglu" else "plain"
    name = config.extra.get("timm_model")
    try:  # the definition it came from, when its class, MLP and norm are this model's
        theirs = fields_from_args(model_args(name)) if isinstance(name, str) else None
    except ValueError:
        theirs = None
    if theirs is not None and all(theirs[k] == getattr(config, k)
                                  for k in ("distillation_token", "mlp_type", "layer_norm_eps")):
        arch = name
    elif (kind, config.layer_norm_eps) in _HUB_BASE:
        arch = _HUB_BASE[kind, config.layer_norm_eps]
    else:
        raise ValueError(f"timm's definitions set the norm's eps ({config.layer_norm_eps:g}) through "
                         f"their norm_layer, which a config.json cannot pass; none of the {kind} "
                         f"ones has it")
    width = config.intermediate_size * (2 if config.mlp_type == "swiglu" else 1)
    pools = {"cls": "token", "gap": "avg", "map": "map"}
    args: dict[str, Any] = dict(
        img_size=list(config.image_hw), patch_size=config.patch_size, in_chans=config.num_channels,
        num_classes=config.num_labels, global_pool=pools[config.pooling], embed_dim=config.hidden_size,
        depth=config.num_hidden_layers, num_heads=config.num_attention_heads,
        mlp_ratio=_exact_ratio(width, config.hidden_size), qkv_bias=config.qkv_bias, qk_norm=config.qk_norm,
        init_values=config.layerscale_value if config.layer_scale else None,
        class_token=config.class_token, no_embed_class=not config.position_embedding_covers_prefix
        and config.position_embedding_type == "learned",
        reg_tokens=config.num_register_tokens, pre_norm=config.pre_norm,
        fc_norm=config.final_norm == "pooled",
        pos_embed="learn" if config.position_embedding_type == "learned" else "none")
    if kind != "swiglu":
        args["act_layer"] = _ACT_NAMES[config.hidden_act]
    if kind == "distilled":
        for key in ("class_token", "reg_tokens", "global_pool", "fc_norm", "pos_embed"):
            args.pop(key)
    return arch, args


def hub_config(config: Any, preprocessing: Mapping[str, Any] | None) -> dict[str, Any]:
    """timm's config.json for a model of `config` (what save_for_hf writes: architecture,
    num_classes, num_features, global_pool, model_args, pretrained_cfg)."""
    arch, args = hub_args(config)
    data: dict[str, Any] = {"architecture": arch, "num_classes": config.num_labels,
                            "num_features": config.hidden_size,
                            "global_pool": args.get("global_pool", "token"), "model_args": args}
    h, w = config.image_hw
    pre = dict(preprocessing or PRESET)
    data["pretrained_cfg"] = {
        "input_size": [config.num_channels, h, w], "fixed_input_size": not is_naflex(config),
        "interpolation": pre.get("resample", "bicubic"), "crop_pct": pre.get("crop_pct") or 1.0,
        "crop_mode": pre.get("crop_mode", "center"), "mean": list(pre["mean"]), "std": list(pre["std"]),
        "num_classes": config.num_labels, "first_conv": "embeds.proj" if is_naflex(config) else "patch_embed.proj",
        "classifier": "head"}
    return data

