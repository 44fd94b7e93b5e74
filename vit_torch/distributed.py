"""The torch twin on torch's own engine: DDP and FSDP2 (torch.distributed.fsdp.fully_shard).

    dist.init_process_group("gloo")                       # or nccl; torchrun sets the environment
    model = fully_shard_vit(vit_torch.ViTForImageClassification(config))   # FSDP2, one unit per layer
    model = torch.nn.parallel.DistributedDataParallel(model)              # or plain DDP

`fully_shard_vit` makes each ViTLayer its own FSDP unit (its parameters gathered just before it
runs, freed after) and the rest (embeddings, final norm, pooling, heads) the root unit: the wrapping
HF and timm recommend for ViTs. Parameters become DTensors sharded on dimension 0 over the mesh;
`state_dict()` holds DTensors (`.full_tensor()` gathers one). Nothing here communicates by itself.

    save_sharded_checkpoint(model, optimizer, "ckpt")   # torch.distributed.checkpoint: each rank its shards
    load_sharded_checkpoint(model, optimizer, "ckpt")   # onto any world size / sharding, or one process
"""

from __future__ import annotations

from typing import Any

import torch

from vit_torch.model import VisionTransformer, ViTForImageClassification


def fully_shard_vit(model: VisionTransformer | ViTForImageClassification, mesh: Any = None,
                    **fully_shard_kwargs: Any) -> torch.nn.Module:
    """FSDP2 over `mesh` (a 1-D DeviceMesh; default: every rank of the process group, on the
    device type of the model's parameters): one unit per layer, then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if mesh is None:
        import torch.distributed as dist

        device = next(model.parameters()).device.type
        mesh = init_device_mesh(device, (dist.get_world_size(),))
    backbone = model.vit if isinstance(model, ViTForImageClassification) else model
    for layer in backbone.encoder.layer:
        fully_shard(layer, mesh=mesh, **fully_shard_kwargs)
    return fully_shard(model, mesh=mesh, **fully_shard_kwargs)


def save_sharded_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                            path: str, overwrite: bool = False) -> None:
    """Every rank writes its own shards of the model's (and the optimizer's) state with
    torch.distributed.checkpoint, into the directory `path` (one `__<rank>_0.distcp` file per rank
    plus `.metadata`). Works unsharded, under DDP and under FSDP2. A directory that already holds
    files is refused unless `overwrite`."""
    import os

    from torch.distributed.checkpoint import save
    from torch.distributed.checkpoint.state_dict import get_state_dict

    if not overwrite and os.path.isdir(path) and os.listdir(path):
        raise FileExistsError(f"{path} already holds files: pass overwrite=True to write into it")
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"a checkpoint is a directory; {path} is a file")
    model_state, optim_state = get_state_dict(model, optimizer if optimizer is not None else [])
    state = {"model": model_state} | ({"optimizer": optim_state} if optimizer is not None else {})
    save(state, checkpoint_id=path)


def load_sharded_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                            path: str) -> None:
    """Restore what save_sharded_checkpoint wrote onto `model` (and `optimizer`), in place, whatever
    their sharding now: another world size, FSDP2 or DDP, or one process without a process group.
    torch.distributed.checkpoint's `.metadata` file is a pickle: it is first read with an allow-list
    of the checkpoint metadata classes (as torch.load(weights_only=True) reads weights), so a file
    that would run code is refused before torch reads it. Garbage metadata, a truncated shard or
    another model's checkpoint is one ValueError naming the directory."""
    import os
    import warnings

    from torch.distributed.checkpoint import load
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    metadata = os.path.join(path, ".metadata")
    if not os.path.isfile(metadata) or os.path.islink(metadata):
        raise FileNotFoundError(f"{path} is not a torch.distributed.checkpoint directory (no .metadata)")
    check_metadata(metadata)
    model_state, optim_state = get_state_dict(model, optimizer if optimizer is not None else [])
    state = {"model": model_state} | ({"optimizer": optim_state} if optimizer is not None else {})
    try:
        with warnings.catch_warnings():  # one process without a process group is a use we document
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            load(state, checkpoint_id=path)
        set_state_dict(model, optimizer if optimizer is not None else [], model_state_dict=state["model"],
                       optim_state_dict=state.get("optimizer", {}))
    except (CheckpointException, RuntimeError, ValueError, KeyError, OSError, EOFError) as e:
        first = _first_line(e)
        raise ValueError(f"{path}: not a readable sharded checkpoint of this model ({type(e).__name__}: "
                         f"{first})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    for line in text.splitlines():  # CheckpointException's message is a nested traceback: its last error
        if "Error" in line and ":" in line:
            text = line
    return text.splitlines()[-1][:300] if text else "unreadable"


# what a torch.distributed.checkpoint .metadata pickle may name: its metadata classes, torch's
# Size, dtypes and layouts, paths; anything else is refused before torch unpickles the file
_METADATA_MODULES = ("torch.distributed.checkpoint.metadata",)
_METADATA_GLOBALS = {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
                     ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
                     ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
                     ("pathlib", "PureWindowsPath"), ("pathlib", "Path")}
MAX_METADATA_BYTES = 256 * 2**20


def check_metadata(path: str) -> None:
    """Read a DCP `.metadata` pickle with the allow-list; a ValueError names anything else."""
    import importlib
    import io
    import os
    import pickle

    if os.path.getsize(path) > MAX_METADATA_BYTES:
        raise ValueError(f"{path}: checkpoint metadata over {MAX_METADATA_BYTES // 2**20} MiB")

    class Refused(pickle.UnpicklingError):
        pass

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module in _METADATA_MODULES or (module, name) in _METADATA_GLOBALS:
                return getattr(importlib.import_module(module), name)
            if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
            raise Refused(f"{module}.{name} is not checkpoint metadata")

    with open(path, "rb") as f:
        data = f.read()
    try:
        Restricted(io.BytesIO(data)).load()
    except Refused as e:
        raise ValueError(f"{path}: refusing to read the checkpoint metadata: {e} (a metadata pickle "
                         f"names only torch.distributed.checkpoint's classes)") from None
    except Exception as e:  # garbage: EOFError, struct errors, bad opcodes, ...
        raise ValueError(f"{path}: not checkpoint metadata ({type(e).__name__}: {str(e)[:200]})") from None
