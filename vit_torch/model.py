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
from torch import nn

from vit_common.config import AttentionImpl, ViTConfig
from vit_common.resample import bicubic_matrix


def _trunc_normal(tensor: torch.Tensor, std: float) -> torch.Tensor:
    # N(0, std^2) cut at two standard deviations: jax.nn.initializers.truncated_normal's law.
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


def _at_least_f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _attention_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)): (B, heads, N, N), the one copy of this maths in the twin
    (the model, attention_maps and the visualisation all call it). The softmax runs in at least
    float32 (a half-precision sum over hundreds of keys loses the small terms)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, heads, N, N)
    return _at_least_f32(scores).softmax(dim=-1).to(scores.dtype)


def _eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     dropout: nn.Dropout) -> torch.Tensor:
    return dropout(_attention_probs(q, k)) @ v  # (B, heads, N, head_dim)


def _sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    dropout: nn.Dropout) -> torch.Tensor:
    # fused kernel (flash / memory-efficient where the device has one); same maths as eager
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout.p if dropout.training else 0.0)


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
    else:
        raise ValueError(f"unsupported hidden_act {hidden_act!r}")


class _Float32LayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose statistics and normalisation run in at least float32 whatever the
    parameters' dtype; the result is handed on in the parameters' (compute) dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _at_least_f32(self.weight)
        y = F.layer_norm(x.to(w.dtype), self.normalized_shape, w, self.bias.to(w.dtype), self.eps)
        return y.to(self.weight.dtype)


