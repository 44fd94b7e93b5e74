"""Weight naming: ONE rule vocabulary for every source's names onto the canonical ones.

Every naming other than the canonical one (the Flax tree, HF on disk, transformers-5 in-memory names,
timm, Google's npz, big_vision) is a `Naming`: a table of `Rename(ours, theirs, kind)` — one of our
module paths (or several, fused along the first axis in theirs, as timm's qkv), their module path
("{i}" is the layer index in both), and a kind. The kind says, in `KINDS`, how each leaf of the
module is named and transformed both ways (a Linear weight (out, in) is a Dense kernel (in, out), a
Google attention kernel is (hidden, heads, head_dim), ...). `to_naming` and `from_naming` are the
only code that applies them; the tables themselves live with their families (`vit_common.families`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from vit_common.canonical import (
    BACKBONE_PREFIX,
    TABLE,
    check_state_dict,
    has_classifier,
    to_numpy,
)
from vit_common.formats import blocked_contiguous

if TYPE_CHECKING:
    from vit_common.config import ViTConfig

Kind = Literal["linear", "conv", "norm", "param", "copy", "heads_in", "heads_out", "pos_no_cls",
               "token_3d", "scale", "gamma", "param_scale", "vector", "table", "rows", "matrix", "in_proj", "patch_linear", "grid_table"]
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


def _patch_kernel(k: Array) -> Array:
    """A NaFlex patch Linear (hidden, p*p*C) as our conv weight (hidden, C, p, p). The file does not
    say C: three channels when p*p*3 columns make a square patch, else one."""
    width = k.shape[1]
    for c in (3, 1):
        p = int(round((width / c) ** 0.5))
        if width % c == 0 and p * p * c == width:
            return k.reshape(k.shape[0], p, p, c).transpose(0, 3, 1, 2)
    raise ValueError(f"a patch embedding of {width} columns is not p*p*3 or p*p*1 for any patch size p")


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
    # timm Eva's bare gamma_1 / gamma_2 parameters
    "param_scale": (Leaf("lambda1", "", 1, _same, _same),),
    # CLIP's class_embedding (hidden,) <-> our (1, 1, hidden) token
    "vector": (Leaf("", "", 1, lambda t, c: t.reshape(-1), lambda t: t.reshape(1, 1, -1)),),
    # an nn.Embedding table (tokens, hidden) <-> our (1, tokens, hidden) parameter
    "table": (Leaf("", "weight", 2, lambda t, c: t.reshape(t.shape[1:]), lambda t: t[None]),),
    # a bare (tokens, hidden) parameter <-> our (1, tokens, hidden) (open_clip's positional_embedding)
    "rows": (Leaf("", "", 2, lambda t, c: t.reshape(t.shape[1:]), lambda t: t[None]),),
    # a bare (in, out) parameter applied as x @ proj <-> our Linear weight (out, in) (open_clip's proj)
    "matrix": (Leaf("weight", "", 2, lambda w, c: w.T, lambda k: k.T),),
    # SigLIP 2 NaFlex's patch embedding: a Linear over patches flattened in (row, col, channel)
    # order, (hidden, p*p*C) <-> our conv (hidden, C, p, p)
    "patch_linear": (Leaf("weight", "weight", 2, lambda w, c: w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1),
                          lambda k: _patch_kernel(k)), _bias()),
    # a (1, 1, hidden) token <-> our (1, hidden) one (HF DINOv3's mask_token beside DINOv2's)
    "token_3d": (Leaf("", "", 3, lambda t, c: t.reshape(1, 1, -1), lambda t: t.reshape(1, -1)),),
    # timm NaFlexVit's position grid (1, gh, gw, hidden) <-> our (1, gh*gw, hidden) table
    "grid_table": (Leaf("", "", 4, lambda t, c: t.reshape(1, *c.grid_size, t.shape[-1]),
                        lambda t: t.reshape(1, -1, t.shape[-1])),),
    # nn.MultiheadAttention's packed input projection (SigLIP's pooling head)
    "in_proj": (Leaf("weight", "in_proj_weight", 2, _same, _same), _bias("bias", "in_proj_bias")),
    # big_vision adds position embeddings before prepending [CLS]: its slot is zero here
    "pos_no_cls": (Leaf("", "", 3, lambda p, c: p[:, 1:],
                        lambda p: np.concatenate([np.zeros_like(p[:, :1]), p], axis=1)),),
}


# ---------------------------------------------------------------------------------------------
# namings: other sources' names as tables onto the canonical ones

@dataclasses.dataclass(frozen=True)
class Rename:
    """Our module path(s) <-> their module path(s), and the kind that names and transforms the
    leaves. Several of ours are stacked along the first axis in one of theirs (timm's qkv), or one
    of ours is split along its first axis into several of theirs (our packed SwiGLU [gate; up] as
    HF DINOv3's gate_proj and up_proj); never several on both sides."""

    ours: str | tuple[str, ...]
    theirs: str | tuple[str, ...]
    kind: Kind = "copy"
    when: Callable[[ViTConfig], bool] | None = None  # only for models of such configs

    def __post_init__(self) -> None:
        if len(self.parts) > 1 and len(self.their_parts) > 1:
            raise ValueError(f"a Rename stacks on one side only: {self.ours} <-> {self.theirs}")

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.ours,) if isinstance(self.ours, str) else self.ours

    @property
    def their_parts(self) -> tuple[str, ...]:
        return (self.theirs,) if isinstance(self.theirs, str) else self.theirs

    @property
    def layered(self) -> bool:
        return "{i}" in self.their_parts[0]


@dataclasses.dataclass(frozen=True)
class Naming:
    name: str
    backbone: tuple[Rename, ...]
    head: tuple[Rename, ...]
    sep: str = "."  # between their module path and their leaf name
    backbone_prefix: str = ""  # theirs, in front of the backbone when a classifier is present
    markers: tuple[str, ...] = ()  # their keys (backbone, no prefix) that identify this naming
    # the ranks some markers must have (SigLIP 2's patch Linear beside SigLIP's conv, same names)
    marker_ranks: tuple[tuple[str, int], ...] = ()
    # backbone modules theirs keeps beside the backbone, outside its prefix (CLIP's
    # visual_projection); a model with one of them has its backbone under the prefix, as a classifier
    top: tuple[Rename, ...] = ()
    # their tensors that exist empty where our model has none ({their key: shape} for a config):
    # HF DINOv3's (1, 0, hidden) register_tokens without registers
    empty: Callable[[ViTConfig], dict[str, tuple[int, ...]]] | None = None

    def prefixed(self, config: ViTConfig, with_head: bool) -> bool:
        """Whether their backbone keys carry backbone_prefix for a model of `config`."""
        return with_head or any(_applies(r, config) for r in self.top)


def identity(kinds: Mapping[Kind, Kind] | None = None, sep: str = ".",
             rename: Mapping[str, str] | None = None) -> tuple[Rename, ...]:
    """The canonical table as renames: the same paths (`rename` overrides some, `sep` joins their
    parts), each kind mapped through `kinds` (HF's own files copy what the Flax tree transposes)."""
    kinds, rename = kinds or {}, rename or {}
    return tuple(Rename(r.path, rename.get(r.path, r.path).replace(".", sep), kinds.get(r.kind, r.kind))
                 for r in TABLE)



def _applies(r: Rename, config: ViTConfig | None) -> bool:
    return r.when is None or config is None or r.when(config)


def _their_key(module: str, leaf: Leaf, sep: str) -> str:
    return f"{module}{sep}{leaf.theirs}" if leaf.theirs else module


def to_naming(naming: Naming, state: Mapping[str, Any], config: ViTConfig
              ) -> list[tuple[str, Callable[[], Array]]]:
    """A complete canonical state -> [(their key, function making the array)] in model order. The
    arrays are made on demand, so a writer can build the next one while it writes this one."""
    with_head = has_classifier(state)
    check_state_dict(state, config, with_head, "to_naming")
    ours_prefix = BACKBONE_PREFIX if with_head else ""
    theirs_prefix = naming.backbone_prefix if naming.prefixed(config, with_head) else ""
    out: list[tuple[str, Callable[[], Array]]] = []
    used: set[str] = set()
    for renames, op, tp in ((naming.backbone, ours_prefix, theirs_prefix), (naming.top, ours_prefix, ""),
                            (naming.head if with_head else (), "", "")):
        for r in renames:
            if not _applies(r, config):
                continue
            layers = range(config.num_hidden_layers) if r.layered else [0]
            for i in layers:
                for leaf in KINDS[r.kind]:
                    keys = [op + (f"{p.format(i=i)}.{leaf.ours}" if leaf.ours else p.format(i=i))
                            for p in r.parts]
                    if not all(k in state for k in keys):
                        continue  # an optional tensor (qkv bias) this model does not have
                    used.update(keys)
                    theirs = r.their_parts
                    for j, t in enumerate(theirs):
                        out.append((tp + _their_key(t.format(i=i), leaf, naming.sep),
                                    _maker(leaf, [state[k] for k in keys], config, (j, len(theirs)))))
    made = {k for k, _ in out}
    for key, shape in (naming.empty(config) if naming.empty else {}).items():
        if theirs_prefix + key not in made:
            out.append((theirs_prefix + key, functools.partial(np.zeros, shape, np.float32)))
    left = sorted(k for k in state if k not in used)
    if left:  # never a silently dropped tensor
        raise ValueError(f"{naming.name} names cannot hold {', '.join(left[:6])}"
                         f"{', ...' if len(left) > 6 else ''}: write a format that has them")
    return out


def _maker(leaf: Leaf, arrays: list[Any], config: ViTConfig, piece: tuple[int, int] = (0, 1)
           ) -> Callable[[], Array]:
    """The maker of one of their arrays: ours stacked, or piece j of n of ours split on axis 0."""
    def make() -> Array:
        parts = [to_numpy(a) for a in arrays]
        arr = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        j, n = piece
        if n > 1:
            arr = np.split(arr, n, axis=0)[j]
        return leaf.to_theirs(arr, config)

    return make


def from_naming(naming: Naming, raw: Mapping[str, Any], origin: dict[str, str] | None = None,
                config: ViTConfig | None = None) -> tuple[dict[str, Array], list[str], list[str]]:
    """Their tensors -> (canonical state, their keys no rule places, shape problems). Nothing is
    reshaped before its rank is checked; completeness and shapes are checked by `check_state_dict`.
    `origin`, when given, receives {canonical key: their key}. With `config`, only the rules for
    models of that config apply (big_vision's pos_embedding has a [CLS] slot or not)."""
    patterns = []
    for group, renames in (("backbone", naming.backbone), ("top", naming.top), ("head", naming.head)):
        for r in renames:
            if not _applies(r, config):
                continue
            for leaf in KINDS[r.kind]:
                for j, t in enumerate(r.their_parts):
                    their = _their_key(t, leaf, naming.sep)
                    regex = re.escape(their).replace(re.escape("{i}"), r"(\d+)")
                    patterns.append((re.compile(regex), group, r, leaf, j))
    bp = naming.backbone_prefix
    prefixed = bool(bp) and any(k.startswith(bp) for k in raw)
    state: dict[str, Array] = {}
    unplaced: list[str] = []
    problems: list[str] = []
    pending: dict[str, tuple[Rename, dict[int, tuple[str, Array]]]] = {}  # split renames: our key -> pieces
    head_found = False
    for key, value in raw.items():
        placed = False
        for regex, group, r, leaf, j in patterns:
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
            if len(r.their_parts) > 1:  # one piece of one of ours: joined once all have come
                module = r.ours.format(i=i)
                ours = ("" if group == "head" else "\0") + (f"{module}.{leaf.ours}" if leaf.ours else module)
                pending.setdefault(ours, (r, {}))[1][j] = (key, arr)
                head_found |= group == "head"
                break
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
    for ours, (rename, pieces) in pending.items():
        _join(ours, rename, pieces, state, origin, problems)
    prefix = BACKBONE_PREFIX if head_found else ""
    canonical = {(prefix + k[1:] if k.startswith("\0") else k): v for k, v in state.items()}
    if origin is not None:
        named = {(prefix + k[1:] if k.startswith("\0") else k): v for k, v in origin.items()}
        origin.clear()
        origin.update(named)
    return canonical, sorted(unplaced), problems


def _join(ours: str, rename: Rename, pieces: Mapping[int, tuple[str, Array]], state: dict[str, Array],
          origin: dict[str, str] | None, problems: list[str]) -> None:
    """Our tensor from the pieces a split rename found, stacked on axis 0 in their order."""
    n = len(rename.their_parts)
    keys = [k for k, _ in pieces.values()]
    if sorted(pieces) != list(range(n)):
        problems.append(f"{', '.join(keys)} is {len(pieces)} of the {n} parts of one tensor "
                        f"({' + '.join(t.split('.')[-1] for t in rename.their_parts)}): the others are missing")
        return
    arrays = [pieces[j][1] for j in range(n)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim == 0:
        problems.append(f"{', '.join(keys)} are parts of one tensor and must have one shape, got "
                        f"{', '.join(str(tuple(a.shape)) for a in arrays)}")
        return
    state[ours] = np.concatenate(arrays, axis=0)
    if origin is not None:
        origin[ours] = keys[0]


def their_names(naming: Naming, config: ViTConfig, with_head: bool) -> dict[str, tuple[str, Leaf]]:
    """{canonical key: (their key, leaf rule)} for every tensor a model of `config` has."""
    ours_prefix = BACKBONE_PREFIX if with_head else ""
    theirs_prefix = naming.backbone_prefix if naming.prefixed(config, with_head) else ""
    names = {}
    for renames, op, tp in ((naming.backbone, ours_prefix, theirs_prefix), (naming.top, ours_prefix, ""),
                            (naming.head if with_head else (), "", "")):
        for r in renames:
            if not _applies(r, config):
                continue
            for i in (range(config.num_hidden_layers) if r.layered else [0]):
                for leaf in KINDS[r.kind]:
                    their = tp + _their_key(r.their_parts[0].format(i=i), leaf, naming.sep)
                    for p in r.parts:
                        ours = op + (f"{p.format(i=i)}.{leaf.ours}" if leaf.ours else p.format(i=i))
                        names[ours] = (their, leaf)
    return names


def detect_naming(keys: Any, candidates: Iterable[Naming]) -> Naming | None:
    """The first naming among `candidates` whose markers are all among `keys` (with or without
    its backbone prefix)."""
    for n in candidates:
        for prefix in ("", n.backbone_prefix):
            if all(prefix + m in keys for m in n.markers) and all(
                    np.ndim(keys[prefix + m]) == rank for m, rank in n.marker_ranks):
                return n
    return None

