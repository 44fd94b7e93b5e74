"""The Vision Transformer in Flax linen. vit_torch/model.py is its twin: same classes, same order,
same attribute names; `setup` pairs with `__init__` and `__call__` with `forward`.

The params tree is exactly HF transformers' Flax ViT tree (`kernel` / `scale`, layers "0", "1", ...).
Inputs are channels-last (B, H, W, C). Inference by default; `train=True` turns dropout on and needs
a "dropout" rng.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vit_common.config import ViTConfig
from vit_common.resample import resampling_matrices, sincos2d_table
from vit_common.rotary import mixed_freqs_init, rope_coords, rope_tables
from vit_flax.module_base import ModuleList, ViTModule, layer_stack

# (sin, cos) of the rotary angles, a row per token: (N, head_dim), or (heads, N, head_dim) per layer
Rope = tuple[jax.Array, jax.Array]


def _trunc_normal(std: float) -> jax.nn.initializers.Initializer:
    # N(0, std^2) cut at two standard deviations, as vit_torch's nn.init.trunc_normal_ draws.
    return jax.nn.initializers.truncated_normal(stddev=std, lower=-2.0, upper=2.0)


def _attention_scores(q: jax.Array, k: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """q k^T / sqrt(head_dim): (B, heads, N, N), in at least float32 (the softmax's precision);
    padding keys (`mask` (B, N_keys) False) at the dtype's lowest value, so they get no weight."""
    # (B, heads, N, head_dim) operands: batch dimensions leading, which XLA's CPU dot runs ~3x
    # faster than the (B, N, heads, head_dim) einsum
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    return scores.astype(jnp.promote_types(scores.dtype, jnp.float32))


def _attention_probs(q: jax.Array, k: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(head_dim)): (B, heads, N, N) in the input dtype, the softmax taken in
    at least float32 as torch does for half precision (attention_maps and the visualisation call
    it; the model's eager path below is the same function, normalised after the product)."""
    return jax.nn.softmax(_attention_scores(q, k, mask), axis=-1).astype(q.dtype)


def _eager_attention(q: jax.Array, k: jax.Array, v: jax.Array, dropout: nn.Dropout,
                     train: bool, mask: jax.Array | None = None) -> jax.Array:
    """softmax(scores) v, written as (e v) / sum(e) with e = exp(scores - max): the division runs
    on the (N, head_dim) output instead of the (N, N) probabilities, which halves the attention
    core's time under XLA's CPU backend. Dropout on the probabilities is dropout on e (the row
    sum is taken before it, so the kept weights are those of softmax-then-dropout)."""
    scores = _attention_scores(q, k, mask)
    e = jnp.exp(scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
    total = e.sum(axis=-1, keepdims=True)  # (B, heads, N, 1)
    e = dropout(e, deterministic=not train)
    out = jnp.einsum("bhqk,bhkd->bhqd", e.astype(v.dtype), v)  # (B, heads, N, head_dim)
    return (out / total).astype(v.dtype)


def _sdpa_attention(q: jax.Array, k: jax.Array, v: jax.Array, dropout: nn.Dropout,
                    train: bool, mask: jax.Array | None = None) -> jax.Array:
    # jax's fused attention (cuDNN flash attention on GPU); it has no dropout on the probabilities
    if train and dropout.rate > 0:
        raise ValueError("attention_impl='sdpa' has no attention dropout; train with 'eager' when "
                         "attention_probs_dropout_prob > 0")
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # (B, N, heads, head_dim), jax's layout
    out = jax.nn.dot_product_attention(q, k, v, scale=1.0 / math.sqrt(q.shape[-1]),
                                       mask=None if mask is None else mask[:, None, None, :])
    return out.transpose(0, 2, 1, 3)  # (B, heads, N, head_dim)


def _attention_fn(attention_impl: str) -> Callable[..., jax.Array]:
    if attention_impl == "eager":
        return _eager_attention
    elif attention_impl == "sdpa":
        return _sdpa_attention
    else:
        raise ValueError(f"attention_impl must be 'eager' or 'sdpa', got {attention_impl!r}")


def _activation(hidden_act: str) -> Callable[[jax.Array], jax.Array]:
    if hidden_act == "gelu":
        # the exact erf form, written as torch computes it. (flax's gelu defaults to the tanh
        # approximation, and jax's exact one goes through erfc, which XLA's CPU backend runs
        # ~15% slower in the fused MLP)
        return lambda x: x * 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))
    elif hidden_act in ("gelu_new", "gelu_pytorch_tanh"):
        # Google's checkpoints were trained with the tanh approximation
        return lambda x: nn.gelu(x, approximate=True)
    elif hidden_act == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)  # OpenAI CLIP's
    else:
        raise ValueError(f"unsupported hidden_act {hidden_act!r}")


