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
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import numpy as np

from vit_common import convert
from vit_common.config import (
    HF_CLASSIFIERS,
    HF_FAMILIES,
    MODEL_PRESETS,
    SWITCHES,
    TWO_TOWERS,
    ViTConfig,
)
from vit_common.convert import (
    BIG_VISION,
    FLAX,
    NPZ,
    TIMM,
    Naming,
    check_state_dict,
    from_naming,
    has_classifier,
    to_naming,
)
from vit_common.fileio import (
    atomic_directory,
    atomic_write_text,
    expect_type,
    read_json,
)
from vit_common.formats import FLOAT_DTYPES
from vit_common.formats.msgpack_codec import read_msgpack, write_msgpack
from vit_common.formats.npz_codec import read_npz, write_npz
from vit_common.formats.safetensors_codec import read_safetensors, write_safetensors
from vit_common.formats.torch_codec import read_torch, write_torch

Format = Literal["hf", "hf-flax", "safetensors", "torch", "msgpack", "npz"]
Progress = Callable[[int], Any]  # called with the number of bytes just written

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
              "flax_model.msgpack")
POOLER_KEYS = ("pooler.dense.weight", "pooler.dense.bias")
POOLER_PREFIXES = ("", "vit.", "deit.")
# the HF backbone class of each family (its classifiers: vit_common.config.HF_CLASSIFIERS)
HF_BACKBONES: dict[str, str] = {
    "vit": "ViTModel", "deit": "DeiTModel", "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel", "clip_vision_model": "CLIPVisionModel",
    "siglip_vision_model": "SiglipVisionModel"}
STATE_NAMINGS = ("timm", "transformers-5", "hf-deit", "hf-dinov2-registers", "hf-dinov2", "hf-clip",
                 "hf-siglip", "hf")
NPZ_PREFIXES = ("", "opt/target/", "params/", "params/img/")
# Each source's real model, for what weights cannot say.
SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "hf": {"hidden_act": "gelu", "layer_norm_eps": 1e-12},
    "transformers-5": {"hidden_act": "gelu", "layer_norm_eps": 1e-12},
    "flax": {"hidden_act": "gelu", "layer_norm_eps": 1e-12},
    # timm resamples position tables with antialiasing (dynamic_img_size, resample_abs_pos_embed)
    "timm": {"hidden_act": "gelu", "layer_norm_eps": 1e-6, "position_embedding_resampling": "bicubic_antialias"},
    "npz": {"hidden_act": "gelu_new", "layer_norm_eps": 1e-6},  # flax's tanh GELU, flax's eps
    "big_vision": {"hidden_act": "gelu_new", "layer_norm_eps": 1e-6},
}
# HF family files without their config.json: the family's own switches and defaults
_NAMING_FAMILIES = {"hf-deit": "deit", "hf-dinov2": "dinov2", "hf-dinov2-registers": "dinov2_with_registers",
                    "hf-clip": "clip_vision_model", "hf-siglip": "siglip_vision_model"}
for _naming, _family in _NAMING_FAMILIES.items():
    _defaults = HF_FAMILIES[_family].hf_defaults
    SOURCE_DEFAULTS[_naming] = {"hidden_act": _defaults.get("hidden_act", "gelu"),
                                "layer_norm_eps": _defaults.get("layer_norm_eps", 1e-12),
                                **HF_FAMILIES[_family].switches}


