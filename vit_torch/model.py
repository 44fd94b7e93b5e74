"""The Vision Transformer in PyTorch. vit_flax/model.py is its twin: same classes, same order, same
attribute names; `__init__` pairs with `setup` and `forward` with `__call__`.

State-dict keys are exactly HF transformers' ViTModel (without pooler) / ViTForImageClassification
keys, so HF checkpoints load with no renaming.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

import vit_torch.kernels as kernels
from vit_common.config import AttentionImpl, ViTConfig
from vit_common.resample import resampling_matrices, sincos2d_table
from vit_common.rotary import mixed_freqs_init, rope_coords, rope_tables

# (sin, cos) of the rotary angles, a row per token: (N, head_dim), or (heads, N, head_dim) per layer
Rope = tuple[torch.Tensor, torch.Tensor]


def _trunc_normal(tensor: torch.Tensor, std: float) -> torch.Tensor:
    # N(0, std^2) cut at two standard deviations: jax.nn.initializers.truncated_normal's law.
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


def _at_least_f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _attention_probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)): (B, heads, N, N), the one copy of this maths in the twin
    (the model, attention_maps and the visualisation all call it). The softmax runs in at least
    float32 (a half-precision sum over hundreds of keys loses the small terms). `mask` (B, N_keys),
    True for a real token: padding keys get no weight (NaFlex batches)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, heads, N, N)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return _at_least_f32(scores).softmax(dim=-1).to(scores.dtype)


def _eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     dropout: nn.Dropout, mask: torch.Tensor | None = None) -> torch.Tensor:
    return dropout(_attention_probs(q, k, mask)) @ v  # (B, heads, N, head_dim)


def _sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    dropout: nn.Dropout, mask: torch.Tensor | None = None) -> torch.Tensor:
    # fused kernel (flash / memory-efficient where the device has one); same maths as eager
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, None, None, :],
                                          dropout_p=dropout.p if dropout.training else 0.0)


def _attention_fn(attention_impl: str) -> Callable[..., torch.Tensor]:
    if attention_impl == "eager":
        return _eager_attention
    elif attention_impl == "sdpa":
        return _sdpa_attention
    else:
        raise ValueError(f"attention_impl must be 'eager' or 'sdpa', got {attention_impl!r}")


def _activation(hidden_act: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if hidden_act == "gelu":
        return F.gelu  # exact, erf-based
    elif hidden_act in ("gelu_new", "gelu_pytorch_tanh"):
        # Google's checkpoints were trained with the tanh approximation
        return functools.partial(F.gelu, approximate="tanh")
    elif hidden_act == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)  # OpenAI CLIP's
    else:
        raise ValueError(f"unsupported hidden_act {hidden_act!r}")


def _mlp_activation(config: ViTConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The MLP's nonlinearity on intermediate.dense's output: the activation, or SwiGLU's
    silu(gate) * up on its [gate; up] halves."""
    if config.mlp_type == "mlp":
        return _activation(config.hidden_act)
    elif config.mlp_type == "swiglu":
        def swiglu(x: torch.Tensor) -> torch.Tensor:
            gate, up = x.chunk(2, dim=-1)
            return F.silu(gate) * up
        return swiglu
    else:
        raise ValueError(f"unsupported mlp_type {config.mlp_type!r}")


class _Float32LayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose statistics and normalisation run in at least float32 whatever the
    parameters' dtype; the result is handed on in the parameters' (compute) dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _at_least_f32(self.weight)
        y = F.layer_norm(x.to(w.dtype), self.normalized_shape, w, self.bias.to(w.dtype), self.eps)
        return y.to(self.weight.dtype)


class _Float32RMSNorm(nn.RMSNorm):
    """nn.RMSNorm (AIMv2) with its mean square taken in at least float32, as _Float32LayerNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _at_least_f32(self.weight)
        return F.rms_norm(x.to(w.dtype), self.normalized_shape, w, self.eps).to(self.weight.dtype)


def _norm(config: ViTConfig, width: int | None = None) -> nn.Module:
    """The model's norm over `width` channels (hidden_size by default): LayerNorm or RMSNorm."""
    width = config.hidden_size if width is None else width
    if config.norm_type == "layernorm":
        return _Float32LayerNorm(width, eps=config.layer_norm_eps)
    elif config.norm_type == "rmsnorm":
        return _Float32RMSNorm(width, eps=config.layer_norm_eps)
    else:
        raise ValueError(f"unsupported norm_type {config.norm_type!r}")