class ViTPatchEmbeddings(nn.Module):
    """(B, C, H, W) pixels -> (B, N, hidden) patch vectors, one per non-overlapping patch."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.pixel_shape = (config.num_channels, *config.image_hw)  # (C, H, W)
        self.patch_size = p = config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=p, stride=p)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        _check_pixels(self.pixel_shape, pixel_values, self.patch_size if interpolate_pos_encoding else None)
        x = self.projection(pixel_values)  # (B, hidden, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, hidden), patches in row-major (h, w) order


class ViTEmbeddings(nn.Module):
    """Patch vectors with a [CLS] token in front and learned position embeddings added."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.grid_size = config.grid_size
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.hidden_size))
        self.patch_embeddings = ViTPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(
            torch.empty(1, config.num_patches + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """`interpolate_pos_encoding`: accept any image size that is a multiple of the patch size,
        resampling the position embeddings bicubically to its patch grid (HF's option)."""
        x = self.patch_embeddings(pixel_values, interpolate_pos_encoding)  # (B, N, hidden)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, hidden)
        p = self.patch_embeddings.patch_size
        grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        pos = _resize_pos_embed(self.position_embeddings, self.grid_size, grid)
        x = torch.cat([cls, x], dim=1) + pos  # (B, N + 1, hidden)
        return self.dropout(x)


class ViTSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention; returns the heads concatenated."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "eager") -> None:
        super().__init__()
        self.attend = _attention_fn(attention_impl)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        d = config.hidden_size
        self.query = nn.Linear(d, d, bias=config.qkv_bias)
        self.key = nn.Linear(d, d, bias=config.qkv_bias)
        self.value = nn.Linear(d, d, bias=config.qkv_bias)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, N, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        context = self.attend(q, k, v, self.dropout)  # (B, heads, N, head_dim)
        return context.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)  # (B, N, hidden)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The attention probabilities this module computes for `x`: (B, heads, N, N)."""
        return _attention_probs(self._split(self.query(x)), self._split(self.key(x)))


class ViTSelfOutput(nn.Module):
    """The attention's output projection. The residual is added in ViTLayer (pre-norm block)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(x))


class ViTAttention(nn.Module):
    """Self-attention followed by its output projection."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "eager") -> None:
        super().__init__()
        self.attention = ViTSelfAttention(config, attention_impl)
        self.output = ViTSelfOutput(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(x))


class ViTIntermediate(nn.Module):
    """The MLP's first half: hidden -> intermediate, then the activation."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class ViTOutput(nn.Module):
    """The MLP's second half: intermediate -> hidden, dropout, plus the residual."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(x)) + residual


class ViTLayer(nn.Module):
    """One pre-norm Transformer block: x + attention(LN(x)), then h + MLP(LN(h))."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "eager") -> None:
        super().__init__()
        self.attention = ViTAttention(config, attention_impl)
        self.intermediate = ViTIntermediate(config)
        self.output = ViTOutput(config)
        self.layernorm_before = _Float32LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = _Float32LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _at_least_f32(x)  # the residual stream stays in (at least) float32 in half precision
        h = x + self.attention(self.layernorm_before(x))
        return self.output(self.intermediate(self.layernorm_after(h)), h)

    def attention_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """This block's attention probabilities for its input `x`: (B, heads, N, N)."""
        return self.attention.attention.probabilities(self.layernorm_before(x))


class ViTEncoder(nn.Module):
    """num_hidden_layers ViTLayers in sequence."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "eager") -> None:
        super().__init__()
        self.layer = nn.ModuleList([ViTLayer(config, attention_impl)
                                    for _ in range(config.num_hidden_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class VisionTransformer(nn.Module):
    """pixels (B, C, H, W) -> the [CLS] token after the final LayerNorm, (B, hidden)."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "eager") -> None:
        super().__init__()
        self.config = config
        self.embeddings = ViTEmbeddings(config)
        self.encoder = ViTEncoder(config, attention_impl)
        self.layernorm = _Float32LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.apply(functools.partial(init_weights, config))

    def forward_features(self, pixel_values: torch.Tensor,
                         interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Every token after the final LayerNorm: (B, N + 1, hidden), [CLS] first."""
        return self.layernorm(self.encoder(self.embeddings(pixel_values, interpolate_pos_encoding)))

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        return self.forward_features(pixel_values, interpolate_pos_encoding)[:, 0]  # (B, hidden)

    def attention_maps(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False,
                       layer: int = -1) -> torch.Tensor:
        """The attention probabilities of one layer (the last by default): (B, heads, N + 1, N + 1),
        [CLS] first, computed by the layers themselves."""
        layers = list(self.encoder.layer)
        index = range(len(layers))[layer]  # IndexError for a layer the model does not have
        x = self.embeddings(pixel_values, interpolate_pos_encoding)
        for block in layers[:index]:
            x = block(x)
        return layers[index].attention_probabilities(x)


class ViTForImageClassification(nn.Module):
    """VisionTransformer plus a linear classifier on the [CLS] token: logits (B, num_labels)."""

    def __init__(self, config: ViTConfig, attention_impl: AttentionImpl = "eager") -> None:
        super().__init__()
        if config.num_labels < 1:
            raise ValueError(f"ViTForImageClassification needs num_labels >= 1, got "
                             f"{config.num_labels}; use VisionTransformer for embeddings")
        self.config = config
        self.vit = VisionTransformer(config, attention_impl)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(config, self.classifier)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        return self.classifier(self.vit(pixel_values, interpolate_pos_encoding))


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
    elif isinstance(module, ViTEmbeddings):
        _trunc_normal(module.cls_token.data, std)
        _trunc_normal(module.position_embeddings.data, std)


def _resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """(1, 1 + gh*gw, D) position embeddings resampled to another patch grid, [CLS] slot kept:
    PyTorch's bicubic interpolation as two matrices (vit_common.resample), shared with vit_flax."""
    if new_grid == tuple(grid):
        return pos
    mh = torch.tensor(bicubic_matrix(grid[0], new_grid[0]), dtype=pos.dtype, device=pos.device)
    mw = torch.tensor(bicubic_matrix(grid[1], new_grid[1]), dtype=pos.dtype, device=pos.device)
    patches = pos[0, 1:].reshape(grid[0], grid[1], -1)  # (gh, gw, D)
    patches = torch.einsum("ih,hwd->iwd", mh, patches)
    patches = torch.einsum("jw,iwd->ijd", mw, patches)  # (new_gh, new_gw, D)
    return torch.cat([pos[:, :1], patches.reshape(1, -1, pos.shape[-1])], dim=1)


def _check_pixels(want: tuple[int, int, int], pixel_values: torch.Tensor,
                  any_size_multiple_of: int | None = None) -> None:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of pixels (B, C, H, W), got "
                        f"{type(pixel_values).__name__}")
    if pixel_values.ndim != 4:
        raise ValueError(f"expected pixels of shape (B, C, H, W) = (B, {want[0]}, {want[1]}, "
                         f"{want[2]}), got {tuple(pixel_values.shape)} (rank {pixel_values.ndim})")
    got = tuple(pixel_values.shape[1:])
    p = any_size_multiple_of
    if p and got[0] == want[0] and all(s > 0 and s % p == 0 for s in got[1:]):
        return  # interpolate_pos_encoding: any size on the patch grid
    if got != want:
        hint = ""
        if p and got[0] == want[0]:
            hint = f"; with interpolate_pos_encoding, H and W must be multiples of the patch size {p}"
        elif pixel_values.shape[-1] == want[0] and got[0] != want[0]:
            hint = "; this looks channels-last (B, H, W, C): use pixels.permute(0, 3, 1, 2)"
        raise ValueError(f"expected pixels (B, C, H, W) = (B, {want[0]}, {want[1]}, {want[2]}), got "
                         f"{tuple(pixel_values.shape)}{hint}")