def _mlp_activation(config: ViTConfig) -> Callable[[jax.Array], jax.Array]:
    """The MLP's nonlinearity on intermediate.dense's output: the activation, or SwiGLU's
    silu(gate) * up on its [gate; up] halves."""
    if config.mlp_type == "mlp":
        return _activation(config.hidden_act)
    elif config.mlp_type == "swiglu":
        def swiglu(x: jax.Array) -> jax.Array:
            gate, up = jnp.split(x, 2, axis=-1)
            return jax.nn.silu(gate) * up
        return swiglu
    else:
        raise ValueError(f"unsupported mlp_type {config.mlp_type!r}")


def _dense(m: ViTModule, features: int, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=m.dtype, param_dtype=m.param_dtype,
                    kernel_init=_trunc_normal(m.config.initializer_range),
                    bias_init=jax.nn.initializers.zeros)


def _at_least_f32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


class _Float32LayerNorm(nn.LayerNorm):
    """nn.LayerNorm built with a `dtype` of at least float32 (`_norm`): its statistics and
    normalisation run there whatever the parameters' dtype; the next Dense takes its input in the
    compute dtype."""


class _Float32RMSNorm(nn.RMSNorm):
    """nn.RMSNorm (AIMv2) built with a `dtype` of at least float32 (`_norm`), as _Float32LayerNorm."""


def _norm(m: ViTModule) -> nn.Module:
    """The model's norm (over whatever width it is given): LayerNorm or RMSNorm."""
    config, dtype = m.config, jnp.promote_types(m.dtype, jnp.float32)
    if config.norm_type == "layernorm":
        # use_fast_variance=False: E[x^2] - E[x]^2 is not torch's two-pass variance
        return _Float32LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False, dtype=dtype,
                                 param_dtype=m.param_dtype)
    elif config.norm_type == "rmsnorm":
        return _Float32RMSNorm(epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=m.param_dtype)
    else:
        raise ValueError(f"unsupported norm_type {config.norm_type!r}")


def _rotate(x: jax.Array, sin: jax.Array, cos: jax.Array, layout: str) -> jax.Array:
    """Rotary embedding of x (B, heads, N, head_dim) by tables with a row per token: the prefix
    tokens' rows are sin 0, cos 1, so they pass unchanged (exactly, as the sources leave them). The
    rotation runs in the tables' precision (at least float32)."""
    xt = x.astype(sin.dtype)
    if layout == "halves":  # rotate-half: (x1, x2) -> (-x2, x1)
        x1, x2 = jnp.split(xt, 2, axis=-1)
        turned = jnp.concatenate([-x2, x1], axis=-1)
    elif layout == "pairs":  # interleaved: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)
        turned = jnp.stack([-xt[..., 1::2], xt[..., ::2]], axis=-1).reshape(xt.shape)
    else:
        raise ValueError(f"unsupported rope_layout {layout!r}")
    return (xt * cos + turned * sin).astype(x.dtype)


class ViTPatchEmbeddings(ViTModule):
    """(B, H, W, C) pixels -> (B, N, hidden) patch vectors, one per non-overlapping patch."""

    def setup(self) -> None:
        config = self.config
        self.pixel_shape = (*config.image_hw, config.num_channels)  # (H, W, C)
        self.patch_size = p = config.patch_size
        self.projection = nn.Conv(
            config.hidden_size, kernel_size=(p, p), strides=(p, p), padding="VALID",
            use_bias=config.patch_bias, dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=_trunc_normal(config.initializer_range), bias_init=jax.nn.initializers.zeros)
        self.layernorm = _norm(self) if config.patch_norm else None  # AIMv2's norm of the patch vectors

    def _normed(self, x: jax.Array) -> jax.Array:
        return x if self.layernorm is None else self.layernorm(x).astype(x.dtype)

    def __call__(self, pixel_values: jax.Array, interpolate_pos_encoding: bool = False) -> jax.Array:
        _check_pixels(self.pixel_shape, pixel_values, self.patch_size if interpolate_pos_encoding else None)
        x = self.projection(pixel_values)  # (B, H/p, W/p, hidden)
        b, h, w, d = x.shape
        return self._normed(x.reshape(b, h * w, d))  # (B, N, hidden), patches in row-major (h, w) order

    def patches(self, patches: jax.Array) -> jax.Array:
        """Patchified pixels (B, N, p*p*C), each patch flattened in (row, column, channel) order
        (SigLIP 2 NaFlex) -> (B, N, hidden): the same projection, its kernel as a Dense."""
        p, c = self.patch_size, self.pixel_shape[2]
        _check_patches(patches, c * p * p)
        if self.is_initializing():  # the conv's parameters, made as for pixel inputs
            self.projection(jnp.zeros((1, p, p, c), self.dtype))
        params = self.projection.variables["params"]
        kernel = params["kernel"].reshape(p * p * c, -1)  # (p, p, C, hidden): (row, col, channel) rows
        x = jnp.einsum("bnk,kd->bnd", patches.astype(self.dtype), kernel.astype(self.dtype))
        return self._normed(x + params["bias"].astype(self.dtype) if "bias" in params else x)


