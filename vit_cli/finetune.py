"""vit-finetune: train a small ViT classifier on scikit-learn's digits with the same recipe in Flax
(a jit-compiled optax AdamW step, cosine-decayed learning rate) and in PyTorch (torch.optim.AdamW
with the same schedule), from the same initial weights
on the same batches, and compare them.

    vit-finetune [-o runs/digits] [--epochs 60] [--framework both|flax|torch] [--steps N]
                 [--family vit|deit|dinov2|dinov2-registers|clip|siglip] [--force]
                 [--mesh data=N,model=M] [--dtype float32|bfloat16] [--scan-layers] [--remat]

Writes, under the output directory: loss_curves.png (both frameworks' training loss per step),
history.json (losses, accuracies, timings) and one HF checkpoint directory per framework
(torch/, flax/) that from_pretrained loads in either framework (HF Flax for classic ViT; HF torch
directories of the family for the others, as HF has Flax models for ViT only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from vit_cli.common import EXIT_OK, model_config, positive_int
from vit_cli.common import run as run_cli
from vit_common import families
from vit_common.config import ViTConfig
from vit_common.datasets import batches, load_digits, load_folder, split_folder
from vit_common.fileio import atomic_write, atomic_write_text, check_target

# 8x8 digits as 1-channel images, 2x2 patches: 16 tokens + [CLS]
DIGITS_CONFIG = ViTConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                          intermediate_size=128, image_size=8, patch_size=2, num_channels=1,
                          num_labels=10, layer_norm_eps=1e-6,
                          extra={"id2label": {i: str(i) for i in range(10)}})
# --family: the same digits model as each HF family builds it (its head as that family's HF
# classifier reads the tokens), so the checkpoints are that family's HF directories
DIGITS_FAMILIES: dict[str, dict[str, Any]] = {m.short: dict(m.example) for m in families.HF_MODELS.values()}
RECIPE = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.05, "batch_size": 64}


def folder_config(model_name: str | ViTConfig, num_classes: int, image_size: int | None) -> ViTConfig:
    """--model: a ViT size preset (B/16, ...) or a timm ViT name (or a checkpoint's config); a head
    for the folder's classes."""
    try:
        config = model_name if isinstance(model_name, ViTConfig) else model_config(model_name)
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"--model: {e}") from None
    from vit_common.layouts import hf_form

    changes: dict[str, Any] = {"num_labels": num_classes}
    if image_size is not None:
        changes["image_size"] = image_size
    config = config.replace(**changes)
    try:  # the checkpoints are HF directories: train the family's HF layout and HF classifier head
        config = hf_form(config)
        family = config.extra["model_type"]
    except ValueError:
        raise ValueError(f"--model {model_name}: no HF family holds this model, so its checkpoints could "
                         f"not be written as HF directories; pick a ViT, DeiT, DINOv2, CLIP or SigLIP model") from None
    heads = list(families.hf_model(family).classifiers)
    if config.classifier_input not in heads:
        # the family's first HF classifier (DINOv2: [CLS; patch mean]; CLIP / SigLIP: the patch mean)
        config = config.replace(classifier_input=heads[0])
    return config


def _pretrained_backbone(weights: str, image_size: int | None) -> tuple[dict[str, np.ndarray], ViTConfig]:
    """--weights: any checkpoint vit-convert reads; its backbone (the head is dropped: the folder's
    classes get a new one), moved to --image-size for good when given."""
    from vit_common.canonical import BACKBONE_PREFIX
    from vit_common.checkpoints import load_checkpoint
    from vit_common.resample import resize_state

    ckpt = load_checkpoint(weights)
    state = {k[len(BACKBONE_PREFIX):]: v for k, v in ckpt.state.items() if k.startswith(BACKBONE_PREFIX)} \
        if ckpt.has_head else dict(ckpt.state)
    extra = {k: v for k, v in ckpt.config.extra.items() if k not in ("id2label", "label2id")}
    config = ckpt.config.replace(num_labels=0, classifier_input="pooled", extra=extra)
    if image_size is not None and config.image_hw != (image_size, image_size):
        state, config = resize_state(state, config, image_size)
    return state, config


