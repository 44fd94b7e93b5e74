"""The torch twin on torch's own engine: DDP and FSDP2 (torch.distributed.fsdp.fully_shard).

    dist.init_process_group("gloo")                       # or nccl; torchrun sets the environment
    model = fully_shard_vit(vit_torch.ViTForImageClassification(config))   # FSDP2, one unit per layer
    model = torch.nn.parallel.DistributedDataParallel(model)              # or plain DDP

`fully_shard_vit` makes each ViTLayer its own FSDP unit (its parameters gathered just before it
runs, freed after) and the rest (embeddings, final norm, pooling, heads) the root unit: the wrapping
HF and timm recommend for ViTs. Parameters become DTensors sharded on dimension 0 over the mesh;
`state_dict()` holds DTensors (`.full_tensor()` gathers one). Nothing here communicates by itself.
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
