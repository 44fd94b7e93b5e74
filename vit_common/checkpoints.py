"""Checkpoint policy: which format a path holds, how its names map onto the canonical ones, which
config it needs; and writing every format back. File primitives live in `vit_common.fileio`, one
codec per format in `vit_common.formats`, every naming table in `vit_common.convert`.

Readers: HF directories (torch, sharded, Flax), bare state dicts (.safetensors, .pt/.pth/.bin,
.msgpack) in HF, transformers-5 or timm naming, Google .npz (vision_transformer and big_vision
layouts, scanned or not). Writers: HF directories (torch and Flax), bare state dicts (HF or timm
naming, .safetensors or torch pickles), bare Flax .msgpack, Google .npz.

Every problem with a file is one ValueError naming it. Weights must be floating point; non-finite
values are reported (a warning and a note on the Checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np

import vit_common.families as families
import vit_common.infer as infer
from vit_common.canonical import (
    check_state_dict,
    expected_entries,
    has_classifier,
    report_mismatch,
)
from vit_common.config import MODEL_PRESETS, ViTConfig
from vit_common.convert import (
    FLAX,
    flatten_params,
    unwrap_params,
)
from vit_common.families.google import (
    UnsupportedCheckpoint,
    open_npz,
)
from vit_common.fileio import (
    expect_type,
    read_json,
)
from vit_common.formats import FLOAT_DTYPES
from vit_common.formats.msgpack_codec import read_msgpack
from vit_common.formats.npz_codec import read_npz
from vit_common.formats.safetensors_codec import read_safetensors
from vit_common.formats.torch_codec import TORCH_SUFFIXES, read_torch
from vit_common.naming import detect_naming, from_naming
from vit_common.preprocessing import PIPELINES, Preprocessing

Format = Literal["hf", "hf-flax", "timm-hub", "open_clip", "safetensors", "torch", "msgpack", "npz"]
Progress = Callable[[int], Any]  # called with the number of bytes just written

HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
              "flax_model.msgpack")
POOLER_KEYS = ("pooler.dense.weight", "pooler.dense.bias")
# HF backbones (ViTModel, DeiTModel) may carry a pooler, bare or under their classifier's prefix
POOLER_PREFIXES = ("", *sorted({m.naming.backbone_prefix for m in families.HF_MODELS.values() if m.naming.sep == "."}))
VISION_TOWER = "vision_model."  # the vision tower of a two-tower file (CLIPModel, SiglipModel)
# the Flax twin's own files say nothing either: HF ViT's defaults
FLAX_DEFAULTS = {"hidden_act": "gelu", "layer_norm_eps": 1e-12}
from vit_common.writers import (  # noqa: E402  (the writers, beside the readers)
    CONFIG_METADATA,
    MAX_SHARD_SIZE,
    hf_classifier,
    hf_config_dict,
    hf_layout,
    hf_target,
    npz_arrays,
    open_clip_state,
    save_hf,
    save_hf_flax,
    save_msgpack,
    save_npz,
    save_open_clip,
    save_state_dict,
    save_timm_hub,
    timm_state,
)

__all__ = ["Checkpoint", "UnsupportedCheckpoint", "load_checkpoint", "detect_format", "read_msgpack",
           "MAX_SHARD_SIZE", "TORCH_SUFFIXES", "hf_classifier", "hf_config_dict", "hf_layout", "hf_target",
           "npz_arrays", "open_clip_state", "save_hf", "save_hf_flax", "save_msgpack", "save_npz", "save_open_clip",
           "save_state_dict", "save_timm_hub", "timm_state"]


@dataclasses.dataclass
class Checkpoint:
    state: dict[str, np.ndarray]  # canonical names and layouts
    config: ViTConfig
    format: str  # what was read, e.g. "HF directory (torch)", "timm (.safetensors)", "npz (big_vision)"
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def has_head(self) -> bool:
        return has_classifier(self.state)

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.state.values())


# ---------------------------------------------------------------------------------------------
# config sources: a ViTConfig, a preset name (str) or a config file (os.PathLike, not str)

ConfigSource = ViTConfig | str | os.PathLike | None


def detect_format(path: str | os.PathLike) -> tuple[Format, str]:
    """(format, the file holding the weights) for a checkpoint path."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise ValueError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        hub = _hub_folder(path)
        if hub is not None:
            return hub
        for name in HF_WEIGHTS:
            if os.path.lexists(os.path.join(path, name)):
                fmt: Format = "hf-flax" if name.endswith(".msgpack") else "hf"
                return fmt, os.path.join(path, name)
        raise ValueError(f"{path}: no weights in this directory; expected one of {', '.join(HF_WEIGHTS)}")
    suffix = os.path.splitext(path)[1].lower()
    formats: dict[str, Format] = {".safetensors": "safetensors", ".npz": "npz", ".msgpack": "msgpack",
                                  **{s: "torch" for s in TORCH_SUFFIXES}}
    if suffix not in formats:
        raise ValueError(f"{path}: unknown checkpoint type {suffix or '(no suffix)'}; expected a "
                         f"directory (HF save_pretrained) or a .safetensors, "
                         f"{', '.join(TORCH_SUFFIXES)}, .npz or .msgpack file")
    return formats[suffix], path


