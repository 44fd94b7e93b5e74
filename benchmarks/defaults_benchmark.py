"""The defaults against timm, measured alternately in one run: the torch twin as constructed by
default (fused attention, oneDNN projections), vit_flax.InferenceEngine with default arguments
(micro-batching chosen by itself) and the Flax twin under a plain jax.jit, against timm eager,
ViT-B/16 fp32, batches 1, 8 and 32; each also as a share of the machine's GEMM peak, measured
in every round between the contenders (inference_benchmark.gemm_peak: the fastest of torch's
matmul, its oneDNN linear and XLA's dot over the B/16 GEMM shapes).

    .venv/bin/python benchmarks/defaults_benchmark.py [--rounds 3]

Each round runs every contender once per batch size, in turn, after --gap seconds of idle; the
best of the rounds counts.
Writes benchmarks/results/defaults.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from inference_benchmark import flops_per_image, gemm_peak  # noqa: E402

import vit_flax  # noqa: E402
import vit_torch  # noqa: E402
from vit_common.config import ViTConfig  # noqa: E402
from vit_common.convert import torch_to_flax  # noqa: E402
from vit_flax.inference import InferenceEngine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--gap", type=float, default=1.0,
                    help="seconds of idle before each timed call (OpenMP's and XLA's worker threads "
                         "spin after work: without a pause the contender after another loses ~7%%)")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    config = ViTConfig.from_preset("B/16")
    torch.manual_seed(0)
    ours = vit_torch.ViTForImageClassification(config).eval()  # default construction
    theirs = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    params = torch_to_flax(ours.state_dict(), config)
    engine = InferenceEngine(config, params)  # default arguments (batch_size 32: short calls run in buckets)
    flax_model = vit_flax.ViTForImageClassification(config)
    flax_apply = jax.jit(flax_model.apply)
    flax_params = {"params": jax.tree.map(jnp.asarray, params)}
    inputs = {b: np.random.default_rng(b).normal(size=(b, 224, 224, 3)).astype(np.float32) for b in batches}
    torch_inputs = {b: torch.from_numpy(inputs[b].transpose(0, 3, 1, 2).copy()) for b in batches}
    runs = {
        "timm eager": lambda b: theirs(torch_inputs[b]),
        "vit_torch default": lambda b: ours(torch_inputs[b]),
        "InferenceEngine default": lambda b: engine(inputs[b]),
        "vit_flax jit": lambda b: flax_apply(flax_params, inputs[b]).block_until_ready(),
    }
    best = {(name, b): float("inf") for name in runs for b in batches}
    with torch.inference_mode():
        for name, fn in runs.items():  # warm-up (and compile)
            for b in batches:
                fn(b)
        peak = {"torch": 0.0, "onednn": 0.0, "xla": 0.0, "peak": 0.0}
        for _ in range(args.rounds):
            measured = gemm_peak("float32", batches)
            peak = {k: max(peak[k], v) for k, v in measured.items()}
            for b in batches:
                for name, fn in runs.items():
                    time.sleep(args.gap)  # the previous contender's worker threads go idle
                    t = time.perf_counter()
                    fn(b)
                    best[(name, b)] = min(best[(name, b)], time.perf_counter() - t)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].platform}, torch {torch.__version__}, " \
              f"jax {jax.__version__}, timm {timm.__version__}"
    gflop = flops_per_image(config) / 1e9
    lines = [f"{machine}. ViT-B/16 fp32, best of {args.rounds} alternating rounds. GEMM peak "
             f"{peak['peak']:.0f} GFLOP/s (torch matmul {peak['torch']:.0f}, oneDNN linear "
             f"{peak['onednn']:.0f}, XLA dot {peak['xla']:.0f}); {gflop:.2f} GFLOP/image.", "",
             "| contender | " + " | ".join(f"batch {b} img/s (x timm, % GEMM peak)" for b in batches) + " |",
             "|---|" + "---|" * len(batches)]
    for name in runs:
        cells = []
        for b in batches:
            ips = b / best[(name, b)]
            cells.append(f"{ips:.2f} ({best[('timm eager', b)] / best[(name, b)]:.2f}x, "
                         f"{100 * ips * gflop / peak['peak']:.0f}%)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "defaults.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
