"""timm's `Eva` class: DINOv3 (`vit_*_dinov3*`), EVA-02 (`eva02_*`, plain and CLIP), Perception Encoder
(`vit_pe_core_*`, `vit_pe_spatial_*`) and timm's RoPE ViTs (`vit_*_rope_*`: axial and mixed). Its
weight names (gamma_1 / gamma_2, q_bias / v_bias beside a fused qkv, SwiGLU's fc1_g / fc1_x, rope.freqs),
its definitions' arguments (the facts config files do not carry: ref_feat_shape, the rope's grid
offset and indexing, the norm's eps) and both directions of timm's hub config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vit_common.canonical import ATTENTION_POOL, LAYER
from vit_common.families.base import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    Family,
    Fields,
)
from vit_common.naming import Naming, Rename

_L, _P, _B = LAYER, ATTENTION_POOL, "blocks.{i}."
_QKV = tuple(_L + f"attention.attention.{n}" for n in ("query", "key", "value"))


def _fused(c: Any) -> bool:
    return c.extra.get("timm_qkv", "fused") == "fused"


def _q_v_bias(c: Any) -> bool:
    """timm's EvaAttention with a fused qkv: q_bias and v_bias parameters, the key's a zero buffer."""
    return _fused(c) and c.qkv_bias and not c.key_bias


def _swiglu_split(c: Any) -> bool:
    return c.mlp_type == "swiglu" and c.extra.get("timm_mlp", "packed") == "split"


TIMM_EVA = Naming("timm-eva", (
    Rename("embeddings.cls_token", "cls_token", "param"),
    Rename("embeddings.register_tokens", "reg_token", "param"),
    Rename("embeddings.position_embeddings", "pos_embed", "param"),
    Rename("embeddings.patch_embeddings.projection", "patch_embed.proj"),
    Rename("pre_layernorm", "norm_pre"),
    Rename("rope.freqs", "rope.freqs", "param"),
    # fused: one (3 hidden, hidden) weight; its bias whole (AttentionRope) or as q_bias / v_bias
    Rename(_QKV, _B + "attn.qkv", when=lambda c: _fused(c) and not _q_v_bias(c)),
    Rename(tuple(q + ".weight" for q in _QKV), _B + "attn.qkv.weight", "param", when=_q_v_bias),
    Rename(_L + "attention.attention.query.bias", _B + "attn.q_bias", "param", when=_q_v_bias),
    Rename(_L + "attention.attention.value.bias", _B + "attn.v_bias", "param", when=_q_v_bias),
    *(Rename(q, _B + f"attn.{t}_proj", when=lambda c: not _fused(c)) for q, t in zip(_QKV, "qkv")),
    Rename(_L + "attention.attention.q_norm", _B + "attn.q_norm"),
    Rename(_L + "attention.attention.k_norm", _B + "attn.k_norm"),
    Rename(_L + "attention.output.layernorm", _B + "attn.norm"),
    Rename(_L + "attention.output.dense", _B + "attn.proj"),
    Rename(_L + "layernorm_before", _B + "norm1"),
    Rename(_L + "layernorm_after", _B + "norm2"),
    Rename(_L + "layer_scale1", _B + "gamma_1", "param_scale"),
    Rename(_L + "layer_scale2", _B + "gamma_2", "param_scale"),
    Rename(_L + "intermediate.dense", _B + "mlp.fc1", when=lambda c: not _swiglu_split(c)),
    Rename(_L + "intermediate.dense", (_B + "mlp.fc1_g", _B + "mlp.fc1_x"), when=_swiglu_split),
    Rename(_L + "output.layernorm", _B + "mlp.norm"),
    Rename(_L + "output.dense", _B + "mlp.fc2"),
    Rename("layernorm", "norm", when=lambda c: c.final_norm == "tokens"),
    Rename("layernorm", "fc_norm", when=lambda c: c.final_norm == "pooled"),
    Rename(_P + "probe", "attn_pool.latent", "param"),
    Rename(_P + "attention.attention.query", "attn_pool.q"),
    Rename((_P + "attention.attention.key", _P + "attention.attention.value"), "attn_pool.kv"),
    Rename(_P + "attention.output.dense", "attn_pool.proj"),
    Rename(_P + "layernorm", "attn_pool.norm"),
    Rename(_P + "intermediate.dense", "attn_pool.mlp.fc1"),
    Rename(_P + "output.dense", "attn_pool.mlp.fc2"),
), (Rename("classifier", "head"),), markers=("patch_embed.proj.weight", "blocks.0.gamma_1"))

# ---------------------------------------------------------------------------------------------
# timm's Eva definitions (timm 1.0.31 eva.py): the arguments each name passes; every accepted name
# is checked against timm itself in the tests (parameter counts, outputs)

_LN5 = {"norm_eps": 1e-5}
_DINOV3 = dict(patch_size=16, dynamic_img_size=True, init_values=1e-5, rope_type="dinov3", rope_temperature=100,
               rope_rotate_half=True, use_rot_pos_emb=True, use_abs_pos_emb=False, num_reg_tokens=4,
               use_fc_norm=False, img_size=256, num_classes=0, **_LN5)
_EVA02 = dict(mlp_ratio=4 * 2 / 3, swiglu_mlp=True, use_rot_pos_emb=True, ref_feat_shape=(16, 16))
_ROPE = dict(patch_size=16, mlp_ratio=4, attn_type="rope", qkv_bias=True, init_values=1e-5, class_token=True,
             global_pool="token", use_abs_pos_emb=False, use_rot_pos_emb=True, rope_grid_indexing="xy",
             rope_temperature=100.0, use_fc_norm=False)
_ROPE_GAP = dict(img_size=256, patch_size=16, qkv_fused=True, qkv_bias=True, init_values=1e-5, class_token=False,
                 use_rot_pos_emb=True, use_abs_pos_emb=False, ref_feat_shape=(16, 16))
_PE = dict(attn_type="rope", use_pre_transformer_norm=True, use_rot_pos_emb=True, rope_grid_indexing="xy",
           rope_grid_offset=1.0, mlp_ratio=4.0, **_LN5)
_PE_CORE = dict(_PE, global_pool="map", attn_pool_num_heads=8, attn_pool_mlp_ratio=4.0)
_PE_SPATIAL = dict(_PE, use_post_transformer_norm=False, use_fc_norm=False, num_classes=0, ref_feat_shape=(32, 32))


def _size(dim: int, depth: int, heads: int, **more: Any) -> dict[str, Any]:
    return dict(embed_dim=dim, depth=depth, num_heads=heads, **more)


DEFINITIONS: dict[str, dict[str, Any]] = {
    "vit_tiny_patch16_dinov3_qkvb": dict(_DINOV3, **_size(192, 12, 3), qkv_bias=True),
    **{f"vit_{n}_patch16_dinov3{q}": dict(_DINOV3, **size, qkv_bias=bool(q))
       for n, size in (("small", _size(384, 12, 6)), ("base", _size(768, 12, 12)), ("large", _size(1024, 24, 16)))
       for q in ("", "_qkvb")},
    **{f"vit_{n}_patch16_dinov3{q}": dict(_DINOV3, **size, qkv_bias=bool(q), swiglu_mlp=True, swiglu_align_to=8)
       for n, size in (("small_plus", _size(384, 12, 6)), ("huge_plus", _size(1280, 32, 20))) for q in ("", "_qkvb")},
    "vit_7b_patch16_dinov3": dict(_DINOV3, **_size(4096, 40, 32), qkv_bias=False, mlp_ratio=2, swiglu_mlp=True,
                                  swiglu_align_to=64),
    **{f"eva02_{n}_patch14_{r}": dict(_EVA02, img_size=r, patch_size=14, **size, num_classes=1000 if r > 224 else 0)
       for n, size, rs in (("tiny", _size(192, 12, 3), (224, 336)), ("small", _size(384, 12, 6), (224, 336)))
       for r in rs},
    **{f"eva02_{n}_patch14_{r}": dict(_EVA02, img_size=r, patch_size=14, **size, qkv_fused=False, scale_mlp=True,
                                      num_classes=1000 if r > 224 else 0)
       for n, size in (("base", _size(768, 12, 12)), ("large", _size(1024, 24, 16))) for r in (224, 448)},
    "eva02_base_patch16_clip_224": dict(_EVA02, img_size=224, patch_size=16, **_size(768, 12, 12), qkv_fused=False,
                                        scale_mlp=True, scale_attn_inner=True, global_pool="token", num_classes=512),
    **{f"eva02_large_patch14_clip_{r}": dict(_EVA02, img_size=r, patch_size=14, **_size(1024, 24, 16), qkv_fused=False,
                                             scale_mlp=True, scale_attn_inner=True, global_pool="token",
                                             num_classes=768) for r in (224, 336)},
    "vit_pe_core_tiny_patch16_384": dict(_PE_CORE, img_size=384, patch_size=16, **_size(192, 12, 3),
                                         ref_feat_shape=(24, 24), num_classes=512),
    "vit_pe_core_small_patch16_384": dict(_PE_CORE, img_size=384, patch_size=16, **_size(384, 12, 6),
                                          ref_feat_shape=(24, 24), num_classes=512),
    "vit_pe_core_base_patch16_224": dict(_PE_CORE, img_size=224, patch_size=16, **_size(768, 12, 12),
                                         ref_feat_shape=(14, 14), num_classes=1024),
    "vit_pe_core_large_patch14_336": dict(_PE_CORE, img_size=336, patch_size=14, **_size(1024, 24, 16),
                                          ref_feat_shape=(24, 24), num_classes=1024),
    # (PE core G/14: its attention pool's MLP is narrower than the blocks' -- one MLP width here)
    **{f"vit_pe_spatial_{n}_patch16_512": dict(_PE_SPATIAL, img_size=512, patch_size=16, **size)
       for n, size in (("tiny", _size(192, 12, 3)), ("small", _size(384, 12, 6)), ("base", _size(768, 12, 12)))},
    "vit_pe_spatial_large_patch14_448": dict(_PE_SPATIAL, img_size=448, patch_size=14, **_size(1024, 24, 16)),
    **{f"vit_{n}_patch16_rope{m}_224": dict(_ROPE, **size, **({"rope_type": "mixed", "rope_temperature": 10.0}
                                                              if m == "_mixed" else {}), num_classes=1000)
       for n, size in (("small", _size(384, 12, 6)), ("base", _size(768, 12, 12)), ("large", _size(1024, 24, 16)))
       for m in ("", "_mixed")},
    **{f"vit_{n}_patch16_rope{m}_ape_224": dict(_ROPE, **size, no_embed_class=True, use_abs_pos_emb=True,
                                                use_fc_norm=None,
                                                **({"rope_type": "mixed", "rope_temperature": 10.0}
                                                   if m == "_mixed" else {}), num_classes=1000)
       for n, size in (("small", _size(384, 12, 6)), ("base", _size(768, 12, 12)), ("large", _size(1024, 24, 16)))
       for m in ("", "_mixed")},
    "vit_medium_patch16_rope_reg1_gap_256": dict(_ROPE_GAP, **_size(512, 12, 8), num_reg_tokens=1),
    "vit_mediumd_patch16_rope_reg1_gap_256": dict(_ROPE_GAP, **_size(512, 20, 8), num_reg_tokens=1, qkv_bias=False),
    "vit_betwixt_patch16_rope_reg4_gap_256": dict(_ROPE_GAP, **_size(640, 12, 10), num_reg_tokens=4),
    "vit_base_patch16_rope_reg1_gap_256": dict(_ROPE_GAP, **_size(768, 12, 12), num_reg_tokens=1),
}
# Eva's own defaults (its constructor's) for what a definition does not pass
_EVA_DEFAULTS: dict[str, Any] = dict(
    img_size=224, patch_size=16, in_chans=3, num_classes=1000, global_pool="avg", embed_dim=768, depth=12,
    num_heads=12, qkv_bias=True, qkv_fused=True, qk_norm=False, mlp_ratio=4.0, swiglu_mlp=False, swiglu_align_to=0,
    scale_mlp=False, scale_attn_inner=False, attn_type="eva", norm_eps=1e-6, init_values=None, class_token=True,
    num_reg_tokens=0, no_embed_class=False, use_abs_pos_emb=True, use_rot_pos_emb=False, rope_type="cat",
    rope_grid_offset=0.0, rope_grid_indexing="ij", rope_temperature=10000.0, rope_rotate_half=False,
    use_pre_transformer_norm=False, use_post_transformer_norm=None, use_fc_norm=None, attn_pool_num_heads=None,
    attn_pool_mlp_ratio=None, dynamic_img_size=False, ref_feat_shape=None)
_IGNORED = ("drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate",
            "head_init_scale", "dynamic_img_pad", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
            "rope_shift_coords", "rope_jitter_coords", "rope_rescale_coords", "checkpoint_path", "device", "dtype")
# what no switch of ours expresses, refused by name when a definition or kwarg sets it
_REFUSED = {"use_post_norm": False, "num_kv_heads": None, "attn_only_layer_scale": False, "rope_mrope_section": None,
            "gated_attn": False}


def is_eva_name(name: str) -> bool:
    return name in DEFINITIONS


def config_fields(name: str, kwargs: Mapping[str, Any]) -> Fields:
    """Our fields for `timm.create_model(name, **kwargs)` of an Eva definition."""
    args = {**_EVA_DEFAULTS, **DEFINITIONS[name]}
    for key, value in kwargs.items():
        if key in _IGNORED:
            continue
        if key == "norm_layer":
            eps = getattr(value, "keywords", {}).get("eps")
            if eps is None:
                raise ValueError(f"timm Eva norm_layer {value!r} is not expressible (a LayerNorm with its eps)")
            value, key = eps, "norm_eps"
        if key not in _EVA_DEFAULTS and key not in _REFUSED:
            raise ValueError(f"timm Eva argument {key!r} is not expressible by this ViT")
        args[key] = value
    return {**fields_from_args(args), "extra": {"timm_model": name, **_extra(args),
                                                "preprocessing": default_preprocessing(name)}}


def default_preprocessing(name: str) -> Fields:
    """The preprocessing of a definition's default tag (its timm pretrained_cfg; a hub folder's
    config.json carries its own, which wins): the family's presets, a crop or statistics apart."""
    if "dinov3" in name:
        pre = _PRESETS["timm-dinov3"]
    elif name.startswith("eva02_"):  # the MIM-only 224 tags crop 0.9; the 448 fine-tunes squash
        pre = _PRESETS["eva02"] if name.endswith("_224") else {
            **_PRESETS["eva02"], "crop_pct": 1.0, "crop_mode": "squash" if name.endswith("_448") else "center"}
    elif name.startswith("vit_pe_"):
        pre = _PRESETS["pe"]
    elif name.endswith("_gap_256"):  # the sbb_in1k tags: PE's statistics (CLIP's for betwixt), crop 0.95
        pre = {**_PRESETS["eva02" if "betwixt" in name else "pe"], "crop_pct": 0.95}
    else:  # timm's RoPE ViTs (naver_in1k)
        pre = {**_PRESETS["timm-dinov3"], "crop_pct": 0.9}
    return {**pre, "resize_in_float": False}


