"""The canonical model: every tensor `vit_torch` holds, with the shapes a config gives it.

Canonical names are HF ViT checkpoint keys (``encoder.layer.0.attention...``), numpy arrays, the
backbone under "vit." when a classifier is present. `TABLE` lists the model's modules; every other
naming is a table onto these paths (`vit_common.naming`), and `check_state_dict` is the one check
that a state is complete and well shaped.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vit_common.config import ViTConfig

Array = np.ndarray
# the module kinds of the canonical table (their leaves and transforms: vit_common.naming.KINDS)
Kind = str


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


def _has_norm_bias(c: ViTConfig) -> bool:
    return c.norm_type == "layernorm"  # RMSNorm has a weight only


def _norm(path: str, dims: Callable[[ViTConfig], tuple[int, ...]] = lambda c: (c.hidden_size,), **kw: Any) -> Rule:
    return Rule(path, "norm", dims, has_bias=_has_norm_bias, **kw)


def _mlp_width(c: ViTConfig) -> int:
    return c.intermediate_size * (2 if c.mlp_type == "swiglu" else 1)  # SwiGLU: [gate; up]


def _is_map(c: ViTConfig) -> bool:
    return c.pooling == "map"


def _classifier_width(c: ViTConfig) -> int:
    """What the classifier reads: the pooled output (projected when there is a projection), one
    token, the patch mean, or [CLS] beside the patch mean."""
    return {"pooled": c.pooled_size, "cls_patch_mean": 2 * c.hidden_size}.get(c.classifier_input, c.hidden_size)


ATTENTION_POOL = "attention_pool."  # the MAP head
_P = ATTENTION_POOL
LAYER = "encoder.layer.{i}."  # "{i}": the layer index
_L = LAYER
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
    _norm("embeddings.patch_embeddings.layernorm", when=lambda c: c.patch_norm),
    _norm("pre_layernorm", when=lambda c: c.pre_norm),
    # mixed RoPE's learned frequencies (2, layers, heads, head_dim / 2), as timm's rope.freqs
    Rule("rope.freqs", "param", lambda c: (2, c.num_hidden_layers, c.num_attention_heads, c.head_dim // 2),
         when=lambda c: c.rope_type == "mixed"),
    *(_linear(_L + f"attention.attention.{n}", lambda c: (c.hidden_size, c.hidden_size),
              has_bias=(lambda c: c.qkv_bias and c.key_bias) if n == "key" else (lambda c: c.qkv_bias))
      for n in ("query", "key", "value")),
    *(_norm(_L + f"attention.attention.{n}", lambda c: (c.head_dim,), when=lambda c: c.qk_norm)
      for n in ("q_norm", "k_norm")),
    _norm(_L + "attention.output.layernorm", when=lambda c: c.attention_norm),
    _linear(_L + "attention.output.dense", lambda c: (c.hidden_size, c.hidden_size), has_bias=lambda c: c.proj_bias),
    _linear(_L + "intermediate.dense", lambda c: (_mlp_width(c), c.hidden_size), has_bias=lambda c: c.mlp_bias),
    _norm(_L + "output.layernorm", lambda c: (c.intermediate_size,), when=lambda c: c.mlp_norm),
    _linear(_L + "output.dense", lambda c: (c.hidden_size, c.intermediate_size), has_bias=lambda c: c.mlp_bias),
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
    # AIMv2's attention-pooling head: the probe is the query, keys and values projected, an output Linear
    Rule(_P + "probe", "param", lambda c: (1, 1, c.hidden_size), when=lambda c: c.pooling == "probe"),
    *(_linear(_P + n, lambda c: (c.hidden_size, c.hidden_size), has_bias=lambda c: c.qkv_bias,
              when=lambda c: c.pooling == "probe") for n in ("key", "value")),
    _linear(_P + "dense", lambda c: (c.hidden_size, c.hidden_size), when=lambda c: c.pooling == "probe"),
    # CLIP's visual_projection / open_clip's visual.proj, after the pooled embedding
    _linear("projection", lambda c: (c.projection_size, c.hidden_size), has_bias=lambda c: False,
            when=lambda c: c.projection_size > 0),
)
# ViTForImageClassification: the backbone under "vit." plus this head.
HEADS: tuple[Rule, ...] = (
    _linear("classifier", lambda c: (c.num_labels, _classifier_width(c))),
    _linear("distillation_classifier", lambda c: (c.num_labels, c.hidden_size),
            when=lambda c: c.distillation_token and c.classifier_input == "pooled"))
BACKBONE_PREFIX = "vit."
CLASSIFIER_KEY = "classifier.weight"


def has_classifier(state: Mapping[str, Any]) -> bool:
    """Whether a canonical state dict holds ViTForImageClassification (else VisionTransformer)."""
    return CLASSIFIER_KEY in state


# the leaves of each module kind, in our names ("" for a bare parameter)
LEAVES: dict[Kind, tuple[str, ...]] = {
    "linear": ("weight", "bias"), "conv": ("weight", "bias"), "norm": ("weight", "bias"),
    "param": ("",), "scale": ("lambda1",)}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One expected tensor: its torch key and torch shape."""

    torch_key: str
    torch_shape: tuple[int, ...]


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
            for leaf in LEAVES[rule.kind]:
                if leaf == "bias" and not rule.has_bias(config):
                    continue
                shape = dims[:1] if leaf == "bias" else dims
                yield Entry(f"{module}.{leaf}" if leaf else module, shape)


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


