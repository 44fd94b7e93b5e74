"""vit-convert: a ViT checkpoint from one format to another (HF torch or Flax, timm state dicts
and hub folders, open_clip folders, Google .npz, bare state dicts), optionally verified by running source and result on the same input."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

import vit_common.families as families
from vit_cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    byte_size,
    config_source,
    fail,
    image_side,
    non_negative_float,
    progress_bar,
    run,
)
from vit_common import checkpoints, layouts
from vit_common.config import ViTConfig
from vit_common.fileio import check_target

TARGETS = ("torch", "flax", "hf", "timm", "open_clip", "npz")
VERIFY_TOLERANCE = 5e-5  # fp32, max |diff| of CLS / logits; B/16 measures ~5e-6 torch -> flax


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-convert",
        description="Convert a ViT checkpoint between HF (torch or Flax), timm, Google .npz and bare "
                    "state dicts; optionally verify that source and result compute the same function.",
        epilog="exit codes: 0 done, 1 --verify found a difference above --tolerance (or a "
               "non-finite one), 2 bad arguments or an unreadable / unsupported / mismatched source "
               "or a DST that must not be replaced, 3 DST exists (use --force), 130 interrupted")
    p.add_argument("src", help="checkpoint file or HF save_pretrained directory")
    p.add_argument("-o", "--output", required=True, metavar="DST", help="where to write the result")
    p.add_argument("--to", choices=TARGETS, help="target format (default: from DST: a directory -> "
                   "hf, .msgpack -> flax, .npz -> npz, .safetensors/.pt/.pth/.bin -> torch). hf: HF "
                   "torch directory; flax: HF Flax directory (or a bare .msgpack); torch: a bare "
                   "HF-named state dict (or, for a directory, as hf); timm: a timm-named state dict (or, "
                   "for a directory, a timm hub folder: model.safetensors + timm's config.json); "
                   "open_clip: an open_clip folder (open_clip_config.json + open_clip_model.safetensors, "
                   "the vision tower); npz: Google's vision_transformer layout")
    p.add_argument("--config", type=config_source, help="ViT preset (B/16, ...), a timm model name "
                   "(vit_base_patch16_siglip_224, ...) or the path of a config.json (HF's, timm's or "
                   "open_clip's), for what the weights cannot say (the head count of timm and bare "
                   "state dicts); an existing file is read as a config file")
    p.add_argument("--verify", action="store_true", help="run source and result on the same random "
                   "input and compare CLS (and logits)")
    p.add_argument("--tolerance", type=non_negative_float, default=VERIFY_TOLERANCE,
                   help=f"--verify's bound on max |diff| (default {VERIFY_TOLERANCE:g})")
    p.add_argument("--force", action="store_true", help="replace an existing DST (a directory only "
                   "when it holds nothing but a checkpoint)")
    p.add_argument("--max-shard-size", type=byte_size, default=None, metavar="SIZE",
                   help="HF directories: weights over SIZE (5GB, 500MB, ...) go to several "
                        "model-0000i-of-0000N.safetensors files and an index, as HF writes them "
                        "(default 5GB)")
    p.add_argument("--image-size", type=image_side, nargs="+", metavar="PX", help="move the "
                   "checkpoint to this image size (one number, or height width) for good: position "
                   "embeddings resampled bicubically, as for fine-tuning at a new resolution")
    p.add_argument("--drop-pre-logits", action="store_true", help="load a Google npz that has a "
                   "pre_logits layer as a backbone without it (and without its head)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _target(dst: str, to: str | None) -> tuple[str, bool]:
    """(target format, whether DST is a directory)."""
    suffix = os.path.splitext(dst)[1].lower()
    is_dir = suffix == "" or os.path.isdir(dst)
    if to is None:
        to = ("hf" if is_dir else {".msgpack": "flax", ".npz": "npz"}.get(suffix, "torch"))
    if to == "npz" and suffix != ".npz":
        raise ValueError(f"--to npz writes a .npz file, got {dst}")
    if to == "flax" and not (is_dir or suffix == ".msgpack"):
        raise ValueError(f"--to flax writes a directory or a .msgpack file, got {dst}")
    if to == "open_clip" and not is_dir:
        raise ValueError(f"--to open_clip writes a folder (open_clip_config.json + "
                         f"open_clip_model.safetensors), got {dst}")
    if to == "hf" and not is_dir:
        raise ValueError(f"--to hf writes a save_pretrained directory, got {dst}")
    if to == "torch" and not is_dir and suffix not in (".safetensors", *checkpoints.TORCH_SUFFIXES):
        raise ValueError(f"--to torch writes a directory, a .safetensors or a "
                         f"{'/'.join(checkpoints.TORCH_SUFFIXES)} file, got {dst}")
    return to, is_dir


def main(argv: Sequence[str] | None = None) -> int:
    return run("vit-convert", _main, _parser(), argv)


def _main(args: argparse.Namespace) -> int:
    if args.image_size and len(args.image_size) > 2:
        return fail("vit-convert", f"--image-size takes one or two numbers, got {len(args.image_size)}")
    target, is_dir = _target(args.output, args.to)
    check_target(args.output, overwrite=args.force, directory=is_dir)  # before any work
    if os.path.lexists(args.src) and os.path.lexists(args.output) and \
            os.path.realpath(args.src) == os.path.realpath(args.output):
        return fail("vit-convert", f"{args.output} is the source itself; write elsewhere")
    ckpt = checkpoints.load_checkpoint(args.src, args.config, drop_pre_logits=args.drop_pre_logits)
    source_config = ckpt.config
    if args.image_size:
        from vit_common.resample import resize_state

        size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
        try:
            ckpt.state, ckpt.config = resize_state(ckpt.state, ckpt.config, size)
        except ValueError as e:
            return fail("vit-convert", f"--image-size: {e}")
        ckpt.notes.append(f"position embeddings resampled to image size {ckpt.config.image_size}")
    config = ckpt.config
    print(f"read {args.src}: {ckpt.format}, {len(ckpt.state)} tensors, {ckpt.nbytes / 2**20:,.1f} MiB, "
          f"{'ViTForImageClassification' if ckpt.has_head else 'VisionTransformer'} "
          f"({config.hidden_size}d x {config.num_hidden_layers} layers x {config.num_attention_heads} "
          f"heads, patch {config.patch_size}, image {config.image_size}, {config.hidden_act}, "
          f"eps {config.layer_norm_eps:g})")
    for note in ckpt.notes:
        print(f"note: {note}")
    with progress_bar(ckpt.nbytes, f"writing {args.output}", args.quiet) as bar:
        _write(ckpt, args.output, target, is_dir, args.force, bar.update, args.max_shard_size)
    print(f"wrote {args.output} ({target})")
    for note in _lost_in(target, is_dir, config):
        print(f"note: {note}")
    if not args.verify:
        return EXIT_OK
    return _verify(args.src, args.output, target, ckpt, args.tolerance, args.drop_pre_logits,
                   source_config, _written_config(config, target, is_dir))


def _write(ckpt: checkpoints.Checkpoint, dst: str, target: str, is_dir: bool, force: bool,
           progress: Any, max_shard_size: int | None = None) -> None:
    if target in ("hf", "torch") and is_dir:
        checkpoints.save_hf(ckpt.state, ckpt.config, dst, framework="torch", overwrite=force,
                            progress=progress, max_shard_size=max_shard_size or checkpoints.MAX_SHARD_SIZE)
    elif target == "flax" and is_dir:
        checkpoints.save_hf(ckpt.state, ckpt.config, dst, framework="flax", overwrite=force,
                            progress=progress)
    elif target == "flax":
        checkpoints.save_msgpack(ckpt.state, ckpt.config, dst, overwrite=force, progress=progress)
    elif target == "timm" and is_dir:
        checkpoints.save_timm_hub(ckpt.state, ckpt.config, dst, overwrite=force, progress=progress)
    elif target == "open_clip":
        checkpoints.save_open_clip(ckpt.state, ckpt.config, dst, overwrite=force, progress=progress)
    elif target in ("torch", "timm"):
        checkpoints.save_state_dict(ckpt.state, dst, naming="timm" if target == "timm" else "hf",
                                    config=ckpt.config, overwrite=force, progress=progress)
    elif target == "npz":
        checkpoints.save_npz(ckpt.state, ckpt.config, dst, overwrite=force, progress=progress)
    else:
        raise ValueError(f"unknown target {target!r}")


def _lost_in(target: str, is_dir: bool, config: ViTConfig) -> list[str]:
    """What a config-less target format cannot record, so its readers must be told."""
    if is_dir:  # every folder carries its config: HF's, timm's or open_clip's
        return []
    notes = [f"{target} files hold no config: load with config= (head count "
             f"{config.num_attention_heads}, hidden_act {config.hidden_act!r}, layer_norm_eps "
             f"{config.layer_norm_eps:g})"]
    # what the target's readers assume when a file says nothing (its family's defaults)
    assumed = families.naming_defaults(target)
    differ = [f"{k}={getattr(config, k)!r} (its readers assume {assumed[k]!r})"
              for k in ("hidden_act", "layer_norm_eps") if k in assumed and getattr(config, k) != assumed[k]]
    if differ:
        notes.append(f"{target} readers build the model with their own defaults; this model has "
                     f"{', '.join(differ)}: pass them when you build the model that reads this file")
    return notes


def _written_config(config: ViTConfig, target: str, is_dir: bool) -> ViTConfig | None:
    """The config the output is read back with: a directory's own config.json; timm's and
    big_vision's layouts for theirs (the same function, its tensors laid out as they hold them)."""
    if is_dir:
        return None
    if target == "timm":
        return layouts.timm_form(config)
    if target == "npz":
        return layouts.npz_form(config)
    return config