def _extra(args: Mapping[str, Any]) -> dict[str, str]:
    """The layouts timm's names depend on: fused or separate q / k / v, packed or split SwiGLU."""
    split = args["swiglu_mlp"] and (args["scale_mlp"] or args["swiglu_align_to"])
    return {"timm_class": "eva", "timm_qkv": "fused" if args["qkv_fused"] else "separate",
            "timm_mlp": "split" if split else "packed"}


def fields_from_args(args: Mapping[str, Any]) -> Fields:
    for key, ok in _REFUSED.items():
        if args.get(key, ok) != ok:
            raise ValueError(f"timm Eva {key}={args[key]!r} is not expressible by this ViT")
    dim, ratio = args["embed_dim"], args["mlp_ratio"]
    if not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio <= 1e4):
        raise ValueError(f"timm mlp_ratio must be a number in (0, 10000], got {ratio!r}")
    width = int(dim * ratio)
    swiglu = bool(args["swiglu_mlp"])
    align = args["swiglu_align_to"]
    if swiglu and align and (args["scale_mlp"] or align):
        width = width + (-width % align)
    pool = args["global_pool"]
    pool_ratio = args["attn_pool_mlp_ratio"] or ratio
    if pool == "map" and int(dim * pool_ratio) != width:
        raise ValueError(f"timm Eva attention pool MLP of width {int(dim * pool_ratio)} beside the blocks' "
                         f"{width} is not expressible (one MLP width)")
    pools = {"token": "cls", "avg": "gap", "map": "map"}
    if pool not in pools:
        raise ValueError(f"timm Eva global_pool {pool!r} is not expressible ({', '.join(pools)})")
    fc_norm = args["use_fc_norm"] if args["use_fc_norm"] is not None else pool == "avg"
    post_norm = args["use_post_transformer_norm"]
    post_norm = (not fc_norm) if post_norm is None else post_norm
    if fc_norm == post_norm:
        raise ValueError(f"timm Eva with {'both' if fc_norm else 'neither'} of fc_norm and the final norm is not "
                         f"expressible (one final norm, on the tokens or the pooled vector)")
    attn = args["attn_type"]
    if attn not in ("eva", "rope"):
        raise ValueError(f"timm Eva attn_type {attn!r} is not expressible (eva, rope)")
    rope_kind = args["rope_type"] if args["use_rot_pos_emb"] else None
    rope = {None: "none", "cat": "axial", "dinov3": "dinov3", "mixed": "mixed"}
    if rope_kind not in rope:
        raise ValueError(f"timm Eva rope_type {rope_kind!r} is not expressible (cat, dinov3, mixed)")
    if args["rope_grid_indexing"] not in ("ij", "xy"):
        raise ValueError(f"timm Eva rope_grid_indexing {args['rope_grid_indexing']!r} is not ij or xy")
    reg, cls = args["num_reg_tokens"], args["class_token"]
    if args["use_abs_pos_emb"] and reg and not args["no_embed_class"]:
        raise ValueError("timm Eva registers with position slots (no_embed_class=False) are not expressible")
    ref = args["ref_feat_shape"]
    ref = None if ref is None or rope_kind != "cat" else (tuple(ref) if isinstance(ref, (list, tuple)) else (ref, ref))
    init_values = args["init_values"]
    heads = args["num_heads"]
    return dict(
        hidden_size=dim, num_hidden_layers=args["depth"], num_attention_heads=heads, intermediate_size=width,
        hidden_act="gelu", layer_norm_eps=args["norm_eps"], image_size=args["img_size"],
        patch_size=args["patch_size"], num_channels=args["in_chans"], qkv_bias=args["qkv_bias"],
        # EvaAttention never has a key bias; timm's AttentionRope has one with the others
        key_bias=attn == "rope", num_labels=args["num_classes"], class_token=cls, num_register_tokens=reg,
        position_embedding_type="learned" if args["use_abs_pos_emb"] else "none",
        position_embedding_covers_prefix=args["use_abs_pos_emb"] and not args["no_embed_class"],
        position_embedding_resampling="bicubic_antialias", pre_norm=args["use_pre_transformer_norm"],
        patch_bias=not args["use_pre_transformer_norm"], pooling=pools[pool],
        final_norm="pooled" if fc_norm else "tokens", layer_scale=init_values is not None,
        layerscale_value=1.0 if init_values is None else init_values, mlp_type="swiglu" if swiglu else "mlp",
        qk_norm=args["qk_norm"], attention_norm=args["scale_attn_inner"], mlp_norm=args["scale_mlp"],
        map_num_heads=(args["attn_pool_num_heads"] or 0) if pool == "map" else 0,
        rope_type=rope[rope_kind], rope_theta=float(args["rope_temperature"]),
        rope_layout="halves" if args["rope_rotate_half"] else "pairs",
        rope_axis_order="yx" if args["rope_grid_indexing"] == "ij" else "xy", rope_ref_grid=ref,
        rope_grid_offset=float(args["rope_grid_offset"]))