class ViTEmbeddings(ViTModule):
    """Patch vectors with the prefix tokens ([CLS], DIST, registers) in front and position
    embeddings added (a learned table covering [CLS] and DIST or the patches only, or big_vision's
    fixed sincos2d)."""

    def setup(self) -> None:
        config = self.config
        self.grid_size = config.grid_size
        d = config.hidden_size
        init = _trunc_normal(config.initializer_range)
        self.cls_token = (self.param("cls_token", init, (1, 1, d), self.param_dtype)
                          if config.class_token else None)
        self.distillation_token = (self.param("distillation_token", init, (1, 1, d), self.param_dtype)
                                   if config.distillation_token else None)
        self.register_tokens = (
            self.param("register_tokens", init, (1, config.num_register_tokens, d), self.param_dtype)
            if config.num_register_tokens else None)
        self.mask_token = (self.param("mask_token", jax.nn.initializers.zeros, (1, d), self.param_dtype)
                           if config.mask_token else None)
        self.patch_embeddings = ViTPatchEmbeddings(**self.module_args)
        self.position_embeddings = (
            self.param("position_embeddings", init, (1, config.num_patches + config.num_position_prefix, d),
                       self.param_dtype)
            if config.position_embedding_type == "learned" else None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def __call__(self, pixel_values: jax.Array, train: bool = False,
                 interpolate_pos_encoding: bool = False, spatial_shapes: jax.Array | None = None) -> jax.Array:
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
        grid = (pixel_values.shape[1] // p, pixel_values.shape[2] // p) if spatial_shapes is None else None
        kind = config.position_embedding_type
        if spatial_shapes is not None:
            if kind == "sincos2d":
                raise ValueError("NaFlex patch inputs need a learned position table (sincos2d has no "
                                 "per-image resizing here)")
            pos = (_naflex_pos_embed(self.position_embeddings, self.grid_size, spatial_shapes, x.shape[1],
                                     config) if kind == "learned" else None)
        elif kind == "learned":
            pos = _resize_pos_embed(self.position_embeddings, self.grid_size, grid,
                                    config.num_position_prefix, config.position_embedding_resampling)
        elif kind == "sincos2d":
            pos = jnp.asarray(sincos2d_table(grid, d), x.dtype)[None]
        elif kind == "none":
            pos = None
        else:
            raise ValueError(f"unsupported position_embedding_type {kind!r}")
        if pos is not None and config.num_position_prefix == 0:
            x = x + pos.astype(x.dtype)  # the table covers the patches only (timm no_embed_class, big_vision)
        prefix = [jnp.broadcast_to(t.astype(x.dtype), (b, 1, d))
                  for t in (self.cls_token, self.distillation_token) if t is not None]
        x = jnp.concatenate([*prefix, x], axis=1)  # (B, [CLS] [DIST] + N, hidden)
        if pos is not None and config.num_position_prefix:
            x = x + pos.astype(x.dtype)
        if self.register_tokens is not None:  # registers after [CLS] / DIST, without positions
            registers = jnp.broadcast_to(self.register_tokens.astype(x.dtype), (b, *self.register_tokens.shape[1:]))
            x = jnp.concatenate([x[:, :len(prefix)], registers, x[:, len(prefix):]],
                                axis=1)  # (B, prefix + N, hidden)
        return self.dropout(x, deterministic=not train)


class ViTSelfAttention(ViTModule):
    """Multi-head scaled dot-product self-attention; returns the heads concatenated."""

    def setup(self) -> None:
        config = self.config
        self.attend = _attention_fn(self.attention_impl)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.rope_layout = config.rope_layout
        d = config.hidden_size
        self.query = _dense(self, d, use_bias=config.qkv_bias)
        self.key = _dense(self, d, use_bias=config.qkv_bias and config.key_bias)
        self.value = _dense(self, d, use_bias=config.qkv_bias)
        # timm's qk_norm: a LayerNorm over head_dim on every head's queries and keys
        self.q_norm = _norm(self) if config.qk_norm else None
        self.k_norm = _norm(self) if config.qk_norm else None
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split(self, t: jax.Array) -> jax.Array:
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)  # (B, heads, N, head_dim)

    def _queries_keys(self, x: jax.Array, context: jax.Array, rope: Rope | None = None
                      ) -> tuple[jax.Array, jax.Array]:
        """qk-norm, then the rotary embedding of the patch tokens (timm Eva's order)."""
        q, k = self._split(self.query(x)), self._split(self.key(context))
        if self.q_norm is not None:
            q, k = self.q_norm(q).astype(q.dtype), self.k_norm(k).astype(k.dtype)
        if rope is not None:
            q, k = _rotate(q, *rope, self.rope_layout), _rotate(k, *rope, self.rope_layout)
        return q, k

    def __call__(self, x: jax.Array, train: bool = False, context: jax.Array | None = None,
                 mask: jax.Array | None = None, rope: Rope | None = None) -> jax.Array:
        """Queries from `x`; keys and values from `context` (the MAP head's probe attends over the
        tokens), else from `x`; `mask` (B, N_keys) drops padding keys; `rope` rotates the patch
        tokens' queries and keys."""
        context = x if context is None else context
        b, n, _ = x.shape
        q, k = self._queries_keys(x, context, rope)
        context = self.attend(q, k, self._split(self.value(context)), self.dropout, train, mask)  # (B, heads, N, head_dim)
        return context.transpose(0, 2, 1, 3).reshape(b, n, self.num_heads * self.head_dim)  # (B, N, hidden)

    def probabilities(self, x: jax.Array, mask: jax.Array | None = None, rope: Rope | None = None) -> jax.Array:
        """The attention probabilities this module computes for `x`: (B, heads, N, N)."""
        return _attention_probs(*self._queries_keys(x, x, rope), mask)


class ViTSelfOutput(ViTModule):
    """The attention's output projection (after a norm of the heads in EVA CLIP). The residual is
    added in ViTLayer (pre-norm block)."""

    def setup(self) -> None:
        self.layernorm = _norm(self) if self.config.attention_norm else None
        self.dense = _dense(self, self.config.hidden_size, use_bias=self.config.proj_bias)
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x if self.layernorm is None else self.layernorm(x).astype(x.dtype)
        return self.dropout(self.dense(x), deterministic=not train)


class ViTAttention(ViTModule):
    """Self-attention followed by its output projection."""

    def setup(self) -> None:
        self.attention = ViTSelfAttention(**self.module_args)
        self.output = ViTSelfOutput(**self.module_args)

    def __call__(self, x: jax.Array, train: bool = False, context: jax.Array | None = None,
                 mask: jax.Array | None = None, rope: Rope | None = None) -> jax.Array:
        return self.output(self.attention(x, train, context, mask, rope), train)


class ViTIntermediate(ViTModule):
    """The MLP's first half: hidden -> intermediate, then the activation (SwiGLU: hidden ->
    [gate; up], twice the width, then silu(gate) * up)."""

    def setup(self) -> None:
        config = self.config
        width = config.intermediate_size * (2 if config.mlp_type == "swiglu" else 1)
        self.dense = _dense(self, width, use_bias=config.mlp_bias)
        self.act = _mlp_activation(config)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.act(self.dense(x))


class ViTOutput(ViTModule):
    """The MLP's second half: (a norm of the hidden activations in EVA CLIP), intermediate ->
    hidden, dropout, plus the residual when given."""

    def setup(self) -> None:
        self.layernorm = _norm(self) if self.config.mlp_norm else None
        self.dense = _dense(self, self.config.hidden_size, use_bias=self.config.mlp_bias)
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)

    def __call__(self, x: jax.Array, residual: jax.Array | None = None, train: bool = False) -> jax.Array:
        x = x if self.layernorm is None else self.layernorm(x).astype(x.dtype)
        x = self.dropout(self.dense(x), deterministic=not train)
        return x if residual is None else x + residual