def _in_batches(predict: Any, x: Any, size: int = 64) -> np.ndarray:
    """predict over x in slices (an image folder is preprocessed per batch)."""
    return np.concatenate([np.asarray(predict(x[np.arange(i, min(i + size, len(x)))]))
                           for i in range(0, len(x), size)])


def initial_state(config: ViTConfig, seed: int) -> dict[str, np.ndarray]:
    """Initial weights, drawn once (torch's initialiser) and handed to both frameworks."""
    import torch

    import vit_torch
    from vit_common.canonical import to_numpy

    torch.manual_seed(seed)
    return {k: to_numpy(v).copy() for k, v in vit_torch.ViTForImageClassification(config).state_dict().items()}


@dataclasses.dataclass(frozen=True)
class FlaxScale:
    """How the Flax run is laid out: a ("data", "model") mesh (None: one device, as before), the
    compute dtype, scanned layers and rematerialisation."""

    mesh: tuple[int, int] | None = None
    dtype: str = "float32"
    scan_layers: bool = False
    remat: bool = False


@dataclasses.dataclass(frozen=True)
class Checkpointing:
    """Checkpoints every `every` steps under `directory` (flax/: orbax, sharded as trained;
    torch/: model, optimizer and schedule); `resume` continues from the latest; `stop_after` ends
    the run after that many steps, as an interruption would."""

    directory: str | None = None
    every: int = 0
    stop_after: int | None = None
    resume: bool = False

    def path(self, framework: str, step: int) -> str:
        return os.path.join(self.directory or "", framework, f"step_{step:08d}")

    def latest(self, framework: str) -> int:
        """The last step saved for this framework (0: none)."""
        where = os.path.join(self.directory or "", framework)
        if not self.resume or not os.path.isdir(where):
            return 0
        found = [int(n[5:13]) for n in os.listdir(where)
                 if n.startswith("step_") and n[5:13].isdigit() and n.endswith(".json")]
        return max(found, default=0)

    def due(self, step: int, total: int) -> bool:
        return bool(self.directory) and self.every > 0 and (step % self.every == 0 or step == total
                                                            or step == self.stop_after)


def _save_losses(plan: Checkpointing, framework: str, step: int, losses: list[float]) -> None:
    """Written last: a step counts as saved once its losses file exists."""
    atomic_write_text(plan.path(framework, step) + ".json", json.dumps({"step": step, "losses": losses}))


def _load_losses(plan: Checkpointing, framework: str, step: int) -> list[float]:
    from vit_common.fileio import read_json

    data = read_json(plan.path(framework, step) + ".json", "checkpoint losses")
    losses = data.get("losses") if isinstance(data, dict) else None
    if not isinstance(losses, list) or len(losses) != step:
        raise ValueError(f"{plan.path(framework, step)}.json: expected the losses of {step} steps")
    return [float(v) for v in losses]


def train_flax(config: ViTConfig, state: dict[str, np.ndarray], data: tuple, steps: list[np.ndarray],
               progress: Any, scale: FlaxScale = FlaxScale(),
               plan: Checkpointing = Checkpointing()) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import optax

    import vit_flax
    from vit_common.convert import (
        flax_to_torch,
        stack_layers,
        torch_to_flax,
        unstack_layers,
    )
    from vit_flax.sharding import make_mesh, shard_params
    from vit_flax.training import make_train_step, restore_train_state, save_train_state

    x_train, y_train, x_test, y_test = data
    model = vit_flax.ViTForImageClassification(config, dtype=getattr(jnp, scale.dtype),
                                               scan_layers=scale.scan_layers, remat=scale.remat)
    tree = torch_to_flax(state, config)
    if scale.scan_layers:
        tree = stack_layers(tree)
    schedule = optax.cosine_decay_schedule(RECIPE["lr"], len(steps))
    tx = optax.adamw(schedule, *RECIPE["betas"], eps=RECIPE["eps"],
                     weight_decay=RECIPE["weight_decay"])
    mesh = make_mesh(*scale.mesh) if scale.mesh is not None else None  # sharded on the mesh (SPMD)
    step = make_train_step(model, tx, mesh)
    params = shard_params(tree, mesh) if mesh is not None else jax.tree_util.tree_map(jnp.asarray, tree)
    opt_state = step.init(params)
    predict = jax.jit(lambda p, x: model.apply({"params": p}, x).argmax(-1))
    losses: list[float] = []
    start = plan.latest("flax")
    if start:  # the arrays land where the fresh ones are (same mesh and shardings)
        params, opt_state, _ = restore_train_state(plan.path("flax", start), params, opt_state)
        losses = _load_losses(plan, "flax", start)
    t0 = time.perf_counter()
    for idx in steps[start:]:
        params, opt_state, loss = step(params, opt_state, x_train[idx], y_train[idx])
        losses.append(float(loss))
        progress("flax", len(losses), len(steps), losses[-1])
        if plan.due(len(losses), len(steps)):
            save_train_state(plan.path("flax", len(losses)), params, opt_state, len(losses), overwrite=True)
            _save_losses(plan, "flax", len(losses), losses)
        if len(losses) == plan.stop_after:
            return {"losses": losses, "stopped": True}
    seconds = time.perf_counter() - t0
    acc = float((_in_batches(lambda x: predict(params, x), x_test) == y_test).mean())
    per_layer = unstack_layers(jax.tree_util.tree_map(np.asarray, params))
    return {"losses": losses, "test_accuracy": acc, "seconds": seconds,
            "model": vit_flax.ViTForImageClassification(config), "params": per_layer,
            "state": flax_to_torch(per_layer, config)}