def _hub_folder(path: str) -> tuple[Format, str] | None:
    """A timm hub folder (timm's config.json beside its weights) or an open_clip one; None for
    anything else (an HF directory)."""
    config_json = os.path.join(path, "config.json")
    if os.path.lexists(os.path.join(path, families.open_clip.CONFIG)):
        kind: Format = "open_clip"
        names = families.open_clip.WEIGHTS
    elif os.path.lexists(config_json) and families.timm.is_hub_config(read_json(config_json, "config.json")):
        kind, names = "timm-hub", families.timm.HUB_WEIGHTS
        if os.path.lexists(os.path.join(path, "flax_model.msgpack")):
            return None  # our Flax folder of a timm model: timm's config.json beside Flax weights
    else:
        return None
    for name in names:
        if os.path.lexists(os.path.join(path, name)):
            return kind, os.path.join(path, name)
    what = "a timm hub folder (timm's config.json)" if kind == "timm-hub" else "an open_clip folder"
    raise ValueError(f"{path}: {what} without its weights; expected one of {', '.join(names)}")


def _named_config(config: ConfigSource) -> tuple[ConfigSource, dict[str, Any] | None]:
    """A timm model name (a str that is no preset) as its ViTConfig; a timm hub or open_clip
    config file as its ViTConfig and preprocessing; anything else as it came."""
    if isinstance(config, str):
        try:
            ViTConfig.from_preset(config)
            return config, None
        except ValueError as preset_error:
            try:
                named = ViTConfig.from_timm(config)  # its definition's default tag, else timm's usual
                return named, named.extra.get("preprocessing") or dataclasses.asdict(PIPELINES["timm"])
            except ValueError as timm_error:
                if os.path.isfile(config):  # no preset, no timm name, but a file: as vit-convert --config
                    return _named_config(_as_path(config))
                raise ValueError(f"config {config!r} is neither a preset ({preset_error}) nor a timm "
                                 f"model name ({timm_error}) nor an existing config file") from None
    if config is None or isinstance(config, ViTConfig):
        return config, None
    config_path = os.fspath(config)
    data = read_json(config_path, "config file")
    if families.timm.is_hub_config(data) or (isinstance(data, dict) and "model_cfg" in data):
        kind: Format = "timm-hub" if families.timm.is_hub_config(data) else "open_clip"
        parsed, pre = _hub_config(kind, config_path)
        return parsed, pre
    return config, None


def _as_path(text: str) -> os.PathLike:
    import pathlib

    return pathlib.Path(text)


