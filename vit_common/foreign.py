"""Foreign weight naming: timm and Google (.npz) onto the canonical (HF torch) names, both ways.

The canonical state dict is what `vit_torch` models hold: HF ViT keys, numpy arrays, with the
backbone under "vit." when a classifier is present. Every foreign format is a table onto those names
(never a second model); shape and completeness checks then happen once, in vit_common.convert.

timm `VisionTransformer` (class token, learned position embeddings, token pooling):
    cls_token, pos_embed, patch_embed.proj, blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
    mlp.fc2}, norm, head. `attn.qkv` is query, key and value stacked along the output dimension.
Google's npz (google-research/vision_transformer; `opt/target/` in older files) and big_vision
(`params/` or `params/img/`; blocks numbered differently, position embeddings without the [CLS]
slot, optionally one stacked "scanned" block):
    embedding, cls, Transformer/posembed_input/pos_embedding, Transformer/encoderblock_N/
    {LayerNorm_0, MultiHeadDotProductAttention_1/{query,key,value,out}, LayerNorm_2,
    MlpBlock_3/Dense_0, Dense_1}, Transformer/encoder_norm, head, pre_logits.
    Attention kernels are (hidden, heads, head_dim) for query/key/value and (heads, head_dim,
    hidden) for out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vit_common.config import ViTConfig
from vit_common.convert import BACKBONE_PREFIX, c_order

# ---------------------------------------------------------------------------------------------
# helpers shared by both tables


def split_head(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Canonical state -> (backbone without "vit.", classifier {"weight", "bias"} or {})."""
    if any(k.startswith("classifier.") for k in state):
        backbone = {k[len(BACKBONE_PREFIX):]: v for k, v in state.items()
                    if k.startswith(BACKBONE_PREFIX)}
        head = {k[len("classifier."):]: v for k, v in state.items() if k.startswith("classifier.")}
        return backbone, head
    return dict(state), {}


def join_head(backbone: Mapping[str, Any], head: Mapping[str, Any]) -> dict[str, Any]:
    if not head:
        return dict(backbone)
    state = {BACKBONE_PREFIX + k: v for k, v in backbone.items()}
    state.update({f"classifier.{k}": v for k, v in head.items()})
    return state


