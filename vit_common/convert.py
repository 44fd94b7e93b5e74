"""torch <-> Flax: the canonical state dict as the Flax twin's params tree and back, and the
scanned (layer-stacked) form of that tree.

The Flax tree is HF's Flax ViT tree: the canonical module names with Flax leaves (`kernel`,
`scale`), flattened with "/" — one `Naming` (`FLAX`) in the shared rule vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from vit_common.canonical import (
    Array,
    check_state_dict,
    expected_entries,
    has_classifier,
    report_mismatch,
    to_numpy,
)
from vit_common.infer import infer_config
from vit_common.naming import (
    Naming,
    Rename,
    from_naming,
    identity,
    their_names,
    to_naming,
)

if TYPE_CHECKING:
    from vit_common.config import ViTConfig

# HF's Flax ViT tree, flattened with "/": same module names, Flax leaves
FLAX = Naming("flax", identity(sep="/"), (Rename("classifier", "classifier", "linear"),
                                           Rename("distillation_classifier", "distillation_classifier", "linear")),
              sep="/", backbone_prefix="vit/", markers=("embeddings/patch_embeddings/projection/kernel",))


def unwrap_params(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Flax params tree from `{"params": tree}` variables or the tree itself."""
    return tree["params"] if set(tree.keys()) == {"params"} else tree


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


def check_flax_tree(params: Mapping[str, Any], config: ViTConfig, with_head: bool,
                    what: str = "flax params") -> None:
    """Every name and shape of a (per-layer) Flax params tree checked against `config`'s model,
    without converting a value: one ValueError listing what is missing, unexpected or misshapen."""
    flat = {"/".join(path): leaf for path, leaf in flatten_params(params).items()}
    want: dict[str, tuple[int, ...]] = {}
    names = their_names(FLAX, config, with_head)
    for e in expected_entries(config, with_head):
        their, leaf = names[e.torch_key]
        want[their] = tuple(leaf.to_theirs(np.broadcast_to(np.empty((), np.float32), e.torch_shape), config).shape)
    missing = [k for k in want if k not in flat]
    misshapen = [f"{k} expected {want[k]} got {tuple(np.shape(flat[k]))}" for k in want
                 if k in flat and tuple(np.shape(flat[k])) != want[k]]
    report_mismatch(what, missing, sorted(k for k in flat if k not in want), misshapen)


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