def _hub_config(fmt: Format, path: str) -> tuple[ViTConfig, dict[str, Any] | None]:
    """A timm or open_clip folder's config (and preprocessing, and what was left aside)."""
    if fmt == "timm-hub":
        config_json = path if os.path.isfile(path) else os.path.join(path, "config.json")
        data = read_json(config_json, "config.json")
        try:
            fields = families.timm.hub_fields(data)
            pre = families.timm.hub_preprocessing(data)
            return ViTConfig(**fields), (dataclasses.asdict(Preprocessing(**pre)) if pre else None)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{config_json} (a timm hub config): {e}") from None
    config_json = path if os.path.isfile(path) else os.path.join(path, families.open_clip.CONFIG)
    data = read_json(config_json, families.open_clip.CONFIG)
    try:
        fields, pre = families.open_clip.config_fields(data)
        return ViTConfig(**fields), (dataclasses.asdict(Preprocessing(**pre)) if pre else None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{config_json}: {e}") from None


def load_checkpoint(path: str | os.PathLike, config: ConfigSource = None, *,
                    drop_pre_logits: bool = False) -> Checkpoint:
    """Any supported checkpoint -> canonical state dict + the config it needs.

    `config`: a ViTConfig (used as is); a preset name such as "B/16" (a str: it supplies the head
    count after checking that its sizes fit the weights); or a config file as a path object
    (`pathlib.Path`: its stated fields override what is read from the weights, so
    {"num_attention_heads": 4} is enough). An HF directory's own config.json is used otherwise.
    """
    path = os.fspath(path)
    fmt, weights = detect_format(path)
    config, hub_preprocessing = _named_config(config)
    notes: list[str] = []
    known: dict[str, Any] = {}
    origin: dict[str, str] = {}  # canonical key -> the file's name for it
    # an HF directory's config.json is read once, here, before the weights are placed
    config_json = os.path.join(path, "config.json")
    dir_config = (ViTConfig.from_hf(config_json) if fmt in ("hf", "hf-flax") and config is None
                  and os.path.lexists(config_json) else None)
    if fmt in ("timm-hub", "open_clip") and config is None:
        dir_config, hub_preprocessing = _hub_config(fmt, path)
        config_json = os.path.join(path, "config.json" if fmt == "timm-hub" else families.open_clip.CONFIG)
    given = config if isinstance(config, ViTConfig) else dir_config
    if fmt == "npz":
        npz = open_npz(read_npz(weights), weights, drop_pre_logits, notes)
        naming, described, known = npz.naming, npz.described, npz.switches
        switches = {k: v for k, v in known.items() if k in ViTConfig.SWITCH_NAMES}
        state, more, problems = from_naming(naming, npz.view, config=ViTConfig(**switches))
        unplaced = sorted(npz.unplaced + [npz.prefix + k for k in more])
    elif fmt in ("hf-flax", "msgpack"):
        tree = dict(unwrap_params(read_msgpack(weights)))
        dropped = [p for p in ("pooler", "vit/pooler") if _pop_path(tree, p)]
        flat = {"/".join(p): v for p, v in _flatten(tree, weights).items()}
        state, unplaced, problems = from_naming(FLAX, flat, origin, config=given)
        naming = FLAX
        _note_pooler(weights, [f"{p}/dense" for p in dropped], notes)
        described = "HF directory (Flax)" if fmt == "hf-flax" else "flax (.msgpack)"
    else:
        raw = _read_state_file(path, weights)
        carried = getattr(raw, "metadata", {}).get(CONFIG_METADATA) if config is None and given is None else None
        if carried is not None:  # a safetensors file we wrote: its config in the header
            try:
                given = ViTConfig.from_hf(json.loads(carried))
            except (ValueError, TypeError, RecursionError) as e:
                raise ValueError(f"{weights}: its {CONFIG_METADATA} metadata is not a config: {e}") from None
        if fmt == "open_clip" or families.open_clip.is_open_clip(raw):  # visual.*, the text tower aside
            if not any(k.startswith(families.open_clip.VISUAL) for k in raw):
                raise ValueError(f"{weights}: an open_clip checkpoint without a vision tower (no visual.* "
                                 f"tensors; {len(raw)} others)")
            raw = _vision_tower(raw, weights, notes, families.open_clip.VISUAL, ())
        raw = _vision_tower(raw, weights, notes)
        forced = {"timm-hub": detect_naming(raw, [families.timm.TIMM_NAFLEX, families.timm.TIMM]),
                  "open_clip": families.open_clip.OPEN_CLIP}.get(fmt)
        if given is not None and "patch_embed.proj.weight" in raw:  # timm names, of a class with its own
            if families.aimv2.is_timm_config(given):
                forced = families.aimv2.TIMM_AIMV2  # patch_embed.norm, fc1_g / fc1_x
            elif families.eva.is_eva_config(given):
                forced = families.eva.TIMM_EVA  # gamma_1, q_bias, rope.freqs
        stated = (given.extra.get("model_type") if given is not None else None)
        if forced is None and stated in families.HF_MODELS:  # the directory's own family first
            forced = detect_naming(raw, [families.HF_MODELS[stated].naming])
        found = forced or detect_naming(raw, families.state_namings())
        if found is None:
            sample = ", ".join(sorted(raw)[:4])
            raise ValueError(f"{weights}: unrecognised weight names; expected HF ViT names "
                             f"(embeddings.patch_embeddings.projection.weight, ...), timm names "
                             f"(patch_embed.proj.weight, blocks.0.attn.qkv.weight, ...), "
                             f"transformers-5 names (layers.0.attention.q_proj.weight, ...) or an HF "
                             f"family's ({', '.join(families.HF_MODELS)}), got {len(raw)} keys such as {sample}")
        naming = found
        pooler = [k for k in raw if k in tuple(p + k2 for p in POOLER_PREFIXES for k2 in POOLER_KEYS)]
        raw = {k: v for k, v in raw.items() if k not in pooler}
        _note_pooler(weights, pooler, notes)
        state, unplaced, problems = from_naming(naming, raw, origin, config=given)
        described = {"hf": "HF directory (torch)", "timm-hub": "timm hub folder",
                     "open_clip": "open_clip folder"}.get(fmt, f"{naming.name} ({os.path.splitext(weights)[1]})")
    if problems:  # misshapen tensors: reported before anything reads a size from them
        report_mismatch(weights, [], unplaced, problems)
    _check_dtypes(state, weights)
    # big-endian arrays (an npz may hold them) in native order: torch refuses the others
    state = {k: v if v.dtype.isnative else v.astype(v.dtype.newbyteorder("=")) for k, v in state.items()}
    with_head = has_classifier(state)
    what = weights
    if dir_config is not None:
        what = f"{weights} (with the model of {config_json})"
    elif config is not None and not isinstance(config, (ViTConfig, str)):
        what = f"{weights} (with the model of {os.fspath(config)})"
    if given is None:  # what the tensors say, then the source's
        source = {k: v for k, v in _source_defaults(naming.name).items() if k in ViTConfig.SWITCH_NAMES}
        known = {**source, **infer.switches_from_state(state, with_head, naming.name, origin), **known}
    resolved = given or _resolve_config(config, state, with_head, naming.name, known, weights)
    expected = {e.torch_key for e in expected_entries(resolved, with_head)}
    # an empty tensor holds nothing (HF DINOv3 keeps a (1, 0, hidden) register_tokens without registers)
    state = {k: v for k, v in state.items() if k in expected or v.size}
    if any(k not in expected for k in state):  # placed, but not in this model: say their names
        unplaced = sorted(unplaced + [origin.get(k, k) for k in state if k not in expected])
        state = {k: v for k, v in state.items() if k in expected}
    check_state_dict(state, resolved, with_head, what=what, unexpected=unplaced)
    bad = _non_finite(state)
    if bad:
        msg = (f"{weights}: {len(bad)} tensor(s) hold NaN or infinite values: {', '.join(bad[:8])}"
               f"{', ...' if len(bad) > 8 else ''}")
        warnings.warn(msg, stacklevel=2)
        notes.append(msg)
    # a hub folder's pretrained_cfg is the file's word: it wins over its definition's default tag
    preprocessing = hub_preprocessing or _preprocessing(path, naming.name)
    if hub_preprocessing is not None or (preprocessing is not None and "preprocessing" not in resolved.extra):
        resolved = resolved.replace(extra={**resolved.extra, "preprocessing": preprocessing})
    return Checkpoint(state, resolved, described, notes)


def _source_defaults(naming: str) -> dict[str, Any]:
    """What weights of this naming cannot say, from their family (the Flax twin's: HF ViT's)."""
    return dict(FLAX_DEFAULTS) if naming == FLAX.name else families.naming_defaults(naming)


def _vision_tower(raw: Mapping[str, Any], source: str, notes: list[str], prefix: str = VISION_TOWER,
                  kept: tuple[str, ...] = ("classifier.", "visual_projection.")) -> Mapping[str, Any]:
    """A two-tower checkpoint's vision tower: the tensors under `prefix` without it ("vision_model."
    of CLIP / SigLIP files, transformers 4.x and two-tower models; "visual." of open_clip's), plus
    those beside it that belong to it (`kept`: CLIP / SigLIP classifiers, CLIP's visual_projection);
    what is left aside (the text tower, its projection, the logit scale) is said in a note."""
    if not any(k.startswith(prefix) for k in raw):
        return raw
    head = {k: v for k, v in raw.items() if kept and k.startswith(kept)}
    aside = sorted(k for k in raw if not k.startswith(prefix) and k not in head)
    if aside:
        groups = sorted({k.split(".")[0] for k in aside})
        msg = (f"{source}: took the vision tower ({prefix}*); left aside {len(aside)} tensors "
               f"of {', '.join(groups)}")
        warnings.warn(msg, stacklevel=3)
        notes.append(msg)
    return {**{k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}, **head}


def _note_pooler(source: str, dropped: list[str], notes: list[str]) -> None:
    if dropped:
        msg = (f"{source}: dropped the HF pooler ({', '.join(dropped)}): twin-vit returns the "
               f"[CLS] token after the final LayerNorm, the pooler's input")
        warnings.warn(msg, stacklevel=3)
        notes.append(msg)


def _pop_path(tree: dict[str, Any], path: str) -> bool:
    *parents, last = path.split("/")
    node: Any = tree
    for p in parents:
        node = node.get(p) if isinstance(node, Mapping) else None
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    return False


def _flatten(tree: Mapping[str, Any], source: str) -> dict[tuple[str, ...], Any]:
    try:
        return flatten_params(tree)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def _read_state_file(path: str, weights: str) -> Mapping[str, Any]:
    """{name: array} of a safetensors file, a sharded HF directory or a torch pickle."""
    if weights.endswith(".index.json"):
        return _read_sharded(path, weights)
    if weights.endswith(".safetensors"):
        return read_safetensors(weights)
    obj = read_torch(weights)
    # training checkpoints wrap the weights: {"state_dict": ...}, {"model": ...}, {"params": ...}
    for key in ("state_dict", "model", "params"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{weights}: expected a state dict (a mapping of names to tensors), got "
                         f"{type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(k, str) or type(v).__module__.split(".")[0] not in ("torch", "numpy"):
            raise ValueError(f"{weights}: expected a state dict of named tensors, but {k!r} holds "
                             f"a {type(v).__name__}")
    return obj


def _read_sharded(directory: str, index_path: str) -> dict[str, Any]:
    index = read_json(index_path, "safetensors index")
    expect_type(index, dict, f"{index_path}")
    weight_map = expect_type(index.get("weight_map"), dict, f"{index_path}: weight_map")
    real_dir = os.path.realpath(directory)
    shards: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        expect_type(shard, str, f"{index_path}: weight_map[{key!r}]")
        if (os.path.basename(shard) != shard or shard in ("", ".", "..") or "\\" in shard
                or "\0" in shard
                or os.path.dirname(os.path.realpath(os.path.join(real_dir, shard))) != real_dir):
            raise ValueError(f"{index_path}: shard {shard!r} is not a file in {directory}; a shard "
                             f"index may only name files beside it")
        shards.setdefault(shard, []).append(key)
    state: dict[str, Any] = {}
    for shard, keys in sorted(shards.items()):
        try:
            tensors = read_safetensors(os.path.join(directory, shard))
        except ValueError as e:
            raise ValueError(f"{index_path}: shard {shard!r}: {e}") from None
        for key in keys:
            if key not in tensors:
                raise ValueError(f"{index_path}: {key!r} is mapped to {shard}, which does not hold it")
        for key in tensors:
            if key in state:
                raise ValueError(f"{index_path}: {key!r} is in more than one shard")
            if weight_map.get(key) != shard:
                raise ValueError(f"{index_path}: shard {shard} holds {key!r}, which the index maps "
                                 f"elsewhere")
            state[key] = tensors[key]
    return state


def _check_dtypes(state: Mapping[str, np.ndarray], source: str) -> None:
    bad = [f"{k} ({v.dtype})" for k, v in state.items() if np.dtype(v.dtype).name not in FLOAT_DTYPES]
    if bad:
        raise ValueError(f"{source}: weights must be floating point ({', '.join(FLOAT_DTYPES)}); "
                         f"refusing {', '.join(bad[:8])}{', ...' if len(bad) > 8 else ''}")


def _non_finite(state: Mapping[str, np.ndarray], chunk: int = 2**22) -> list[str]:
    bad = []
    for k, v in state.items():
        flat = np.asarray(v).reshape(-1)
        if not all(np.isfinite(flat[i:i + chunk]).all() for i in range(0, flat.size, chunk)):
            bad.append(k)
    return bad


# ---------------------------------------------------------------------------------------------
# config resolution

def _resolve_config(config: ConfigSource, state: Mapping[str, np.ndarray], with_head: bool,
                    naming: str, known: Mapping[str, Any], source: str) -> ViTConfig:
    if isinstance(config, ViTConfig):
        return config
    given: dict[str, Any] = {}  # fields a (possibly partial) config file states explicitly
    preset = None
    if isinstance(config, str):
        preset = ViTConfig.from_preset(config)
    elif config is not None:
        config_path = os.fspath(config)
        stated = read_json(config_path, "config file")
        expect_type(stated, dict, config_path)
        parsed = ViTConfig.from_hf(config_path)
        given = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(ViTConfig)
                 if f.name in stated or (f.name == "num_labels" and "id2label" in stated)}
        if "id2label" in stated:
            given["extra"] = parsed.extra
    unknown = []  # what the weights cannot say, reported together
    try:  # a non-square grid cannot be read from a token count; a stated image_size settles it
        shapes = infer.infer_config(state, with_head, square="image_size" not in given, switches=known)
    except infer.NonSquareGrid as e:
        unknown.append(f"image_size ({e.reason})")
        shapes = infer.infer_config(state, with_head, square=False, switches=known)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    fields = {f.name: getattr(shapes, f.name) for f in dataclasses.fields(ViTConfig)
              if f.name not in ("extra", "num_attention_heads")}
    fields.update(_source_defaults(naming))
    fields.update(known)
    fields.update(given)
    if preset is not None:  # a preset's head count, after checking it fits the weights
        clash = [f"{n} {getattr(preset, n)} vs {fields[n]}" for n in
                 ("hidden_size", "num_hidden_layers", "intermediate_size", "patch_size")
                 if getattr(preset, n) != fields[n]]
        if clash:
            raise ValueError(f"{source}: preset {config!r} does not fit these weights "
                             f"(preset vs weights: {'; '.join(clash)})")
        fields["num_attention_heads"] = preset.num_attention_heads
    hint = ""
    if "num_attention_heads" not in fields:
        unknown.append("num_attention_heads (it changes no tensor shape)")
        match = _matching_preset(fields)
        if match:
            hint = (f"; these sizes match preset {match!r} "
                    f"({ViTConfig.from_preset(match).num_attention_heads} heads): config={match!r}")
    if unknown:
        raise ValueError(
            f"{source}: cannot read from {naming} weights: {'; '.join(unknown)}. Pass config= a "
            f"ViTConfig, a preset name or a config file path (pathlib.Path; a partial config.json "
            f"such as {{\"num_attention_heads\": 12}} will do; vit-convert --config){hint}")
    try:
        return ViTConfig(**fields)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def _matching_preset(fields: Mapping[str, Any]) -> str | None:
    for name in MODEL_PRESETS:
        p = ViTConfig.from_preset(name)
        if all(getattr(p, n) == fields[n] for n in
               ("hidden_size", "num_hidden_layers", "intermediate_size", "patch_size")):
            return name
    return None


def _preprocessing(path: str, naming: str) -> dict[str, Any] | None:
    """How the checkpoint's pixels should be prepared: an HF directory's preprocessor_config.json,
    else Google's convention for npz (mean = std = 0.5); None when the source does not say."""
    pre = os.path.join(path, "preprocessor_config.json") if os.path.isdir(path) else ""
    family = families.family_of_naming(naming)
    if pre and os.path.lexists(pre):
        settings = Preprocessing.from_hf_file(pre)
    elif family is not None and family.file_preset is not None:
        settings = PIPELINES[family.file_preset]
    else:
        return None
    return dataclasses.asdict(settings)
