"""Sharded parameters with JAX's SPMD partitioner: logical axis names for every parameter of the
Flax twin, rules from logical names to a ("data", "model") mesh, and a jit training step.

    mesh = make_mesh(data=2, model=4)                  # 8 devices
    params = shard_params(params, mesh)                 # FSDP over "data", Megatron over "model"
    engine = InferenceEngine(config, params, mesh=mesh)
    step = make_train_step(model, optax.adamw(1e-3), mesh)
    params, opt_state, loss = step(params, step.init(params), pixels, labels)

Logical names (`logical_axes`): "embed" the hidden width, "heads" the query / key / value output
(all heads side by side) and the attention output's input, "mlp" the MLP width, "layers" the
stacked layer axis of a scanned encoder, "labels" the classifier's outputs; None is never split.
Tensor parallelism (`rules(tensor_parallel=True)`): "heads" and "mlp" over "model" — the first
MLP matrix and the query / key / value projections split by columns, the second MLP matrix and the
attention output by rows, as Megatron does, so each device computes its heads and its slice of the
MLP and XLA inserts the one reduction per block. FSDP (`fsdp=True`): "embed" over "data" — every
device stores 1 / data of each weight and XLA gathers it for the layer that needs it. A dimension
that the mesh axis does not divide is left whole. Nothing here partitions by hand: the shardings
are `jax.sharding.NamedSharding`s and XLA's SPMD partitioner does the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vit_common.convert import (
    flatten_params,
    is_stacked,
    unflatten_params,
    unwrap_params,
)
from vit_flax.training import TrainStep

AXES = ("data", "model")

# leaf path (the tail of the module path, the leaf name) -> logical names of its dimensions, for
# the per-layer (unrolled) tree; a scanned tree has "layers" in front of every encoder leaf
_DENSE_IN = {"kernel": ("embed", "heads"), "bias": ("heads",)}  # query / key / value
_DENSE_OUT = {"kernel": ("heads", "embed"), "bias": ("embed",)}  # attention output
_MLP_IN = {"kernel": ("embed", "mlp"), "bias": ("mlp",)}
_MLP_OUT = {"kernel": ("mlp", "embed"), "bias": ("embed",)}


def _leaf_axes(path: tuple[str, ...], ndim: int) -> tuple[str | None, ...]:
    name, module = path[-1], path[:-1]
    tail = "/".join(module[-2:])
    if module and module[-1] in ("query", "key", "value"):
        return _DENSE_IN[name]
    if tail == "output/dense" and len(module) >= 3 and module[-3] == "attention":
        return _DENSE_OUT[name]
    if tail == "intermediate/dense":
        return _MLP_IN[name]
    if tail == "output/dense":
        return _MLP_OUT[name]
    if module and module[-1] in ("classifier", "distillation_classifier"):
        return {"kernel": ("embed", "labels"), "bias": ("labels",)}[name]
    if module and module[-1] in ("q_norm", "k_norm"):
        return (None,)  # head_dim wide, shared by the heads
    if module and module[-1] == "projection":  # the patch convolution (p, p, C, hidden)
        return (None,) * (ndim - 1) + ("embed",)
    # LayerNorm scales / biases, LayerScale, tokens, position tables, the MAP probe: hidden last
    return (None,) * (ndim - 1) + ("embed",) if ndim else ()


def logical_axes(params: Mapping[str, Any]) -> dict[str, Any]:
    """The params tree with every leaf replaced by a PartitionSpec of logical axis names."""
    flat = flatten_params(unwrap_params(params))
    stacked = is_stacked(params)
    out = {}
    for path, leaf in flat.items():
        ndim = np.ndim(leaf)
        scanned = stacked and "encoder" in path and path[path.index("encoder") + 1] == "layer"
        axes = _leaf_axes(path, ndim - 1 if scanned else ndim)
        if scanned:
            axes = ("layers", *axes)
        if len(axes) != ndim:
            raise ValueError(f"no logical axes for {'/'.join(path)} of rank {ndim}")
        out[path] = PartitionSpec(*axes)
    return unflatten_params(out)


def rules(fsdp: bool = True, tensor_parallel: bool = True) -> tuple[tuple[str, str | None], ...]:
    """Logical name -> mesh axis: FSDP shards the hidden width over "data", tensor parallelism the
    heads and the MLP width over "model"."""
    return (("embed", "data" if fsdp else None), ("heads", "model" if tensor_parallel else None),
            ("mlp", "model" if tensor_parallel else None), ("layers", None), ("labels", None))


def make_mesh(data: int | None = None, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("data", "model") mesh over `devices` (all by default); data defaults to the rest."""
    devices = list(devices) if devices is not None else jax.devices()
    if data is None:
        data = len(devices) // model
    if data < 1 or model < 1 or data * model != len(devices):
        raise ValueError(f"a mesh of data={data} x model={model} needs {data * model} devices, "
                         f"got {len(devices)}")
    return Mesh(np.asarray(devices).reshape(data, model), AXES)


def param_shardings(params: Mapping[str, Any], mesh: Mesh, fsdp: bool = True,
                    tensor_parallel: bool = True) -> dict[str, Any]:
    """A NamedSharding per leaf: each logical axis mapped by `rules`, a dimension the mesh axis
    does not divide left whole."""
    table = dict(rules(fsdp, tensor_parallel))
    specs = flatten_params(logical_axes(params))
    flat = flatten_params(unwrap_params(params))
    out = {}
    for path, leaf in flat.items():
        shape = np.shape(leaf)
        mesh_axes = []
        for dim, name in zip(shape, specs[path]):
            axis = table.get(name) if name is not None else None
            mesh_axes.append(axis if axis is not None and dim % mesh.shape[axis] == 0 else None)
        out[path] = NamedSharding(mesh, PartitionSpec(*mesh_axes))
    return unflatten_params(out)


def shard_params(params: Mapping[str, Any], mesh: Mesh, fsdp: bool = True,
                 tensor_parallel: bool = True, dtype: Any = np.float32) -> dict[str, Any]:
    """The params as jax arrays (float32 by default) laid out on the mesh: each device holds its
    shards only."""
    shardings = param_shardings(params, mesh, fsdp, tensor_parallel)
    return jax.tree_util.tree_map(lambda a, s: jax.device_put(np.asarray(a, dtype), s),
                                  dict(unwrap_params(params)), shardings)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Images split over "data", every "model" device of a row seeing the same images."""
    return NamedSharding(mesh, PartitionSpec("data"))


def make_train_step(model: Any, tx: Any, mesh: Mesh) -> TrainStep:
    """The training step (vit_flax.training.TrainStep) keeping the shardings of this mesh."""
    return TrainStep(model, tx, mesh)
