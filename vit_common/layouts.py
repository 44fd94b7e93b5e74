"""Equivalent layouts: one model's canonical state written for another source's switches (the same
function), and the config each writer needs (`hf_form`, `timm_form`, `npz_form`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

import vit_common.families as families
from vit_common.canonical import BACKBONE_PREFIX, has_classifier, to_numpy
from vit_common.config import ViTConfig

_RELAYOUT = ("final_norm", "position_embedding_covers_prefix", "mask_token", "position_embedding_resampling")


def relayout(state: Mapping[str, Any], config: ViTConfig, target: ViTConfig) -> dict[str, Any]:
    """A `config` model's canonical state as a `target` model's, where the two differ only in
    layout: [CLS] / DIST position slots folded into the tokens (exact: the slots are added to
    constant tokens) or added as zeros; DINOv2's unused mask token dropped or added as zeros; the
    final norm on the tokens or on the pooled [CLS] (the same pooled output and logits). Anything
    else is a ValueError naming the switches."""
    differ = [f for f in _RELAYOUT if getattr(config, f) != getattr(target, f)]
    if config.replace(**{f: getattr(target, f) for f in differ}) != target:
        fields = [f.name for f in dataclasses.fields(ViTConfig)
                  if f.compare and getattr(config, f.name) != getattr(target, f.name) and f.name not in differ]
        raise ValueError(f"cannot rewrite this model as the other: {', '.join(fields)} differ")
    if ("final_norm" in differ and has_classifier(state)
            and config.classifier_input in ("patch_mean", "cls_patch_mean")):
        raise ValueError(f"this classifier reads the final tokens (classifier_input="
                         f"{config.classifier_input!r}): moving the final norm would change its logits")
    if "final_norm" in differ and (config.pooling != "cls" or config.distillation_token):
        raise ValueError("the final norm moves between the tokens and the pooled vector only for a "
                         "single [CLS] token, where both give the same pooled output")
    prefix = BACKBONE_PREFIX if has_classifier(state) else ""
    out = dict(state)
    if "position_embedding_covers_prefix" in differ and config.position_embedding_type == "learned":
        key = prefix + "embeddings.position_embeddings"
        pos = to_numpy(out[key])
        tokens = [prefix + t for t, on in (("embeddings.cls_token", config.class_token),
                                           ("embeddings.distillation_token", config.distillation_token)) if on]
        if config.num_position_prefix:  # fold the slots into the tokens
            for j, t in enumerate(tokens):
                out[t] = (to_numpy(out[t]) + pos[:, j:j + 1]).astype(pos.dtype)
            out[key] = pos[:, len(tokens):]
        else:  # give the tokens zero slots
            out[key] = np.concatenate([np.zeros((1, len(tokens), pos.shape[-1]), pos.dtype), pos], axis=1)
    if "mask_token" in differ:
        key = prefix + "embeddings.mask_token"
        if target.mask_token:
            dtype = to_numpy(out[prefix + "embeddings.patch_embeddings.projection.weight"]).dtype
            out[key] = np.zeros((1, config.hidden_size), dtype)
        else:
            del out[key]
    return out


def timm_form(config: ViTConfig) -> ViTConfig:
    """The config as timm builds it: registers without position slots (no_embed_class), the
    final norm on the tokens for [CLS] pooling, no mask token, antialiased resampling."""
    changes: dict[str, Any] = {"mask_token": False, "position_embedding_resampling": "bicubic_antialias"}
    if config.position_embedding_resampling == "bilinear_antialias":  # a NaFlexVit keeps its own
        changes["position_embedding_resampling"] = "bilinear_antialias"
    if config.num_register_tokens:
        changes["position_embedding_covers_prefix"] = False
    if config.pooling == "cls" and config.final_norm == "pooled" and not config.distillation_token:
        changes["final_norm"] = "tokens"
    if config.pre_norm == config.patch_bias:
        raise ValueError("timm's patch embedding has a bias exactly when pre_norm is off; this "
                         f"model has pre_norm={config.pre_norm}, patch_bias={config.patch_bias}")
    return config.replace(**changes)


def hf_form(config: ViTConfig) -> ViTConfig:
    """The config as its HF family writes it (the family it came from or the first that fits after
    a layout change), with extra['model_type'] naming the family."""
    stated = config.extra.get("model_type")
    models = families.HF_MODELS
    order = ([stated] if stated in models else []) + [m for m in models if m != stated]
    for model_type in order:
        family = models[model_type]
        if config.projection_size and family.projection is None:
            continue  # no class of this family holds a projection
        if (config.position_embedding_resampling == "bilinear_antialias"
                and family.switches.get("position_embedding_resampling") != "bilinear_antialias"):
            continue  # a NaFlex model's per-image resizing is its own, not a layout detail
        wants = {k: family.switches.get(k, getattr(config, k) if k in family.free else None)
                 for k in _RELAYOUT}
        changes = {k: v for k, v in wants.items() if v is not None}
        changes.setdefault("final_norm", config.final_norm)
        if "final_norm" not in family.switches and config.pooling == "cls":
            changes["final_norm"] = "tokens"
        changes.setdefault("position_embedding_covers_prefix", True)
        changes.setdefault("mask_token", False)
        changes.setdefault("position_embedding_resampling", "bicubic")
        try:
            candidate = config.replace(**changes)
        except ValueError:
            continue
        if not family.mismatches(candidate):
            return candidate.replace(extra={**candidate.extra, "model_type": model_type})
    wrong = models[families.CLASSIC].mismatches(config)
    if config.projection_size:
        wrong.append(f"projection_size={config.projection_size}")
    raise ValueError(f"no HF model family expresses this ViT ({', '.join(wrong)}); write timm or Flax "
                     f"weights instead")


def hf_family(config: ViTConfig) -> str | None:
    """The HF model type `hf_form` writes this config as, None when no HF family holds it."""
    try:
        return hf_form(config).extra["model_type"]
    except ValueError:
        return None


def npz_form(config: ViTConfig) -> ViTConfig:
    """The config as save_npz writes it: classic ViT as it is (vision_transformer's layout), the
    rest in big_vision's (no position slot for [CLS])."""
    if hf_family(config) == families.CLASSIC:
        return config
    return config.replace(position_embedding_covers_prefix=False)