class ViTLayerScale(ViTModule):
    """LayerScale: a learned per-channel scale on a residual branch (DINOv2, CaiT)."""

    def setup(self) -> None:
        self.lambda1 = self.param("lambda1", jax.nn.initializers.constant(self.config.layerscale_value),
                                  (self.config.hidden_size,), self.param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.lambda1


class ViTLayer(ViTModule):
    """One pre-norm Transformer block: x + attention(LN(x)), then h + MLP(LN(h)); with LayerScale
    each branch is scaled per channel before it is added."""

    def setup(self) -> None:
        self.attention = ViTAttention(**self.module_args)
        self.intermediate = ViTIntermediate(**self.module_args)
        self.output = ViTOutput(**self.module_args)
        self.layernorm_before = _norm(self)
        self.layernorm_after = _norm(self)
        self.layer_scale1 = ViTLayerScale(**self.module_args) if self.config.layer_scale else None
        self.layer_scale2 = ViTLayerScale(**self.module_args) if self.config.layer_scale else None

    def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None,
                 rope: Rope | None = None) -> jax.Array:
        x = _at_least_f32(x)  # the residual stream stays in (at least) float32 in half precision
        if self.layer_scale1 is None:
            h = x + self.attention(self.layernorm_before(x), train, None, mask, rope)
            return self.output(self.intermediate(self.layernorm_after(h)), h, train)
        h = x + self.layer_scale1(self.attention(self.layernorm_before(x), train, None, mask, rope))
        return h + self.layer_scale2(self.output(self.intermediate(self.layernorm_after(h)), None, train))

    def attention_probabilities(self, x: jax.Array, mask: jax.Array | None = None,
                                rope: Rope | None = None) -> jax.Array:
        """This block's attention probabilities for its input `x`: (B, heads, N, N)."""
        return self.attention.attention.probabilities(self.layernorm_before(x), mask, rope)


