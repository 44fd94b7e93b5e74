"""Jit-compiled, batched, data-parallel inference for the Flax twin.

    engine = InferenceEngine(model.config, params, batch_size=32, dtype="bfloat16")
    out = engine(pixels)          # pixels (N, H, W, C), any N -> {"pooled": (N, hidden), "logits": ...}

One compiled program for one fixed batch shape: the last partial batch is padded and the padding
dropped from the results, so any N reuses the same executable. Parameters stay float32 and are
replicated on every device of a 1-D "data" mesh; each batch is split across the devices
(jax.sharding: Mesh + NamedSharding, SPMD-partitioned by XLA). With several processes
(jax.distributed), every process passes its own images and gets its own rows back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vit_common.config import AttentionImpl, ViTConfig
from vit_common.convert import is_stacked, unwrap_params
from vit_common.engines import Outputs, check_naflex_batch, is_naflex_batch, naflex_steps, positive_int
from vit_flax.model import VisionTransformer, ViTForImageClassification

ComputeDtype = Literal["float32", "bfloat16", "float16"]
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# tokens per micro-batch slice on CPU: ~800 rows in every GEMM keep a B/16 layer's activations in
# cache (benchmarks/micro_batch_benchmark.py, B/16 at 224, 2-core CPU: batch 8 in slices of 2 / 4 /
# 8 images 5.52 / 5.65 / 5.47 img/s; batch 32 at once 4.59, in slices of 8 / 4 5.43 / 5.56)
CPU_SLICE_TOKENS = 1024


def _auto_micro_batch(config: ViTConfig, per_device: int) -> int | None:
    """The largest divisor of `per_device` whose slice holds at most CPU_SLICE_TOKENS tokens (at
    least one image); None when the whole share fits, or when it is at most twice the budget and
    its divisors would cut it into slices of less than half (a prime share of 7 B/16 images runs
    faster whole than one by one)."""
    tokens = config.num_patches + config.num_prefix_tokens
    fits = max(1, CPU_SLICE_TOKENS // tokens)
    if per_device <= fits:
        return None
    best = max(d for d in range(1, fits + 1) if per_device % d == 0)
    return None if 2 * best <= fits and per_device <= 2 * fits else best


class InferenceEngine:
    """Pooled embeddings (and logits, when the params hold a classifier) for batches of pixels;
    vit_torch.InferenceEngine is its twin (same arguments where both frameworks have them, same
    outputs)."""

    def __init__(self, config: ViTConfig, params: Mapping[str, Any], *, batch_size: int = 32,
                 dtype: ComputeDtype = "float32", attention_impl: AttentionImpl = "eager",
                 devices: Sequence[jax.Device] | None = None,
                 micro_batch: int | None | Literal["auto"] = "auto", mesh: Mesh | None = None) -> None:
        """`micro_batch`: run each device's share of a batch as a loop (lax.map) over slices of
        this many images. On CPUs the activations of a big batch outgrow the caches (B/16: 4
        images a slice run ~3% faster than 8, ~20% faster than 32 at once); slices keep the working
        set small. "auto" (the default): on CPU devices, slices of the largest divisor of each
        device's share holding at most CPU_SLICE_TOKENS tokens (4 B/16 images at 224); on
        accelerators, none.

        `mesh`: a ("data", "model") mesh (vit_flax.sharding.make_mesh): the parameters are sharded
        on it (FSDP over "data", heads and MLP width over "model", vit_flax.sharding) instead of
        replicated, the batch split over "data".

        `batch_size` is the most images one step runs. A call with fewer (or the remainder of a
        bigger call) runs padded to the smallest bucket that holds it -- the device count times a
        power of two (times a forced micro_batch), capped at batch_size -- so 1 image costs one
        image's compute, not batch_size's; each bucket compiles once. With several processes every
        step is padded to batch_size (all processes must run the same program)."""
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {dtype!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if micro_batch is not None and micro_batch != "auto":
            positive_int(micro_batch, "micro_batch (an int, None or 'auto')")
        params = unwrap_params(params)
        self.config = config
        self.has_head = "classifier" in params
        cls = ViTForImageClassification if self.has_head else VisionTransformer
        # scanned params (a stacked encoder/layer) run the scanned model, per-layer ones the unrolled
        self.model = cls(config, dtype=_DTYPES[dtype], param_dtype=jnp.float32,
                         attention_impl=attention_impl, scan_layers=is_stacked(params))
        auto_slices = micro_batch == "auto" and mesh is None
        if mesh is not None and micro_batch == "auto":
            micro_batch = None
        if mesh is not None and (devices is not None or micro_batch is not None):
            raise ValueError("mesh= places the devices itself and runs without micro_batch: pass "
                             "neither devices= nor micro_batch= with it")
        if mesh is not None and ("data" not in mesh.axis_names or set(mesh.axis_names) - {"data", "model"}):
            raise ValueError(f"mesh axes must be ('data', 'model') or ('data',), got {mesh.axis_names}")
        devices = list(mesh.devices.flat) if mesh is not None else (
            list(devices) if devices is not None else jax.devices())
        if dtype == "float16" and attention_impl == "sdpa" and devices[0].platform == "cpu":
            raise ValueError("float16 with attention_impl='sdpa' does not run on CPU (XLA has no "
                             "F16_F16_F32 dot_general there): use 'eager' or bfloat16")
        splits = mesh.shape["data"] if mesh is not None else len(devices)
        if batch_size < 1 or batch_size % splits:
            raise ValueError(f"batch_size must be a positive multiple of the {splits} devices "
                             f"it is split across, got {batch_size}")
        per_device = batch_size // splits
        if micro_batch == "auto":
            micro_batch = _auto_micro_batch(config, per_device) if devices[0].platform == "cpu" else None
        if micro_batch is not None and (micro_batch < 1 or per_device % micro_batch):
            raise ValueError(f"micro_batch must divide the {per_device} images each device gets "
                             f"per batch, got {micro_batch}")
        self._auto_slices = auto_slices and devices[0].platform == "cpu"
        self._splits = splits
        self.micro_batch = micro_batch  # for a full batch; a smaller bucket picks its own when "auto"
        self.batch_size = batch_size
        self.local_batch_size = batch_size // jax.process_count()
        self.mesh = mesh if mesh is not None else Mesh(np.asarray(devices), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        if mesh is not None:  # float32 params, each device holding its shards
            from vit_flax.sharding import shard_params

            self.params = shard_params(params, mesh)
        else:  # float32 params, one copy per device; the model casts to `dtype` as it computes
            self.params = jax.device_put(
                jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), dict(params)), self.replicated)
        param_shardings = jax.tree_util.tree_map(lambda a: a.sharding, self.params)
        self._step = jax.jit(self._forward, in_shardings=(param_shardings, self.batch_sharding),
                             out_shardings=self.batch_sharding)
        self._naflex_step = jax.jit(self._forward_naflex,
                                    in_shardings=(param_shardings, *[self.batch_sharding] * 3),
                                    out_shardings=self.batch_sharding)
        h, w = config.image_hw
        self.input_shape = (self.local_batch_size, h, w, config.num_channels)

    def _micro_batch_for(self, rows: int) -> int | None:
        """The micro-batch of a step of `rows` images (all processes together)."""
        if rows == self.batch_size or not self._auto_slices:
            return self.micro_batch
        return _auto_micro_batch(self.config, rows // self._splits)

    def _bucket(self, rows: int) -> int:
        """The rows this process's step runs for `rows` images of its own: see __init__."""
        if jax.process_count() > 1:
            return self.local_batch_size
        size = self._splits * (1 if self._auto_slices or self.micro_batch is None else self.micro_batch)
        while size < rows:
            size *= 2
        return min(size, self.local_batch_size)

    def _forward(self, params: Any, pixels: jax.Array) -> dict[str, jax.Array]:
        mb = self._micro_batch_for(pixels.shape[0])  # fixed per traced shape
        if mb is None:
            return self._apply(params, pixels)

        def per_device(params: Any, x: jax.Array) -> dict[str, jax.Array]:
            slices = x.reshape(x.shape[0] // mb, mb, *x.shape[1:])  # (slices, mb, H, W, C)
            out = jax.lax.map(lambda xi: self._apply(params, xi), slices)
            return jax.tree_util.tree_map(lambda a: a.reshape(x.shape[0], *a.shape[2:]), out)

        return jax.shard_map(per_device, mesh=self.mesh, in_specs=(PartitionSpec(), PartitionSpec("data")),
                             out_specs=PartitionSpec("data"))(params, pixels)

    def _forward_naflex(self, params: Any, patches: jax.Array, mask: jax.Array, shapes: jax.Array
                        ) -> dict[str, jax.Array]:
        def run(module: Any, x: jax.Array, m: jax.Array, s: jax.Array) -> dict[str, jax.Array]:
            vit = module.vit if self.has_head else module
            tokens = vit.forward_features(x, pixel_attention_mask=m, spatial_shapes=s)
            token_mask = vit.token_mask(m, s)
            out = {"pooled": vit.pool(tokens, mask=token_mask).astype(jnp.float32)}
            if self.has_head:
                out["logits"] = module.head(tokens, mask=token_mask).astype(jnp.float32)
            return out

        return self.model.apply({"params": params}, patches, mask, shapes, method=run)

    def _apply(self, params: Any, pixels: jax.Array) -> dict[str, jax.Array]:
        def run(module: Any, x: jax.Array) -> dict[str, jax.Array]:
            vit = module.vit if self.has_head else module
            tokens = vit.forward_features(x)
            out = {"pooled": vit.pool(tokens).astype(jnp.float32)}
            if self.has_head:  # DeiT's two heads read the tokens, not the pooled vector
                out["logits"] = module.head(tokens).astype(jnp.float32)
            return out

        return self.model.apply({"params": params}, pixels, method=run)

    def compile(self) -> float:
        """Compile now (not at the first batch); returns the seconds it took."""
        t = time.perf_counter()
        spec = jax.ShapeDtypeStruct((self.batch_size, *self.input_shape[1:]), jnp.float32,
                                    sharding=self.batch_sharding)
        self._step.lower(self.params, spec).compile()
        return time.perf_counter() - t

    def __call__(self, pixels: np.ndarray | Mapping[str, np.ndarray]) -> Outputs:
        """pixels (N, H, W, C) float32 -> {"pooled": (N, hidden), "logits": (N, num_labels)} float32,
        rows in input order. With several processes, N counts this process's images. ("cls", the
        old name of "pooled", still reads it for this release.) A NaFlex batch
        (vit_common.preprocessing.naflex_batch's dict) runs its images at their own shapes, each
        step padded to a few sequence lengths (vit_common.engines.NAFLEX_LENGTHS)."""
        if is_naflex_batch(pixels):
            return self._naflex(pixels)
        pixels = np.asarray(pixels)
        if pixels.ndim != 4 or pixels.shape[1:] != self.input_shape[1:]:
            raise ValueError(f"expected pixels (N, H, W, C) = (N, {', '.join(map(str, self.input_shape[1:]))}), "
                             f"got {pixels.shape}")
        n, b = pixels.shape[0], self.local_batch_size
        pending = []
        for start in range(0, n, b):
            chunk = np.asarray(pixels[start:start + b], np.float32)
            rows = chunk.shape[0]
            size = self._bucket(rows)
            if rows < size:  # pad a short batch to its bucket: one compiled shape per bucket
                chunk = np.concatenate([chunk, np.zeros((size - rows, *chunk.shape[1:]), np.float32)])
            x = jax.make_array_from_process_local_data(self.batch_sharding, chunk)
            pending.append((self._step(self.params, x), rows))  # dispatched, not awaited
        keys = ["pooled", "logits"] if self.has_head else ["pooled"]
        if not pending:
            widths = {"pooled": self.config.pooled_size, "logits": self.config.num_labels}
            return Outputs({k: np.zeros((0, widths[k]), np.float32) for k in keys})
        return Outputs({k: np.concatenate([_local_rows(out[k])[:rows] for out, rows in pending]) for k in keys})

    def _naflex(self, batch: Mapping[str, np.ndarray]) -> Outputs:
        p, c = self.config.patch_size, self.config.num_channels
        values, mask, shapes = check_naflex_batch(batch, p * p * c)
        pending = []
        for rows, x, m, s in naflex_steps(values, mask, shapes, self.local_batch_size, self._bucket):
            args = [jax.make_array_from_process_local_data(self.batch_sharding, a) for a in (x, m, s)]
            pending.append((self._naflex_step(self.params, *args), rows))
        keys = ["pooled", "logits"] if self.has_head else ["pooled"]
        return Outputs({k: np.concatenate([_local_rows(out[k])[:rows] for out, rows in pending]) for k in keys})

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        return self(pixels)["pooled"]

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        if not self.has_head:
            raise ValueError("these params hold no classifier: use embed() for pooled embeddings")
        return self(pixels)["logits"]


def _local_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded array, in order: one copy of each block of rows (on
    a ("data", "model") mesh every "model" device holds the same rows)."""
    blocks = {s.index[0].start or 0: s for s in array.addressable_shards}
    return np.concatenate([np.asarray(blocks[start].data) for start in sorted(blocks)])
