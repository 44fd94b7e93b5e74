"""Writing every format back: HF directories (torch, sharded, Flax; the family's own config.json
and names), bare state dicts in HF or timm naming, bare Flax .msgpack, Google .npz. Each writer
converts once, to its target's names and layout, and refuses by name what its format cannot hold,
before anything is written. `vit_common.checkpoints` re-exports them beside the readers."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np

import vit_common.families as families
import vit_common.infer as infer
import vit_common.layouts as layouts
from vit_common.canonical import check_state_dict, has_classifier
from vit_common.config import ViTConfig
from vit_common.convert import (
    check_flax_tree,
    flax_to_torch,
    torch_to_flax,
    unwrap_params,
)
from vit_common.families.google import BIG_VISION, NPZ, big_vision_refusal
from vit_common.families.timm import TIMM
from vit_common.fileio import atomic_directory, atomic_write_text
from vit_common.formats.msgpack_codec import write_msgpack
from vit_common.formats.npz_codec import write_npz
from vit_common.formats.safetensors_codec import write_safetensors
from vit_common.formats.torch_codec import TORCH_SUFFIXES, write_torch
from vit_common.naming import Naming, to_naming
from vit_common.preprocessing import Preprocessing

Progress = Callable[[int], Any]  # called with the number of bytes just written
CONFIG_METADATA = "twin_vit_config"  # the safetensors metadata key of our config (ViTConfig.to_own)


def hf_config_dict(config: ViTConfig, with_head: bool) -> dict[str, Any]:
    """The config.json of the family's HF class: its backbone, or the classifier whose head reads
    what this one reads (CLIP's and SigLIP's classifiers take their two-tower config)."""
    data = config.to_hf()
    model = families.hf_model(data["model_type"])
    if not with_head:
        data["architectures"] = [model.projection if config.projection_size else model.backbone]
        return data
    data["architectures"] = [hf_classifier(config, model.model_type)]
    if model.two_tower is None:
        return data
    top = {k: data.pop(k) for k in ("architectures", "id2label", "label2id", "preprocessing") if k in data}
    return {"model_type": model.two_tower, "vision_config": data, **top}


def hf_classifier(config: ViTConfig, model_type: str) -> str:
    """The HF class of a classifier of this family whose head reads config.classifier_input."""
    model = families.hf_model(model_type)
    if config.projection_size:
        raise ValueError(f"HF {model_type!r} classifiers have no projection (projection_size="
                         f"{config.projection_size}): write the backbone, or timm / Flax weights")
    cls = model.classifiers.get(config.classifier_input)
    if cls is None:
        have = [f"{head} ({name})" for head, name in model.classifiers.items()]
        raise ValueError(f"HF {model_type!r} has no classifier reading classifier_input="
                         f"{config.classifier_input!r} (its heads: {', '.join(have) or 'none'}); write "
                         f"the backbone, or timm / Flax weights")
    return cls


def hf_target(state: Mapping[str, np.ndarray], config: ViTConfig) -> tuple[dict[str, np.ndarray], ViTConfig]:
    """A canonical state rewritten for its HF family's layout, and that family's config."""
    target = layouts.hf_form(config)
    if has_classifier(state):
        hf_classifier(config, target.extra["model_type"])
    return layouts.relayout(state, config, target), target


def hf_layout(state: Mapping[str, np.ndarray], config: ViTConfig
              ) -> tuple[dict[str, np.ndarray], ViTConfig, Naming]:
    """A canonical state as its HF family holds it: (their tensors, the family's config, naming)."""
    state, target = hf_target(state, config)
    naming = families.hf_model(target.extra["model_type"]).naming
    return {k: make() for k, make in to_naming(naming, state, target)}, target, naming


# HF's save_pretrained default: above this many bytes the weights go to several files + an index
MAX_SHARD_SIZE = 5 * 10**9


def _shards(tensors: Mapping[str, np.ndarray], max_shard_size: int) -> list[dict[str, np.ndarray]]:
    """Tensors in order, cut into files of at most max_shard_size bytes (a larger tensor alone)."""
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, arr in tensors.items():
        if shards[-1] and size + arr.nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
    return shards


def save_hf(state: Mapping[str, np.ndarray], config: ViTConfig, directory: str | os.PathLike, *,
            framework: Literal["torch", "flax"] = "torch", overwrite: bool = False,
            progress: Progress | None = None, max_shard_size: int = MAX_SHARD_SIZE) -> None:
    """An HF save_pretrained directory: config.json + model.safetensors (torch) or
    flax_model.msgpack (Flax), and preprocessor_config.json when the config carries one. Torch
    weights over `max_shard_size` bytes are written as HF shards them: model-00001-of-0000N.safetensors
    ... and model.safetensors.index.json (the weight map), which every reader here takes back."""
    if not isinstance(max_shard_size, int) or isinstance(max_shard_size, bool) or max_shard_size < 1:
        raise ValueError(f"max_shard_size must be a positive number of bytes, got {max_shard_size!r}")
    if framework not in ("torch", "flax"):
        raise ValueError(f"framework must be 'torch' or 'flax', got {framework!r}")
    check_state_dict(state, config, has_classifier(state), "save_hf")
    with_head = has_classifier(state)
    try:
        state, config = hf_target(state, config)
    except ValueError:  # no HF family holds it: timm's folder, else our own config (never lost)
        _save_beyond_hf(state, config, directory, framework, overwrite, progress)
        return
    model = families.hf_model(config.extra["model_type"])
    # framework="flax" for a family HF has no Flax class for (all but ViT; transformers 5 has none):
    # the family's config.json beside our Flax tree, which this project reads back
    # the one conversion this save makes: to the family's HF names (torch) or to the Flax tree
    theirs = ({k: make() for k, make in to_naming(model.naming, state, config)} if framework == "torch"
              else torch_to_flax(state, config))

    def fill(tmp: str) -> None:
        _write_hf_config(tmp, config, with_head)
        if framework == "torch":
            shards = _shards({k: np.asarray(v) for k, v in theirs.items()}, max_shard_size)
            if len(shards) == 1:
                write_safetensors(os.path.join(tmp, "model.safetensors"), theirs,
                                  metadata={"format": "pt"}, progress=progress)
                return
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                write_safetensors(os.path.join(tmp, name), shard, metadata={"format": "pt"}, progress=progress)
                weight_map.update(dict.fromkeys(shard, name))
            index = {"metadata": {"total_size": sum(a.nbytes for sh in shards for a in sh.values())},
                     "weight_map": weight_map}
            atomic_write_text(os.path.join(tmp, "model.safetensors.index.json"),
                              json.dumps(index, indent=2, sort_keys=True) + "\n")
        else:
            write_msgpack(os.path.join(tmp, "flax_model.msgpack"), theirs, progress=progress)

    atomic_directory(directory, fill, overwrite=overwrite)


def _save_beyond_hf(state: Mapping[str, np.ndarray], config: ViTConfig, directory: str | os.PathLike,
                    framework: str, overwrite: bool, progress: Progress | None) -> None:
    """A directory for a model no HF family expresses, its config kept: a timm hub folder (timm's
    config.json; Flax weights beside it for framework="flax") when a timm definition builds it,
    else our own config.json (model_type "twin_vit", every field) beside canonical or Flax weights."""
    try:
        target = layouts.timm_form(config)
        data = families.timm.hub_config(target if has_classifier(state) else target.replace(num_labels=0),
                                        config.extra.get("preprocessing"))
        _plain_head(state, config, "timm")
    except ValueError:
        target, data = config, config.to_own()
    if framework == "torch" and "architecture" in data:
        save_timm_hub(state, config, directory, overwrite=overwrite, progress=progress)
        return
    laid = layouts.relayout(state, config, target) if target is not config else state
    tensors = torch_to_flax(laid, target) if framework == "flax" else {k: np.asarray(v) for k, v in laid.items()}

    def fill(tmp: str) -> None:
        atomic_write_text(os.path.join(tmp, "config.json"), json.dumps(data, indent=2, sort_keys=True) + "\n")
        if framework == "flax":
            write_msgpack(os.path.join(tmp, "flax_model.msgpack"), tensors, progress=progress)
        else:
            write_safetensors(os.path.join(tmp, "model.safetensors"), tensors, metadata={"format": "pt"},
                              progress=progress)

    atomic_directory(directory, fill, overwrite=overwrite)


def save_hf_flax(params: Mapping[str, Any], config: ViTConfig, directory: str | os.PathLike, *,
                 with_head: bool, overwrite: bool = False, progress: Progress | None = None) -> None:
    """An HF Flax directory from a per-layer Flax params tree. When the config already has its HF
    family's layout the tree is written as it is, after its names and shapes are checked (no
    conversion); otherwise it goes once through the canonical state to be laid out. A model no HF
    family expresses keeps its config all the same (timm's config.json or our own)."""
    try:
        target = layouts.hf_form(config)
    except ValueError:
        target = None
    if target is None or not families.hf_model(target.extra["model_type"]).has_flax \
            or any(getattr(target, f.name) != getattr(config, f.name)
                   for f in dataclasses.fields(ViTConfig) if f.compare):
        save_hf(flax_to_torch(params, config, with_head=with_head), config, directory, framework="flax",
                overwrite=overwrite, progress=progress)
        return
    check_flax_tree(params, config, with_head, "save_hf_flax")
    if with_head:
        hf_classifier(config, target.extra["model_type"])
    tree = dict(unwrap_params(params))

    def fill(tmp: str) -> None:
        _write_hf_config(tmp, target, with_head)
        write_msgpack(os.path.join(tmp, "flax_model.msgpack"), tree, progress=progress)

    atomic_directory(directory, fill, overwrite=overwrite)


def _write_hf_config(tmp: str, config: ViTConfig, with_head: bool) -> None:
    """config.json, and preprocessor_config.json when the config carries its preprocessing."""
    data = hf_config_dict(config, with_head)
    carried = data.pop("preprocessing", None)  # goes to its own file, as in HF
    atomic_write_text(os.path.join(tmp, "config.json"), json.dumps(data, indent=2, sort_keys=True) + "\n")
    if carried is not None:
        pre = Preprocessing(**carried).to_hf(config)
        atomic_write_text(os.path.join(tmp, "preprocessor_config.json"),
                          json.dumps(pre, indent=2, sort_keys=True) + "\n")


def save_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                    naming: Literal["hf", "timm"] = "hf", config: ViTConfig | None = None,
                    overwrite: bool = False, progress: Progress | None = None) -> None:
    """A bare state dict, .safetensors (preferred) or .pt/.pth/.bin, in HF (the family's) or timm
    naming."""
    target = None
    if naming == "timm":
        target = layouts.timm_form(config) if config is not None else None
        state = timm_state(state, config)
    elif naming == "hf":
        if config is not None:
            state, target, _ = hf_layout(state, config)
    else:
        raise ValueError(f"naming must be 'hf' or 'timm', got {naming!r}")
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".safetensors":
        # the config rides in the header's metadata (string values, as safetensors allows), so the
        # file loads back as this model with no config given; other readers ignore it
        metadata = {"format": "pt"}
        if target is not None:
            metadata[CONFIG_METADATA] = json.dumps(target.to_own(), sort_keys=True)
        write_safetensors(path, state, metadata=metadata, overwrite=overwrite, progress=progress)
    elif suffix in TORCH_SUFFIXES:
        write_torch(path, state, overwrite=overwrite)
    else:
        raise ValueError(f"{path}: a state dict is written as .safetensors or "
                         f"{'/'.join(TORCH_SUFFIXES)}, not {suffix or '(no suffix)'}")