class UnsupportedCheckpoint(ValueError):
    """A checkpoint that holds a model this ViT cannot represent (and says why)."""


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
    notes: list[str] = []
    known: dict[str, Any] = {}
    origin: dict[str, str] = {}  # canonical key -> the file's name for it
    if fmt == "npz":
        state, unplaced, problems, naming, described, known = _read_npz(weights, drop_pre_logits, notes)
    elif fmt in ("hf-flax", "msgpack"):
        tree = dict(convert.unwrap_params(read_msgpack(weights)))
        dropped = [p for p in ("pooler", "vit/pooler") if _pop_path(tree, p)]
        flat = {"/".join(p): v for p, v in _flatten(tree, weights).items()}
        state, unplaced, problems = from_naming(FLAX, flat, origin)
        naming = FLAX
        _note_pooler(weights, [f"{p}/dense" for p in dropped], notes)
        described = "HF directory (Flax)" if fmt == "hf-flax" else "flax (.msgpack)"
    else:
        raw = _read_state_file(path, weights)
        raw = _vision_tower(raw, weights, notes)
        naming = convert.detect_naming(raw, STATE_NAMINGS)
        if naming is None:
            sample = ", ".join(sorted(raw)[:4])
            raise ValueError(f"{weights}: unrecognised weight names; expected HF ViT names "
                             f"(embeddings.patch_embeddings.projection.weight, ...), timm names "
                             f"(patch_embed.proj.weight, blocks.0.attn.qkv.weight, ...) or "
                             f"transformers-5 names (layers.0.attention.q_proj.weight, ...), got "
                             f"{len(raw)} keys such as {sample}")
        pooler = [k for k in raw if k in tuple(p + k2 for p in POOLER_PREFIXES for k2 in POOLER_KEYS)]
        raw = {k: v for k, v in raw.items() if k not in pooler}
        _note_pooler(weights, pooler, notes)
        known_config = _given_config(path, fmt, config)
        state, unplaced, problems = from_naming(naming, raw, origin, config=known_config)
        described = ("HF directory (torch)" if fmt == "hf"
                     else f"{naming.name} ({os.path.splitext(weights)[1]})")
    if problems:  # misshapen tensors: reported before anything reads a size from them
        convert.report_mismatch(weights, [], unplaced, problems)
    _check_dtypes(state, weights)
    # big-endian arrays (an npz may hold them) in native order: torch refuses the others
    state = {k: v if v.dtype.isnative else v.astype(v.dtype.newbyteorder("=")) for k, v in state.items()}
    with_head = has_classifier(state)
    hf_config, what = None, weights
    if fmt in ("hf", "hf-flax") and config is None and os.path.lexists(os.path.join(path, "config.json")):
        hf_config = ViTConfig.from_hf(os.path.join(path, "config.json"))
        what = f"{weights} (with the model of {os.path.join(path, 'config.json')})"
    elif config is not None and not isinstance(config, (ViTConfig, str)):
        what = f"{weights} (with the model of {os.fspath(config)})"
    if hf_config is None and not isinstance(config, ViTConfig):  # what the tensors say, then the source's
        known = {**{k: v for k, v in SOURCE_DEFAULTS.get(naming.name, {}).items() if k in SWITCHES},
                 **convert.switches_from_state(state, with_head, origin), **known}
    resolved = hf_config or _resolve_config(config, state, with_head, naming.name, known, weights)
    expected = {e.torch_key for e in convert.expected_entries(resolved, with_head)}
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
    preprocessing = _preprocessing(path, naming.name)
    if preprocessing is not None and "preprocessing" not in resolved.extra:
        resolved = resolved.replace(extra={**resolved.extra, "preprocessing": preprocessing})
    return Checkpoint(state, resolved, described, notes)


def _given_config(path: str, fmt: str, config: ConfigSource) -> ViTConfig | None:
    """The config known before the weights are placed: a ViTConfig given, or an HF directory's."""
    if isinstance(config, ViTConfig):
        return config
    if fmt == "hf" and config is None and os.path.lexists(os.path.join(path, "config.json")):
        return ViTConfig.from_hf(os.path.join(path, "config.json"))
    return None