def _rotate(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, layout: str) -> torch.Tensor:
    """Rotary embedding of x (B, heads, N, head_dim) by tables with a row per token: the prefix
    tokens' rows are sin 0, cos 1, so they pass unchanged (exactly, as the sources leave them). The
    rotation runs in the tables' precision (at least float32)."""
    xt = x.to(sin.dtype)
    if layout == "halves":  # rotate-half: (x1, x2) -> (-x2, x1)
        x1, x2 = xt.chunk(2, dim=-1)
        turned = torch.cat([-x2, x1], dim=-1)
    elif layout == "pairs":  # interleaved: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)
        turned = torch.stack([-xt[..., 1::2], xt[..., ::2]], dim=-1).flatten(-2)
    else:
        raise ValueError(f"unsupported rope_layout {layout!r}")
    return (xt * cos + turned * sin).to(x.dtype)


class ViTPatchEmbeddings(nn.Module):
    """(B, C, H, W) pixels -> (B, N, hidden) patch vectors, one per non-overlapping patch."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.pixel_shape = (config.num_channels, *config.image_hw)  # (C, H, W)
        self.patch_size = p = config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=p, stride=p,
                                    bias=config.patch_bias)
        self.layernorm = _norm(config) if config.patch_norm else None  # AIMv2's norm of the patch vectors

    def _normed(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.layernorm is None else self.layernorm(x).to(x.dtype)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        _check_pixels(self.pixel_shape, pixel_values, self.patch_size if interpolate_pos_encoding else None)
        x = self.projection(pixel_values)  # (B, hidden, H/p, W/p)
        return self._normed(x.flatten(2).transpose(1, 2))  # (B, N, hidden), patches in row-major (h, w) order

    def patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Patchified pixels (B, N, p*p*C), each patch flattened in (row, column, channel) order
        (SigLIP 2 NaFlex) -> (B, N, hidden): the same projection, its kernel as a Linear."""
        c, p = self.pixel_shape[0], self.patch_size
        _check_patches(patches, c * p * p)
        w = self.projection.weight  # (hidden, C, p, p)
        return self._normed(F.linear(patches, w.permute(0, 2, 3, 1).reshape(w.shape[0], -1), self.projection.bias))


class ViTEmbeddings(nn.Module):
    """Patch vectors with the prefix tokens ([CLS], DIST, registers) in front and position
    embeddings added (a learned table covering [CLS] and DIST or the patches only, or big_vision's
    fixed sincos2d)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.grid_size = config.grid_size
        d = config.hidden_size
        self.cls_token = nn.Parameter(torch.empty(1, 1, d)) if config.class_token else None
        self.distillation_token = nn.Parameter(torch.empty(1, 1, d)) if config.distillation_token else None
        self.register_tokens = (nn.Parameter(torch.empty(1, config.num_register_tokens, d))
                                if config.num_register_tokens else None)
        self.mask_token = nn.Parameter(torch.empty(1, d)) if config.mask_token else None
        self.patch_embeddings = ViTPatchEmbeddings(config)
        self.position_embeddings = (
            nn.Parameter(torch.empty(1, config.num_patches + config.num_position_prefix, d))
            if config.position_embedding_type == "learned" else None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False,
                spatial_shapes: torch.Tensor | None = None) -> torch.Tensor:
        """`interpolate_pos_encoding`: accept any image size of at least one patch (floor(size / p)
        patches per side, as HF and timm), resampling the position embeddings to its patch grid.
        With `spatial_shapes` (B, 2), `pixel_values` are NaFlex patches (B, N, p*p*C): image i's
        first h*w rows are its (h, w) patch grid in row-major order, the rest padding; the table is
        resized to each image's own grid."""
        config = self.config
        if spatial_shapes is not None:
            x = self.patch_embeddings.patches(pixel_values)  # (B, N, hidden)
        else:
            x = self.patch_embeddings(pixel_values, interpolate_pos_encoding)  # (B, N, hidden)
        b, _, d = x.shape
        p = self.patch_embeddings.patch_size
        kind = config.position_embedding_type
        if spatial_shapes is not None:
            pos = _naflex_pos_embed(self.position_embeddings, self.grid_size, spatial_shapes, x.shape[1],
                                    config) if kind == "learned" else None
            if kind == "sincos2d":
                raise ValueError("NaFlex patch inputs need a learned position table (sincos2d has no "
                                 "per-image resizing here)")
        elif kind == "learned":
            grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
            pos = _resize_pos_embed(self.position_embeddings, self.grid_size, grid,
                                    config.num_position_prefix, config.position_embedding_resampling)
        elif kind == "sincos2d":
            grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
            pos = torch.tensor(sincos2d_table(grid, d), dtype=x.dtype, device=x.device)[None]
        elif kind == "none":
            pos = None
        else:
            raise ValueError(f"unsupported position_embedding_type {kind!r}")
        if pos is not None and config.num_position_prefix == 0:
            x = x + pos  # the table covers the patches only (timm no_embed_class, big_vision)
        prefix = [t.expand(b, -1, -1) for t in (self.cls_token, self.distillation_token) if t is not None]
        x = torch.cat([*prefix, x], dim=1)  # (B, [CLS] [DIST] + N, hidden)
        if pos is not None and config.num_position_prefix:
            x = x + pos
        if self.register_tokens is not None:  # registers after [CLS] / DIST, without positions
            x = torch.cat([x[:, :len(prefix)], self.register_tokens.expand(b, -1, -1),
                           x[:, len(prefix):]], dim=1)  # (B, prefix + N, hidden)
        return self.dropout(x)


class ViTSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention; returns the heads concatenated."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        self.attend = _attention_fn(attention_impl)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.rope_layout = config.rope_layout
        d = config.hidden_size
        self.query = nn.Linear(d, d, bias=config.qkv_bias)
        self.key = nn.Linear(d, d, bias=config.qkv_bias and config.key_bias)
        self.value = nn.Linear(d, d, bias=config.qkv_bias)
        # timm's qk_norm: a LayerNorm over head_dim on every head's queries and keys
        self.q_norm = _norm(config, self.head_dim) if config.qk_norm else None
        self.k_norm = _norm(config, self.head_dim) if config.qk_norm else None
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, N, head_dim)

    def _queries_keys(self, x: torch.Tensor, context: torch.Tensor, rope: Rope | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._normed(self._split(self.query(x)), self._split(self.key(context)), rope)

    def _normed(self, q: torch.Tensor, k: torch.Tensor, rope: Rope | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """qk-norm, then the rotary embedding of the patch tokens (timm Eva's order)."""
        if self.q_norm is not None:
            q, k = self.q_norm(q).to(q.dtype), self.k_norm(k).to(k.dtype)
        if rope is not None:
            q, k = _rotate(q, *rope, self.rope_layout), _rotate(k, *rope, self.rope_layout)
        return q, k

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, rope: Rope | None = None) -> torch.Tensor:
        """Queries from `x`; keys and values from `context` (the MAP head's probe attends over the
        tokens), else from `x`; `mask` (B, N_keys) drops padding keys; `rope` rotates the patch
        tokens' queries and keys."""
        b, n, _ = x.shape
        fused = kernels.fused_qkv(self.query, self.key, self.value, x, self) if context is None else None
        if fused is not None:  # inference: one GEMM for q, k and v (vit_torch.kernels)
            q, k = self._normed(self._split(fused[0]), self._split(fused[1]), rope)
            v = self._split(fused[2])
        else:
            context = x if context is None else context
            q, k = self._queries_keys(x, context, rope)
            v = self._split(self.value(context))
        out = self.attend(q, k, v, self.dropout, mask)  # (B, heads, N, head_dim)
        return out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)  # (B, N, hidden)

    def probabilities(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                      rope: Rope | None = None) -> torch.Tensor:
        """The attention probabilities this module computes for `x`: (B, heads, N, N)."""
        return _attention_probs(*self._queries_keys(x, x, rope), mask)


class ViTSelfOutput(nn.Module):
    """The attention's output projection (after a norm of the heads in EVA CLIP). The residual is
    added in ViTLayer (pre-norm block)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layernorm = _norm(config) if config.attention_norm else None
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.proj_bias)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x if self.layernorm is None else self.layernorm(x).to(x.dtype)
        return self.dropout(kernels.linear(self.dense, x))


class ViTAttention(nn.Module):
    """Self-attention followed by its output projection."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        self.attention = ViTSelfAttention(config, attention_impl)
        self.output = ViTSelfOutput(config)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, rope: Rope | None = None) -> torch.Tensor:
        return self.output(self.attention(x, context, mask, rope))