def train_torch(config: ViTConfig, state: dict[str, np.ndarray], data: tuple,
                steps: list[np.ndarray], progress: Any,
                plan: Checkpointing = Checkpointing()) -> dict[str, Any]:
    import torch

    import vit_torch
    from vit_torch.training import (
        cosine_schedule,
        make_train_step,
        restore_train_state,
        save_train_state,
    )

    x_train, y_train, x_test, y_test = data
    model = vit_torch.ViTForImageClassification(config)
    vit_torch.load_numpy_state_dict(model, state)
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], betas=RECIPE["betas"],
                            eps=RECIPE["eps"], weight_decay=RECIPE["weight_decay"])
    step = make_train_step(model, opt, cosine_schedule(opt, len(steps)))  # dropout is 0 in this recipe

    def nchw(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # (B, C, H, W)

    yt = torch.from_numpy(y_train)
    losses: list[float] = []
    start = plan.latest("torch")
    if start:
        restore_train_state(plan.path("torch", start) + ".pt", model, opt, step.scheduler)
        losses = _load_losses(plan, "torch", start)
    t0 = time.perf_counter()
    for idx in steps[start:]:
        losses.append(step(nchw(x_train[idx]), yt[torch.from_numpy(idx)]))
        progress("torch", len(losses), len(steps), losses[-1])
        if plan.due(len(losses), len(steps)):
            os.makedirs(os.path.dirname(plan.path("torch", 0)), exist_ok=True)
            save_train_state(plan.path("torch", len(losses)) + ".pt", model, opt, step.scheduler, len(losses),
                             overwrite=True)
            _save_losses(plan, "torch", len(losses), losses)
        if len(losses) == plan.stop_after:
            return {"losses": losses, "stopped": True}
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = _in_batches(lambda x: model(nchw(x)).argmax(-1).numpy(), x_test)
    return {"losses": losses, "test_accuracy": float((pred == y_test).mean()), "seconds": seconds,
            "model": model}


def _progress(quiet: bool) -> Any:
    """One tqdm bar per framework, advanced with each step's loss."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def show(name: str, i: int, n: int, loss: float) -> None:
        if name not in bars:
            bars[name] = tqdm(total=n, desc=f"{name:5}", unit="step", disable=quiet, file=sys.stderr)
        bar = bars[name]
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if i == n:
            bar.close()

    return show


def plot(histories: dict[str, dict[str, Any]], path: str, overwrite: bool = False, family: str = "vit",
         dataset: str = "sklearn digits") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, style in (("flax", "-"), ("torch", "--")):
        if name in histories:
            h = histories[name]
            ax.plot(h["losses"], style, label=f"{name} (test acc {h['test_accuracy']:.1%})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_yscale("log")
    name = "ViT" if family == "vit" else f"ViT ({family} switches)"
    ax.set_title(f"{name} on {dataset}: same weights, same batches, AdamW in optax and torch")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), overwrite=overwrite)


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    """One vit-finetune run: where it writes, what it trains on, how long, in which framework."""

    out_dir: str
    epochs: int = 60
    framework: Literal["both", "flax", "torch"] = "both"
    max_steps: int | None = None  # stop after this many steps (a smoke run)
    seed: int = 0
    quiet: bool = False
    force: bool = False  # replace this tool's earlier outputs (never anything else)
    family: str = "vit"  # the digits model as this HF family builds it
    scale: FlaxScale = FlaxScale()
    plan: Checkpointing = Checkpointing()
    data_dir: str | None = None  # an image folder instead of the digits
    model_name: str = "Ti/16"  # with data_dir: a ViT size or a timm name
    image_size: int | None = None
    batch_size: int = RECIPE["batch_size"]
    weights: str | None = None  # with data_dir: start from this checkpoint's backbone


def _check_checkpoint_dir(plan: Checkpointing, force: bool) -> None:
    """Before any training: checkpoints go to a directory that is empty, absent or (with --force
    or --resume) ours; a step a user's file already occupies is refused now, not after training."""
    if not plan.directory or not os.path.lexists(plan.directory):
        return
    if os.path.islink(plan.directory) or not os.path.isdir(plan.directory):
        raise ValueError(f"{plan.directory} exists and is not a directory of checkpoints: refusing to write there")
    ours = {"flax", "torch"}
    foreign = sorted(set(os.listdir(plan.directory)) - ours)
    if foreign:
        raise ValueError(f"{plan.directory} holds files that are not this tool's checkpoints "
                         f"({', '.join(foreign[:4])}): refusing to write there")
    entries = [os.path.join(plan.directory, d, n) for d in sorted(ours)
               if os.path.isdir(os.path.join(plan.directory, d)) for n in os.listdir(os.path.join(plan.directory, d))]
    if entries and not (force or plan.resume):
        raise FileExistsError(f"{plan.directory} holds checkpoints of an earlier run; use --resume to "
                              f"continue it or --force to replace them")
    from vit_flax.training import is_train_state as is_flax_state
    from vit_torch.training import is_train_state as is_torch_state

    for path in entries:
        name = os.path.basename(path)
        kind = os.path.basename(os.path.dirname(path))
        if name.endswith(".json") and name.startswith("step_") and os.path.isfile(path) and not os.path.islink(path):
            continue
        if kind == "torch" and name.endswith(".pt") and is_torch_state(path):
            continue
        if kind == "flax" and os.path.isdir(path) and not os.path.islink(path) and is_flax_state(path):
            continue
        raise ValueError(f"{path} is not a checkpoint this tool wrote: refusing to replace it "
                         f"(move it away, or write to another -o)")


def run(options: FinetuneOptions) -> dict[str, Any]:
    """Train and write the outputs; returns the summary (losses, accuracies, timings)."""
    o = options
    out_dir, epochs, framework, max_steps, seed, quiet, force = (
        o.out_dir, o.epochs, o.framework, o.max_steps, o.seed, o.quiet, o.force)
    family, scale, plan, data_dir, model_name, image_size, batch_size, weights = (
        o.family, o.scale, o.plan, o.data_dir, o.model_name, o.image_size, o.batch_size, o.weights)
    if framework not in ("both", "flax", "torch"):
        raise ValueError(f"framework must be 'both', 'flax' or 'torch', got {framework!r}")
    import vit_flax
    import vit_torch
    from vit_common.checkpoints import save_hf

    if family not in DIGITS_FAMILIES:
        raise ValueError(f"family must be one of {', '.join(DIGITS_FAMILIES)}, got {family!r}")

    outputs = {name: os.path.join(out_dir, name) for name in
               ("flax", "torch", "history.json", "loss_curves.png")}
    for name, path in outputs.items():  # before any work: nothing replaced without --force
        check_target(path, overwrite=force, directory=name in ("flax", "torch"))
    _check_checkpoint_dir(plan, force)
    pretrained = None
    if weights and data_dir is None:
        raise ValueError("--weights starts an image-folder run (--data DIR); the digits model trains from scratch")
    if data_dir is None:
        config = DIGITS_CONFIG.replace(**DIGITS_FAMILIES[family])
        data: tuple = load_digits(seed)
    else:  # an image folder: the model named (a ViT size or a timm name), one class per subdirectory
        classes, items = load_folder(data_dir, seed)
        pretrained = _pretrained_backbone(weights, image_size) if weights else None
        config = folder_config(pretrained[1] if pretrained else model_name, len(classes), image_size)
        # the folder's labels; a checkpoint's own preprocessing (carried in extra) is kept
        config = config.replace(extra={**config.extra, "id2label": dict(enumerate(classes))})
        if family != "vit":
            raise ValueError("--family shapes the digits model; for --data name the model with --model "
                             "(a timm name gives its family)")
        data = split_folder(items, config, seed)
    steps = list(batches(len(data[0]), batch_size, epochs, seed))[:max_steps]
    if not steps:
        raise ValueError(f"{len(data[0])} training images make no full batch of {batch_size}: lower --batch-size")
    state = initial_state(config, seed)
    if data_dir is not None and pretrained is not None:  # the checkpoint's backbone, a new seeded head
        from vit_common.canonical import BACKBONE_PREFIX
        from vit_common.layouts import relayout

        backbone_state, source = pretrained
        target = config.replace(num_labels=source.num_labels, classifier_input=source.classifier_input,
                                extra=source.extra)
        moved = relayout(backbone_state, source, target)
        state.update({BACKBONE_PREFIX + k: np.asarray(v) for k, v in moved.items()})
    progress = _progress(quiet)
    histories: dict[str, dict[str, Any]] = {}
    if framework in ("both", "flax"):
        histories["flax"] = train_flax(config, state, data, steps, progress, scale, plan)
    if framework in ("both", "torch"):
        histories["torch"] = train_torch(config, state, data, steps, progress, plan)
    if any(h.get("stopped") for h in histories.values()):  # as if interrupted: checkpoints only
        return {"stopped_at": plan.stop_after, **{n: {"losses": h["losses"]} for n, h in histories.items()}}
    if "flax" in histories:
        if families.hf_model_of(config).has_flax:  # HF has Flax models for ViT only
            vit_flax.save_pretrained(histories["flax"]["model"], histories["flax"]["params"],
                                     os.path.join(out_dir, "flax"), overwrite=force)
        else:
            save_hf(histories["flax"]["state"], config, os.path.join(out_dir, "flax"), overwrite=force)
    if "torch" in histories:
        vit_torch.save_pretrained(histories["torch"]["model"], os.path.join(out_dir, "torch"),
                                  overwrite=force)
    summary: dict[str, Any] = {name: {k: h[k] for k in ("losses", "test_accuracy", "seconds")}
                               for name, h in histories.items()}
    summary["family"] = family
    if len(histories) == 2:
        a, b = (np.asarray(histories[n]["losses"]) for n in ("flax", "torch"))
        summary["max_abs_loss_diff_first_10_steps"] = float(np.abs(a[:10] - b[:10]).max())
    atomic_write_text(outputs["history.json"], json.dumps(summary, indent=1) + "\n", overwrite=force)
    try:
        dataset = f"the image folder {os.path.basename(os.path.normpath(data_dir))}" if data_dir else "sklearn digits"
        plot(histories, outputs["loss_curves.png"], overwrite=force, family=family, dataset=dataset)
    except ImportError:
        print("matplotlib not installed: no loss-curve plot (pip install matplotlib)", file=sys.stderr)
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vit-finetune", description=__doc__.splitlines()[0],
                                epilog="exit codes: 0 done, 2 bad arguments, 3 an output exists "
                                       "(use --force), 130 interrupted")
    p.add_argument("-o", "--output", default="runs/digits")
    p.add_argument("--epochs", type=positive_int, default=60)
    p.add_argument("--steps", type=positive_int, help="stop after this many steps (a smoke run)")
    p.add_argument("--framework", choices=("both", "flax", "torch"), default="both")
    p.add_argument("--data", metavar="DIR", help="an image folder (one subdirectory per class) to "
                   "train on instead of the digits: a seeded 80/20 split, images preprocessed per batch")
    p.add_argument("--model", default="Ti/16", help="with --data: a ViT size (Ti/16, B/16, ...) or a timm "
                   "ViT name of any family, randomly initialised (default Ti/16)")
    p.add_argument("--weights", metavar="CHECKPOINT", help="with --data: start from this checkpoint's "
                   "backbone (any format vit-convert reads; its config replaces --model), a new head for "
                   "the folder's classes")
    p.add_argument("--image-size", type=positive_int, help="with --data: the model's image size")
    p.add_argument("--batch-size", type=positive_int, default=RECIPE["batch_size"],
                   help=f"images per step (default {RECIPE['batch_size']})")
    p.add_argument("--family", choices=tuple(DIGITS_FAMILIES), default="vit",
                   help="the digits model as this family builds it (its switches and classifier head); "
                        "checkpoints are that family's HF directories (default vit)")
    p.add_argument("--mesh", type=_mesh, metavar="data=N,model=M",
                   help="Flax: shard parameters and optimizer state on a (data, model) device mesh "
                        "(FSDP over data, heads and MLP width over model); default one device")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="Flax compute dtype (parameters and optimizer state stay float32)")
    p.add_argument("--scan-layers", action="store_true", help="Flax: one nn.scan over the layers")
    p.add_argument("--remat", action="store_true", help="Flax: recompute each layer in the backward pass")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="STEPS",
                   help="write both frameworks' training state under OUT/checkpoints every STEPS "
                        "steps (Flax: orbax, sharded as trained; torch: model, optimizer, schedule)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint under OUT/checkpoints: the loss curve "
                        "is the uninterrupted run's")
    p.add_argument("--stop-after", type=positive_int, metavar="STEPS",
                   help="stop after STEPS steps (checkpointed), as an interruption would; --resume "
                        "continues")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace this tool's earlier outputs")
    p.add_argument("--quiet", action="store_true")
    return p