def _vision_tower(raw: Mapping[str, Any], source: str, notes: list[str]) -> Mapping[str, Any]:
    """CLIP / SigLIP checkpoints with a "vision_model." prefix (transformers 4.x, two-tower models):
    the vision tower's tensors without it; what is left aside (the text tower, projections,
    logit scale) is said in a note."""
    prefix = "vision_model."
    if not any(k.startswith(prefix) for k in raw):
        return raw
    head = {k: v for k, v in raw.items() if k.startswith("classifier.")}  # CLIP / SigLIP classifiers
    aside = sorted(k for k in raw if not k.startswith(prefix) and k not in head)
    if aside:
        groups = sorted({k.split(".")[0] for k in aside})
        msg = (f"{source}: took the vision tower (vision_model.*); left aside {len(aside)} tensors "
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
        return convert.flatten_params(tree)
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
# Google npz

class _Prefixed(Mapping):
    """The arrays under `prefix`, names without it; scanned blocks ("encoderblock", a leading
    layer axis) shown as per-layer "encoderblock_{i}" views."""

    def __init__(self, arrays: Any, prefix: str, source: str) -> None:
        self.arrays, self.prefix = arrays, prefix
        self.names: dict[str, tuple[str, int | None]] = {}
        scanned = prefix + "Transformer/encoderblock/"
        layers = None
        for name in arrays:
            if not name.startswith(prefix):
                continue
            if name.startswith(scanned):
                shape = _shape(arrays, name)
                if len(shape) < 1 or (layers is not None and shape[0] != layers):
                    raise ValueError(f"{source}: scanned block array {name!r} has shape {shape}; "
                                     f"expected a leading layer axis of {layers or 'the same'} length")
                layers = shape[0]
                if layers > convert.MAX_LAYERS:
                    raise ValueError(f"{source}: {layers} scanned layers, over the limit of "
                                     f"{convert.MAX_LAYERS}")
                rest = name[len(scanned):]
                for i in range(layers):
                    self.names[f"Transformer/encoderblock_{i}/{rest}"] = (name, i)
            else:
                self.names[name[len(prefix):]] = (name, None)
        self.scanned = layers is not None

    def __getitem__(self, key: str) -> np.ndarray:
        name, i = self.names[key]
        arr = self.arrays[name]
        return arr if i is None else arr[i]

    def shape(self, key: str) -> tuple[int, ...]:
        name, i = self.names[key]
        s = _shape(self.arrays, name)
        return s if i is None else s[1:]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, key: object) -> bool:
        return key in self.names


def _shape(arrays: Any, name: str) -> tuple[int, ...]:
    shapes = getattr(arrays, "shapes", None)
    return tuple(shapes[name]) if shapes is not None else tuple(np.shape(arrays[name]))


def _read_npz(weights: str, drop_pre_logits: bool, notes: list[str]
              ) -> tuple[dict[str, np.ndarray], list[str], list[str], Naming, str, dict[str, Any]]:
    archive = read_npz(weights)
    prefix = next((p for p in NPZ_PREFIXES if f"{p}embedding/kernel" in archive), None)
    if prefix is None:
        raise ValueError(f"{weights}: not a ViT npz checkpoint (no 'embedding/kernel' under any of "
                         f"the prefixes {NPZ_PREFIXES})")
    arrays = _Prefixed(archive, prefix, weights)
    unplaced = [k for k in archive if not k.startswith(prefix)]
    naming = next((n for n in (NPZ, BIG_VISION) if n.markers[1] in arrays), None)
    if naming is None:
        raise ValueError(f"{weights}: no attention block in Transformer/encoderblock_0 (expected "
                         f"MultiHeadDotProductAttention_1 or _0 with a query kernel)")
    q_shape = arrays.shape(naming.markers[1])  # (hidden, heads, head_dim)
    if len(q_shape) != 3 or q_shape[1] < 1:
        raise ValueError(f"{weights}: {naming.markers[1]} should be (hidden, heads, head_dim), got "
                         f"shape {q_shape}")
    view: Mapping[str, Any] = arrays
    if "pre_logits/kernel" in arrays:
        if not drop_pre_logits:
            raise UnsupportedCheckpoint(
                f"{weights}: has a pre_logits representation layer (dense + tanh between [CLS] and "
                f"the head, as in the ImageNet-21k checkpoints), which this ViT does not have. Load "
                f"the backbone without it and without the head: drop_pre_logits=True (vit-convert "
                f"--drop-pre-logits)")
        view = {k: arrays[k] for k in arrays if not k.startswith(("pre_logits/", "head/"))}
        notes.append("dropped the pre_logits layer and the head above it (drop_pre_logits)")
    # big_vision's switches, read from which arrays exist: pool_type 'tok' has a cls token, 'map'
    # a MAPHead, 'gap' neither; posemb 'learn' stores pos_embedding, 'sincos2d' stores nothing
    switches: dict[str, Any] = {
        "class_token": "cls" in arrays,
        "pooling": "map" if "MAPHead_0/probe" in arrays else ("cls" if "cls" in arrays else "gap"),
        "position_embedding_type": "learned" if "pos_embedding" in arrays or naming is NPZ else "sincos2d"}
    if naming is NPZ and not switches["class_token"]:
        raise UnsupportedCheckpoint(f"{weights}: a vision_transformer npz without its 'cls' token")
    if switches["position_embedding_type"] == "sincos2d":
        notes.append(f"{weights}: no pos_embedding: read as big_vision's fixed sincos2d table")
    state, more, problems = from_naming(naming, view, config=ViTConfig(**switches))
    described = f"npz ({'vit' if naming is NPZ else 'big_vision'}{', scanned' if arrays.scanned else ''})"
    return state, sorted(unplaced + [prefix + k for k in more]), problems, naming, described, \
        {"num_attention_heads": int(q_shape[1]), **switches}


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
        shapes = convert.infer_config(state, with_head, square="image_size" not in given, switches=known)
    except convert.NonSquareGrid as e:
        unknown.append(f"image_size ({e.reason})")
        shapes = convert.infer_config(state, with_head, square=False, switches=known)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    fields = {f.name: getattr(shapes, f.name) for f in dataclasses.fields(ViTConfig)
              if f.name not in ("extra", "num_attention_heads")}
    fields.update(SOURCE_DEFAULTS[naming])
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
    from vit_common.preprocessing import NORMALISATIONS, Preprocessing

    pre = os.path.join(path, "preprocessor_config.json") if os.path.isdir(path) else ""
    if pre and os.path.lexists(pre):
        settings = Preprocessing.from_hf_file(pre)
    elif naming in ("npz", "big_vision"):
        settings = NORMALISATIONS["inception"]
    else:
        return None
    return dataclasses.asdict(settings)


