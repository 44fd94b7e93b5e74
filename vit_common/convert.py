"""torch <-> flax weight conversion: one declarative table, numpy in, numpy out.

The torch state-dict keys are HF ``ViTModel`` / ``ViTForImageClassification`` keys and the flax
params tree is HF's Flax ViT tree, and both models use the same module names, so a flax path is the
torch module path with "." -> "/". What differs is the leaf: each module kind has one rule for how its
torch tensors become flax arrays. Those rules and the list of modules (with the shape each expects)
are the whole conversion.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import numpy as np

from vit_common.config import ViTConfig

Kind = Literal["linear", "conv", "norm", "param"]

# How a torch leaf becomes a flax leaf, per module kind: (torch leaf, flax leaf, torch->flax, flax->torch).
_LEAVES: dict[Kind, tuple[tuple[str, str, Callable[[np.ndarray], np.ndarray],
                                  Callable[[np.ndarray], np.ndarray]], ...]] = {
    # nn.Linear weight (out, in) <-> nn.Dense kernel (in, out)
    "linear": (("weight", "kernel", lambda w: w.T, lambda k: k.T),
               ("bias", "bias", lambda b: b, lambda b: b)),
    # nn.Conv2d weight (out, in, kh, kw) <-> nn.Conv kernel (kh, kw, in, out)
    "conv": (("weight", "kernel", lambda w: w.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1)),
             ("bias", "bias", lambda b: b, lambda b: b)),
    # nn.LayerNorm weight <-> nn.LayerNorm scale
    "norm": (("weight", "scale", lambda w: w, lambda s: s),
             ("bias", "bias", lambda b: b, lambda b: b)),
    # a bare nn.Parameter / self.param: same array, same name
    "param": (("", "", lambda p: p, lambda p: p),),
}


@dataclasses.dataclass(frozen=True)
class Rule:
    """One module (or bare parameter) of the model, in torch dotted form, "{i}" for a layer index."""

    path: str
    kind: Kind
    # torch shapes as a function of the config: (out, in) for linear, (dim,) for norm, full for param
    dims: Callable[[ViTConfig], tuple[int, ...]]
    has_bias: Callable[[ViTConfig], bool] = lambda c: True


def _linear(path: str, out_in: Callable[[ViTConfig], tuple[int, int]], **kw: Any) -> Rule:
    return Rule(path, "linear", out_in, **kw)


def _norm(path: str) -> Rule:
    return Rule(path, "norm", lambda c: (c.hidden_size,))


_L = "encoder.layer.{i}."
TABLE: tuple[Rule, ...] = (
    Rule("embeddings.cls_token", "param", lambda c: (1, 1, c.hidden_size)),
    Rule("embeddings.position_embeddings", "param", lambda c: (1, c.num_patches + 1, c.hidden_size)),
    Rule("embeddings.patch_embeddings.projection", "conv",
         lambda c: (c.hidden_size, c.num_channels, c.patch_size, c.patch_size)),
    *(_linear(_L + f"attention.attention.{n}", lambda c: (c.hidden_size, c.hidden_size),
              has_bias=lambda c: c.qkv_bias) for n in ("query", "key", "value")),
    _linear(_L + "attention.output.dense", lambda c: (c.hidden_size, c.hidden_size)),
    _linear(_L + "intermediate.dense", lambda c: (c.intermediate_size, c.hidden_size)),
    _linear(_L + "output.dense", lambda c: (c.hidden_size, c.intermediate_size)),
    _norm(_L + "layernorm_before"),
    _norm(_L + "layernorm_after"),
    _norm("layernorm"),
)
# ViTForImageClassification: the backbone under "vit." plus this head.
HEAD: Rule = _linear("classifier", lambda c: (c.num_labels, c.hidden_size))
BACKBONE_PREFIX = "vit."


@dataclasses.dataclass(frozen=True)
class Entry:
    """One expected tensor: its torch key, flax path, torch shape and conversion functions."""

    torch_key: str
    flax_path: tuple[str, ...]
    torch_shape: tuple[int, ...]
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


def expected_entries(config: ViTConfig, with_head: bool) -> Iterator[Entry]:
    """Every tensor of VisionTransformer (with_head=False) or ViTForImageClassification, in order."""
    prefix = BACKBONE_PREFIX if with_head else ""
    for rule in TABLE + ((HEAD,) if with_head else ()):
        paths = ([rule.path.format(i=i) for i in range(config.num_hidden_layers)]
                 if "{i}" in rule.path else [rule.path])
        if rule is not HEAD:
            paths = [prefix + p for p in paths]
        dims = rule.dims(config)
        for module in paths:
            for torch_leaf, flax_leaf, fwd, back in _LEAVES[rule.kind]:
                if torch_leaf == "bias" and not rule.has_bias(config):
                    continue
                shape = dims[:1] if torch_leaf == "bias" else dims
                key = f"{module}.{torch_leaf}" if torch_leaf else module
                path = tuple(module.split(".")) + ((flax_leaf,) if flax_leaf else ())
                yield Entry(key, path, shape, fwd, back)


# ---------------------------------------------------------------------------------------------
# numpy in: torch tensors and jax arrays are accepted and turned into numpy without copying values


def to_numpy(x: Any) -> np.ndarray:
    """A torch tensor, jax array or array-like as a numpy array (bfloat16 kept, via ml_dtypes)."""
    if type(x).__module__.startswith("torch"):
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            import ml_dtypes  # numpy has no bfloat16; ml_dtypes (a jax dependency) adds it

            return t.view(dtype=_torch_int16()).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    return np.asarray(x)


def to_torch(array: np.ndarray) -> Any:
    """numpy -> torch tensor (imports torch when called), bfloat16 (ml_dtypes) included, which
    torch.from_numpy refuses. A writable, C-ordered copy: jax and memory-mapped files hand out
    read-only buffers, and a transposed view would give torch a strided weight (another GEMM path,
    other rounding)."""
    import torch

    if array.dtype.name == "bfloat16":
        return torch.from_numpy(np.array(array, order="C").view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, order="C"))


def _torch_int16() -> Any:
    import torch

    return torch.int16


def c_order(arr: np.ndarray, block: int = 128) -> np.ndarray:
    """`arr` in C order. A transposed matrix (what every torch <-> flax kernel is) is copied in
    square blocks that stay in cache: about twice numpy's element-order copy."""
    if arr.flags.c_contiguous:
        return arr
    if arr.ndim != 2 or not arr.flags.f_contiguous:
        return np.ascontiguousarray(arr)
    out = np.empty(arr.shape, arr.dtype)
    for i in range(0, arr.shape[0], block):
        for j in range(0, arr.shape[1], block):
            out[i:i + block, j:j + block] = arr[i:i + block, j:j + block]
    return out


