"""Weight naming: ONE rule vocabulary for the canonical model and every source's names.

Canonical = what `vit_torch` models hold: HF ViT checkpoint keys (``encoder.layer.0.attention...``),
numpy arrays, the backbone under "vit." when a classifier is present. `TABLE` lists the model's
modules with the shapes the config gives them.

Every other naming (the Flax tree, HF on disk, transformers-5 in-memory names, timm, Google's npz,
big_vision) is a `Naming`: a table of `Rename(ours, theirs, kind)` — one of our module paths (or
several, fused along the first axis in theirs, as timm's qkv), their module path ("{i}" is the layer
index in both), and a kind. The kind says, in `KINDS`, how each leaf of the module is named and
transformed both ways (a Linear weight (out, in) is a Dense kernel (in, out), a Google attention
kernel is (hidden, heads, head_dim), ...). Adding a source is a `Naming` plus tests; `to_naming` and
`from_naming` are the only code that applies them, and the README shows each table.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import numpy as np

from vit_common.config import ViTConfig
from vit_common.formats import blocked_contiguous

Kind = Literal["linear", "conv", "norm", "param", "copy", "heads_in", "heads_out", "pos_no_cls",
               "scale", "gamma", "vector", "table", "in_proj"]
Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One tensor of a module kind: our leaf name, theirs, their rank, and the two transforms."""

    ours: str
    theirs: str
    rank: int | None  # their array's rank, checked before anything is reshaped
    to_theirs: Callable[[Array, ViTConfig], Array]
    to_ours: Callable[[Array], Array]


def _same(a: Array, c: ViTConfig | None = None) -> Array:
    return a


def _bias(ours: str = "bias", theirs: str = "bias") -> Leaf:
    return Leaf(ours, theirs, 1, _same, _same)


KINDS: dict[Kind, tuple[Leaf, ...]] = {
    # nn.Linear weight (out, in) <-> nn.Dense kernel (in, out)
    "linear": (Leaf("weight", "kernel", 2, lambda w, c: w.T, lambda k: k.T), _bias()),
    # nn.Conv2d weight (out, in, kh, kw) <-> nn.Conv kernel (kh, kw, in, out)
    "conv": (Leaf("weight", "kernel", 4, lambda w, c: w.transpose(2, 3, 1, 0),
                  lambda k: k.transpose(3, 2, 0, 1)), _bias()),
    # nn.LayerNorm weight <-> nn.LayerNorm scale
    "norm": (Leaf("weight", "scale", 1, _same, _same), _bias()),
    # a bare parameter: same array, same name
    "param": (Leaf("", "", None, _same, _same),),
    # a module whose tensors keep their names and layouts (torch to torch)
    "copy": (Leaf("weight", "weight", None, _same, _same), Leaf("bias", "bias", None, _same, _same)),
    # Google's q/k/v projections: kernel (hidden, heads, head_dim), bias (heads, head_dim). The
    # transposed matrix is put in C order first: a strided split would make .npy write element-wise
    "heads_in": (
        Leaf("weight", "kernel", 3,
             lambda w, c: blocked_contiguous(w.T).reshape(c.hidden_size, c.num_attention_heads, c.head_dim),
             lambda k: k.reshape(k.shape[0], -1).T),
        Leaf("bias", "bias", 2, lambda b, c: b.reshape(c.num_attention_heads, c.head_dim),
             lambda b: b.reshape(-1))),
    # Google's attention output projection: kernel (heads, head_dim, hidden)
    "heads_out": (
        Leaf("weight", "kernel", 3,
             lambda w, c: blocked_contiguous(w.T).reshape(c.num_attention_heads, c.head_dim, c.hidden_size),
             lambda k: k.reshape(-1, k.shape[-1]).T),
        _bias()),
    # LayerScale: our (and HF DINOv2's) lambda1, timm's gamma
    "scale": (Leaf("lambda1", "lambda1", 1, _same, _same),),
    "gamma": (Leaf("lambda1", "gamma", 1, _same, _same),),
    # CLIP's class_embedding (hidden,) <-> our (1, 1, hidden) token
    "vector": (Leaf("", "", 1, lambda t, c: t.reshape(-1), lambda t: t.reshape(1, 1, -1)),),
    # an nn.Embedding table (tokens, hidden) <-> our (1, tokens, hidden) parameter
    "table": (Leaf("", "weight", 2, lambda t, c: t.reshape(t.shape[1:]), lambda t: t[None]),),
    # nn.MultiheadAttention's packed input projection (SigLIP's pooling head)
    "in_proj": (Leaf("weight", "in_proj_weight", 2, _same, _same), _bias("bias", "in_proj_bias")),
    # big_vision adds position embeddings before prepending [CLS]: its slot is zero here
    "pos_no_cls": (Leaf("", "", 3, lambda p, c: p[:, 1:],
                        lambda p: np.concatenate([np.zeros_like(p[:, :1]), p], axis=1)),),
}


# ---------------------------------------------------------------------------------------------
# the canonical model

@dataclasses.dataclass(frozen=True)
class Rule:
    """One module (or bare parameter) of the model, in torch dotted form, "{i}" for a layer index."""

    path: str
    kind: Kind
    # torch shapes as a function of the config: (out, in) for linear, (dim,) for norm, full for param
    dims: Callable[[ViTConfig], tuple[int, ...]]
    has_bias: Callable[[ViTConfig], bool] = lambda c: True
    when: Callable[[ViTConfig], bool] = lambda c: True  # whether a model of this config has it


def _linear(path: str, out_in: Callable[[ViTConfig], tuple[int, int]], **kw: Any) -> Rule:
    return Rule(path, "linear", out_in, **kw)


