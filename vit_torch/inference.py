"""Batched inference for the torch twin; vit_flax/inference.py is its twin (same arguments where
both frameworks have them, same outputs, same batching).

    engine = InferenceEngine(model.config, model.state_dict(), batch_size=32, dtype="bfloat16")
    out = engine(pixels)          # pixels (N, H, W, C), any N -> {"pooled": (N, hidden), "logits": ...}

Pixels come channels-last, as the Flax engine takes them (vit_common's preprocessing gives them so);
the engine turns each batch channels-first. A call runs full batches of `batch_size`; a shorter one
runs as it is (eager torch has no compiled shapes) or, with `compile=True`, padded to the smallest
power-of-two bucket so that torch.compile builds at most log2(batch_size) + 1 graphs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from vit_common.canonical import has_classifier
from vit_common.config import AttentionImpl, ViTConfig
from vit_common.engines import Outputs, check_naflex_batch, is_naflex_batch, naflex_steps, positive_int
from vit_common.formats.torch_codec import to_torch
from vit_torch.model import VisionTransformer, ViTForImageClassification

ComputeDtype = Literal["float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class InferenceEngine:
    """Pooled embeddings (and logits, when the weights hold a classifier) for batches of pixels."""

    def __init__(self, config: ViTConfig, params: Mapping[str, Any] | nn.Module, *, batch_size: int = 32,
                 dtype: ComputeDtype = "float32", attention_impl: AttentionImpl = "sdpa",
                 device: str | torch.device | None = None, compile: bool = False) -> None:
        """`params`: a state dict (torch tensors or numpy arrays, canonical names) or a model of
        this twin (its weights are used as they are). `dtype`: the compute dtype (weights are cast
        once). `compile=True` runs the forward under torch.compile."""
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {dtype!r}")
        if not isinstance(compile, bool):
            raise ValueError(f"compile must be a bool, got {compile!r}")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.config = config
        if isinstance(params, nn.Module):
            model = params
            self.has_head = isinstance(model, ViTForImageClassification)
        else:
            self.has_head = has_classifier(params)
            cls = ViTForImageClassification if self.has_head else VisionTransformer
            model = cls(config, attention_impl)
            model.load_state_dict({k: v if isinstance(v, torch.Tensor) else to_torch(np.asarray(v))
                                   for k, v in params.items()}, strict=True)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = _DTYPES[dtype]
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self._forward = torch.compile(self._apply) if compile else self._apply
        self._forward_naflex = torch.compile(self._apply_naflex) if compile else self._apply_naflex
        self._compiled = compile
        h, w = config.image_hw
        self.input_shape = (self.batch_size, h, w, config.num_channels)

    def _bucket(self, rows: int) -> int:
        if not self._compiled:
            return rows
        size = 1
        while size < rows:
            size *= 2
        return min(size, self.batch_size)

    def _apply(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        vit = self.model.vit if self.has_head else self.model
        tokens = vit.forward_features(x)
        out = {"pooled": vit.pool(tokens).float()}
        if self.has_head:  # DeiT's two heads read the tokens, not the pooled vector
            out["logits"] = self.model.head(tokens).float()
        return out

    def _apply_naflex(self, x: torch.Tensor, mask: torch.Tensor, shapes: torch.Tensor) -> dict[str, torch.Tensor]:
        vit = self.model.vit if self.has_head else self.model
        tokens = vit.forward_features(x, pixel_attention_mask=mask, spatial_shapes=shapes)
        token_mask = vit.token_mask(mask, shapes)
        out = {"pooled": vit.pool(tokens, token_mask).float()}
        if self.has_head:
            out["logits"] = self.model.head(tokens, token_mask).float()
        return out

    def _naflex(self, batch: Mapping[str, np.ndarray]) -> Outputs:
        p, c = self.config.patch_size, self.config.num_channels
        values, mask, shapes = check_naflex_batch(batch, p * p * c)
        keys = ["pooled", "logits"] if self.has_head else ["pooled"]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        with torch.no_grad():
            for rows, x, m, s in naflex_steps(values, mask, shapes, self.batch_size, self._bucket):
                out = self._forward_naflex(torch.from_numpy(x).to(device=self.device, dtype=self.dtype),
                                           torch.from_numpy(m).to(self.device), torch.from_numpy(s).to(self.device))
                for k in keys:
                    parts[k].append(out[k][:rows].cpu().numpy())
        return Outputs({k: np.concatenate(v) for k, v in parts.items()})

    def __call__(self, pixels: np.ndarray | Mapping[str, np.ndarray]) -> Outputs:
        """pixels (N, H, W, C) float32 -> {"pooled": (N, hidden), "logits": (N, num_labels)} float32
        numpy arrays, rows in input order. A NaFlex batch (vit_common.preprocessing.naflex_batch's
        dict) runs its images at their own shapes, each step padded to a few sequence lengths."""
        if is_naflex_batch(pixels):
            return self._naflex(pixels)
        pixels = np.asarray(pixels)
        if pixels.ndim != 4 or pixels.shape[1:] != self.input_shape[1:]:
            raise ValueError(f"expected pixels (N, H, W, C) = (N, {', '.join(map(str, self.input_shape[1:]))}), "
                             f"got {pixels.shape}")
        keys = ["pooled", "logits"] if self.has_head else ["pooled"]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        with torch.no_grad():
            for start in range(0, pixels.shape[0], self.batch_size):
                chunk = np.asarray(pixels[start:start + self.batch_size], np.float32)
                rows, size = chunk.shape[0], self._bucket(chunk.shape[0])
                if rows < size:  # a compiled engine pads a short batch to its bucket
                    chunk = np.concatenate([chunk, np.zeros((size - rows, *chunk.shape[1:]), np.float32)])
                x = torch.from_numpy(np.ascontiguousarray(chunk.transpose(0, 3, 1, 2)))  # (B, C, H, W)
                out = self._forward(x.to(device=self.device, dtype=self.dtype))
                for k in keys:
                    parts[k].append(out[k][:rows].cpu().numpy())
        widths = {"pooled": self.config.pooled_size, "logits": self.config.num_labels}
        return Outputs({k: np.concatenate(v) if v else np.zeros((0, widths[k]), np.float32)
                        for k, v in parts.items()})

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        return self(pixels)["pooled"]

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        if not self.has_head:
            raise ValueError("these weights hold no classifier: use embed() for pooled embeddings")
        return self(pixels)["logits"]