def flatten_params(params: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    """A nested params dict (or {"params": ...} variables) as {path tuple: leaf}."""
    if set(params.keys()) == {"params"}:
        params = params["params"]
    flat: dict[tuple[str, ...], Any] = {}

    def walk(node: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for k, v in node.items():
            if isinstance(v, Mapping):
                walk(v, path + (str(k),))
            else:
                flat[path + (str(k),)] = v

    walk(params, ())
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
# inferring the architecture's shapes from the weights, when no config is given

class NonSquareGrid(ValueError):
    """The token count of the position embeddings is not a square: the image size is ambiguous."""


_LAYER_RE = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def infer_config(state_dict: Mapping[str, Any], with_head: bool | None = None, *,
                 square: bool = True) -> ViTConfig:
    """The shape-level config of a torch-named state dict.

    The head count changes no tensor shape, so it cannot be read from the weights; the result has
    num_attention_heads=1, which is fine for checking and converting weights but not for running
    them. Pass the real config wherever the model is built. The patch grid is assumed square; with
    `square=False` a non-square token count is read as a 1 x N grid, which has the right shapes
    (all conversion needs) but not the real image size.
    """
    if with_head is None:
        with_head = "classifier.weight" in state_dict
    prefix = BACKBONE_PREFIX if with_head else ""

    def shape(key: str) -> tuple[int, ...]:
        if prefix + key not in state_dict:
            raise ValueError(f"cannot infer the architecture: key {prefix + key!r} is missing "
                             f"(got {len(state_dict)} keys, e.g. {sorted(state_dict)[:3]})")
        return tuple(np.shape(state_dict[prefix + key]))

    hidden, channels, patch, _ = shape("embeddings.patch_embeddings.projection.weight")
    tokens = shape("embeddings.position_embeddings")[1] - 1
    grid = round(tokens ** 0.5)
    if grid * grid == tokens:
        image_size: int | tuple[int, int] = grid * patch
    elif not square:
        image_size = (patch, tokens * patch)
    else:
        raise NonSquareGrid(f"cannot infer image_size from {tokens} position embeddings (not a "
                            f"square grid); pass config=")
    layers = {int(m.group(1)) for k in state_dict if (m := _LAYER_RE.search(k))}
    return ViTConfig(
        hidden_size=hidden, num_channels=channels, patch_size=patch, image_size=image_size,
        num_hidden_layers=max(layers) + 1 if layers else 1, num_attention_heads=1,
        intermediate_size=shape("encoder.layer.0.intermediate.dense.weight")[0],
        qkv_bias=prefix + "encoder.layer.0.attention.attention.query.bias" in state_dict,
        num_labels=np.shape(state_dict["classifier.weight"])[0]
        if with_head and "classifier.weight" in state_dict else 0)


def _report(what: str, missing: list[str], unexpected: list[str], misshapen: list[str]) -> None:
    if not (missing or unexpected or misshapen):
        return
    lines = [f"{what}: the weights do not match the model"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if items:
            lines.append(f"  {len(items)} {title}: " + ", ".join(items))
    raise ValueError("\n".join(lines))


def check_state_dict(state_dict: Mapping[str, Any], config: ViTConfig, with_head: bool,
                     what: str = "state dict", unexpected: list[str] | None = None) -> None:
    """Raise one ValueError listing every missing, unexpected and misshapen key of a torch-named
    state dict (plus any `unexpected` names a foreign reader could not place)."""
    entries = list(expected_entries(config, with_head))
    seen = {e.torch_key for e in entries}
    missing, misshapen = [], []
    for e in entries:
        if e.torch_key not in state_dict:
            missing.append(e.torch_key)
        elif tuple(np.shape(state_dict[e.torch_key])) != e.torch_shape:
            misshapen.append(f"{e.torch_key} expected {e.torch_shape} got "
                             f"{tuple(np.shape(state_dict[e.torch_key]))}")
    extra = sorted(list(unexpected or []) + [k for k in state_dict if k not in seen])
    _report(what, missing, extra, misshapen)


def torch_to_flax(state_dict: Mapping[str, Any], config: ViTConfig | None = None,
                  with_head: bool | None = None) -> dict[str, Any]:
    """HF-named torch state dict -> HF Flax params tree (nested dict of numpy arrays).

    `with_head` picks VisionTransformer (False) or ViTForImageClassification (True); by default it is
    read from the keys (a "classifier.weight" means a classifier). Every missing, unexpected and
    misshapen key is reported together in one ValueError.
    """
    if with_head is None:
        with_head = "classifier.weight" in state_dict
    if config is None:
        config = infer_config(state_dict, with_head, square=False)
    check_state_dict(state_dict, config, with_head, "torch_to_flax")
    return unflatten_params({e.flax_path: e.to_flax(to_numpy(state_dict[e.torch_key]))
                             for e in expected_entries(config, with_head)})


def flax_to_torch(params: Mapping[str, Any], config: ViTConfig | None = None,
                  with_head: bool | None = None) -> dict[str, np.ndarray]:
    """HF Flax params tree (or {"params": tree}) -> HF-named torch state dict of numpy arrays."""
    flat = flatten_params(params)
    if with_head is None:
        with_head = ("classifier", "kernel") in flat
    # Name every leaf the table knows in torch form; the rest are unexpected.
    by_torch_key: dict[str, tuple[str, np.ndarray]] = {}
    unexpected = []
    for path, leaf in flat.items():
        named = _torch_name(path, with_head)
        if named is None:
            unexpected.append("/".join(path))
        else:
            by_torch_key[named[0]] = ("/".join(path), named[1](to_numpy(leaf)))
    if config is None:
        config = infer_config({k: v for k, (_, v) in by_torch_key.items()}, with_head, square=False)
    missing, misshapen, state = [], [], {}
    expected = list(expected_entries(config, with_head))
    known = {e.torch_key for e in expected}
    unexpected += sorted(p for k, (p, _) in by_torch_key.items() if k not in known)
    for e in expected:
        if e.torch_key not in by_torch_key:
            missing.append("/".join(e.flax_path))
            continue
        path, value = by_torch_key[e.torch_key]
        if value.shape != e.torch_shape:
            want = e.to_flax(np.broadcast_to(np.empty((), value.dtype), e.torch_shape)).shape
            misshapen.append(f"{path} expected {want} got {flat[tuple(path.split('/'))].shape}")
            continue
        state[e.torch_key] = value
    _report("flax_to_torch", missing, sorted(unexpected), misshapen)
    return state


def _torch_name(path: tuple[str, ...], with_head: bool
                ) -> tuple[str, Callable[[np.ndarray], np.ndarray]] | None:
    """A flax leaf path as (torch key, flax->torch function), or None when the table has no rule."""
    dotted = ".".join(path)
    prefix = BACKBONE_PREFIX if with_head else ""
    for rule in TABLE + ((HEAD,) if with_head else ()):
        rule_prefix = "" if rule is HEAD else prefix
        pattern = re.escape(rule_prefix + rule.path).replace(re.escape("{i}"), r"\d+")
        for torch_leaf, flax_leaf, _, back in _LEAVES[rule.kind]:
            suffix = "." + re.escape(flax_leaf) if flax_leaf else ""
            m = re.fullmatch(f"({pattern}){suffix}", dotted)
            if m:
                return (f"{m.group(1)}.{torch_leaf}" if torch_leaf else m.group(1)), back
    return None