class ViTEncoder(ViTModule):
    """num_hidden_layers ViTLayers in sequence."""

    def setup(self) -> None:
        layers = self.config.num_hidden_layers
        block = layer_stack(ViTLayer, layers, self.remat, self.scan_layers,
                            per_layer_rope=self.config.rope_type == "mixed")
        if self.scan_layers:  # one module, every parameter with a leading axis of num_hidden_layers
            self.layer = block(**self.module_args)
        else:
            self.layer = ModuleList([block(**self.module_args, parent=None, name=str(i)) for i in range(layers)])

    def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None,
                 rope: Rope | None = None) -> jax.Array:
        """`rope`: one (sin, cos) for every layer, or (layers, heads, N, head_dim) tables (mixed)."""
        if self.scan_layers:  # mixed tables are scanned over their layer axis, the others broadcast
            return self.layer(_at_least_f32(x), train, mask, rope)[0]
        for i, layer in enumerate(self.layer):
            x = layer(x, train, mask, _layer_rope(rope, i))
        return x


def _layer_rope(rope: Rope | None, i: int) -> Rope | None:
    """Layer i's tables: mixed RoPE has a leading layer axis, the others one table for all."""
    if rope is None or rope[0].ndim == 2:
        return rope
    return rope[0][i], rope[1][i]