def hub_args(config: Any) -> tuple[str, dict[str, Any]]:
    """(architecture, model_args) of an Eva definition building a model of `config`; the eps is the
    definition's norm_layer (a config.json cannot pass it)."""
    name = config.extra.get("timm_model")
    if not is_eva_name(name):
        eps = config.layer_norm_eps
        name = next((n for n in DEFINITIONS if DEFINITIONS[n].get("norm_eps", 1e-6) == eps), None)
        if name is None:
            raise ValueError(f"timm's Eva definitions set the norm's eps ({eps:g}) through their norm_layer; "
                             f"none has it")
    if config.norm_type != "layernorm" or not config.mlp_bias or not config.proj_bias or config.mask_token \
            or config.projection_size or config.distillation_token or config.classifier_input != "pooled" \
            or config.mlp_type == "swiglu" and config.hidden_act != "gelu":
        raise ValueError("timm's Eva cannot express this model (RMSNorm, bias-free projections, a mask token, "
                         "a projection or DeiT's tokens)")
    pools = {"cls": "token", "gap": "avg", "map": "map"}
    rope = {"none": "cat", "axial": "cat", "dinov3": "dinov3", "mixed": "mixed"}
    swiglu = config.mlp_type == "swiglu"
    split = config.extra.get("timm_mlp", "packed") == "split" or (swiglu and config.mlp_norm)
    args: dict[str, Any] = dict(
        img_size=list(config.image_hw), patch_size=config.patch_size, in_chans=config.num_channels,
        num_classes=config.num_labels, global_pool=pools[config.pooling], embed_dim=config.hidden_size,
        depth=config.num_hidden_layers, num_heads=config.num_attention_heads,
        mlp_ratio=config.intermediate_size / config.hidden_size, qkv_bias=config.qkv_bias,
        qkv_fused=_fused(config), qk_norm=config.qk_norm, swiglu_mlp=swiglu,
        swiglu_align_to=1 if split and not config.mlp_norm else 0, scale_mlp=config.mlp_norm,
        scale_attn_inner=config.attention_norm, attn_type="rope" if config.key_bias else "eva",
        init_values=config.layerscale_value if config.layer_scale else None, class_token=config.class_token,
        num_reg_tokens=config.num_register_tokens,
        no_embed_class=not config.position_embedding_covers_prefix,
        use_abs_pos_emb=config.position_embedding_type == "learned",
        use_rot_pos_emb=config.rope_type != "none", rope_type=rope[config.rope_type],
        rope_grid_offset=config.rope_grid_offset,
        rope_grid_indexing="ij" if config.rope_axis_order == "yx" else "xy", rope_temperature=config.rope_theta,
        rope_rotate_half=config.rope_layout == "halves", use_pre_transformer_norm=config.pre_norm,
        use_post_transformer_norm=config.final_norm == "tokens", use_fc_norm=config.final_norm == "pooled",
        attn_pool_num_heads=config.map_num_heads or None, dynamic_img_size=True,
        ref_feat_shape=list(config.rope_ref_grid) if config.rope_ref_grid else None)
    if int(config.hidden_size * args["mlp_ratio"]) != config.intermediate_size:
        args["mlp_ratio"] = _ratio(config.intermediate_size, config.hidden_size)
    wrong = []
    if config.position_embedding_type == "sincos2d":
        wrong.append("position_embedding_type='sincos2d'")
    if config.patch_bias == config.pre_norm:
        wrong.append(f"patch_bias={config.patch_bias} with pre_norm={config.pre_norm}")
    if config.pooling == "map":
        args["attn_pool_mlp_ratio"] = args["mlp_ratio"]
    if wrong:
        raise ValueError(f"timm's Eva cannot express {', '.join(wrong)}")
    return name, args


