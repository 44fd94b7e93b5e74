"""Training the torch twin: the loss, an optimizer step, and the training state's checkpoints.
vit_flax/training.py is its twin: the same loss, the same step, the same checkpoint contents.

    step = make_train_step(model, torch.optim.AdamW(model.parameters(), 1e-3), scheduler)
    loss = step(pixels, labels)                                  # pixels (B, C, H, W)
    save_train_state("runs/x/step_100.pt", model, step.optimizer, step.scheduler, 100)
    step_no = restore_train_state("runs/x/step_100.pt", model, step.optimizer, step.scheduler)

A checkpoint file holds {"model", "optimizer", "scheduler", "step"}; it is read with torch's
weights_only unpickler (no code runs) and checked before anything is loaded: another model's
tensors, a missing optimizer state or a damaged file are one ValueError naming the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vit_common.fileio import atomic_write
from vit_common.formats.torch_codec import read_torch

TRAIN_STATE_KEYS = ("model", "optimizer", "scheduler", "step")


def classification_loss(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy of the model's logits (the model in training mode)."""
    return F.cross_entropy(model(pixels), labels)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """optax.cosine_decay_schedule's law: lr * (1 + cos(pi * step / total)) / 2, step from 0."""
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))


class TrainStep:
    """One optimizer step: step(pixels, labels) -> the loss before the update (a float)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def __call__(self, pixels: torch.Tensor, labels: torch.Tensor) -> float:
        self.model.train()
        loss = classification_loss(self.model, pixels, labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.detach())


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> TrainStep:
    return TrainStep(model, optimizer, scheduler)


# ---------------------------------------------------------------------------------------------
# training-state checkpoints

def save_train_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, step: int, *, overwrite: bool = False) -> None:
    """Write model, optimizer and scheduler state and the step to `path`, atomically (an existing
    file is replaced only with overwrite=True, and only when it is a training state of ours)."""
    path = os.fspath(path)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if overwrite and os.path.lexists(path) and not is_train_state(path):
        raise ValueError(f"{path} exists and is not a training checkpoint written here: refusing to replace it")
    snapshot = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {}, "step": step}
    atomic_write(path, lambda f: torch.save(snapshot, f), overwrite=overwrite)


def is_train_state(path: str) -> bool:
    """Whether `path` is a regular file holding a training state of ours."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        saved = read_torch(path)
    except ValueError:
        return False
    return isinstance(saved, Mapping) and set(TRAIN_STATE_KEYS) <= set(saved)


def restore_train_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any = None) -> int:
    """Load a training state into `model`, `optimizer` and `scheduler`; returns its step."""
    path = os.fspath(path)
    saved = read_torch(path)  # a ValueError naming the file for anything that is not a safe pickle
    if not isinstance(saved, Mapping):
        raise ValueError(f"{path}: expected a training state (a mapping), got {type(saved).__name__}")
    missing = [k for k in TRAIN_STATE_KEYS if k not in saved]
    if missing:
        raise ValueError(f"{path}: not a training state: no {', '.join(missing)} "
                         f"(expected {', '.join(TRAIN_STATE_KEYS)})")
    state, want = saved["model"], model.state_dict()
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: 'model' holds a {type(state).__name__}, not a state dict")
    wrong = [f"{k} expected {tuple(want[k].shape)} got {tuple(getattr(state[k], 'shape', ()))}"
             for k in want if k in state and tuple(getattr(state[k], "shape", ())) != tuple(want[k].shape)]
    absent, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if wrong or absent or extra:
        parts = [f"{len(x)} {name}: {', '.join(x[:4])}{', ...' if len(x) > 4 else ''}"
                 for name, x in (("missing", absent), ("unexpected", extra), ("wrong shape", wrong)) if x]
        raise ValueError(f"{path}: the training state is another model's ({'; '.join(parts)})")
    step = saved["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"{path}: step must be an int >= 0, got {step!r}")
    try:
        model.load_state_dict(state)
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: the training state does not fit this model and optimizer ({first[:300]})") from None
    return step