def save_msgpack(state: Mapping[str, np.ndarray], config: ViTConfig, path: str | os.PathLike, *,
                 overwrite: bool = False, progress: Progress | None = None) -> None:
    """A bare Flax params tree (.msgpack), as flax.serialization.to_bytes writes it."""
    write_msgpack(path, torch_to_flax(state, config), overwrite=overwrite, progress=progress)


def save_npz(state: Mapping[str, np.ndarray], config: ViTConfig, path: str | os.PathLike, *,
             overwrite: bool = False, progress: Progress | None = None) -> None:
    """Google's vision_transformer .npz layout (readable by its code, timm and big_vision); models it
    cannot hold (gap / MAP pooling, sincos2d, no [CLS]) in big_vision's layout."""
    write_npz(path, _npz_items(state, config), overwrite=overwrite, progress=progress)


def _plain_head(state: Mapping[str, np.ndarray], config: ViTConfig, target: str) -> None:
    """timm's and Google's heads read the pooled embedding (DeiT's two: CLS and DIST) only."""
    if has_classifier(state) and config.classifier_input != "pooled":
        raise ValueError(f"{target} classifiers read the pooled embedding; this one reads "
                         f"classifier_input={config.classifier_input!r}: write HF or Flax weights")


def _npz_items(state: Mapping[str, np.ndarray], config: ViTConfig) -> list[tuple[str, Callable[[], np.ndarray]]]:
    _plain_head(state, config, "npz")
    target = layouts.npz_form(config)
    if target is config:  # classic ViT: vision_transformer's own layout
        return to_naming(NPZ, state, config)
    refusal = big_vision_refusal(config)
    if refusal is not None:
        raise ValueError(refusal)
    return to_naming(BIG_VISION, layouts.relayout(state, config, target), target)


