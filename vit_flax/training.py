"""Training the Flax twin: the loss, a jit-compiled optimizer step (on one device or keeping the
shardings of a device mesh), and the training state's checkpoints (orbax). vit_torch/training.py is
its twin: the same loss, the same step, the same checkpoint contents.

    step = make_train_step(model, optax.adamw(1e-3))            # mesh=make_mesh(...) to shard
    opt_state = step.init(params)
    params, opt_state, loss = step(params, opt_state, pixels, labels)
    save_train_state("runs/x/step_100", params, opt_state, 100)
    params, opt_state, step_no = restore_train_state("runs/x/step_100", params_like, opt_state_like)

Checkpoints: each process writes the shards it holds (orbax's OCDBT / tensorstore format); restoring
places the arrays with the shardings of the targets given, so a checkpoint written on one mesh shape
restores onto another ((2, 4) -> (8, 1), or one device).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def classification_loss(model: Any, params: Any, pixels: jax.Array, labels: jax.Array,
                        rng: jax.Array | None = None) -> jax.Array:
    """Mean softmax cross-entropy of the model's logits in training mode (dropout from `rng`)."""
    import optax

    rngs = {"dropout": rng} if rng is not None else {}
    logits = model.apply({"params": params}, pixels, train=True, rngs=rngs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class TrainStep:
    """A jit-compiled training step (softmax cross-entropy, any optax optimizer):
    step(params, opt_state, pixels, labels[, rng]) -> (params, opt_state, loss). With a mesh the
    parameters and optimizer state keep their shardings and the batch is split over "data";
    `init(params)` makes the optimizer state (on a mesh: sharded like the params)."""

    def __init__(self, model: Any, tx: Any, mesh: Mesh | None = None) -> None:
        import optax

        self.model, self.tx, self.mesh = model, tx, mesh

        def step(params: Any, opt_state: Any, pixels: jax.Array, labels: jax.Array, rng: jax.Array) -> Any:
            loss, grads = jax.value_and_grad(
                lambda p: classification_loss(model, p, pixels, labels, rng))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self._step = step
        self._compiled: dict[Any, Any] = {}

    def lower(self, params: Any, opt_state: Any, pixels: Any, labels: Any, rng: jax.Array | None = None) -> Any:
        """The one-device step lowered for these shapes (`.compile()`, `.memory_analysis()`: what the
        scale benchmark measures); call the compiled step with (params, opt_state, pixels, labels, rng)."""
        rng = rng if rng is not None else jax.random.PRNGKey(0)
        return jax.jit(self._step).lower(params, opt_state, jnp.asarray(pixels, jnp.float32), jnp.asarray(labels), rng)

    def init(self, params: Any) -> Any:
        state = jax.jit(self.tx.init)(params)
        if self.mesh is None:
            return state
        replicated = NamedSharding(self.mesh, PartitionSpec())

        def on_mesh(a: jax.Array) -> jax.Array:
            sharding = getattr(a, "sharding", None)
            if isinstance(sharding, NamedSharding) and sharding.mesh == self.mesh:
                return a
            return jax.device_put(a, replicated)

        return jax.tree_util.tree_map(on_mesh, state)

    def __call__(self, params: Any, opt_state: Any, pixels: Any, labels: Any,
                 rng: jax.Array | None = None) -> tuple[Any, Any, jax.Array]:
        rng = rng if rng is not None else jax.random.PRNGKey(0)
        x, y = jnp.asarray(pixels, jnp.float32), jnp.asarray(labels)
        if self.mesh is None:
            if None not in self._compiled:
                self._compiled[None] = jax.jit(self._step)
            return self._compiled[None](params, opt_state, x, y, rng)
        shard = NamedSharding(self.mesh, PartitionSpec("data"))
        keep = (jax.tree_util.tree_map(lambda a: a.sharding, params),
                jax.tree_util.tree_map(lambda a: a.sharding, opt_state))
        key = jax.tree_util.tree_structure(keep)
        if key not in self._compiled:
            self._compiled[key] = jax.jit(self._step, out_shardings=(*keep, NamedSharding(self.mesh, PartitionSpec())))
        return self._compiled[key](params, opt_state, jax.device_put(x, shard), jax.device_put(y, shard), rng)


def make_train_step(model: Any, tx: Any, mesh: Mesh | None = None) -> TrainStep:
    return TrainStep(model, tx, mesh)


# ---------------------------------------------------------------------------------------------
# training-state checkpoints

# what orbax's StandardCheckpointer writes into a checkpoint directory: the only files a save with
# overwrite=True replaces (a directory holding anything else is refused, never emptied)
ORBAX_ENTRIES = ("_CHECKPOINT_METADATA", "_METADATA", "_sharding", "manifest.ocdbt", "commit_success.txt",
                 "d", "array_metadatas", "descriptor")


def _checkpointer() -> Any:
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def is_train_state(directory: str) -> bool:
    """Whether `directory` holds an orbax checkpoint and nothing else (what a save may replace)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    return "_CHECKPOINT_METADATA" in names and all(
        n in ORBAX_ENTRIES or n.startswith("ocdbt.process_") for n in names)


def save_train_state(directory: str | os.PathLike, params: Any, opt_state: Any, step: int, *,
                     overwrite: bool = False) -> None:
    """Write params, optimizer state and step to `directory` (which must not exist, or with
    overwrite=True be a checkpoint this function wrote: a directory of other files is refused);
    returns when every process has written its shards."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.lexists(directory):
        if not overwrite:
            raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it")
        if os.path.islink(directory) or not os.path.isdir(directory) or not is_train_state(directory):
            raise ValueError(f"{directory} exists and is not a training checkpoint written here: "
                             f"refusing to replace it")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    ckptr = _checkpointer()
    ckptr.save(directory, {"params": params, "opt_state": opt_state, "step": step}, force=overwrite)
    ckptr.wait_until_finished()


def restore_train_state(directory: str | os.PathLike, params: Any, opt_state: Any) -> tuple[Any, Any, int]:
    """(params, opt_state, step) from `directory`, each array placed as its target is sharded.
    Anything wrong with the directory (not a checkpoint, another model's, truncated data files, a
    missing manifest) is one ValueError naming it."""
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
        restored = _quietly(lambda: _checkpointer().restore(directory, target))
    except Exception as e:  # orbax and tensorstore raise bare Exceptions for damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{directory}: not a training checkpoint of this model, or a damaged one "
                         f"({type(e).__name__}: {first[:300]})") from None
    return restored["params"], restored["opt_state"], int(restored["step"])