# ---------------------------------------------------------------------------------------------
# writing


def hf_config_dict(config: ViTConfig, with_head: bool) -> dict[str, Any]:
    """The config.json of the family's HF class: its backbone, or the classifier whose head reads
    what this one reads (CLIP's and SigLIP's classifiers take their two-tower config)."""
    data = config.to_hf()
    model_type = data["model_type"]
    if not with_head:
        data["architectures"] = [HF_BACKBONES[model_type]]
        return data
    data["architectures"] = [hf_classifier(config, model_type)]
    tower = next((t for t, v in TWO_TOWERS.items() if v == model_type), None)
    if tower is None:
        return data
    top = {k: data.pop(k) for k in ("architectures", "id2label", "label2id", "preprocessing") if k in data}
    return {"model_type": tower, "vision_config": data, **top}


def hf_classifier(config: ViTConfig, model_type: str) -> str:
    """The HF class of a classifier of this family whose head reads config.classifier_input."""
    cls = HF_CLASSIFIERS.get((model_type, config.classifier_input))
    if cls is None:
        have = [f"{head} ({name})" for (family, head), name in HF_CLASSIFIERS.items() if family == model_type]
        raise ValueError(f"HF {model_type!r} has no classifier reading classifier_input="
                         f"{config.classifier_input!r} (its heads: {', '.join(have) or 'none'}); write "
                         f"the backbone, or timm / Flax weights")
    return cls


def hf_layout(state: Mapping[str, np.ndarray], config: ViTConfig
              ) -> tuple[dict[str, np.ndarray], ViTConfig, Naming]:
    """A canonical state as its HF family holds it: (their tensors, the family's config, naming)."""
    target = convert.hf_form(config)
    model_type = target.extra["model_type"]
    if has_classifier(state):
        hf_classifier(config, model_type)
    state = convert.relayout(state, config, target)
    naming = convert.HF_FAMILY_NAMINGS[model_type]
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
    import json

    from vit_common.preprocessing import Preprocessing

    if framework not in ("torch", "flax"):
        raise ValueError(f"framework must be 'torch' or 'flax', got {framework!r}")
    check_state_dict(state, config, has_classifier(state), "save_hf")
    with_head = has_classifier(state)
    theirs, config, _ = hf_layout(state, config)
    if framework == "flax" and config.extra["model_type"] != "vit":
        raise ValueError(f"HF has Flax models for ViT only, not {config.extra['model_type']!r}; write "
                         f"the torch directory or our Flax .msgpack")

    def fill(tmp: str) -> None:
        data = hf_config_dict(config, with_head)
        carried = data.pop("preprocessing", None)  # goes to its own file, as in HF
        atomic_write_text(os.path.join(tmp, "config.json"),
                          json.dumps(data, indent=2, sort_keys=True) + "\n")
        if carried is not None:
            pre = Preprocessing(**carried).to_hf(config)
            atomic_write_text(os.path.join(tmp, "preprocessor_config.json"),
                              json.dumps(pre, indent=2, sort_keys=True) + "\n")
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
            write_msgpack(os.path.join(tmp, "flax_model.msgpack"),
                          convert.torch_to_flax(state, config), progress=progress)

    atomic_directory(directory, fill, overwrite=overwrite)