def npz_arrays(state: Mapping[str, np.ndarray], config: ViTConfig) -> dict[str, np.ndarray]:
    """Canonical -> npz names and layouts (vision_transformer's, else big_vision's), in memory."""
    return {name: make() for name, make in _npz_items(state, config)}


def timm_state(state: Mapping[str, np.ndarray], config: ViTConfig | None = None) -> dict[str, np.ndarray]:
    """Canonical -> timm names and layout (registers without position slots, no mask token), in
    memory."""
    cfg = config or infer.infer_config(state, square=False)
    _plain_head(state, cfg, "timm")
    target = layouts.timm_form(cfg)
    naming = (families.timm.TIMM_NAFLEX if families.timm.is_naflex(target)
              else families.aimv2.TIMM_AIMV2 if families.aimv2.is_timm_config(target)
              else families.eva.TIMM_EVA if families.eva.is_eva_config(target) else TIMM)
    return {k: make() for k, make in to_naming(naming, layouts.relayout(state, cfg, target), target)}


def save_timm_hub(state: Mapping[str, np.ndarray], config: ViTConfig, directory: str | os.PathLike, *,
                  overwrite: bool = False, progress: Progress | None = None) -> None:
    """A timm hub folder, as timm.models.save_for_hf writes it: model.safetensors in timm's names
    and timm's config.json (architecture, model_args, num_classes, global_pool, pretrained_cfg).
    timm reads it back with create_model(architecture, pretrained=True, pretrained_cfg_overlay=
    dict(file=.../model.safetensors), num_classes=..., **model_args)."""
    check_state_dict(state, config, has_classifier(state), "save_timm_hub")
    target = layouts.timm_form(config)
    data = families.timm.hub_config(target if has_classifier(state) else target.replace(num_labels=0),
                                    config.extra.get("preprocessing"))
    tensors = timm_state(state, config)

    def fill(tmp: str) -> None:
        atomic_write_text(os.path.join(tmp, "config.json"), json.dumps(data, indent=2) + "\n")
        write_safetensors(os.path.join(tmp, "model.safetensors"), tensors, metadata={"format": "pt"},
                          progress=progress)

    atomic_directory(directory, fill, overwrite=overwrite)