def _num_layers(keys: list[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


# ---------------------------------------------------------------------------------------------
# timm

# canonical module (under encoder.layer.N.) -> timm module (under blocks.N.); weight/bias kept
TIMM_LAYER = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
TIMM_QKV = ("query", "key", "value")  # stacked in this order in blocks.N.attn.qkv
TIMM_GLOBAL = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
TIMM_HEAD = "head"
TIMM_MARKERS = ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight")


def is_timm(keys: Any) -> bool:
    return all(m in keys for m in TIMM_MARKERS)


def to_timm(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical -> timm names (query/key/value stacked into qkv)."""
    backbone, head = split_head(state)
    out = {timm: backbone[ours] for ours, timm in TIMM_GLOBAL.items() if ours in backbone}
    for i in range(_num_layers(list(backbone), r"encoder\.layer\.(\d+)\.")):
        ours, theirs = f"encoder.layer.{i}.", f"blocks.{i}."
        for module, timm_module in TIMM_LAYER.items():
            for leaf in ("weight", "bias"):
                if f"{ours}{module}.{leaf}" in backbone:
                    out[f"{theirs}{timm_module}.{leaf}"] = backbone[f"{ours}{module}.{leaf}"]
        for leaf in ("weight", "bias"):
            parts = [backbone.get(f"{ours}attention.attention.{n}.{leaf}") for n in TIMM_QKV]
            if all(p is not None for p in parts):
                out[f"{theirs}attn.qkv.{leaf}"] = np.concatenate(parts, axis=0)
    out.update({f"{TIMM_HEAD}.{leaf}": v for leaf, v in head.items()})
    return out


def from_timm(state: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], list[str]]:
    """timm names -> (canonical state, timm keys no rule places)."""
    from vit_common.convert import to_numpy

    backbone: dict[str, np.ndarray] = {}
    head: dict[str, np.ndarray] = {}
    unplaced = []
    global_back = {v: k for k, v in TIMM_GLOBAL.items()}
    layer_back = {v: k for k, v in TIMM_LAYER.items()}
    for key, value in state.items():
        value = to_numpy(value)
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", key)
        if key in global_back:
            backbone[global_back[key]] = value
        elif key in (f"{TIMM_HEAD}.weight", f"{TIMM_HEAD}.bias"):
            head[key.split(".")[-1]] = value
        elif m and m.group(2) in layer_back:
            backbone[f"encoder.layer.{m.group(1)}.{layer_back[m.group(2)]}.{m.group(3)}"] = value
        elif m and m.group(2) == "attn.qkv" and value.shape[0] % 3 == 0:
            for name, part in zip(TIMM_QKV, np.split(value, 3, axis=0)):
                backbone[f"encoder.layer.{m.group(1)}.attention.attention.{name}.{m.group(3)}"] = part
        else:
            unplaced.append(key)
    return join_head(backbone, head), unplaced


# ---------------------------------------------------------------------------------------------
# transformers 5 in-memory names: its modules were renamed (checkpoints on disk keep the canonical
# names, and save_pretrained writes those), but torch.save(model.state_dict()) records these.

# canonical module (under encoder.layer.N.) -> transformers 5 module (under layers.N.)
HF5_LAYER = {
    "attention.attention.query": "attention.q_proj",
    "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "layernorm_before": "layernorm_before",
    "layernorm_after": "layernorm_after",
}
HF5_MARKER = "layers.0.attention.q_proj.weight"


def is_hf5(keys: Any) -> bool:
    return HF5_MARKER in keys or "vit." + HF5_MARKER in keys


def from_hf5(state: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """transformers 5 in-memory names -> (canonical names, keys no rule places)."""
    back = {v: k for k, v in HF5_LAYER.items()}
    out: dict[str, Any] = {}
    unplaced = []
    for key, value in state.items():
        m = re.fullmatch(r"(vit\.)?layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if m is None:
            out[key] = value  # embeddings, layernorm, pooler and classifier kept their names
        elif m.group(3) in back:
            out[f"{m.group(1) or ''}encoder.layer.{m.group(2)}.{back[m.group(3)]}.{m.group(4)}"] = value
        else:
            unplaced.append(key)
    return out, unplaced


# ---------------------------------------------------------------------------------------------
# Google npz

NPZ_LAYOUTS = {
    # layout: (attention block, pre-MLP LayerNorm, MLP block) names inside an encoder block
    "vit": ("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    "big_vision": ("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
}
NPZ_PREFIXES = ("", "opt/target/", "params/", "params/img/")


def npz_prefix(keys: Any) -> str | None:
    for prefix in NPZ_PREFIXES:
        if f"{prefix}embedding/kernel" in keys:
            return prefix
    return None


def _npz_rules(layout: str) -> list[tuple[str, str, Any, Any]]:
    """(canonical key, npz name, canonical->npz given the config, npz->canonical) for the encoder
    block "{i}". Only writing needs the head count; reading takes it from the kernel shapes.
    Splitting a transposed matrix into heads would make a strided array that .npy can only write
    element by element, so those kernels are put in C order first (a cache-blocked copy)."""
    mha, ln2, mlp = NPZ_LAYOUTS[layout]
    block = "Transformer/encoderblock_{i}/"
    L = "encoder.layer.{i}."
    same = (lambda a, c: a, lambda a: a)
    dense = (lambda w, c: w.T, lambda k: k.T)  # Linear (out, in) <-> Dense (in, out)
    rules = [
        (L + "layernorm_before.weight", block + "LayerNorm_0/scale", *same),
        (L + "layernorm_before.bias", block + "LayerNorm_0/bias", *same),
        (L + "layernorm_after.weight", block + ln2 + "/scale", *same),
        (L + "layernorm_after.bias", block + ln2 + "/bias", *same),
        (L + "intermediate.dense.weight", block + mlp + "/Dense_0/kernel", *dense),
        (L + "intermediate.dense.bias", block + mlp + "/Dense_0/bias", *same),
        (L + "output.dense.weight", block + mlp + "/Dense_1/kernel", *dense),
        (L + "output.dense.bias", block + mlp + "/Dense_1/bias", *same),
        # out: (heads, head_dim, hidden) kernel <-> (hidden, hidden) Linear weight
        (L + "attention.output.dense.weight", block + mha + "/out/kernel",
         lambda w, c: c_order(w.T).reshape(c.num_attention_heads, c.head_dim, c.hidden_size),
         lambda k: k.reshape(-1, k.shape[-1]).T),
        (L + "attention.output.dense.bias", block + mha + "/out/bias", *same),
    ]
    for n in ("query", "key", "value"):
        rules += [
            # (hidden, heads, head_dim) kernel <-> (hidden, hidden) Linear weight
            (L + f"attention.attention.{n}.weight", block + f"{mha}/{n}/kernel",
             lambda w, c: c_order(w.T).reshape(c.hidden_size, c.num_attention_heads, c.head_dim),
             lambda k: k.reshape(k.shape[0], -1).T),
            (L + f"attention.attention.{n}.bias", block + f"{mha}/{n}/bias",
             lambda b, c: b.reshape(c.num_attention_heads, c.head_dim), lambda b: b.reshape(-1)),
        ]
    return rules


def _same(a: np.ndarray) -> np.ndarray:
    return a


NPZ_GLOBAL = [
    # (canonical key, npz name, canonical->npz, npz->canonical)
    ("embeddings.patch_embeddings.projection.weight", "embedding/kernel",
     lambda w: w.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1)),  # (O,I,kh,kw)<->(kh,kw,I,O)
    ("embeddings.patch_embeddings.projection.bias", "embedding/bias", _same, _same),
    ("embeddings.cls_token", "cls", _same, _same),
    ("embeddings.position_embeddings", "Transformer/posembed_input/pos_embedding", _same, _same),
    ("layernorm.weight", "Transformer/encoder_norm/scale", _same, _same),
    ("layernorm.bias", "Transformer/encoder_norm/bias", _same, _same),
]
NPZ_HEAD = [("weight", "head/kernel", lambda w: w.T, lambda k: k.T),
            ("bias", "head/bias", _same, _same)]


def npz_defaults() -> dict[str, Any]:
    # Google trained these with flax's tanh GELU and flax's LayerNorm eps.
    return {"hidden_act": "gelu_new", "layer_norm_eps": 1e-6}


def npz_entries(state: Mapping[str, np.ndarray], config: ViTConfig
                ) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """Canonical -> google-research/vision_transformer npz names, each with a function that makes
    its array: a writer can build the next array while it writes this one."""
    backbone, head = split_head(state)
    out = [(npz, functools.partial(fwd, backbone[ours])) for ours, npz, fwd, _ in NPZ_GLOBAL]
    for i in range(config.num_hidden_layers):
        for ours, npz, fwd, _ in _npz_rules("vit"):
            if ours.format(i=i) in backbone:
                out.append((npz.format(i=i), functools.partial(fwd, backbone[ours.format(i=i)], config)))
    for leaf, npz, fwd, _ in NPZ_HEAD:
        if leaf in head:
            out.append((npz, functools.partial(fwd, head[leaf])))
    return out


def to_npz(state: Mapping[str, np.ndarray], config: ViTConfig) -> dict[str, np.ndarray]:
    """Canonical -> google-research/vision_transformer npz names and layouts."""
    return {name: make() for name, make in npz_entries(state, config)}


class UnsupportedCheckpoint(ValueError):
    """A checkpoint that holds a model this ViT cannot represent (and says why)."""


def read_npz_config(arrays: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Architecture fields readable from a Google npz: heads come from the kernel shapes."""
    prefix = npz_prefix(arrays)
    if prefix is None:
        raise ValueError(f"{source}: not a ViT npz checkpoint (no 'embedding/kernel' under any of "
                         f"the prefixes {NPZ_PREFIXES})")
    layout, scanned = npz_layout(arrays)
    block = f"{prefix}Transformer/encoderblock{'' if scanned else '_0'}/"
    mha, _, mlp = NPZ_LAYOUTS[layout]
    q = np.shape(arrays[f"{block}{mha}/query/kernel"])[-3:]  # (hidden, heads, head_dim)
    kernel = np.shape(arrays[f"{prefix}embedding/kernel"])  # (p, p, C, hidden)
    return {"num_attention_heads": int(q[1]), "patch_size": int(kernel[0]),
            "num_channels": int(kernel[2]), "hidden_size": int(kernel[3]),
            "qkv_bias": f"{block}{mha}/query/bias" in arrays}


def npz_layout(arrays: Mapping[str, Any]) -> tuple[str, bool]:
    """("vit" or "big_vision", whether the blocks are stacked into one scanned block)."""
    prefix = npz_prefix(arrays) or ""
    scanned = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in arrays
    block = f"{prefix}Transformer/encoderblock{'' if scanned else '_0'}/"
    for layout, (mha, _, _) in NPZ_LAYOUTS.items():
        if f"{block}{mha}/query/kernel" in arrays:
            return layout, scanned
    raise ValueError(f"npz: no attention block under {block} (expected "
                     f"{' or '.join(m for m, _, _ in NPZ_LAYOUTS.values())})")


def from_npz(arrays: Mapping[str, Any], source: str, *,
             drop_pre_logits: bool = False) -> tuple[dict[str, np.ndarray], list[str]]:
    """Google npz arrays -> (canonical state, npz names no rule places).

    A pre_logits
    (representation) layer sits between the [CLS] token and the head; this model has none, so such
    a checkpoint is refused unless `drop_pre_logits`, which loads the backbone alone.
    """
    prefix = npz_prefix(arrays)
    if prefix is None:
        raise ValueError(f"{source}: not a ViT npz checkpoint (no 'embedding/kernel' under any of "
                         f"the prefixes {NPZ_PREFIXES})")
    layout, scanned = npz_layout(arrays)
    names = [k for k in arrays if k.startswith(prefix)]
    unplaced = [k for k in arrays if not k.startswith(prefix)]
    if f"{prefix}cls" not in arrays:
        raise UnsupportedCheckpoint(
            f"{source}: no 'cls' token — this model pools without one (big_vision pool_type 'gap' "
            f"or 'map'); twin-vit reads the [CLS] token and cannot represent it")
    if any(k.startswith(f"{prefix}MAPHead") for k in names):
        raise UnsupportedCheckpoint(f"{source}: a MAPHead (attention pooling) is not supported")
    has_pre_logits = f"{prefix}pre_logits/kernel" in arrays
    if has_pre_logits and not drop_pre_logits:
        raise UnsupportedCheckpoint(
            f"{source}: has a pre_logits representation layer (dense + tanh between [CLS] and the "
            f"head, as in the ImageNet-21k checkpoints), which this ViT does not have. Load the "
            f"backbone without it and without the head: drop_pre_logits=True (vit-convert "
            f"--drop-pre-logits)")
    def get(name: str) -> np.ndarray:
        names_seen.add(name)
        return np.asarray(arrays[name])

    names_seen: set[str] = set()
    backbone: dict[str, np.ndarray] = {}
    for ours, npz, _, back in NPZ_GLOBAL:
        name = prefix + npz
        if ours == "embeddings.position_embeddings" and layout == "big_vision":
            # big_vision adds position embeddings before prepending [CLS]: its slot is zero here
            pos = get(f"{prefix}pos_embedding")
            backbone[ours] = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
        elif name in arrays:
            backbone[ours] = back(get(name))
    rules = _npz_rules(layout)
    n_layers = (np.shape(arrays[f"{prefix}Transformer/encoderblock/LayerNorm_0/scale"])[0] if scanned
                else _num_layers(names, re.escape(prefix) + r"Transformer/encoderblock_(\d+)/"))
    for i in range(n_layers):
        for ours, npz, _, back in rules:
            if scanned:
                name = prefix + npz.replace("encoderblock_{i}", "encoderblock")
                if name in arrays:
                    backbone[ours.format(i=i)] = back(get(name)[i])
            else:
                name = prefix + npz.format(i=i)
                if name in arrays:
                    backbone[ours.format(i=i)] = back(get(name))
    head: dict[str, np.ndarray] = {}
    if has_pre_logits:
        names_seen.update(n for n in names if n.startswith((f"{prefix}pre_logits/", f"{prefix}head/")))
    else:
        for leaf, npz, _, back in NPZ_HEAD:
            if prefix + npz in arrays:
                head[leaf] = back(get(prefix + npz))
    unplaced += [n for n in names if n not in names_seen]
    return join_head(backbone, head), sorted(unplaced)
