"""DINOv3 B/16 (rotary positions, registers, LayerScale) against timm eager, in one process,
alternating, random weights; also the plain ViT-B/16 pair, to show what the rotary embedding costs.

    .venv/bin/python benchmarks/rotary_benchmark.py [--rounds 3] [--batches 1,8] [--gap 1.0]

Contenders: timm eager (vit_base_patch16_dinov3 at 224, global_pool='token'), the torch twin as
constructed by default, vit_flax under jax.jit, and the same three for vit_base_patch16_224.
Writes benchmarks/results/rotary.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

import vit_flax  # noqa: E402
import vit_torch  # noqa: E402
from vit_common.checkpoints import load_checkpoint  # noqa: E402
from vit_common.convert import torch_to_flax  # noqa: E402


def _pair(name: str, tmp: str):
    """timm's model, and ours read from the hub folder timm writes for it."""
    model = timm.create_model(name, pretrained=False, img_size=224, **({"global_pool": "token"}
                                                                       if "dinov3" in name else {})).eval()
    folder = os.path.join(tmp, name)
    timm.models.save_for_hf(model, folder, model_args={"img_size": 224})
    ckpt = load_checkpoint(folder)
    cls = vit_torch.ViTForImageClassification if ckpt.config.num_labels else vit_torch.VisionTransformer
    ours = cls(ckpt.config).eval()
    ours.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ckpt.state.items()})
    fx = (vit_flax.ViTForImageClassification if ckpt.config.num_labels else vit_flax.VisionTransformer)(ckpt.config)
    params = {"params": jax.tree.map(jnp.asarray, torch_to_flax(ckpt.state, ckpt.config))}
    return model, ours, jax.jit(fx.apply), params


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--gap", type=float, default=1.0, help="idle seconds before each timed call")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    torch.manual_seed(0)
    inputs = {b: np.random.default_rng(b).normal(size=(b, 224, 224, 3)).astype(np.float32) for b in batches}
    torch_inputs = {b: torch.from_numpy(inputs[b].transpose(0, 3, 1, 2).copy()) for b in batches}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, name in (("DINOv3 B/16", "vit_base_patch16_dinov3"), ("ViT-B/16", "vit_base_patch16_224")):
            theirs, ours, apply, params = _pair(name, tmp)
            runs[f"{label} timm eager"] = lambda b, m=theirs: m(torch_inputs[b])
            runs[f"{label} vit_torch default"] = lambda b, m=ours: m(torch_inputs[b])
            runs[f"{label} vit_flax jit"] = lambda b, f=apply, p=params: f(p, inputs[b]).block_until_ready()
    best = {(n, b): float("inf") for n in runs for b in batches}
    with torch.inference_mode():
        for fn in runs.values():
            for b in batches:
                fn(b)  # warm-up, compile
        for _ in range(args.rounds):
            for b in batches:
                for n, fn in runs.items():
                    time.sleep(args.gap)
                    t = time.perf_counter()
                    fn(b)
                    best[(n, b)] = min(best[(n, b)], time.perf_counter() - t)
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, jax {jax.__version__}, "
               f"timm {timm.__version__}")
    lines = [f"{machine}. fp32, 224 x 224, best of {args.rounds} alternating rounds.", "",
             "| contender | " + " | ".join(f"batch {b}: img/s (x timm eager of its model)" for b in batches) + " |",
             "|---|" + "---|" * len(batches)]
    for n in runs:
        ref = next(k for k in runs if k.startswith(n.split(" timm")[0].split(" vit_")[0]) and k.endswith("timm eager"))
        cells = [f"{b / best[(n, b)]:.2f} ({best[(ref, b)] / best[(n, b)]:.2f}x)" for b in batches]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    rope_cost = [best[("ViT-B/16 timm eager", b)] / best[("DINOv3 B/16 timm eager", b)] for b in batches]
    lines += ["", "timm's DINOv3 B/16 runs at " + ", ".join(f"{r:.2f}x" for r in rope_cost)
              + " of its plain ViT-B/16 (batches " + ", ".join(map(str, batches)) + ")."]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "rotary.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