def open_clip_state(state: Mapping[str, np.ndarray], config: ViTConfig) -> dict[str, np.ndarray]:
    """Canonical -> open_clip's `visual.` names and layouts, in memory."""
    families.open_clip.model_cfg(config)  # what open_clip cannot express, refused by name
    naming = families.open_clip.OPEN_CLIP
    return {families.open_clip.VISUAL + k: make() for k, make in to_naming(naming, state, config)}


def save_open_clip(state: Mapping[str, np.ndarray], config: ViTConfig, directory: str | os.PathLike, *,
                   overwrite: bool = False, progress: Progress | None = None) -> None:
    """An open_clip hub folder: open_clip_config.json (model_cfg, preprocess_cfg) and
    open_clip_model.safetensors holding the vision tower (`visual.*`); open_clip's
    CLIP(**model_cfg) loads it with strict=False, its text tower left at its initialisation."""
    if has_classifier(state):
        raise ValueError("open_clip models have no classifier: write the backbone")
    tensors = open_clip_state(state, config)
    data = {"model_cfg": families.open_clip.model_cfg(config),
            "preprocess_cfg": families.open_clip.preprocess_cfg(config.extra.get("preprocessing"))}

    def fill(tmp: str) -> None:
        atomic_write_text(os.path.join(tmp, families.open_clip.CONFIG), json.dumps(data, indent=2) + "\n")
        write_safetensors(os.path.join(tmp, families.open_clip.WEIGHTS[0]), tensors, metadata={"format": "pt"},
                          progress=progress)

    atomic_directory(directory, fill, overwrite=overwrite)