class ViTRotaryEmbedding(ViTModule):
    """The rotary tables of a patch grid, computed once per call for every layer: fixed
    (vit_common.rotary, float64 numpy, cached per grid) or, for mixed RoPE, from the learned
    frequencies `freqs` (2, layers, heads, head_dim / 2) over the grid's integer positions.
    The tables stay in at least float32 whatever the model's dtype."""

    def setup(self) -> None:
        c = self.config
        self.freqs = (self.param("freqs", lambda key, shape, dtype: jnp.asarray(mixed_freqs_init(c), dtype),
                                 (2, c.num_hidden_layers, c.num_attention_heads, c.head_dim // 2), self.param_dtype)
                      if c.rope_type == "mixed" else None)

    def __call__(self, grid: tuple[int, int]) -> Rope:
        dtype = jnp.promote_types(self.dtype, jnp.float32)
        if self.freqs is None:
            sin, cos = rope_tables(self.config, grid)
            return jnp.asarray(sin, dtype), jnp.asarray(cos, dtype)
        coords = jnp.asarray(rope_coords(self.config, grid), dtype)  # (N, 2)
        f = self.freqs.astype(dtype)
        # (layers, heads, N, head_dim / 2): each axis's position times its learned frequencies
        angles = coords[:, 0, None] * f[0, :, :, None, :] + coords[:, 1, None] * f[1, :, :, None, :]
        angles = jnp.repeat(angles, 2, axis=-1)  # pairs (the config allows no other layout here)
        return jnp.sin(angles), jnp.cos(angles)


class ViTAttentionPool(ViTModule):
    """Multihead attention pooling (SigLIP, big_vision MAPHead, timm global_pool='map'): a learned
    probe attends over the tokens, then x + MLP(LN(x)); no residual around the attention."""

    def setup(self) -> None:
        config = self.config
        self.probe = self.param("probe", _trunc_normal(config.initializer_range),
                                (1, 1, config.hidden_size), self.param_dtype)
        # an nn.MultiheadAttention in SigLIP, timm's AttentionPoolLatent: biases, no qk-norm, its
        # own head count (PE core: 8 at every width), a plain GELU MLP
        head = {**self.module_args, "config": _map_config(config)}
        self.attention = ViTAttention(**head)
        self.layernorm = _norm(self)
        self.intermediate = ViTIntermediate(**head)
        self.output = ViTOutput(**head)

    def __call__(self, tokens: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
        probe = jnp.broadcast_to(self.probe.astype(tokens.dtype), (tokens.shape[0], 1, tokens.shape[2]))  # (B, 1, hidden)
        x = _at_least_f32(self.attention(probe, train, tokens, mask))
        return self.output(self.intermediate(self.layernorm(x)), x, train)[:, 0]  # (B, hidden)


class ViTProbePool(ViTModule):
    """AIMv2's attention-pooling head: a learned probe is the query itself (no projection), keys
    and values are projected from the tokens, the heads merged by a Dense; no MLP, no residual."""

    def setup(self) -> None:
        config = self.config
        self.attend = _attention_fn(self.attention_impl)
        self.num_heads = config.map_heads
        d = config.hidden_size
        self.probe = self.param("probe", _trunc_normal(config.initializer_range), (1, 1, d), self.param_dtype)
        self.key = _dense(self, d, use_bias=config.qkv_bias)
        self.value = _dense(self, d, use_bias=config.qkv_bias)
        self.dense = _dense(self, d)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split(self, t: jax.Array) -> jax.Array:
        b, n, d = t.shape
        return t.reshape(b, n, self.num_heads, d // self.num_heads).transpose(0, 2, 1, 3)  # (B, heads, N, head_dim)

    def __call__(self, tokens: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
        b = tokens.shape[0]
        q = self._split(jnp.broadcast_to(self.probe.astype(tokens.dtype), (b, 1, tokens.shape[2])))  # (B, heads, 1, head_dim)
        out = self.attend(q, self._split(self.key(tokens)), self._split(self.value(tokens)), self.dropout, train, mask)
        return self.dense(out.transpose(0, 2, 1, 3).reshape(b, -1))  # (B, hidden)


def _map_config(config: ViTConfig) -> ViTConfig:
    """The config the MAP head's modules are built from (vit_torch builds its head the same way)."""
    return config.replace(qk_norm=False, qkv_bias=True, key_bias=True, proj_bias=True, mlp_bias=True,
                          num_attention_heads=config.map_heads, map_num_heads=0, mlp_type="mlp",
                          attention_norm=False, mlp_norm=False, rope_type="none", rope_ref_grid=None)


class VisionTransformer(ViTModule):
    """pixels (B, H, W, C) -> the family's pooled embedding (B, hidden): the [CLS] token after the
    final LayerNorm for ViT and DINOv2, (CLS + DIST) / 2 for distilled DeiT, the normalised pooled
    token for CLIP, the mean of the patches (gap) or the attention pool (map, SigLIP); with a
    projection (CLIP's visual_projection), that mapped to (B, projection_size)."""

    def setup(self) -> None:
        config = self.config
        self.embeddings = ViTEmbeddings(**self.module_args)
        self.pre_layernorm = _norm(self) if config.pre_norm else None
        self.rope = ViTRotaryEmbedding(**self.module_args) if config.rope_type != "none" else None
        self.encoder = ViTEncoder(**self.module_args)
        self.layernorm = _norm(self)
        pools = {"map": ViTAttentionPool, "probe": ViTProbePool}
        self.attention_pool = pools[config.pooling](**self.module_args) if config.pooling in pools else None
        # CLIP's visual_projection: the pooled embedding mapped to the joint image-text space
        self.projection = _dense(self, config.projection_size, use_bias=False) if config.projection_size else None

    def _embed(self, pixel_values: jax.Array, train: bool, interpolate_pos_encoding: bool,
               spatial_shapes: jax.Array | None = None) -> jax.Array:
        x = self.embeddings(pixel_values, train, interpolate_pos_encoding, spatial_shapes)
        return x if self.pre_layernorm is None else self.pre_layernorm(x)

    def _rope(self, pixel_values: jax.Array, spatial_shapes: jax.Array | None) -> Rope | None:
        """The rotary tables of the input's patch grid (any size: no table is resampled)."""
        if self.rope is None:
            return None
        if spatial_shapes is not None:
            raise ValueError("NaFlex patch inputs carry no rotary positions here: pass pixels")
        p = self.config.patch_size
        return self.rope((pixel_values.shape[1] // p, pixel_values.shape[2] // p))

    def token_mask(self, pixel_attention_mask: jax.Array | None, spatial_shapes: jax.Array | None
                   ) -> jax.Array | None:
        """NaFlex: the (B, prefix + N) mask of real tokens (prefix tokens always real), None for
        pixel inputs; a missing pixel_attention_mask means every patch is real."""
        if pixel_attention_mask is None:
            return None
        if spatial_shapes is None:
            raise ValueError("pixel_attention_mask goes with NaFlex patch inputs: pass spatial_shapes too")
        mask = jnp.asarray(pixel_attention_mask).astype(bool)
        prefix = jnp.ones((mask.shape[0], self.config.num_prefix_tokens), bool)
        return jnp.concatenate([prefix, mask], axis=1)

    def forward_features(self, pixel_values: jax.Array, train: bool = False,
                         interpolate_pos_encoding: bool = False, pixel_attention_mask: jax.Array | None = None,
                         spatial_shapes: jax.Array | None = None) -> jax.Array:
        """Every token, prefix tokens first: (B, prefix + N, hidden), after the final LayerNorm
        when it sits on the tokens (as the source's last_hidden_state / forward_features).
        NaFlex inputs: `pixel_values` (B, N, p*p*C) patches, `pixel_attention_mask` (B, N) and
        `spatial_shapes` (B, 2) as HF's Siglip2 processor makes them; padding rows are computed
        but attended by nothing."""
        mask = self.token_mask(pixel_attention_mask, spatial_shapes)
        rope = self._rope(pixel_values, spatial_shapes)
        x = self.encoder(self._embed(pixel_values, train, interpolate_pos_encoding, spatial_shapes), train, mask,
                         rope)
        return (self.layernorm(x) if self.config.final_norm == "tokens" else x).astype(self.dtype)

    def pool(self, tokens: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
        """forward_features' tokens -> the pooled embedding (B, pooled_size): projected when the
        model has a projection (CLIP's image embedding)."""
        config = self.config
        if config.pooling == "cls":
            pooled = (tokens[:, 0] + tokens[:, 1]) / 2 if config.distillation_token else tokens[:, 0]
        elif config.pooling == "gap":
            pooled = _patch_mean(tokens, config.num_prefix_tokens, mask)
        elif config.pooling in ("map", "probe"):
            pooled = self.attention_pool(tokens, train, mask)
        else:
            raise ValueError(f"unsupported pooling {config.pooling!r}")
        pooled = (self.layernorm(pooled) if config.final_norm == "pooled" else pooled).astype(self.dtype)
        return pooled if self.projection is None else self.projection(pooled)

    def __call__(self, pixel_values: jax.Array, train: bool = False, interpolate_pos_encoding: bool = False,
                 pixel_attention_mask: jax.Array | None = None, spatial_shapes: jax.Array | None = None) -> jax.Array:
        tokens = self.forward_features(pixel_values, train, interpolate_pos_encoding, pixel_attention_mask,
                                       spatial_shapes)
        return self.pool(tokens, train, self.token_mask(pixel_attention_mask, spatial_shapes))  # (B, pooled_size)

    def attention_maps(self, pixel_values: jax.Array, interpolate_pos_encoding: bool = False,
                       layer: int = -1) -> jax.Array:
        """The attention probabilities of one layer (the last by default): (B, heads, T, T) over
        the T tokens of forward_features, computed by the layers themselves."""
        if self.scan_layers:
            raise ValueError("attention_maps reads one layer: build the model with scan_layers=False "
                             "(vit_common.convert.unstack_layers gives the per-layer parameters)")
        layers = list(self.encoder.layer)
        index = range(len(layers))[layer]  # IndexError for a layer the model does not have
        x = self._embed(pixel_values, False, interpolate_pos_encoding)
        rope = self._rope(pixel_values, None)
        for i, block in enumerate(layers[:index]):
            x = block(x, False, None, _layer_rope(rope, i))
        return layers[index].attention_probabilities(x, None, _layer_rope(rope, index))


class ViTForImageClassification(ViTModule):
    """VisionTransformer plus a linear classifier on its pooled embedding: logits (B, num_labels).
    Distilled DeiT has a second head on the DIST token; the logits are the two heads' average."""

    def setup(self) -> None:
        if self.config.num_labels < 1:
            raise ValueError(f"ViTForImageClassification needs num_labels >= 1, got "
                             f"{self.config.num_labels}; use VisionTransformer for embeddings")
        self.vit = VisionTransformer(**self.module_args)
        self.classifier = _dense(self, self.config.num_labels)
        self.distillation_classifier = (_dense(self, self.config.num_labels)
                                        if self.config.distillation_token
                                        and self.config.classifier_input == "pooled" else None)

    def __call__(self, pixel_values: jax.Array, train: bool = False, interpolate_pos_encoding: bool = False,
                 pixel_attention_mask: jax.Array | None = None, spatial_shapes: jax.Array | None = None) -> jax.Array:
        tokens = self.vit.forward_features(pixel_values, train, interpolate_pos_encoding, pixel_attention_mask,
                                           spatial_shapes)
        return self.head(tokens, train, self.vit.token_mask(pixel_attention_mask, spatial_shapes))

    def head(self, tokens: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
        """The logits from the backbone's final tokens (forward_features); `mask` (B, tokens) for
        NaFlex batches."""
        if self.distillation_classifier is not None:  # DeiT: one head on CLS, one on DIST
            return (self.classifier(tokens[:, 0]) + self.distillation_classifier(tokens[:, 1])) / 2
        reads, prefix = self.config.classifier_input, self.config.num_prefix_tokens
        if reads != "pooled" and self.is_initializing():
            self.vit.pool(tokens, train, mask)  # the pooling's parameters exist, unused by the head, as in torch
        if reads == "pooled":
            x = self.vit.pool(tokens, train, mask)
        elif reads == "cls":
            x = tokens[:, 0]
        elif reads == "patch_mean":
            x = _patch_mean(tokens, prefix, mask)
        else:  # cls_patch_mean
            x = jnp.concatenate([tokens[:, 0], _patch_mean(tokens, prefix, mask)], axis=-1)
        return self.classifier(x)


def _resize_pos_embed(pos: jax.Array, grid: tuple[int, int], new_grid: tuple[int, int],
                      num_prefix: int, method: str) -> jax.Array:
    """(1, prefix + gh*gw, D) position embeddings resampled to another patch grid, the prefix slots
    kept: PyTorch's bicubic interpolation (plain or antialiased) as two matrices
    (vit_common.resample), shared with vit_torch."""
    if new_grid == tuple(grid):
        return pos
    mh, mw = (jnp.asarray(m, pos.dtype) for m in resampling_matrices(grid, new_grid, method))
    patches = pos[0, num_prefix:].reshape(grid[0], grid[1], -1)  # (gh, gw, D)
    patches = jnp.einsum("ih,hwd->iwd", mh, patches)
    patches = jnp.einsum("jw,iwd->ijd", mw, patches)  # (new_gh, new_gw, D)
    return jnp.concatenate([pos[:, :num_prefix], patches.reshape(1, -1, pos.shape[-1])], axis=1)


def _check_pixels(want: tuple[int, int, int], pixel_values: jax.Array,
                  any_size_from: int | None = None) -> None:
    if not hasattr(pixel_values, "shape") or not hasattr(pixel_values, "ndim"):
        raise TypeError(f"expected an array of pixels (B, H, W, C), got "
                        f"{type(pixel_values).__name__}")
    if pixel_values.ndim != 4:
        raise ValueError(f"expected pixels of shape (B, H, W, C) = (B, {want[0]}, {want[1]}, "
                         f"{want[2]}), got {tuple(pixel_values.shape)} (rank {pixel_values.ndim})")
    got = tuple(pixel_values.shape[1:])
    p = any_size_from
    if p and got[2] == want[2] and all(s >= p for s in got[:2]):
        return  # interpolate_pos_encoding: any size of at least one patch (floor(size / p) per side)
    if got != want:
        hint = ""
        if p and got[2] == want[2]:
            hint = f"; with interpolate_pos_encoding, H and W must be at least the patch size {p}"
        elif pixel_values.shape[1] == want[2] and got[2] != want[2]:
            hint = "; this looks channels-first (B, C, H, W): use pixels.transpose(0, 2, 3, 1)"
        raise ValueError(f"expected pixels (B, H, W, C) = (B, {want[0]}, {want[1]}, {want[2]}), got "
                         f"{tuple(pixel_values.shape)}{hint}")


def _patch_mean(tokens: jax.Array, prefix: int, mask: jax.Array | None) -> jax.Array:
    """The mean of the patch tokens (B, hidden); with a token mask, of the real ones only."""
    if mask is None:
        return tokens[:, prefix:].mean(axis=1)
    m = mask[:, prefix:, None].astype(tokens.dtype)
    return (tokens[:, prefix:] * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1)


def _axis_weights(index: jax.Array, size: jax.Array, grid: int) -> jax.Array:
    """F.interpolate(mode="bilinear", align_corners=False, antialias=True)'s weights along one
    axis, for output rows `index` (B, N) of images `size` (B, 1) patches long, over a table axis
    of `grid` entries: (B, N, grid) (vit_torch computes it the same way)."""
    scale = grid / size
    support = jnp.maximum(scale, 1)
    centre = (index + 0.5) * scale - 0.5
    source = jnp.arange(grid, dtype=index.dtype)
    w = jnp.maximum(1 - jnp.abs(source - centre[..., None]) / support[..., None], 0)
    return w / w.sum(axis=-1, keepdims=True)


def _naflex_pos_embed(pos: jax.Array, grid: tuple[int, int], spatial_shapes: jax.Array, length: int,
                      config: ViTConfig) -> jax.Array:
    """(1, prefix + gh*gw, D) table -> (B, prefix + length, D): the patch part resized to each
    image's (h, w) grid (bilinear, antialiased, as SigLIP 2 NaFlex), row-major, the padding rows
    given position (0, 0); computed in at least float32. Traced shapes (under jit) are not checked:
    a shape with h * w > length would only drop that image's last rows."""
    if config.position_embedding_resampling != "bilinear_antialias":
        raise ValueError(f"NaFlex patch inputs resize the position table per image, bilinearly with "
                         f"antialiasing (SigLIP 2); this model resamples "
                         f"{config.position_embedding_resampling!r}: use pixel inputs")
    _check_spatial_shapes(spatial_shapes, length)
    dtype = jnp.promote_types(pos.dtype, jnp.float32)
    shapes = jnp.asarray(spatial_shapes).astype(dtype)  # (B, 2)
    rows_of = shapes[:, 1:]  # (B, 1): patches per row
    positions = jnp.arange(length, dtype=dtype)[None]  # (1, N)
    rows = jnp.floor(positions / rows_of)
    real = positions < shapes.prod(axis=-1, keepdims=True)
    rows, cols = rows * real, (positions - rows * rows_of) * real
    weights = (_axis_weights(rows, shapes[:, :1], grid[0])[..., :, None]
               * _axis_weights(cols, shapes[:, 1:], grid[1])[..., None, :]).reshape(*rows.shape, -1)
    prefix = config.num_position_prefix
    patches = (weights @ pos[0, prefix:].astype(dtype)).astype(pos.dtype)  # (B, N, D)
    head = jnp.broadcast_to(pos[:, :prefix], (patches.shape[0], prefix, pos.shape[-1]))
    return jnp.concatenate([head, patches], axis=1)


def _check_spatial_shapes(spatial_shapes: jax.Array, length: int) -> None:
    shape = getattr(spatial_shapes, "shape", None)
    if shape is None or len(shape) != 2 or shape[1] != 2:
        raise ValueError(f"spatial_shapes must be a (B, 2) array of (height, width) in patches, got "
                         f"{shape if shape is not None else type(spatial_shapes).__name__}")
    if not jnp.issubdtype(spatial_shapes.dtype, jnp.integer):
        raise ValueError(f"spatial_shapes must hold integers, got {spatial_shapes.dtype}")
    if not isinstance(spatial_shapes, jax.core.Tracer):
        values = np.asarray(spatial_shapes)
        if (values < 1).any() or (values.prod(axis=-1) > length).any():
            raise ValueError(f"spatial_shapes must be positive with h * w <= {length} patches (the rows "
                             f"given), got {values.tolist()}")


def _check_patches(patches: jax.Array, width: int) -> None:
    shape = getattr(patches, "shape", None)
    if shape is None or len(shape) != 3 or shape[-1] != width:
        raise ValueError(f"NaFlex inputs are patches (B, N, p*p*C) = (B, N, {width}), got "
                         f"{tuple(shape) if shape is not None else type(patches).__name__}")