def _norm(path: str, **kw: Any) -> Rule:
    return Rule(path, "norm", lambda c: (c.hidden_size,), **kw)


def _mlp_width(c: ViTConfig) -> int:
    return c.intermediate_size * (2 if c.mlp_type == "swiglu" else 1)  # SwiGLU: [gate; up]


def _is_map(c: ViTConfig) -> bool:
    return c.pooling == "map"


_P = "attention_pool."


_L = "encoder.layer.{i}."
TABLE: tuple[Rule, ...] = (
    Rule("embeddings.cls_token", "param", lambda c: (1, 1, c.hidden_size), when=lambda c: c.class_token),
    Rule("embeddings.distillation_token", "param", lambda c: (1, 1, c.hidden_size),
         when=lambda c: c.distillation_token),
    Rule("embeddings.register_tokens", "param", lambda c: (1, c.num_register_tokens, c.hidden_size),
         when=lambda c: c.num_register_tokens > 0),
    Rule("embeddings.mask_token", "param", lambda c: (1, c.hidden_size), when=lambda c: c.mask_token),
    Rule("embeddings.position_embeddings", "param",
         lambda c: (1, c.num_patches + c.num_position_prefix, c.hidden_size),
         when=lambda c: c.position_embedding_type == "learned"),
    Rule("embeddings.patch_embeddings.projection", "conv",
         lambda c: (c.hidden_size, c.num_channels, c.patch_size, c.patch_size),
         has_bias=lambda c: c.patch_bias),
    _norm("pre_layernorm", when=lambda c: c.pre_norm),
    *(_linear(_L + f"attention.attention.{n}", lambda c: (c.hidden_size, c.hidden_size),
              has_bias=lambda c: c.qkv_bias) for n in ("query", "key", "value")),
    *(Rule(_L + f"attention.attention.{n}", "norm", lambda c: (c.head_dim,), when=lambda c: c.qk_norm)
      for n in ("q_norm", "k_norm")),
    _linear(_L + "attention.output.dense", lambda c: (c.hidden_size, c.hidden_size)),
    _linear(_L + "intermediate.dense", lambda c: (_mlp_width(c), c.hidden_size)),
    _linear(_L + "output.dense", lambda c: (c.hidden_size, c.intermediate_size)),
    _norm(_L + "layernorm_before"),
    _norm(_L + "layernorm_after"),
    *(Rule(_L + f"layer_scale{n}", "scale", lambda c: (c.hidden_size,), when=lambda c: c.layer_scale)
      for n in (1, 2)),
    _norm("layernorm"),
    Rule(_P + "probe", "param", lambda c: (1, 1, c.hidden_size), when=_is_map),
    *(_linear(_P + f"attention.attention.{n}", lambda c: (c.hidden_size, c.hidden_size), when=_is_map)
      for n in ("query", "key", "value")),
    _linear(_P + "attention.output.dense", lambda c: (c.hidden_size, c.hidden_size), when=_is_map),
    _norm(_P + "layernorm", when=_is_map),
    _linear(_P + "intermediate.dense", lambda c: (c.intermediate_size, c.hidden_size), when=_is_map),
    _linear(_P + "output.dense", lambda c: (c.hidden_size, c.intermediate_size), when=_is_map),
)
# ViTForImageClassification: the backbone under "vit." plus this head.
HEADS: tuple[Rule, ...] = (
    _linear("classifier", lambda c: (c.num_labels, c.hidden_size * (2 if c.classifier_input == "cls_patch_mean"
                                                                    else 1))),
    _linear("distillation_classifier", lambda c: (c.num_labels, c.hidden_size),
            when=lambda c: c.distillation_token and c.classifier_input == "pooled"))
HEAD = HEADS[0]
BACKBONE_PREFIX = "vit."
CLASSIFIER_KEY = "classifier.weight"


def has_classifier(state: Mapping[str, Any]) -> bool:
    """Whether a canonical state dict holds ViTForImageClassification (else VisionTransformer)."""
    return CLASSIFIER_KEY in state


