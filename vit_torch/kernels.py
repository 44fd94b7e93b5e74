"""Inference kernels of the torch twin, kept out of model.py (which reads like vit_flax/model.py).

On CPU, in float32, without autograd, the projections run as oneDNN GEMMs with the bias (and the
MLP's GELU) in the GEMM's epilogue -- about 10% faster than the BLAS behind F.linear on the ViT
shapes (benchmarks/defaults_benchmark.py) -- and q, k, v as one GEMM over [query; key; value]. Same
maths in fp32; the state dict and every module stay plain nn.Linear.

No module state changes at run time: whether the fast kernels may run is a context variable
(`reference_kernels()` scopes it, per thread and per asyncio task), whether this build's oneDNN op
works is probed once and remembered as a fact, and the fused q/k/v matrix is cached on the attention
module that owns the weights.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_FAST = contextvars.ContextVar("vit_torch_fast_kernels", default=True)
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or (lambda: False)


@contextlib.contextmanager
def reference_kernels() -> Iterator[None]:
    """Inside this block (this thread or task only) the torch twin runs its written-out kernels:
    F.linear then the activation, q, k and v as three GEMMs (the reference the fast path is tested on)."""
    token = _FAST.set(False)
    try:
        yield
    finally:
        _FAST.reset(token)


def fast_kernels_enabled() -> bool:
    return _FAST.get()


@functools.cache
def onednn_works() -> bool:
    """Whether this build and CPU run oneDNN's linear (probed once on a 1 x 1 matrix)."""
    if ONEDNN_LINEAR is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        ONEDNN_LINEAR(torch.ones(1, 1), torch.ones(1, 1), None, "none", [], "")
    except (RuntimeError, NotImplementedError):
        return False
    return True


def fast_inference(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the run-time fused kernels may stand in for the written-out ones: enabled here, no
    autograd graph is being built (they have no backward) and nothing traces the model."""
    return (_FAST.get() and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not _is_compiling() and not torch.jit.is_tracing())


def _hooked(*layers: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in layers)


def onednn_usable(layer: nn.Linear, x: torch.Tensor, weight: torch.Tensor | None = None) -> bool:
    weight = layer.weight if weight is None else weight
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and type(x) is torch.Tensor and type(weight) in (torch.Tensor, nn.Parameter)
            and not _hooked(layer)  # hooks see a plain call
            and fast_inference(x, weight) and onednn_works())


def linear(layer: nn.Linear, x: torch.Tensor, gelu: str | None = None,
           weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`layer(x)`, then GELU (`gelu`: "none" exact, "tanh") when asked; with `weight` / `bias`
    given, those stand in for the layer's (the fused q/k/v matrix)."""
    weight, bias = (layer.weight, layer.bias) if weight is None else (weight, bias)
    op = ONEDNN_LINEAR
    if op is not None and onednn_usable(layer, x, weight):
        try:
            return op(x, weight, bias, "none" if gelu is None else "gelu", [], gelu or "")
        except (RuntimeError, NotImplementedError):  # a shape or CPU it cannot take: the plain path
            pass
    y = layer(x) if weight is layer.weight else F.linear(x, weight, bias)
    return y if gelu is None else F.gelu(y, approximate=gelu)


def gelu_algorithm(act: Callable[[torch.Tensor], torch.Tensor]) -> str | None:
    """F.gelu's `approximate` ("none" / "tanh") when `act` is a GELU, else None."""
    if act is F.gelu:
        return "none"
    if isinstance(act, functools.partial) and act.func is F.gelu:
        return act.keywords.get("approximate", "none")
    return None


def linear_act(layer: nn.Linear, act: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """act(layer(x)), the GELU in the GEMM's epilogue when the fast path runs."""
    gelu = gelu_algorithm(act)
    if gelu is not None and onednn_usable(layer, x):
        return linear(layer, x, gelu=gelu)
    return act(linear(layer, x))


def fused_qkv(query: nn.Linear, key: nn.Linear, value: nn.Linear, x: torch.Tensor, owner: nn.Module
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(q, k, v) of `x` with one GEMM over [query; key; value] when inference may take it, else
    None. The fused matrix, as timm stores it, is built at run time and cached on `owner` until a
    weight changes (its state dict keeps HF's three names)."""
    if _hooked(query, key, value) or not fast_inference(x, query.weight):
        return None
    parts = [p for m in (query, key, value) for p in (m.weight, m.bias) if p is not None]
    stamp = tuple((p.data_ptr(), p._version, p.dtype) for p in parts)
    cached = owner.__dict__.get("_fused_qkv_cache")
    if cached is None or cached[0] != stamp:
        weight = torch.cat([query.weight, key.weight, value.weight]).detach()
        biases = [m.bias if m.bias is not None else torch.zeros_like(m.weight[:, 0]) for m in (query, key, value)]
        # a key without bias (DINOv3, EVA) is a zero bias in the fused GEMM, as timm's k_bias buffer
        bias = torch.cat(biases).detach() if any(m.bias is not None for m in (query, key, value)) else None
        cached = (stamp, (weight, bias))
        owner.__dict__["_fused_qkv_cache"] = cached  # a plain attribute: never in the state dict
    weight, bias = cached[1]
    q, k, v = linear(query, x, weight=weight, bias=bias).chunk(3, dim=-1)
    return q, k, v