def _ratio(width: int, dim: int) -> float:
    import numpy as np

    ratio = width / dim
    while int(dim * ratio) < width:
        ratio = float(np.nextafter(ratio, np.inf))
    return ratio


def is_eva_config(config: Any) -> bool:
    """Whether timm writes this model as an Eva (rotary positions or Eva's own pieces)."""
    return (config.rope_type != "none" or config.attention_norm or config.mlp_norm or bool(config.map_num_heads)
            or config.extra.get("timm_class") == "eva" or not config.key_bias)


# the default tags' pretrained_cfg (a hub folder carries its own): DINOv3 at 256, EVA-02, PE
_TIMM_CROP = {"resample": "bicubic", "crop_mode": "center", "crop_rounding": "round"}
_PRESETS = {"timm-dinov3": {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD, "crop_pct": 1.0, **_TIMM_CROP},
           "eva02": {"mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD, "crop_pct": 0.9, **_TIMM_CROP},
           "pe": {"mean": IMAGENET_STANDARD_MEAN, "std": IMAGENET_STANDARD_STD, "crop_pct": 1.0, **_TIMM_CROP}}

FAMILY = Family(
    name="eva",
    summary="timm's Eva class: DINOv3, EVA-02, Perception Encoder and timm's RoPE ViTs",
    namings=(TIMM_EVA,),
    naming_defaults={"timm-eva": {"hidden_act": "gelu", "layer_norm_eps": 1e-6,
                                  "position_embedding_resampling": "bicubic_antialias"}},
    presets=_PRESETS,
)
