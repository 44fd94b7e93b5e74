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
from flax import linen as nn

from vit_common.resample import bicubic_matrix
from vit_flax.module_base import ModuleList, ViTModule


def _trunc_normal(std: float) -> jax.nn.initializers.Initializer:
    # N(0, std^2) cut at two standard deviations, as vit_torch's nn.init.trunc_normal_ draws.
    return jax.nn.initializers.truncated_normal(stddev=std, lower=-2.0, upper=2.0)


def _attention_probs(q: jax.Array, k: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(head_dim)): (B, heads, N, N) in the input dtype, the softmax taken in
    at least float32 as torch does for half precision. The one copy of this maths in the twin (the
    model, attention_maps and the visualisation all call it)."""
    # (B, heads, N, head_dim) operands: batch dimensions leading, which XLA's CPU dot runs ~3x
    # faster than the (B, N, heads, head_dim) einsum
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])  # (B, heads, N, N)
    probs = jax.nn.softmax(scores.astype(jnp.promote_types(scores.dtype, jnp.float32)), axis=-1)
    return probs.astype(scores.dtype)


def _eager_attention(q: jax.Array, k: jax.Array, v: jax.Array, dropout: nn.Dropout,
                     train: bool) -> jax.Array:
    probs = dropout(_attention_probs(q, k), deterministic=not train)
    return jnp.einsum("bhqk,bhkd->bhqd", probs, v)  # (B, heads, N, head_dim)


def _sdpa_attention(q: jax.Array, k: jax.Array, v: jax.Array, dropout: nn.Dropout,
                    train: bool) -> jax.Array:
    # jax's fused attention (cuDNN flash attention on GPU); it has no dropout on the probabilities
    if train and dropout.rate > 0:
        raise ValueError("attention_impl='sdpa' has no attention dropout; train with 'eager' when "
                         "attention_probs_dropout_prob > 0")
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # (B, N, heads, head_dim), jax's layout
    out = jax.nn.dot_product_attention(q, k, v, scale=1.0 / math.sqrt(q.shape[-1]))
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
    else:
        raise ValueError(f"unsupported hidden_act {hidden_act!r}")


def _dense(m: ViTModule, features: int, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=m.dtype, param_dtype=m.param_dtype,
                    kernel_init=_trunc_normal(m.config.initializer_range),
                    bias_init=jax.nn.initializers.zeros)


def _at_least_f32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _layernorm(m: ViTModule) -> nn.LayerNorm:
    # use_fast_variance=False: E[x^2] - E[x]^2 is not torch's two-pass variance
    return _Float32LayerNorm(epsilon=m.config.layer_norm_eps, use_fast_variance=False,
                             dtype=jnp.promote_types(m.dtype, jnp.float32), param_dtype=m.param_dtype)


class _Float32LayerNorm(nn.LayerNorm):
    """nn.LayerNorm built with a `dtype` of at least float32 (`_layernorm`): its statistics and
    normalisation run there whatever the parameters' dtype; the next Dense takes its input in the
    compute dtype."""


class ViTPatchEmbeddings(ViTModule):
    """(B, H, W, C) pixels -> (B, N, hidden) patch vectors, one per non-overlapping patch."""

    def setup(self) -> None:
        config = self.config
        self.pixel_shape = (*config.image_hw, config.num_channels)  # (H, W, C)
        self.patch_size = p = config.patch_size
        self.projection = nn.Conv(
            config.hidden_size, kernel_size=(p, p), strides=(p, p), padding="VALID",
            dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=_trunc_normal(config.initializer_range), bias_init=jax.nn.initializers.zeros)

    def __call__(self, pixel_values: jax.Array, interpolate_pos_encoding: bool = False) -> jax.Array:
        _check_pixels(self.pixel_shape, pixel_values, self.patch_size if interpolate_pos_encoding else None)
        x = self.projection(pixel_values)  # (B, H/p, W/p, hidden)
        b, h, w, d = x.shape
        return x.reshape(b, h * w, d)  # (B, N, hidden), patches in row-major (h, w) order


class ViTEmbeddings(ViTModule):
    """Patch vectors with a [CLS] token in front and learned position embeddings added."""

    def setup(self) -> None:
        config = self.config
        self.grid_size = config.grid_size
        init = _trunc_normal(config.initializer_range)
        self.cls_token = self.param("cls_token", init, (1, 1, config.hidden_size), self.param_dtype)
        self.patch_embeddings = ViTPatchEmbeddings(**self.module_args)
        self.position_embeddings = self.param(
            "position_embeddings", init, (1, config.num_patches + 1, config.hidden_size),
            self.param_dtype)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def __call__(self, pixel_values: jax.Array, train: bool = False,
                 interpolate_pos_encoding: bool = False) -> jax.Array:
        """`interpolate_pos_encoding`: accept any image size that is a multiple of the patch size,
        resampling the position embeddings bicubically to its patch grid (HF's option)."""
        x = self.patch_embeddings(pixel_values, interpolate_pos_encoding)  # (B, N, hidden)
        cls = jnp.broadcast_to(self.cls_token.astype(x.dtype), (x.shape[0], 1, x.shape[2]))
        p = self.patch_embeddings.patch_size
        grid = (pixel_values.shape[1] // p, pixel_values.shape[2] // p)
        pos = _resize_pos_embed(self.position_embeddings, self.grid_size, grid)
        x = jnp.concatenate([cls, x], axis=1) + pos.astype(x.dtype)  # (B, N + 1, hidden)
        return self.dropout(x, deterministic=not train)


class ViTSelfAttention(ViTModule):
    """Multi-head scaled dot-product self-attention; returns the heads concatenated."""

    def setup(self) -> None:
        config = self.config
        self.attend = _attention_fn(self.attention_impl)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        d = config.hidden_size
        self.query = _dense(self, d, use_bias=config.qkv_bias)
        self.key = _dense(self, d, use_bias=config.qkv_bias)
        self.value = _dense(self, d, use_bias=config.qkv_bias)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split(self, t: jax.Array) -> jax.Array:
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)  # (B, heads, N, head_dim)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b, n, _ = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        context = self.attend(q, k, v, self.dropout, train)  # (B, heads, N, head_dim)
        return context.transpose(0, 2, 1, 3).reshape(b, n, self.num_heads * self.head_dim)  # (B, N, hidden)

    def probabilities(self, x: jax.Array) -> jax.Array:
        """The attention probabilities this module computes for `x`: (B, heads, N, N)."""
        return _attention_probs(self._split(self.query(x)), self._split(self.key(x)))


class ViTSelfOutput(ViTModule):
    """The attention's output projection. The residual is added in ViTLayer (pre-norm block)."""

    def setup(self) -> None:
        self.dense = _dense(self, self.config.hidden_size)
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.dropout(self.dense(x), deterministic=not train)


class ViTAttention(ViTModule):
    """Self-attention followed by its output projection."""

    def setup(self) -> None:
        self.attention = ViTSelfAttention(**self.module_args)
        self.output = ViTSelfOutput(**self.module_args)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.output(self.attention(x, train), train)


class ViTIntermediate(ViTModule):
    """The MLP's first half: hidden -> intermediate, then the activation."""

    def setup(self) -> None:
        self.dense = _dense(self, self.config.intermediate_size)
        self.act = _activation(self.config.hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.act(self.dense(x))


class ViTOutput(ViTModule):
    """The MLP's second half: intermediate -> hidden, dropout, plus the residual."""

    def setup(self) -> None:
        self.dense = _dense(self, self.config.hidden_size)
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)

    def __call__(self, x: jax.Array, residual: jax.Array, train: bool = False) -> jax.Array:
        return self.dropout(self.dense(x), deterministic=not train) + residual


class ViTLayer(ViTModule):
    """One pre-norm Transformer block: x + attention(LN(x)), then h + MLP(LN(h))."""

    def setup(self) -> None:
        self.attention = ViTAttention(**self.module_args)
        self.intermediate = ViTIntermediate(**self.module_args)
        self.output = ViTOutput(**self.module_args)
        self.layernorm_before = _layernorm(self)
        self.layernorm_after = _layernorm(self)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = _at_least_f32(x)  # the residual stream stays in (at least) float32 in half precision
        h = x + self.attention(self.layernorm_before(x), train)
        return self.output(self.intermediate(self.layernorm_after(h)), h, train)

    def attention_probabilities(self, x: jax.Array) -> jax.Array:
        """This block's attention probabilities for its input `x`: (B, heads, N, N)."""
        return self.attention.attention.probabilities(self.layernorm_before(x))


class ViTEncoder(ViTModule):
    """num_hidden_layers ViTLayers in sequence."""

    def setup(self) -> None:
        self.layer = ModuleList([
            ViTLayer(**self.module_args, parent=None, name=str(i))
            for i in range(self.config.num_hidden_layers)])

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for layer in self.layer:
            x = layer(x, train)
        return x


class VisionTransformer(ViTModule):
    """pixels (B, H, W, C) -> the [CLS] token after the final LayerNorm, (B, hidden)."""

    def setup(self) -> None:
        self.embeddings = ViTEmbeddings(**self.module_args)
        self.encoder = ViTEncoder(**self.module_args)
        self.layernorm = _layernorm(self)

    def forward_features(self, pixel_values: jax.Array, train: bool = False,
                         interpolate_pos_encoding: bool = False) -> jax.Array:
        """Every token after the final LayerNorm: (B, N + 1, hidden), [CLS] first."""
        x = self.embeddings(pixel_values, train, interpolate_pos_encoding)
        return self.layernorm(self.encoder(x, train)).astype(self.dtype)

    def __call__(self, pixel_values: jax.Array, train: bool = False,
                 interpolate_pos_encoding: bool = False) -> jax.Array:
        return self.forward_features(pixel_values, train, interpolate_pos_encoding)[:, 0]  # (B, hidden)

    def attention_maps(self, pixel_values: jax.Array, interpolate_pos_encoding: bool = False,
                       layer: int = -1) -> jax.Array:
        """The attention probabilities of one layer (the last by default): (B, heads, N + 1, N + 1),
        [CLS] first, computed by the layers themselves."""
        layers = list(self.encoder.layer)
        index = range(len(layers))[layer]  # IndexError for a layer the model does not have
        x = self.embeddings(pixel_values, False, interpolate_pos_encoding)
        for block in layers[:index]:
            x = block(x)
        return layers[index].attention_probabilities(x)


class ViTForImageClassification(ViTModule):
    """VisionTransformer plus a linear classifier on the [CLS] token: logits (B, num_labels)."""

    def setup(self) -> None:
        if self.config.num_labels < 1:
            raise ValueError(f"ViTForImageClassification needs num_labels >= 1, got "
                             f"{self.config.num_labels}; use VisionTransformer for embeddings")
        self.vit = VisionTransformer(**self.module_args)
        self.classifier = _dense(self, self.config.num_labels)

    def __call__(self, pixel_values: jax.Array, train: bool = False,
                 interpolate_pos_encoding: bool = False) -> jax.Array:
        return self.classifier(self.vit(pixel_values, train, interpolate_pos_encoding))


def _resize_pos_embed(pos: jax.Array, grid: tuple[int, int], new_grid: tuple[int, int]) -> jax.Array:
    """(1, 1 + gh*gw, D) position embeddings resampled to another patch grid, [CLS] slot kept:
    PyTorch's bicubic interpolation as two matrices (vit_common.resample), shared with vit_torch."""
    if new_grid == tuple(grid):
        return pos
    mh = jnp.asarray(bicubic_matrix(grid[0], new_grid[0]), pos.dtype)  # (new_gh, gh)
    mw = jnp.asarray(bicubic_matrix(grid[1], new_grid[1]), pos.dtype)  # (new_gw, gw)
    patches = pos[0, 1:].reshape(grid[0], grid[1], -1)  # (gh, gw, D)
    patches = jnp.einsum("ih,hwd->iwd", mh, patches)
    patches = jnp.einsum("jw,iwd->ijd", mw, patches)  # (new_gh, new_gw, D)
    return jnp.concatenate([pos[:, :1], patches.reshape(1, -1, pos.shape[-1])], axis=1)


def _check_pixels(want: tuple[int, int, int], pixel_values: jax.Array,
                  any_size_multiple_of: int | None = None) -> None:
    if not hasattr(pixel_values, "shape") or not hasattr(pixel_values, "ndim"):
        raise TypeError(f"expected an array of pixels (B, H, W, C), got "
                        f"{type(pixel_values).__name__}")
    if pixel_values.ndim != 4:
        raise ValueError(f"expected pixels of shape (B, H, W, C) = (B, {want[0]}, {want[1]}, "
                         f"{want[2]}), got {tuple(pixel_values.shape)} (rank {pixel_values.ndim})")
    got = tuple(pixel_values.shape[1:])
    p = any_size_multiple_of
    if p and got[2] == want[2] and all(s > 0 and s % p == 0 for s in got[:2]):
        return  # interpolate_pos_encoding: any size on the patch grid
    if got != want:
        hint = ""
        if p and got[2] == want[2]:
            hint = f"; with interpolate_pos_encoding, H and W must be multiples of the patch size {p}"
        elif pixel_values.shape[1] == want[2] and got[2] != want[2]:
            hint = "; this looks channels-first (B, C, H, W): use pixels.transpose(0, 2, 3, 1)"
        raise ValueError(f"expected pixels (B, H, W, C) = (B, {want[0]}, {want[1]}, {want[2]}), got "
                         f"{tuple(pixel_values.shape)}{hint}")