class ViTIntermediate(nn.Module):
    """The MLP's first half: hidden -> intermediate, then the activation (SwiGLU: hidden ->
    [gate; up], twice the width, then silu(gate) * up)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        width = config.intermediate_size * (2 if config.mlp_type == "swiglu" else 1)
        self.dense = nn.Linear(config.hidden_size, width, bias=config.mlp_bias)
        self.act = _mlp_activation(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.linear_act(self.dense, self.act, x)  # the GELU in the GEMM's epilogue when fast


class ViTOutput(nn.Module):
    """The MLP's second half: (a norm of the hidden activations in EVA CLIP), intermediate ->
    hidden, dropout, plus the residual when given."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layernorm = _norm(config, config.intermediate_size) if config.mlp_norm else None
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = x if self.layernorm is None else self.layernorm(x).to(x.dtype)
        x = self.dropout(kernels.linear(self.dense, x))
        return x if residual is None else x + residual


class ViTLayerScale(nn.Module):
    """LayerScale: a learned per-channel scale on a residual branch (DINOv2, CaiT)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.empty(config.hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lambda1


class ViTLayer(nn.Module):
    """One pre-norm Transformer block: x + attention(LN(x)), then h + MLP(LN(h)); with LayerScale
    each branch is scaled per channel before it is added."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        self.attention = ViTAttention(config, attention_impl)
        self.intermediate = ViTIntermediate(config)
        self.output = ViTOutput(config)
        self.layernorm_before = _norm(config)
        self.layernorm_after = _norm(config)
        self.layer_scale1 = ViTLayerScale(config) if config.layer_scale else None
        self.layer_scale2 = ViTLayerScale(config) if config.layer_scale else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Rope | None = None) -> torch.Tensor:
        x = _at_least_f32(x)  # the residual stream stays in (at least) float32 in half precision
        if self.layer_scale1 is None:
            h = x + self.attention(self.layernorm_before(x), None, mask, rope)
            return self.output(self.intermediate(self.layernorm_after(h)), h)
        h = x + self.layer_scale1(self.attention(self.layernorm_before(x), None, mask, rope))
        return h + self.layer_scale2(self.output(self.intermediate(self.layernorm_after(h))))

    def attention_probabilities(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                                rope: Rope | None = None) -> torch.Tensor:
        """This block's attention probabilities for its input `x`: (B, heads, N, N)."""
        return self.attention.attention.probabilities(self.layernorm_before(x), mask, rope)