def unwrap_params(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Flax params tree from `{"params": tree}` variables or the tree itself."""
    return tree["params"] if set(tree.keys()) == {"params"} else tree


@dataclasses.dataclass(frozen=True)
class Entry:
    """One expected tensor: its torch key, torch shape and leaf rule."""

    torch_key: str
    torch_shape: tuple[int, ...]
    leaf: Leaf


def expected_entries(config: ViTConfig, with_head: bool) -> Iterator[Entry]:
    """Every tensor of VisionTransformer (with_head=False) or ViTForImageClassification, in order."""
    prefix = BACKBONE_PREFIX if with_head else ""
    for rule in TABLE + (HEADS if with_head else ()):
        if not rule.when(config):
            continue
        paths = ([rule.path.format(i=i) for i in range(config.num_hidden_layers)]
                 if "{i}" in rule.path else [rule.path])
        if rule not in HEADS:
            paths = [prefix + p for p in paths]
        dims = rule.dims(config)
        for module in paths:
            for leaf in KINDS[rule.kind]:
                if leaf.ours == "bias" and not rule.has_bias(config):
                    continue
                shape = dims[:1] if leaf.ours == "bias" else dims
                yield Entry(f"{module}.{leaf.ours}" if leaf.ours else module, shape, leaf)


# ---------------------------------------------------------------------------------------------
# namings: other sources' names as tables onto the canonical ones

@dataclasses.dataclass(frozen=True)
class Rename:
    """Our module path(s) <-> their module path, and the kind that names and transforms the leaves.
    Several of ours are stacked along the first axis in theirs (timm's qkv)."""

    ours: str | tuple[str, ...]
    theirs: str
    kind: Kind = "copy"
    when: Callable[[ViTConfig], bool] | None = None  # only for models of such configs

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.ours,) if isinstance(self.ours, str) else self.ours


@dataclasses.dataclass(frozen=True)
class Naming:
    name: str
    backbone: tuple[Rename, ...]
    head: tuple[Rename, ...]
    sep: str = "."  # between their module path and their leaf name
    backbone_prefix: str = ""  # theirs, in front of the backbone when a classifier is present
    markers: tuple[str, ...] = ()  # their keys (backbone, no prefix) that identify this naming


def _identity(kinds: Mapping[Kind, Kind] | None = None, sep: str = ".",
              rename: Mapping[str, str] | None = None) -> tuple[Rename, ...]:
    kinds, rename = kinds or {}, rename or {}
    return tuple(Rename(r.path, rename.get(r.path, r.path).replace(".", sep), kinds.get(r.kind, r.kind))
                 for r in TABLE)


def _applies(r: Rename, config: ViTConfig | None) -> bool:
    return r.when is None or config is None or r.when(config)


# HF transformers checkpoints on disk: the canonical names themselves
HF = Naming("hf", _identity({"linear": "copy", "conv": "copy", "norm": "copy"}),
            (Rename("classifier", "classifier"),), backbone_prefix="vit.",
            markers=("embeddings.patch_embeddings.projection.weight",))
# HF's Flax ViT tree, flattened with "/": same module names, Flax leaves
FLAX = Naming("flax", _identity(sep="/"), (Rename("classifier", "classifier", "linear"),
                                            Rename("distillation_classifier", "distillation_classifier", "linear")),
              sep="/", backbone_prefix="vit/", markers=("embeddings/patch_embeddings/projection/kernel",))
_HF_COPY: dict[Kind, Kind] = {"linear": "copy", "conv": "copy", "norm": "copy"}
# HF DeiT: ViT's names under "deit.", the two heads named for their tokens
HF_DEIT = Naming("hf-deit", _identity(_HF_COPY), (
    Rename("classifier", "cls_classifier", when=lambda c: c.classifier_input == "pooled"),  # WithTeacher
    Rename("classifier", "classifier", when=lambda c: c.classifier_input == "cls"),  # CLS-only head
    Rename("distillation_classifier", "distillation_classifier")),
                 backbone_prefix="deit.", markers=("embeddings.distillation_token",))


def _swiglu(c: ViTConfig) -> bool:
    return c.mlp_type == "swiglu"


def _gelu_mlp(c: ViTConfig) -> bool:
    return c.mlp_type == "mlp"


# HF DINOv2 (with or without registers) on disk
HF_DINOV2 = Naming("hf-dinov2", tuple(
    r for r in _identity(_HF_COPY, rename={_L + "layernorm_before": _L + "norm1",
                                           _L + "layernorm_after": _L + "norm2"})
    if r.ours not in (_L + "intermediate.dense", _L + "output.dense")) + (
    Rename(_L + "intermediate.dense", _L + "mlp.fc1", when=_gelu_mlp),
    Rename(_L + "output.dense", _L + "mlp.fc2", when=_gelu_mlp),
    Rename(_L + "intermediate.dense", _L + "mlp.weights_in", when=_swiglu),
    Rename(_L + "output.dense", _L + "mlp.weights_out", when=_swiglu),
), (Rename("classifier", "classifier"),), backbone_prefix="dinov2.",
    markers=("embeddings.patch_embeddings.projection.weight", "encoder.layer.0.layer_scale1.lambda1"))
# HF DINOv2 with registers: the same names, its classifier's backbone under its own prefix
HF_DINOV2_REGISTERS = dataclasses.replace(
    HF_DINOV2, name="hf-dinov2-registers", backbone_prefix="dinov2_with_registers.",
    markers=(*HF_DINOV2.markers, "embeddings.register_tokens"))
_CL = "encoder.layers.{i}."


def _clip_layers() -> tuple[Rename, ...]:
    return (*(Rename(_L + f"attention.attention.{n}", _CL + f"self_attn.{t}_proj")
              for n, t in (("query", "q"), ("key", "k"), ("value", "v"))),
            Rename(_L + "attention.output.dense", _CL + "self_attn.out_proj"),
            Rename(_L + "layernorm_before", _CL + "layer_norm1"),
            Rename(_L + "layernorm_after", _CL + "layer_norm2"),
            Rename(_L + "intermediate.dense", _CL + "mlp.fc1"),
            Rename(_L + "output.dense", _CL + "mlp.fc2"),
            Rename("embeddings.patch_embeddings.projection", "embeddings.patch_embedding"),
            Rename("embeddings.position_embeddings", "embeddings.position_embedding", "table"),
            Rename("layernorm", "post_layernorm"))


# HF CLIPVisionModel / SiglipVisionModel, bare keys (transformers 5) or under "vision_model." (4.x
# and two-tower checkpoints; the loader takes that tower)
HF_CLIP = Naming("hf-clip", (Rename("embeddings.cls_token", "embeddings.class_embedding", "vector"),
                             Rename("pre_layernorm", "pre_layrnorm"), *_clip_layers()),
                 (Rename("classifier", "classifier"),), backbone_prefix="vision_model.",
                 markers=("embeddings.class_embedding", "encoder.layers.0.self_attn.q_proj.weight"))
HF_SIGLIP = Naming("hf-siglip", (*_clip_layers(),
                                 Rename(_P + "probe", "head.probe", "param"),
                                 Rename(tuple(_P + f"attention.attention.{n}" for n in ("query", "key", "value")),
                                        "head.attention", "in_proj"),
                                 Rename(_P + "attention.output.dense", "head.attention.out_proj"),
                                 Rename(_P + "layernorm", "head.layernorm"),
                                 Rename(_P + "intermediate.dense", "head.mlp.fc1"),
                                 Rename(_P + "output.dense", "head.mlp.fc2")),
                   (Rename("classifier", "classifier"),), backbone_prefix="vision_model.",
                   markers=("head.probe", "encoder.layers.0.self_attn.q_proj.weight"))
HF_FAMILY_NAMINGS: dict[str, Naming] = {
    "vit": HF, "deit": HF_DEIT, "dinov2": HF_DINOV2, "dinov2_with_registers": HF_DINOV2_REGISTERS,
    "clip_vision_model": HF_CLIP, "siglip_vision_model": HF_SIGLIP}
# transformers 5 renamed ViT's modules in memory; save_pretrained still writes the classic names,
# but torch.save(model.state_dict()) records these
_TRANSFORMERS5_LAYER = {"attention.attention.query": "attention.q_proj", "attention.attention.key": "attention.k_proj",
              "attention.attention.value": "attention.v_proj", "attention.output.dense": "attention.o_proj",
              "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}
def _transformers5_path(path: str) -> str:
    m = re.fullmatch(r"encoder\.layer\.\{i\}\.(.+)", path)
    return "layers.{i}." + _TRANSFORMERS5_LAYER.get(m.group(1), m.group(1)) if m else path


TRANSFORMERS5 = Naming("transformers-5", tuple(Rename(r.ours, _transformers5_path(r.theirs), r.kind) for r in HF.backbone),
             HF.head, backbone_prefix="vit.", markers=("layers.0.attention.q_proj.weight",))
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


def _google(mha: str, ln2: str, mlp: str, *pos: Rename) -> tuple[Rename, ...]:
    block = "Transformer/encoderblock_{i}/"
    return (
        Rename("embeddings.cls_token", "cls", "param"),
        *pos,
        Rename("embeddings.patch_embeddings.projection", "embedding", "conv"),
        *(Rename(_L + f"attention.attention.{n}", f"{block}{mha}/{n}", "heads_in")
          for n in ("query", "key", "value")),
        Rename(_L + "attention.output.dense", f"{block}{mha}/out", "heads_out"),
        Rename(_L + "layernorm_before", block + "LayerNorm_0", "norm"),
        Rename(_L + "layernorm_after", f"{block}{ln2}", "norm"),
        Rename(_L + "intermediate.dense", f"{block}{mlp}/Dense_0", "linear"),
        Rename(_L + "output.dense", f"{block}{mlp}/Dense_1", "linear"),
        Rename("layernorm", "Transformer/encoder_norm", "norm"),
    )


# google-research/vision_transformer .npz (also read by timm and big_vision)
NPZ = Naming("npz", _google("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3",
                            Rename("embeddings.position_embeddings",
                                   "Transformer/posembed_input/pos_embedding", "param")),
             (Rename("classifier", "head", "linear"),), sep="/",
             markers=("embedding/kernel", "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"))
# big_vision's ViT: blocks numbered differently, position embeddings without the [CLS] slot
BIG_VISION = Naming("big_vision", _google("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0",
                                          Rename("embeddings.position_embeddings", "pos_embedding",
                                                 "pos_no_cls", when=lambda c: c.num_position_prefix > 0),
                                          Rename("embeddings.position_embeddings", "pos_embedding",
                                                 "param", when=lambda c: c.num_position_prefix == 0)) + (
    # pool_type 'map': big_vision's MAPHead
    Rename(_P + "probe", "MAPHead_0/probe", "param"),
    *(Rename(_P + f"attention.attention.{n}", f"MAPHead_0/MultiHeadDotProductAttention_0/{n}", "heads_in")
      for n in ("query", "key", "value")),
    Rename(_P + "attention.output.dense", "MAPHead_0/MultiHeadDotProductAttention_0/out", "heads_out"),
    Rename(_P + "layernorm", "MAPHead_0/LayerNorm_0", "norm"),
    Rename(_P + "intermediate.dense", "MAPHead_0/MlpBlock_0/Dense_0", "linear"),
    Rename(_P + "output.dense", "MAPHead_0/MlpBlock_0/Dense_1", "linear")),
                    (Rename("classifier", "head", "linear"),), sep="/",
                    markers=("embedding/kernel", "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"))
NAMINGS: dict[str, Naming] = {n.name: n for n in (HF, TRANSFORMERS5, TIMM, FLAX, NPZ, BIG_VISION, HF_DEIT,
                                                   HF_DINOV2, HF_DINOV2_REGISTERS, HF_CLIP, HF_SIGLIP)}


def _their_key(module: str, leaf: Leaf, sep: str) -> str:
    return f"{module}{sep}{leaf.theirs}" if leaf.theirs else module


def to_naming(naming: Naming, state: Mapping[str, Any], config: ViTConfig
              ) -> list[tuple[str, Callable[[], Array]]]:
    """A complete canonical state -> [(their key, function making the array)] in model order. The
    arrays are made on demand, so a writer can build the next one while it writes this one."""
    with_head = has_classifier(state)
    check_state_dict(state, config, with_head, "to_naming")
    ours_prefix = BACKBONE_PREFIX if with_head else ""
    theirs_prefix = naming.backbone_prefix if with_head else ""
    out: list[tuple[str, Callable[[], Array]]] = []
    for renames, op, tp in ((naming.backbone, ours_prefix, theirs_prefix), (naming.head, "", "")):
        if renames is naming.head and not with_head:
            continue
        for r in renames:
            if not _applies(r, config):
                continue
            layers = range(config.num_hidden_layers) if "{i}" in r.theirs else [0]
            for i in layers:
                for leaf in KINDS[r.kind]:
                    keys = [op + (f"{p.format(i=i)}.{leaf.ours}" if leaf.ours else p.format(i=i))
                            for p in r.parts]
                    if not all(k in state for k in keys):
                        continue  # an optional tensor (qkv bias) this model does not have
                    out.append((tp + _their_key(r.theirs.format(i=i), leaf, naming.sep),
                                _maker(leaf, [state[k] for k in keys], config)))
    return out


def _maker(leaf: Leaf, arrays: list[Any], config: ViTConfig) -> Callable[[], Array]:
    def make() -> Array:
        parts = [to_numpy(a) for a in arrays]
        return leaf.to_theirs(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0), config)

    return make


def from_naming(naming: Naming, raw: Mapping[str, Any], origin: dict[str, str] | None = None,
                config: ViTConfig | None = None) -> tuple[dict[str, Array], list[str], list[str]]:
    """Their tensors -> (canonical state, their keys no rule places, shape problems). Nothing is
    reshaped before its rank is checked; completeness and shapes are checked by `check_state_dict`.
    `origin`, when given, receives {canonical key: their key}. With `config`, only the rules for
    models of that config apply (big_vision's pos_embedding has a [CLS] slot or not)."""
    patterns = []
    for group, renames in (("backbone", naming.backbone), ("head", naming.head)):
        for r in renames:
            if not _applies(r, config):
                continue
            for leaf in KINDS[r.kind]:
                their = _their_key(r.theirs, leaf, naming.sep)
                regex = re.escape(their).replace(re.escape("{i}"), r"(\d+)")
                patterns.append((re.compile(regex), group, r, leaf))
    bp = naming.backbone_prefix
    prefixed = bool(bp) and any(k.startswith(bp) for k in raw)
    state: dict[str, Array] = {}
    unplaced: list[str] = []
    problems: list[str] = []
    head_found = False
    for key, value in raw.items():
        placed = False
        for regex, group, r, leaf in patterns:
            name = key[len(bp):] if group == "backbone" and prefixed and key.startswith(bp) else key
            if group == "backbone" and prefixed and not key.startswith(bp):
                continue
            m = regex.fullmatch(name)
            if m is None:
                continue
            placed = True
            i = int(m.group(1)) if m.groups() else 0
            try:
                arr = to_numpy(value)
            except Exception as e:  # sparse, quantized, float8 or otherwise unmappable tensors
                problems.append(f"{key} is not a plain dense tensor ({type(e).__name__}: {e})")
                break
            if arr.dtype.hasobject:
                problems.append(f"{key} holds Python objects, not numbers")
                break
            if leaf.rank is not None and arr.ndim != leaf.rank:
                problems.append(f"{key} expected rank {leaf.rank} got shape {tuple(arr.shape)}")
                break
            arr = leaf.to_ours(arr)
            parts = r.parts
            if len(parts) > 1:
                if arr.ndim == 0 or arr.shape[0] % len(parts):
                    problems.append(f"{key} expected a first axis divisible by {len(parts)} got "
                                    f"shape {tuple(arr.shape)}")
                    break
                pieces = np.split(arr, len(parts), axis=0)
            else:
                pieces = [arr]
            for part, piece in zip(parts, pieces):
                module = part.format(i=i)
                ours = f"{module}.{leaf.ours}" if leaf.ours else module
                state[("" if group == "head" else "\0") + ours] = piece
                if origin is not None:
                    origin[("" if group == "head" else "\0") + ours] = key
            head_found |= group == "head"
            break
        if not placed:
            unplaced.append(key)
    prefix = BACKBONE_PREFIX if head_found else ""
    canonical = {(prefix + k[1:] if k.startswith("\0") else k): v for k, v in state.items()}
    if origin is not None:
        named = {(prefix + k[1:] if k.startswith("\0") else k): v for k, v in origin.items()}
        origin.clear()
        origin.update(named)
    return canonical, sorted(unplaced), problems


def their_names(naming: Naming, config: ViTConfig, with_head: bool) -> dict[str, tuple[str, Leaf]]:
    """{canonical key: (their key, leaf rule)} for every tensor a model of `config` has."""
    ours_prefix = BACKBONE_PREFIX if with_head else ""
    theirs_prefix = naming.backbone_prefix if with_head else ""
    names = {}
    for renames, op, tp in ((naming.backbone, ours_prefix, theirs_prefix),
                            (naming.head if with_head else (), "", "")):
        for r in renames:
            if not _applies(r, config):
                continue
            for i in (range(config.num_hidden_layers) if "{i}" in r.theirs else [0]):
                for leaf in KINDS[r.kind]:
                    their = tp + _their_key(r.theirs.format(i=i), leaf, naming.sep)
                    for p in r.parts:
                        ours = op + (f"{p.format(i=i)}.{leaf.ours}" if leaf.ours else p.format(i=i))
                        names[ours] = (their, leaf)
    return names


def detect_naming(keys: Any, candidates: tuple[str, ...] = ("timm", "transformers-5", "hf")) -> Naming | None:
    """The first naming among `candidates` whose markers are all among `keys` (with or without
    its backbone prefix)."""
    for name in candidates:
        n = NAMINGS[name]
        for prefix in ("", n.backbone_prefix):
            if all(prefix + m in keys for m in n.markers):
                return n
    return None


# ---------------------------------------------------------------------------------------------
# torch <-> flax

def torch_to_flax(state_dict: Mapping[str, Any], config: ViTConfig | None = None,
                  with_head: bool | None = None) -> dict[str, Any]:
    """HF-named torch state dict -> HF Flax params tree (nested dict of numpy arrays).

    `with_head` picks VisionTransformer (False) or ViTForImageClassification (True); by default it is
    read from the keys. Every missing, unexpected and misshapen key is reported in one ValueError.
    """
    if with_head is None:
        with_head = has_classifier(state_dict)
    if config is None:
        config = infer_config(state_dict, with_head, square=False)
    check_state_dict(state_dict, config, with_head, "torch_to_flax")
    return unflatten_params({tuple(k.split("/")): make() for k, make in
                             to_naming(FLAX, state_dict, config)})


def flax_to_torch(params: Mapping[str, Any], config: ViTConfig | None = None,
                  with_head: bool | None = None) -> dict[str, Array]:
    """HF Flax params tree (or {"params": tree}) -> HF-named torch state dict of numpy arrays.
    Problems are reported in one ValueError, in Flax names and layouts."""
    flat = {"/".join(path): leaf for path, leaf in flatten_params(params).items()}
    origin: dict[str, str] = {}
    state, unplaced, problems = from_naming(FLAX, flat, origin)
    if with_head is not None and with_head != has_classifier(state):
        raise ValueError(f"flax_to_torch: with_head={with_head} but the tree "
                         f"{'has' if has_classifier(state) else 'has no'} classifier")
    with_head = has_classifier(state)
    if config is None:
        if problems:
            report_mismatch("flax_to_torch", [], unplaced, problems)
        config = infer_config(state, with_head, square=False)
    names = their_names(FLAX, config, with_head)
    missing, misshapen = [], list(problems)
    for e in expected_entries(config, with_head):
        their, leaf = names[e.torch_key]
        if e.torch_key not in state:
            missing.append(their)
        elif tuple(state[e.torch_key].shape) != e.torch_shape:
            want = leaf.to_theirs(np.broadcast_to(np.empty((), np.float32), e.torch_shape), config).shape
            misshapen.append(f"{their} expected {tuple(want)} got {tuple(np.shape(flat[their]))}")
    unexpected = unplaced + [origin[k] for k in state if k not in names]
    report_mismatch("flax_to_torch", missing, sorted(unexpected), misshapen)
    return state


# ---------------------------------------------------------------------------------------------
# numpy in: torch tensors and jax arrays are accepted and turned into numpy without copying values


def to_numpy(x: Any) -> Array:
    """A torch tensor, jax array or array-like as a numpy array (bfloat16 kept, via ml_dtypes)."""
    if type(x).__module__.startswith("torch"):
        t = x.detach().cpu()
        torch = sys.modules["torch"]  # a tensor in hand means torch is imported already
        if t.dtype == torch.bfloat16:
            import ml_dtypes  # numpy has no bfloat16; ml_dtypes (a jax dependency) adds it

            return t.view(dtype=torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    return np.asarray(x)


def flatten_params(params: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    """A nested params dict (or {"params": ...} variables) as {path tuple: leaf}."""
    flat: dict[tuple[str, ...], Any] = {}

    def walk(node: Mapping[str, Any], path: tuple[str, ...]) -> None:
        if len(path) > 32:
            raise ValueError(f"params tree nested deeper than 32 levels at {'/'.join(path[:4])}/...")
        for k, v in node.items():
            if isinstance(v, Mapping):
                walk(v, path + (str(k),))
            else:
                flat[path + (str(k),)] = v

    walk(unwrap_params(params), ())
    return flat


def unflatten_params(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, leaf in flat.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = leaf
    return tree


# ---------------------------------------------------------------------------------------------
# scanned layers: the Flax twin's encoder/layer/{i}/... as one tree stacked on a leading layer axis

def _encoder_layers(params: Mapping[str, Any]) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """(a shallow copy of the tree down to encoder/, the layer subtree)."""
    tree = dict(unwrap_params(params))
    top = tree
    if "vit" in tree:
        top = tree["vit"] = dict(tree["vit"])
    if "encoder" not in top or "layer" not in top["encoder"]:
        raise ValueError("expected a vit_flax params tree with encoder/layer, got keys "
                         f"{sorted(top)[:6]}")
    top["encoder"] = dict(top["encoder"])
    return tree, top["encoder"]["layer"]


def is_stacked(params: Mapping[str, Any]) -> bool:
    """Whether a Flax params tree holds scanned layers (encoder/layer/<module>/... stacked on axis 0)
    rather than HF's per-layer encoder/layer/0/..."""
    return "0" not in _encoder_layers(params)[1]


def stack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
    """Per-layer params (encoder/layer/0, 1, ...) -> scanned params (encoder/layer with every leaf
    stacked on a new leading layer axis), as numpy arrays; exact. Already stacked: unchanged."""
    tree, layers = _encoder_layers(params)
    if is_stacked(params):
        return tree
    count = len(layers)
    if sorted(layers) != sorted(str(i) for i in range(count)):
        raise ValueError(f"encoder/layer must hold layers 0..{count - 1}, got {sorted(layers)[:6]}")
    flat = [flatten_params(layers[str(i)]) for i in range(count)]
    if any(set(f) != set(flat[0]) for f in flat):
        raise ValueError("the layers do not all hold the same parameters; cannot stack them")
    stacked = {path: np.stack([to_numpy(f[path]) for f in flat]) for path in flat[0]}
    (tree["vit"] if "vit" in tree else tree)["encoder"]["layer"] = unflatten_params(stacked)
    return tree


def unstack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
    """Scanned params -> HF's per-layer tree (encoder/layer/0, 1, ...), as numpy arrays; exact.
    Already per-layer: unchanged."""
    tree, layers = _encoder_layers(params)
    if not is_stacked(params):
        return tree
    flat = {path: to_numpy(leaf) for path, leaf in flatten_params(layers).items()}
    counts = {leaf.shape[0] if leaf.ndim else 0 for leaf in flat.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"scanned layers need one leading layer axis on every parameter, got "
                         f"lengths {sorted(counts)}")
    count = counts.pop()
    per_layer = {str(i): unflatten_params({p: leaf[i] for p, leaf in flat.items()}) for i in range(count)}
    (tree["vit"] if "vit" in tree else tree)["encoder"]["layer"] = per_layer
    return tree


# ---------------------------------------------------------------------------------------------
# inferring the architecture's shapes from the weights, when no config is given

class NonSquareGrid(ValueError):
    """The token count of the position embeddings is not a square (or there is no table): the
    image size is ambiguous."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


_SWITCH_FIELDS = ("class_token", "distillation_token", "num_register_tokens", "position_embedding_type",
                  "position_embedding_covers_prefix", "pooling", "final_norm", "mlp_type", "qk_norm",
                  "layer_scale", "pre_norm", "patch_bias", "mask_token")
_LAYER_RE = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")
MAX_LAYERS = 1024


def infer_config(state_dict: Mapping[str, Any], with_head: bool | None = None, *,
                 square: bool = True, switches: Mapping[str, Any] | None = None) -> ViTConfig:
    """The shape-level config of a canonical state dict.

    The head count changes no tensor shape, so it cannot be read from the weights; the result has
    num_attention_heads=1, which is fine for checking and converting weights but not for running
    them. The patch grid is assumed square; with `square=False` a non-square token count is read
    as a 1 x N grid, which has the right shapes (all conversion needs) but not the real image size.
    `switches`: family fields known from elsewhere (big_vision's pooling, ...); other fields of
    `switches` (the head count) are ignored here.
    """
    known = {k: v for k, v in (switches or {}).items() if k in _SWITCH_FIELDS}
    layout = ViTConfig(**known)
    if with_head is None:
        with_head = has_classifier(state_dict)
    prefix = BACKBONE_PREFIX if with_head else ""

    def shape(key: str, rank: int) -> tuple[int, ...]:
        full = key if key == CLASSIFIER_KEY else prefix + key
        if full not in state_dict:
            raise ValueError(f"cannot infer the architecture: key {full!r} is missing "
                             f"(got {len(state_dict)} keys, e.g. {sorted(state_dict)[:3]})")
        s = tuple(int(d) for d in np.shape(state_dict[full]))
        if len(s) != rank or not all(s):
            raise ValueError(f"cannot infer the architecture: {full} should be a "
                             f"non-empty rank-{rank} tensor, got shape {s}")
        return s

    hidden, channels, patch, patch_w = shape("embeddings.patch_embeddings.projection.weight", 4)
    if patch != patch_w:
        raise ValueError(f"cannot infer the architecture: patches must be square, the patch "
                         f"kernel is {patch}x{patch_w}")
    if layout.position_embedding_type == "learned":
        tokens = shape("embeddings.position_embeddings", 3)[1] - layout.num_position_prefix
        reason = f"{tokens} patches are not a square grid"
    else:
        tokens, reason = 1, "no position table says the patch grid"
    if tokens < 1:
        raise ValueError("cannot infer the architecture: the position embeddings have no patch slots")
    grid = math.isqrt(tokens)
    if grid * grid == tokens and layout.position_embedding_type == "learned":
        image_size: int | tuple[int, int] = grid * patch
    elif not square:
        image_size = (patch, tokens * patch)
    else:
        raise NonSquareGrid(f"cannot infer image_size: {reason}; pass config=", reason)
    layers = {int(m.group(1)) for k in state_dict if (m := _LAYER_RE.search(k))}
    if layers and max(layers) >= MAX_LAYERS:
        raise ValueError(f"cannot infer the architecture: layer index {max(layers)} is over the "
                         f"limit of {MAX_LAYERS} layers")
    return ViTConfig(
        hidden_size=hidden, num_channels=channels, patch_size=patch, image_size=image_size,
        num_hidden_layers=max(layers) + 1 if layers else 1, num_attention_heads=1,
        intermediate_size=shape("encoder.layer.0.intermediate.dense.weight", 2)[0],
        qkv_bias=prefix + "encoder.layer.0.attention.attention.query.bias" in state_dict,
        num_labels=shape(CLASSIFIER_KEY, 2)[0] if with_head else 0, **known)


def switches_from_state(state_dict: Mapping[str, Any], with_head: bool,
                        origin: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The family switches a canonical state shows by its tensors alone: prefix tokens, registers,
    pre-norm, patch bias, LayerScale, qk-norm, SwiGLU (the MLP's first matrix twice as wide as
    the second's input), MAP pooling and, from timm's names (`origin`), its fc_norm (gap pooling,
    the norm on the pooled vector), a gap model's plain norm and a register model's table without
    a [CLS] slot. What tensors cannot say (the activation, eps, sincos2d, a non-timm gap model's
    norm) is left out."""
    p = BACKBONE_PREFIX if with_head else ""

    def has(key: str) -> bool:
        return p + key in state_dict

    out: dict[str, Any] = {
        "class_token": has("embeddings.cls_token"), "distillation_token": has("embeddings.distillation_token"),
        "mask_token": has("embeddings.mask_token"), "pre_norm": has("pre_layernorm.weight"),
        "patch_bias": has("embeddings.patch_embeddings.projection.bias"),
        "layer_scale": has("encoder.layer.0.layer_scale1.lambda1"),
        "qk_norm": has("encoder.layer.0.attention.attention.q_norm.weight")}
    if has("embeddings.register_tokens") and np.ndim(state_dict[p + "embeddings.register_tokens"]) == 3:
        out["num_register_tokens"] = int(np.shape(state_dict[p + "embeddings.register_tokens"])[1])
    fc1, fc2 = (state_dict.get(p + f"encoder.layer.0.{n}.dense.weight") for n in ("intermediate", "output"))
    if fc1 is not None and fc2 is not None and np.ndim(fc1) == np.ndim(fc2) == 2 \
            and np.shape(fc1)[0] == 2 * np.shape(fc2)[1]:
        out["mlp_type"] = "swiglu"
    norm_origin = (origin or {}).get(p + "layernorm.weight", "")
    if has(_P + "probe"):
        out["pooling"] = "map"
    elif norm_origin.startswith("fc_norm"):  # timm: the norm of the averaged patch tokens
        out.update(pooling="gap", final_norm="pooled")
    elif norm_origin.startswith("norm") and not out["class_token"]:  # timm gap without fc_norm
        out["pooling"] = "gap"
    # timm's register models leave [CLS] out of the table (no_embed_class); the table's length
    # must agree (a square grid without the slot, none with it)
    pos = state_dict.get(p + "embeddings.position_embeddings")
    prefix = int(out["class_token"]) + int(out["distillation_token"])
    from_timm = (origin or {}).get(p + "embeddings.position_embeddings") == "pos_embed"
    if from_timm and prefix and out.get("num_register_tokens") and np.ndim(pos) == 3:
        n = int(np.shape(pos)[1])
        if math.isqrt(n - prefix) ** 2 != n - prefix and math.isqrt(n) ** 2 == n:
            out["position_embedding_covers_prefix"] = False
    return out


def report_mismatch(what: str, missing: list[str], unexpected: list[str], misshapen: list[str]) -> None:
    if not (missing or unexpected or misshapen):
        return
    lines = [f"{what}: the weights do not match the model"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if items:
            lines.append(f"  {len(items)} {title}: " + ", ".join(items))
    raise ValueError("\n".join(lines))


def check_state_dict(state_dict: Mapping[str, Any], config: ViTConfig, with_head: bool,
                     what: str = "state dict", unexpected: list[str] | None = None,
                     problems: list[str] | None = None) -> None:
    """Raise one ValueError listing every missing, unexpected and misshapen key of a canonical
    state dict (plus any `unexpected` names and shape `problems` a reader found)."""
    entries = list(expected_entries(config, with_head))
    seen = {e.torch_key for e in entries}
    missing, misshapen = [], list(problems or [])
    for e in entries:
        if e.torch_key not in state_dict:
            missing.append(e.torch_key)
        elif tuple(np.shape(state_dict[e.torch_key])) != e.torch_shape:
            misshapen.append(f"{e.torch_key} expected {e.torch_shape} got "
                             f"{tuple(np.shape(state_dict[e.torch_key]))}")
    extra = sorted(list(unexpected or []) + [k for k in state_dict if k not in seen])
    report_mismatch(what, missing, extra, misshapen)


def naming_table() -> str:
    """Every naming's table as one markdown table (the README shows it; a test keeps it current):
    a row per canonical module, a column per naming, each cell their module path and kind."""
    namings = list(NAMINGS.values())
    paths = [r.path for r in TABLE + HEADS]
    cells: dict[tuple[str, str], str] = {}
    for n in namings:
        for r in n.backbone + n.head:
            for p in r.parts:
                stacked = f" (stacks {len(r.parts)})" if len(r.parts) > 1 else ""
                prefix = n.backbone_prefix if r in n.backbone and n.backbone_prefix else ""
                shown = f"[{prefix}]" if prefix else ""
                cell = f"`{shown}{r.theirs}` {r.kind}{stacked}"
                cells[(p, n.name)] = f"{cells[(p, n.name)]} or {cell}" if (p, n.name) in cells else cell
    lines = ["| canonical (torch) module | " + " | ".join(n.name for n in namings) + " |",
             "|---|" + "---|" * len(namings)]
    for p in paths:
        lines.append(f"| `{p}` | " + " | ".join(cells.get((p, n.name), "—") for n in namings) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# equivalent layouts: the same function written for another source's switches

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
    from vit_common.config import HF_FAMILIES

    stated = config.extra.get("model_type")
    order = ([stated] if stated in HF_FAMILIES else []) + [m for m in HF_FAMILIES if m != stated]
    for model_type in order:
        family = HF_FAMILIES[model_type]
        wants = {k: family.switches.get(k, getattr(config, k) if k in family.free else None)
                 for k in _RELAYOUT}
        changes = {k: v for k, v in wants.items() if v is not None}
        changes.setdefault("final_norm", config.final_norm)
        if "final_norm" not in family.switches and config.pooling == "cls":
            changes["final_norm"] = "tokens"
        changes.setdefault("position_embedding_covers_prefix", True)
        if model_type == "siglip_vision_model":
            changes["position_embedding_covers_prefix"] = False
        changes.setdefault("mask_token", False)
        changes.setdefault("position_embedding_resampling", "bicubic")
        try:
            candidate = config.replace(**changes)
        except ValueError:
            continue
        if not family.mismatches(candidate):
            return candidate.replace(extra={**candidate.extra, "model_type": model_type})
    wrong = HF_FAMILIES["vit"].mismatches(config)
    raise ValueError(f"no HF model family expresses this ViT ({', '.join(wrong)}); write timm or Flax "
                     f"weights instead")
