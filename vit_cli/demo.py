"""vit-demo: build a ViT in PyTorch, convert it to Flax, run both on one image and show, component
by component, that they compute the same function; then time both."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vit_cli.common import EXIT_CODES_HELP, batch_size, model_config, positive_int, run
from vit_common.config import MODEL_PRESETS, SWITCHES, ViTConfig

# fp32 agreement the parity suite holds B/16-size models to (parity_tests/test_b16.py)
DEMO_TOLERANCE = 2e-5


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-demo",
        epilog=EXIT_CODES_HELP.replace("1 the job found a problem (see the tool)", "1 the twins differ"),
        description="Build a ViT in PyTorch, convert it to Flax, run both on one image and show, "
                    "component by component, that they compute the same function; then time both.")
    p.add_argument("image", nargs="?", help="image file (default: a generated test picture)")
    p.add_argument("--preset", default="B/16", type=model_config,
                   help=f"the model: a ViT size, one of {', '.join(MODEL_PRESETS)} (default B/16), or "
                        "a timm ViT name of any family (vit_small_patch14_dinov2, "
                        "deit_base_distilled_patch16_224, vit_base_patch16_clip_224, "
                        "vit_base_patch16_siglip_224, vit_small_patch14_reg4_dinov2, ...)")
    p.add_argument("--batch-size", type=batch_size, default=8, help="batch for the throughput runs (8)")
    p.add_argument("--iters", type=positive_int, default=3, help="timed batches per framework (3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run("vit-demo", _main, _parser(), argv)


def _main(args: argparse.Namespace) -> int:
    config = args.preset
    return run_demo(config, args.image, args.batch_size, args.iters, args.seed)


def run_demo(config: ViTConfig, image: str | None, batch_size: int, iters: int, seed: int,
             out: Callable[[str], Any] = functools.partial(print, flush=True)) -> int:
    import jax
    import torch

    import vit_flax
    import vit_torch
    from vit_common.convert import torch_to_flax
    from vit_common.preprocessing import demo_image, family_preset

    # Parity is judged at full fp32 precision: no TF32 / bf16 passes on GPU.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    jax.config.update("jax_default_matmul_precision", "highest")

    gh, gw = config.grid_size
    out(f"ViT {config.hidden_size}d x {config.num_hidden_layers} layers x "
        f"{config.num_attention_heads} heads, patch {config.patch_size}, image "
        f"{config.image_hw[0]}x{config.image_hw[1]} ({gh}x{gw} patches), hidden_act "
        f"{config.hidden_act}, eps {config.layer_norm_eps:g}")
    switches = {k: getattr(config, k) for k, v in SWITCHES.items() if getattr(config, k) != v}
    out("family switches: " + (", ".join(f"{k}={v}" for k, v in switches.items()) or "none (classic ViT)")
        + f"; preprocessing preset {family_preset(config)!r}")

    source = image if image is not None else demo_image()
    x_pt = vit_torch.preprocess_image(source, config)  # (1, C, H, W)
    x_fx = vit_flax.preprocess_image(source, config)  # (1, H, W, C)
    pixel_diff = float(np.abs(x_pt.numpy().transpose(0, 2, 3, 1) - np.asarray(x_fx)).max())
    out(f"image: {image or 'generated test picture'} -> torch {tuple(x_pt.shape)}, flax "
        f"{tuple(x_fx.shape)}, max |diff| of the preprocessed pixels {pixel_diff:.1e}")

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    pt = vit_torch.VisionTransformer(config).eval()
    if config.layer_scale:  # at its tiny init LayerScale switches the layers off: nothing to compare
        with torch.no_grad():
            for name, p in pt.named_parameters():
                if name.endswith("lambda1"):
                    p.uniform_(0.2, 1.0)
        out("LayerScale drawn in (0.2, 1) so that every layer counts")
    params = torch_to_flax(pt.state_dict(), config)
    fx = vit_flax.VisionTransformer(config)
    n_params = sum(p.numel() for p in pt.parameters())
    out(f"built in PyTorch ({n_params:,} parameters, seed {seed}) and converted to Flax in "
        f"{time.perf_counter() - t0:.1f} s")

    # Walk the component pipeline in both frameworks, comparing after every stage.
    bound = fx.bind({"params": params})
    rows: list[tuple[str, np.ndarray, np.ndarray]] = []
    with torch.no_grad():
        h_pt, h_fx = pt.embeddings(x_pt), bound.embeddings(x_fx)
        rows.append(("embeddings", h_pt.numpy(), np.asarray(h_fx)))
        if config.pre_norm:
            h_pt, h_fx = pt.pre_layernorm(h_pt), bound.pre_layernorm(h_fx)
            rows.append(("pre_layernorm", h_pt.numpy(), np.asarray(h_fx)))
        for i in range(config.num_hidden_layers):
            h_pt, h_fx = pt.encoder.layer[i](h_pt), bound.encoder.layer[i](h_fx)
            rows.append((f"encoder.layer.{i}", h_pt.numpy(), np.asarray(h_fx)))
        if config.final_norm == "tokens":
            h_pt, h_fx = pt.layernorm(h_pt), bound.layernorm(h_fx)
            rows.append(("layernorm", h_pt.numpy(), np.asarray(h_fx)))
        cls_pt, cls_fx = pt(x_pt).numpy(), np.asarray(fx.apply({"params": params}, x_fx))
        rows.append((f"pooled ({config.pooling}, full forward)", cls_pt, cls_fx))

    out("")
    out(f"{'component':28} {'output shape':>16} {'max |torch|':>12} {'max |diff|':>12}")
    for name, a, b in rows:
        out(f"{name:28} {str(tuple(a.shape)):>16} {np.abs(a).max():12.4g} "
            f"{np.abs(a - b).max():12.3e}")
    cls_diff = float(np.abs(cls_pt - cls_fx).max())

    # Throughput: torch eager vs the jit-compiled flax apply, same batch of the same image.
    x_pt_b = x_pt.expand(batch_size, -1, -1, -1).contiguous()
    x_fx_b = jax.numpy.broadcast_to(x_fx, (batch_size, *x_fx.shape[1:]))
    out("")
    out(f"timing: compiling the Flax forward for batch {batch_size}, then per framework one warm-up "
        f"and {iters} timed batches of {batch_size} (about {2 * (iters + 1) * batch_size} forward passes) ...")
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
    out(f"jit compile (flax, batch {batch_size}): {compile_s:.1f} s")
    out(f"throughput, batch {batch_size}, fp32, {jax.devices()[0].platform}: torch eager "
        f"{torch_ips:.2f} img/s, flax jit {flax_ips:.2f} img/s ({flax_ips / torch_ips:.2f}x torch)")

    ok = cls_diff <= DEMO_TOLERANCE
    out("")
    out(f"{'SAME MODEL' if ok else 'MISMATCH'}: max |diff| of the pooled embedding {cls_diff:.2e} "
        f"{'<=' if ok else '>'} {DEMO_TOLERANCE:g} (fp32)")
    return 0 if ok else 1



if __name__ == "__main__":
    sys.exit(main())