class ViTEncoder(nn.Module):
    """num_hidden_layers ViTLayers in sequence."""

    # rematerialisation in training: each layer's insides are recomputed in the backward pass
    # (torch.utils.checkpoint, non-reentrant, the dropout RNG replayed); only its input is kept
    gradient_checkpointing: bool = False

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        self.layer = nn.ModuleList([ViTLayer(config, attention_impl)
                                    for _ in range(config.num_hidden_layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Rope | None = None) -> torch.Tensor:
        """`rope`: one (sin, cos) for every layer, or (layers, heads, N, head_dim) tables (mixed)."""
        remat = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.layer):
            r = _layer_rope(rope, i)
            x = (torch.utils.checkpoint.checkpoint(layer, x, mask, r, use_reentrant=False) if remat
                 else layer(x, mask, r))
        return x


def _layer_rope(rope: Rope | None, i: int) -> Rope | None:
    """Layer i's tables: mixed RoPE has a leading layer axis, the others one table for all."""
    if rope is None or rope[0].ndim == 2:
        return rope
    return rope[0][i], rope[1][i]


class ViTRotaryEmbedding(nn.Module):
    """The rotary tables of a patch grid, computed once per forward for every layer: fixed
    (vit_common.rotary, float64 numpy, cached per grid) or, for mixed RoPE, from the learned
    frequencies `freqs` (2, layers, heads, head_dim / 2) over the grid's integer positions.
    The tables stay in at least float32 whatever the model's dtype."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.freqs = (nn.Parameter(torch.empty(2, c.num_hidden_layers, c.num_attention_heads, c.head_dim // 2))
                      if config.rope_type == "mixed" else None)

    def forward(self, grid: tuple[int, int], like: torch.Tensor) -> Rope:
        dtype = torch.promote_types(like.dtype, torch.float32)
        if self.freqs is None:
            sin, cos = rope_tables(self.config, grid)
            return (torch.tensor(sin, device=like.device, dtype=dtype),
                    torch.tensor(cos, device=like.device, dtype=dtype))
        coords = torch.tensor(rope_coords(self.config, grid), device=like.device, dtype=dtype)  # (N, 2)
        f = self.freqs.to(dtype)
        # (layers, heads, N, head_dim / 2): each axis's position times its learned frequencies
        angles = coords[:, 0, None] * f[0, :, :, None, :] + coords[:, 1, None] * f[1, :, :, None, :]
        angles = angles.repeat_interleave(2, dim=-1)  # pairs (the config allows no other layout here)
        return angles.sin(), angles.cos()


class ViTAttentionPool(nn.Module):
    """Multihead attention pooling (SigLIP, big_vision MAPHead, timm global_pool='map'): a learned
    probe attends over the tokens, then x + MLP(LN(x)); no residual around the attention."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.empty(1, 1, config.hidden_size))
        # an nn.MultiheadAttention in SigLIP, timm's AttentionPoolLatent: biases, no qk-norm, its
        # own head count (PE core: 8 at every width), a plain GELU MLP
        head = _map_config(config)
        self.attention = ViTAttention(head, attention_impl)
        self.layernorm = _norm(head)
        self.intermediate = ViTIntermediate(head)
        self.output = ViTOutput(head)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        probe = self.probe.expand(tokens.shape[0], -1, -1).to(tokens.dtype)  # (B, 1, hidden)
        x = _at_least_f32(self.attention(probe, tokens, mask))
        return self.output(self.intermediate(self.layernorm(x)), x)[:, 0]  # (B, hidden)


class ViTProbePool(nn.Module):
    """AIMv2's attention-pooling head: a learned probe is the query itself (no projection), keys
    and values are projected from the tokens, the heads merged by a Linear; no MLP, no residual."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        self.attend = _attention_fn(attention_impl)
        self.num_heads = config.map_heads
        d = config.hidden_size
        self.probe = nn.Parameter(torch.empty(1, 1, d))
        self.key = nn.Linear(d, d, bias=config.qkv_bias)
        self.value = nn.Linear(d, d, bias=config.qkv_bias)
        self.dense = nn.Linear(d, d)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, heads, N, head_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b = tokens.shape[0]
        q = self._split(self.probe.expand(b, -1, -1).to(tokens.dtype))  # (B, heads, 1, head_dim)
        out = self.attend(q, self._split(self.key(tokens)), self._split(self.value(tokens)), self.dropout, mask)
        return self.dense(out.transpose(1, 2).reshape(b, -1))  # (B, hidden)


def _map_config(config: ViTConfig) -> ViTConfig:
    """The config the MAP head's modules are built from (vit_flax builds its head the same way)."""
    return config.replace(qk_norm=False, qkv_bias=True, key_bias=True, proj_bias=True, mlp_bias=True,
                          num_attention_heads=config.map_heads, map_num_heads=0, mlp_type="mlp",
                          attention_norm=False, mlp_norm=False, rope_type="none", rope_ref_grid=None)


class VisionTransformer(nn.Module):
    """pixels (B, C, H, W) -> the family's pooled embedding (B, hidden): the [CLS] token after the
    final LayerNorm for ViT and DINOv2, (CLS + DIST) / 2 for distilled DeiT, the normalised pooled
    token for CLIP, the mean of the patches (gap) or the attention pool (map, SigLIP); with a
    projection (CLIP's visual_projection), that mapped to (B, projection_size)."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "sdpa",
                 gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.config = config
        self.embeddings = ViTEmbeddings(config)
        self.pre_layernorm = _norm(config) if config.pre_norm else None
        self.rope = ViTRotaryEmbedding(config) if config.rope_type != "none" else None
        self.encoder = ViTEncoder(config, attention_impl)
        self.layernorm = _norm(config)
        pools = {"map": ViTAttentionPool, "probe": ViTProbePool}
        self.attention_pool = pools[config.pooling](config, attention_impl) if config.pooling in pools else None
        # CLIP's visual_projection: the pooled embedding mapped to the joint image-text space
        self.projection = (nn.Linear(config.hidden_size, config.projection_size, bias=False)
                           if config.projection_size else None)
        self.encoder.gradient_checkpointing = gradient_checkpointing
        self.apply(functools.partial(init_weights, config))

    def _embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool,
               spatial_shapes: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embeddings(pixel_values, interpolate_pos_encoding, spatial_shapes)
        return x if self.pre_layernorm is None else self.pre_layernorm(x)

    def _rope(self, pixel_values: torch.Tensor, spatial_shapes: torch.Tensor | None) -> Rope | None:
        """The rotary tables of the input's patch grid (any size: no table is resampled)."""
        if self.rope is None:
            return None
        if spatial_shapes is not None:
            raise ValueError("NaFlex patch inputs carry no rotary positions here: pass pixels")
        p = self.config.patch_size
        return self.rope((pixel_values.shape[-2] // p, pixel_values.shape[-1] // p), pixel_values)

    def token_mask(self, pixel_attention_mask: torch.Tensor | None, spatial_shapes: torch.Tensor | None
                   ) -> torch.Tensor | None:
        """NaFlex: the (B, prefix + N) mask of real tokens (prefix tokens always real), None for
        pixel inputs; a missing pixel_attention_mask means every patch is real."""
        if pixel_attention_mask is None:
            return None
        if spatial_shapes is None:
            raise ValueError("pixel_attention_mask goes with NaFlex patch inputs: pass spatial_shapes too")
        mask = pixel_attention_mask.to(torch.bool)
        prefix = torch.ones(mask.shape[0], self.config.num_prefix_tokens, dtype=torch.bool, device=mask.device)
        return torch.cat([prefix, mask], dim=1)

    def forward_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False,
                         pixel_attention_mask: torch.Tensor | None = None,
                         spatial_shapes: torch.Tensor | None = None) -> torch.Tensor:
        """Every token, prefix tokens first: (B, prefix + N, hidden), after the final LayerNorm
        when it sits on the tokens (as the source's last_hidden_state / forward_features).
        NaFlex inputs: `pixel_values` (B, N, p*p*C) patches, `pixel_attention_mask` (B, N) and
        `spatial_shapes` (B, 2) as HF's Siglip2 processor makes them; padding rows are computed
        but attended by nothing."""
        mask = self.token_mask(pixel_attention_mask, spatial_shapes)
        rope = self._rope(pixel_values, spatial_shapes)
        x = self.encoder(self._embed(pixel_values, interpolate_pos_encoding, spatial_shapes), mask, rope)
        return self.layernorm(x) if self.config.final_norm == "tokens" else x

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """forward_features' tokens -> the pooled embedding (B, pooled_size): projected when the
        model has a projection (CLIP's image embedding)."""
        config = self.config
        if config.pooling == "cls":
            pooled = (tokens[:, 0] + tokens[:, 1]) / 2 if config.distillation_token else tokens[:, 0]
        elif config.pooling == "gap":
            pooled = _patch_mean(tokens, config.num_prefix_tokens, mask)
        elif config.pooling in ("map", "probe"):
            pooled = self.attention_pool(tokens, mask)
        else:
            raise ValueError(f"unsupported pooling {config.pooling!r}")
        pooled = self.layernorm(pooled) if config.final_norm == "pooled" else pooled
        return pooled if self.projection is None else kernels.linear(self.projection, pooled)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False,
                pixel_attention_mask: torch.Tensor | None = None,
                spatial_shapes: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.forward_features(pixel_values, interpolate_pos_encoding, pixel_attention_mask, spatial_shapes)
        return self.pool(tokens, self.token_mask(pixel_attention_mask, spatial_shapes))  # (B, pooled_size)

    def attention_maps(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False,
                       layer: int = -1) -> torch.Tensor:
        """The attention probabilities of one layer (the last by default): (B, heads, T, T) over
        the T tokens of forward_features, computed by the layers themselves."""
        layers = list(self.encoder.layer)
        index = range(len(layers))[layer]  # IndexError for a layer the model does not have
        x = self._embed(pixel_values, interpolate_pos_encoding)
        rope = self._rope(pixel_values, None)
        for i, block in enumerate(layers[:index]):
            x = block(x, None, _layer_rope(rope, i))
        return layers[index].attention_probabilities(x, None, _layer_rope(rope, index))


class ViTForImageClassification(nn.Module):
    """VisionTransformer plus a linear classifier on its pooled embedding: logits (B, num_labels).
    Distilled DeiT has a second head on the DIST token; the logits are the two heads' average."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "sdpa",
                 gradient_checkpointing: bool = False) -> None:
        super().__init__()
        if config.num_labels < 1:
            raise ValueError(f"ViTForImageClassification needs num_labels >= 1, got "
                             f"{config.num_labels}; use VisionTransformer for embeddings")
        self.config = config
        self.vit = VisionTransformer(config, attention_impl, gradient_checkpointing)
        width = {"pooled": config.pooled_size, "cls_patch_mean": 2 * config.hidden_size}.get(
            config.classifier_input, config.hidden_size)
        self.classifier = nn.Linear(width, config.num_labels)
        self.distillation_classifier = (nn.Linear(config.hidden_size, config.num_labels)
                                        if config.distillation_token and config.classifier_input == "pooled"
                                        else None)
        for head in (self.classifier, self.distillation_classifier):
            if head is not None:
                init_weights(config, head)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False,
                pixel_attention_mask: torch.Tensor | None = None,
                spatial_shapes: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.vit.forward_features(pixel_values, interpolate_pos_encoding, pixel_attention_mask,
                                           spatial_shapes)
        return self.head(tokens, self.vit.token_mask(pixel_attention_mask, spatial_shapes))

    def head(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The logits from the backbone's final tokens (forward_features); `mask` (B, tokens) for
        NaFlex batches."""
        if self.distillation_classifier is not None:  # DeiT: one head on CLS, one on DIST
            return (self.classifier(tokens[:, 0]) + self.distillation_classifier(tokens[:, 1])) / 2
        reads, prefix = self.config.classifier_input, self.config.num_prefix_tokens
        if reads == "pooled":
            x = self.vit.pool(tokens, mask)
        elif reads == "cls":
            x = tokens[:, 0]
        elif reads == "patch_mean":
            x = _patch_mean(tokens, prefix, mask)
        else:  # cls_patch_mean
            x = torch.cat([tokens[:, 0], _patch_mean(tokens, prefix, mask)], dim=-1)
        return self.classifier(x)


def init_weights(config: ViTConfig, module: nn.Module) -> None:
    """HF ViT's initialisation, with the truncation at 2 std that vit_flax uses too."""
    std = config.initializer_range
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        _trunc_normal(module.weight.data, std)
        if module.bias is not None:
            module.bias.data.zero_()
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()
    elif isinstance(module, nn.RMSNorm):
        module.weight.data.fill_(1.0)
    elif isinstance(module, ViTRotaryEmbedding) and module.freqs is not None:
        module.freqs.data.copy_(torch.from_numpy(mixed_freqs_init(config)))
    elif isinstance(module, ViTEmbeddings):
        for p in (module.cls_token, module.distillation_token, module.register_tokens,
                  module.position_embeddings):
            if p is not None:
                _trunc_normal(p.data, std)
        if module.mask_token is not None:
            module.mask_token.data.zero_()
    elif isinstance(module, ViTLayerScale):
        module.lambda1.data.fill_(config.layerscale_value)
    elif isinstance(module, (ViTAttentionPool, ViTProbePool)):
        _trunc_normal(module.probe.data, std)


def _resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int],
                      num_prefix: int, method: str) -> torch.Tensor:
    """(1, prefix + gh*gw, D) position embeddings resampled to another patch grid, the prefix slots
    kept: PyTorch's bicubic interpolation (plain or antialiased) as two matrices
    (vit_common.resample), shared with vit_flax."""
    if new_grid == tuple(grid):
        return pos
    mh, mw = (torch.tensor(m, dtype=pos.dtype, device=pos.device)
              for m in resampling_matrices(grid, new_grid, method))
    patches = pos[0, num_prefix:].reshape(grid[0], grid[1], -1)  # (gh, gw, D)
    patches = torch.einsum("ih,hwd->iwd", mh, patches)
    patches = torch.einsum("jw,iwd->ijd", mw, patches)  # (new_gh, new_gw, D)
    return torch.cat([pos[:, :num_prefix], patches.reshape(1, -1, pos.shape[-1])], dim=1)