def save_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                    naming: Literal["hf", "timm"] = "hf", config: ViTConfig | None = None,
                    overwrite: bool = False, progress: Progress | None = None) -> None:
    """A bare state dict, .safetensors (preferred) or .pt/.pth/.bin, in HF (the family's) or timm
    naming."""
    if naming == "timm":
        state = timm_state(state, config)
    elif naming == "hf":
        if config is not None:
            state = hf_layout(state, config)[0]
    else:
        raise ValueError(f"naming must be 'hf' or 'timm', got {naming!r}")
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".safetensors":
        write_safetensors(path, state, metadata={"format": "pt"}, overwrite=overwrite, progress=progress)
    elif suffix in TORCH_SUFFIXES:
        write_torch(path, state, overwrite=overwrite)
    else:
        raise ValueError(f"{path}: a state dict is written as .safetensors or "
                         f"{'/'.join(TORCH_SUFFIXES)}, not {suffix or '(no suffix)'}")


def save_msgpack(state: Mapping[str, np.ndarray], config: ViTConfig, path: str | os.PathLike, *,
                 overwrite: bool = False, progress: Progress | None = None) -> None:
    """A bare Flax params tree (.msgpack), as flax.serialization.to_bytes writes it."""
    write_msgpack(path, convert.torch_to_flax(state, config), overwrite=overwrite, progress=progress)


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
    target = npz_form(config)
    if target is config:  # classic ViT: vision_transformer's own layout
        return to_naming(NPZ, state, config)
    wrong = [f"{k}={getattr(config, k)!r}" for k in ("distillation_token", "num_register_tokens",
                                                     "pre_norm", "layer_scale", "qk_norm", "mask_token")
             if getattr(config, k) != ViTConfig.__dataclass_fields__[k].default]
    if wrong or config.mlp_type != "mlp" or config.final_norm != "tokens" or not config.patch_bias:
        raise ValueError(f"big_vision's ViT cannot express {', '.join(wrong) or 'this model'} "
                         f"(final_norm={config.final_norm!r}, mlp_type={config.mlp_type!r}, "
                         f"patch_bias={config.patch_bias})")
    return to_naming(BIG_VISION, convert.relayout(state, config, target), target)


def npz_form(config: ViTConfig) -> ViTConfig:
    """The config as save_npz writes it: classic ViT as it is (vision_transformer's layout), the
    rest in big_vision's (no position slot for [CLS])."""
    if _hf_family(config) == "vit":
        return config
    return config.replace(position_embedding_covers_prefix=False)


def _hf_family(config: ViTConfig) -> str | None:
    try:
        return convert.hf_form(config).extra["model_type"]
    except ValueError:
        return None


def npz_arrays(state: Mapping[str, np.ndarray], config: ViTConfig) -> dict[str, np.ndarray]:
    """Canonical -> npz names and layouts (vision_transformer's, else big_vision's), in memory."""
    return {name: make() for name, make in _npz_items(state, config)}


def timm_state(state: Mapping[str, np.ndarray], config: ViTConfig | None = None) -> dict[str, np.ndarray]:
    """Canonical -> timm names and layout (registers without position slots, no mask token), in
    memory."""
    cfg = config or convert.infer_config(state, square=False)
    _plain_head(state, cfg, "timm")
    target = convert.timm_form(cfg)
    return {k: make() for k, make in to_naming(TIMM, convert.relayout(state, cfg, target), target)}