def _mesh(text: str) -> tuple[int, int]:
    """--mesh data=N,model=M (either part may be left out: 1)."""
    sizes = {"data": 1, "model": 1}
    try:
        for part in text.split(","):
            key, value = part.split("=")
            if key.strip() not in sizes or int(value) < 1:
                raise ValueError
            sizes[key.strip()] = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected data=N,model=M with positive N and M, got {text!r}") from None
    return sizes["data"], sizes["model"]


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("vit-finetune", _main, _parser(), argv)


def _main(args: argparse.Namespace) -> int:
    scale = FlaxScale(args.mesh, args.dtype, args.scan_layers, args.remat)
    if scale.mesh is not None:
        import jax

        if scale.mesh[0] * scale.mesh[1] != jax.device_count():
            raise ValueError(f"--mesh data={scale.mesh[0]},model={scale.mesh[1]} needs "
                             f"{scale.mesh[0] * scale.mesh[1]} devices, this machine has {jax.device_count()}")
        if args.batch_size % scale.mesh[0]:
            raise ValueError(f"--mesh data={scale.mesh[0]} must divide the batch of {args.batch_size}")
    every = args.checkpoint_every or (args.stop_after if args.stop_after else 0)
    plan = Checkpointing(os.path.join(args.output, "checkpoints") if every or args.resume else None,
                         every, args.stop_after, args.resume)
    if args.resume and not os.path.isdir(os.path.join(args.output, "checkpoints")):
        raise ValueError(f"--resume: no checkpoints under {os.path.join(args.output, 'checkpoints')}")
    summary = run(FinetuneOptions(
        args.output, epochs=args.epochs, framework=args.framework, max_steps=args.steps, seed=args.seed,
        quiet=args.quiet, force=args.force, family=args.family, scale=scale, plan=plan, data_dir=args.data,
        model_name=args.model, image_size=args.image_size, batch_size=args.batch_size, weights=args.weights))
    if "stopped_at" in summary:
        print(f"stopped after {summary['stopped_at']} steps; checkpoints in {plan.directory}; run "
              f"the same command with --resume to continue")
        return EXIT_OK
    for name in ("flax", "torch"):
        if name in summary:
            s = summary[name]
            print(f"{name}: {len(s['losses'])} steps in {s['seconds']:.1f} s, final loss "
                  f"{s['losses'][-1]:.4f}, test accuracy {s['test_accuracy']:.2%}")
    if "max_abs_loss_diff_first_10_steps" in summary:
        print(f"loss curves, first 10 steps: max |flax - torch| = "
              f"{summary['max_abs_loss_diff_first_10_steps']:.2e}")
    print(f"wrote {args.output}/loss_curves.png, history.json, torch/ and flax/ checkpoints")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