class _AbandonedReads:
    """A logging filter for asyncio's "... exception was never retrieved" reports, installed once an
    orbax restore has failed in this process: orbax's background reads of the damaged checkpoint fail
    too, and asyncio would print each one's traceback when its task is collected (or its loop closes
    at exit), long after the one error we raise."""

    def filter(self, record: Any) -> bool:
        return "exception was never retrieved" not in str(record.msg)


_ABANDONED = _AbandonedReads()


def _quietly(fn: Any) -> Any:
    """Run `fn`; if it fails, keep asyncio's reports of the failed background reads (logged, or
    raised in a coroutine's finaliser at exit) off stderr: the failure itself is raised."""
    import logging
    import sys

    try:
        return fn()
    except Exception:
        log = logging.getLogger("asyncio")
        if _ABANDONED not in log.filters:
            log.addFilter(_ABANDONED)
        hook = sys.unraisablehook
        if not getattr(hook, "_vit_flax_reads", False):
            def unraisable(report: Any) -> None:
                if "coroutine" in repr(report.object) or isinstance(report.exc_value, RuntimeError) \
                        and "Event loop is closed" in str(report.exc_value):
                    return  # an abandoned read's coroutine, finalised after its loop closed
                hook(report)

            unraisable._vit_flax_reads = True  # type: ignore[attr-defined]
            sys.unraisablehook = unraisable
        raise