def _verify(src: str, dst: str, target: str, ckpt: checkpoints.Checkpoint, tolerance: float,
            drop_pre_logits: bool, source_config: ViTConfig, written: ViTConfig | None) -> int:
    import torch

    import vit_torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    config = ckpt.config
    # after --image-size the source runs at the new size through interpolate_pos_encoding: the
    # permanent resize must compute what the run-time one does
    source = vit_torch.from_pretrained(src, source_config, drop_pre_logits=drop_pre_logits)
    resized = source_config.image_hw != config.image_hw
    h, w = config.image_hw
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, config.num_channels, h, w))
                         .astype(np.float32))
    with torch.no_grad():
        want = _outputs(source, x, resized)
    if target == "flax":
        import jax

        import vit_flax

        jax.config.update("jax_default_matmul_precision", "highest")
        model, params = vit_flax.from_pretrained(dst, written)
        bound = model.bind({"params": params})
        x_fx = jax.numpy.asarray(x.numpy().transpose(0, 2, 3, 1))
        if ckpt.has_head:
            got = {"CLS": np.asarray(bound.vit(x_fx)), "logits": np.asarray(bound(x_fx))}
        else:
            got = {"CLS": np.asarray(bound(x_fx))}
        framework = "flax"
    else:
        result = vit_torch.from_pretrained(dst, written)
        with torch.no_grad():
            got = _outputs(result, x)
        framework = "torch"
    ok = True
    for name, value in want.items():
        diff = np.abs(value.astype(np.float64) - got[name].astype(np.float64))
        finite = bool(np.isfinite(value).all() and np.isfinite(got[name]).all())
        worst = float(diff.max()) if finite else float("nan")
        ok &= finite and worst <= tolerance  # NaN compares false: a NaN difference never passes
        print(f"verify: {name} max |diff| source (torch) vs {dst} ({framework}): "
              f"{worst:.2e}{'' if finite else ' (non-finite outputs)'}")
    print(f"verify: {'OK' if ok else 'FAILED'} (bound {tolerance:g})")
    return EXIT_OK if ok else EXIT_FAILED


def _outputs(model: Any, x: Any, interpolate: bool = False) -> dict[str, np.ndarray]:
    if hasattr(model, "classifier"):
        return {"CLS": model.vit(x, interpolate).numpy(), "logits": model(x, interpolate).numpy()}
    return {"CLS": model(x, interpolate).numpy()}


__all__ = ["EXIT_BAD_INPUT", "main"]

if __name__ == "__main__":
    sys.exit(main())
