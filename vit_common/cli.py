"""Console scripts. They import torch and jax inside the functions: vit_common stays neutral."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vit_common.config import PRESETS, ViTConfig

# fp32 agreement the parity suite holds B/16-size models to (DESIGN.md, "Tests")
DEMO_TOLERANCE = 2e-5


def _demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-demo",
        description="Build a ViT in PyTorch, convert it to Flax, run both on one image and show, "
                    "component by component, that they compute the same function; then time both.")
    p.add_argument("image", nargs="?", help="image file (default: a generated test picture)")
    p.add_argument("--preset", default="B/16", help=f"model size, one of {', '.join(PRESETS)} "
                                                    "(default B/16)")
    p.add_argument("--batch-size", type=int, default=8, help="batch for the throughput runs (8)")
    p.add_argument("--iters", type=int, default=3, help="timed batches per framework (3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (0)")
    return p


def demo_main(argv: Sequence[str] | None = None) -> int:
    args = _demo_parser().parse_args(argv)
    try:
        config = ViTConfig.from_preset(args.preset)
    except ValueError as e:
        print(f"vit-demo: {e}", file=sys.stderr)
        return 2
    if args.batch_size < 1 or args.iters < 1:
        print("vit-demo: --batch-size and --iters must be >= 1", file=sys.stderr)
        return 2
    try:
        return run_demo(config, args.image, args.batch_size, args.iters, args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"vit-demo: {e}", file=sys.stderr)
        return 2


def run_demo(config: ViTConfig, image: str | None, batch_size: int, iters: int, seed: int,
             out: Callable[[str], Any] = print) -> int:
    import jax
    import torch

    import vit_flax
    import vit_torch
    from vit_common.convert import torch_to_flax
    from vit_common.preprocessing import demo_image

    # Parity is judged at full fp32 precision: no TF32 / bf16 passes on GPU.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    jax.config.update("jax_default_matmul_precision", "highest")

    gh, gw = config.grid_size
    out(f"ViT {config.hidden_size}d x {config.num_hidden_layers} layers x "
        f"{config.num_attention_heads} heads, patch {config.patch_size}, image "
        f"{config.image_hw[0]}x{config.image_hw[1]} ({gh}x{gw} patches), hidden_act "
        f"{config.hidden_act}, eps {config.layer_norm_eps:g}")

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    pt = vit_torch.VisionTransformer(config).eval()
    params = torch_to_flax(pt.state_dict(), config)
    fx = vit_flax.VisionTransformer(config)
    n_params = sum(p.numel() for p in pt.parameters())
    out(f"built in PyTorch ({n_params:,} parameters, seed {seed}) and converted to Flax in "
        f"{time.perf_counter() - t0:.1f} s")

    source = image if image is not None else demo_image()
    x_pt = vit_torch.preprocess_image(source, config)  # (1, C, H, W)
    x_fx = vit_flax.preprocess_image(source, config)  # (1, H, W, C)
    pixel_diff = float(np.abs(x_pt.numpy().transpose(0, 2, 3, 1) - np.asarray(x_fx)).max())
    out(f"image: {image or 'generated test picture'} -> torch {tuple(x_pt.shape)}, flax "
        f"{tuple(x_fx.shape)}, max |diff| of the preprocessed pixels {pixel_diff:.1e}")

    # Walk the component pipeline in both frameworks, comparing after every stage.
    bound = fx.bind({"params": params})
    rows: list[tuple[str, np.ndarray, np.ndarray]] = []
    with torch.no_grad():
        h_pt, h_fx = pt.embeddings(x_pt), bound.embeddings(x_fx)
        rows.append(("embeddings", h_pt.numpy(), np.asarray(h_fx)))
        for i in range(config.num_hidden_layers):
            h_pt, h_fx = pt.encoder.layer[i](h_pt), bound.encoder.layer[i](h_fx)
            rows.append((f"encoder.layer.{i}", h_pt.numpy(), np.asarray(h_fx)))
        h_pt, h_fx = pt.layernorm(h_pt), bound.layernorm(h_fx)
        rows.append(("layernorm", h_pt.numpy(), np.asarray(h_fx)))
        cls_pt, cls_fx = pt(x_pt).numpy(), np.asarray(fx.apply({"params": params}, x_fx))
        rows.append(("CLS (full forward)", cls_pt, cls_fx))

    out("")
    out(f"{'component':22} {'output shape':>16} {'max |torch|':>12} {'max |diff|':>12}")
    for name, a, b in rows:
        out(f"{name:22} {str(tuple(a.shape)):>16} {np.abs(a).max():12.4g} "
            f"{np.abs(a - b).max():12.3e}")
    cls_diff = float(np.abs(cls_pt - cls_fx).max())

    # Throughput: torch eager vs the jit-compiled flax apply, same batch of the same image.
    x_pt_b = x_pt.expand(batch_size, -1, -1, -1).contiguous()
    x_fx_b = jax.numpy.broadcast_to(x_fx, (batch_size, *x_fx.shape[1:]))
    t0 = time.perf_counter()
    compiled = jax.jit(fx.apply).lower({"params": params}, x_fx_b).compile()
    compile_s = time.perf_counter() - t0

    def timed(run: Callable[[], Any]) -> float:
        run()  # warm-up
        t = time.perf_counter()
        for _ in range(iters):
            run()
        return batch_size * iters / (time.perf_counter() - t)

    with torch.no_grad():
        torch_ips = timed(lambda: pt(x_pt_b))
    flax_ips = timed(lambda: compiled({"params": params}, x_fx_b).block_until_ready())
    out("")
    out(f"jit compile (flax, batch {batch_size}): {compile_s:.1f} s")
    out(f"throughput, batch {batch_size}, fp32, {jax.devices()[0].platform}: torch eager "
        f"{torch_ips:.2f} img/s, flax jit {flax_ips:.2f} img/s ({flax_ips / torch_ips:.2f}x torch)")

    ok = cls_diff <= DEMO_TOLERANCE
    out("")
    out(f"{'SAME MODEL' if ok else 'MISMATCH'}: max |diff| of the CLS token {cls_diff:.2e} "
        f"{'<=' if ok else '>'} {DEMO_TOLERANCE:g} (fp32)")
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------
# vit-convert

EXIT_OK, EXIT_VERIFY_FAILED, EXIT_BAD_INPUT, EXIT_EXISTS = 0, 1, 2, 3
TARGETS = ("torch", "flax", "hf", "timm", "npz")
VERIFY_TOLERANCE = 5e-5  # fp32, max |diff| of CLS / logits; B/16 measures ~5e-6 torch -> flax


def _convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-convert",
        description="Convert a ViT checkpoint between HF (torch or Flax), timm, Google .npz and bare "
                    "state dicts; optionally verify that source and result compute the same function.",
        epilog="exit codes: 0 done, 1 --verify found a difference above --tolerance, 2 bad arguments "
               "or an unreadable / unsupported / mismatched source, 3 DST exists (use --force)")
    p.add_argument("src", help="checkpoint file or HF save_pretrained directory")
    p.add_argument("-o", "--output", required=True, metavar="DST", help="where to write the result")
    p.add_argument("--to", choices=TARGETS, help="target format (default: from DST: a directory -> "
                   "hf, .msgpack -> flax, .npz -> npz, .safetensors/.pt/.pth/.bin -> torch). hf: HF "
                   "torch directory; flax: HF Flax directory (or a bare .msgpack); torch: a bare "
                   "HF-named state dict (or, for a directory, as hf); timm: a timm-named state dict; "
                   "npz: Google's vision_transformer layout")
    p.add_argument("--config", help="ViT preset (B/16, ...) or config.json, for what the weights "
                   "cannot say (the head count of timm and bare HF state dicts)")
    p.add_argument("--verify", action="store_true", help="run source and result on the same random "
                   "input and compare CLS (and logits)")
    p.add_argument("--tolerance", type=float, default=VERIFY_TOLERANCE,
                   help=f"--verify's bound on max |diff| (default {VERIFY_TOLERANCE:g})")
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.add_argument("--image-size", type=int, nargs="+", metavar="PX", help="move the checkpoint "
                   "to this image size (one number, or height width) for good: position embeddings "
                   "resampled bicubically, as for fine-tuning at a new resolution")
    p.add_argument("--drop-pre-logits", action="store_true", help="load a Google npz that has a "
                   "pre_logits layer as a backbone without it (and without its head)")
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
    if to == "timm" and is_dir:
        raise ValueError(f"--to timm writes a .safetensors or .pth file, got the directory {dst}")
    if to == "hf" and not is_dir:
        raise ValueError(f"--to hf writes a save_pretrained directory, got {dst}")
    return to, is_dir


def convert_main(argv: Sequence[str] | None = None) -> int:
    args = _convert_parser().parse_args(argv)

    def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
        print(f"vit-convert: {message}", file=sys.stderr)
        return code

    from vit_common import checkpoints

    try:
        target, is_dir = _target(args.output, args.to)
    except ValueError as e:
        return fail(str(e))
    if os.path.exists(args.output) and not args.force:
        return fail(f"{args.output} exists; pass --force to replace it", EXIT_EXISTS)
    try:
        ckpt = checkpoints.load_checkpoint(args.src, args.config, drop_pre_logits=args.drop_pre_logits)
    except (FileNotFoundError, ValueError) as e:
        return fail(str(e))
    source_config = ckpt.config
    if args.image_size:
        from vit_common.resample import resize_state

        size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
        try:
            ckpt.state, ckpt.config = resize_state(ckpt.state, ckpt.config, size)  # type: ignore[arg-type]
        except ValueError as e:
            return fail(f"--image-size: {e}")
        ckpt.notes.append(f"position embeddings resampled to image size {ckpt.config.image_size}")
    config = ckpt.config
    print(f"read {args.src}: {ckpt.format}, {len(ckpt.state)} tensors, {ckpt.nbytes / 2**20:,.1f} MiB, "
          f"{'ViTForImageClassification' if ckpt.has_head else 'VisionTransformer'} "
          f"({config.hidden_size}d x {config.num_hidden_layers} layers x {config.num_attention_heads} "
          f"heads, patch {config.patch_size}, image {config.image_size}, {config.hidden_act}, "
          f"eps {config.layer_norm_eps:g})")
    for note in ckpt.notes:
        print(f"note: {note}")
    try:
        _write(ckpt, args.output, target, is_dir, args.force)
    except FileExistsError as e:
        return fail(str(e), EXIT_EXISTS)
    except (OSError, ValueError) as e:
        return fail(f"writing {args.output} failed, nothing was written: {e}")
    print(f"wrote {args.output} ({target})")
    for note in _lost_in(target, is_dir, config):
        print(f"note: {note}")
    if not args.verify:
        return EXIT_OK
    return _verify(args.src, args.output, target, is_dir, ckpt, args.tolerance, args.drop_pre_logits,
                   source_config)


def _write(ckpt: Any, dst: str, target: str, is_dir: bool, force: bool) -> None:
    from vit_common import checkpoints
    from vit_common.convert import torch_to_flax

    if target in ("hf", "torch") and is_dir:
        checkpoints.save_hf(ckpt.state, ckpt.config, dst, framework="torch", overwrite=force)
    elif target == "flax" and is_dir:
        checkpoints.save_hf(ckpt.state, ckpt.config, dst, framework="flax", overwrite=force)
    elif target == "flax":
        checkpoints.write_msgpack(dst, torch_to_flax(ckpt.state, ckpt.config), overwrite=force,
                                  progress=checkpoints.Progress(ckpt.nbytes, f"writing {dst}"))
    elif target in ("torch", "timm"):
        checkpoints.save_state_dict(ckpt.state, dst, naming="timm" if target == "timm" else "hf",
                                    overwrite=force)
    elif target == "npz":
        checkpoints.save_npz(ckpt.state, ckpt.config, dst, overwrite=force)
    else:
        raise ValueError(f"unknown target {target!r}")


def _lost_in(target: str, is_dir: bool, config: ViTConfig) -> list[str]:
    """What a config-less target format cannot record, so its readers must be told."""
    if is_dir and target in ("hf", "torch", "flax"):
        return []
    notes = [f"{target} files hold no config: load with config= (head count "
             f"{config.num_attention_heads}, hidden_act {config.hidden_act!r}, layer_norm_eps "
             f"{config.layer_norm_eps:g})"]
    if target == "npz" and config.hidden_act == "gelu":
        notes.append("Google's code and our npz reader assume tanh GELU and eps 1e-6; this model "
                     "uses exact GELU")
    if target == "timm" and (config.layer_norm_eps != 1e-6 or config.hidden_act != "gelu"):
        notes.append(f"timm builds ViTs with exact GELU and eps 1e-6; build the timm model with "
                     f"this model's {config.hidden_act!r} and eps {config.layer_norm_eps:g}")
    return notes


def _verify(src: str, dst: str, target: str, is_dir: bool, ckpt: Any, tolerance: float,
            drop_pre_logits: bool, source_config: ViTConfig) -> int:
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
        model, params = vit_flax.from_pretrained(dst, config)
        bound = model.bind({"params": params})
        x_fx = jax.numpy.asarray(x.numpy().transpose(0, 2, 3, 1))
        if ckpt.has_head:
            got = {"CLS": np.asarray(bound.vit(x_fx)), "logits": np.asarray(bound(x_fx))}
        else:
            got = {"CLS": np.asarray(bound(x_fx))}
        framework = "flax"
    else:
        result = vit_torch.from_pretrained(dst, config)
        with torch.no_grad():
            got = _outputs(result, x)
        framework = "torch"
    worst = 0.0
    for name, value in want.items():
        diff = float(np.abs(value - got[name]).max())
        worst = max(worst, diff)
        print(f"verify: {name} max |diff| source (torch) vs {dst} ({framework}): {diff:.2e}")
    ok = worst <= tolerance
    print(f"verify: {'OK' if ok else 'FAILED'} ({worst:.2e} {'<=' if ok else '>'} {tolerance:g})")
    return EXIT_OK if ok else EXIT_VERIFY_FAILED


def _outputs(model: Any, x: Any, interpolate: bool = False) -> dict[str, np.ndarray]:
    if hasattr(model, "classifier"):
        return {"CLS": model.vit(x, interpolate).numpy(), "logits": model(x, interpolate).numpy()}
    return {"CLS": model(x, interpolate).numpy()}


if __name__ == "__main__":
    sys.exit(demo_main())