def _check_pixels(want: tuple[int, int, int], pixel_values: torch.Tensor,
                  any_size_from: int | None = None) -> None:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of pixels (B, C, H, W), got "
                        f"{type(pixel_values).__name__}")
    if pixel_values.ndim != 4:
        raise ValueError(f"expected pixels of shape (B, C, H, W) = (B, {want[0]}, {want[1]}, "
                         f"{want[2]}), got {tuple(pixel_values.shape)} (rank {pixel_values.ndim})")
    got = tuple(pixel_values.shape[1:])
    p = any_size_from
    if p and got[0] == want[0] and all(s >= p for s in got[1:]):
        return  # interpolate_pos_encoding: any size of at least one patch (floor(size / p) per side)
    if got != want:
        hint = ""
        if p and got[0] == want[0]:
            hint = f"; with interpolate_pos_encoding, H and W must be at least the patch size {p}"
        elif pixel_values.shape[-1] == want[0] and got[0] != want[0]:
            hint = "; this looks channels-last (B, H, W, C): use pixels.permute(0, 3, 1, 2)"
        raise ValueError(f"expected pixels (B, C, H, W) = (B, {want[0]}, {want[1]}, {want[2]}), got "
                         f"{tuple(pixel_values.shape)}{hint}")


def _patch_mean(tokens: torch.Tensor, prefix: int, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of the patch tokens (B, hidden); with a token mask, of the real ones only."""
    if mask is None:
        return tokens[:, prefix:].mean(dim=1)
    m = mask[:, prefix:, None].to(tokens.dtype)
    return (tokens[:, prefix:] * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


def _axis_weights(index: torch.Tensor, size: torch.Tensor, grid: int) -> torch.Tensor:
    """F.interpolate(mode="bilinear", align_corners=False, antialias=True)'s weights along one
    axis, for output rows `index` (B, N) of images `size` (B, 1) patches long, over a table axis
    of `grid` entries: (B, N, grid). vit_common.resample.bilinear_antialias_matrix is the same
    rule for sizes known ahead (vit_flax computes it the same way)."""
    scale = grid / size
    support = scale.clamp(min=1)
    centre = (index + 0.5) * scale - 0.5
    source = torch.arange(grid, dtype=index.dtype, device=index.device)
    w = (1 - (source - centre[..., None]).abs() / support[..., None]).clamp(min=0)
    return w / w.sum(dim=-1, keepdim=True)


def _naflex_pos_embed(pos: torch.Tensor, grid: tuple[int, int], spatial_shapes: torch.Tensor, length: int,
                      config: ViTConfig) -> torch.Tensor:
    """(1, prefix + gh*gw, D) table -> (B, prefix + length, D): the patch part resized to each
    image's (h, w) grid (bilinear, antialiased, as SigLIP 2 NaFlex), row-major, the padding rows
    given position (0, 0); computed in at least float32 (HF computes it in float32)."""
    if config.position_embedding_resampling != "bilinear_antialias":
        raise ValueError(f"NaFlex patch inputs resize the position table per image, bilinearly with "
                         f"antialiasing (SigLIP 2); this model resamples "
                         f"{config.position_embedding_resampling!r}: use pixel inputs")
    _check_spatial_shapes(spatial_shapes, length)
    dtype = torch.promote_types(pos.dtype, torch.float32)
    shapes = spatial_shapes.to(device=pos.device, dtype=dtype)  # (B, 2)
    rows_of = shapes[:, 1:]  # (B, 1): patches per row
    positions = torch.arange(length, device=pos.device, dtype=dtype)[None]  # (1, N)
    rows = torch.div(positions, rows_of, rounding_mode="floor")
    real = positions < shapes.prod(dim=-1, keepdim=True)
    rows, cols = rows * real, (positions - rows * rows_of) * real
    weights = (_axis_weights(rows, shapes[:, :1], grid[0])[..., :, None]
               * _axis_weights(cols, shapes[:, 1:], grid[1])[..., None, :]).flatten(-2)  # (B, N, gh*gw)
    prefix = config.num_position_prefix
    patches = (weights @ pos[0, prefix:].to(dtype)).to(pos.dtype)  # (B, N, D)
    return torch.cat([pos[:, :prefix].expand(patches.shape[0], -1, -1), patches], dim=1)


def _check_spatial_shapes(spatial_shapes: torch.Tensor, length: int) -> None:
    if not isinstance(spatial_shapes, torch.Tensor) or spatial_shapes.ndim != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be a (B, 2) tensor of (height, width) in patches, got "
                         f"{getattr(spatial_shapes, 'shape', type(spatial_shapes).__name__)}")
    if spatial_shapes.is_floating_point():
        raise ValueError(f"spatial_shapes must hold integers, got {spatial_shapes.dtype}")
    if not torch.compiler.is_compiling():
        if bool((spatial_shapes < 1).any()) or bool((spatial_shapes.prod(dim=-1) > length).any()):
            raise ValueError(f"spatial_shapes must be positive with h * w <= {length} patches (the rows "
                             f"given), got {spatial_shapes.tolist()}")


def _check_patches(patches: torch.Tensor, width: int) -> None:
    if not isinstance(patches, torch.Tensor) or patches.ndim != 3 or patches.shape[-1] != width:
        raise ValueError(f"NaFlex inputs are patches (B, N, p*p*C) = (B, N, {width}), got "
                         f"{tuple(getattr(patches, 'shape', ())) or type(patches).__name__}")
