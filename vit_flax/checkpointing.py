"""Sharded training checkpoints with orbax-checkpoint: parameters, optimizer state and the step.

    save_train_state("runs/x/step_100", params, opt_state, 100)
    params, opt_state, step = restore_train_state("runs/x/step_100", params_like, opt_state_like)

Each process writes the shards it holds (orbax's OCDBT / tensorstore format); restoring places the
arrays with the shardings of the targets given, so a checkpoint written on one mesh shape restores
onto another ((2, 4) -> (8, 1), or one device). Targets may be arrays or jax.ShapeDtypeStructs with
shardings (vit_flax.sharding.param_shardings, TrainStep.init on abstract params).
"""

from __future__ import annotations

import os
from typing import Any

import jax


def _checkpointer() -> Any:
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def save_train_state(directory: str | os.PathLike, params: Any, opt_state: Any, step: int, *,
                     overwrite: bool = False) -> None:
    """Write params, optimizer state and step to `directory` (which must not exist unless
    overwrite=True); returns when every process has written its shards."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.lexists(directory) and not overwrite:
        raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    ckptr = _checkpointer()
    ckptr.save(directory, {"params": params, "opt_state": opt_state, "step": step}, force=overwrite)
    ckptr.wait_until_finished()


def restore_train_state(directory: str | os.PathLike, params: Any, opt_state: Any) -> tuple[Any, Any, int]:
    """(params, opt_state, step) from `directory`, each array placed as its target is sharded."""
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: no such checkpoint directory")

    def abstract(a: Any) -> Any:
        if isinstance(a, jax.ShapeDtypeStruct) or not hasattr(a, "shape"):
            return a
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None))

    target = {"params": jax.tree_util.tree_map(abstract, params),
              "opt_state": jax.tree_util.tree_map(abstract, opt_state), "step": 0}
    try:
        restored = _checkpointer().restore(directory, target)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as e:
        raise ValueError(f"{directory}: not a training checkpoint of this model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return restored["params"], restored["opt_state"], int(restored["step"])
