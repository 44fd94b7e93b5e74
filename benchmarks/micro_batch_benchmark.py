"""InferenceEngine's CPU micro-batching, swept: ViT-B/16 fp32 at batch 8 and 32, each slice size
(None = the whole batch at once) measured alternately in one run, best of --rounds.

    .venv/bin/python benchmarks/micro_batch_benchmark.py [--rounds 3]

The figures behind CPU_SLICE_TOKENS (vit_flax/inference.py): what "auto" picks is printed too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import vit_flax  # noqa: E402
from vit_common.config import ViTConfig  # noqa: E402
from vit_flax.inference import InferenceEngine  # noqa: E402

SWEEP = {8: (None, 4, 2), 32: (None, 8, 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gap", type=float, default=0.5, help="seconds of idle before each timed call")
    args = ap.parse_args()
    config = ViTConfig.from_preset("B/16", num_labels=1000)
    model = vit_flax.ViTForImageClassification(config)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))["params"]
    runs = {}
    for b, sizes in SWEEP.items():
        x = np.random.default_rng(b).normal(size=(b, 224, 224, 3)).astype(np.float32)
        for mb in sizes:
            engine = InferenceEngine(config, params, batch_size=b, micro_batch=mb)
            engine(x)  # compile
            runs[(b, mb)] = (engine, x)
        print(f"batch {b}: micro_batch='auto' picks {InferenceEngine(config, params, batch_size=b).micro_batch}")
    best = {k: float("inf") for k in runs}
    for _ in range(args.rounds):
        for k, (engine, x) in runs.items():
            time.sleep(args.gap)
            t = time.perf_counter()
            engine(x)
            best[k] = min(best[k], time.perf_counter() - t)
    for (b, mb), seconds in best.items():
        print(f"batch {b:2d}, slices of {mb or b:2d}: {b / seconds:.2f} img/s")


if __name__ == "__main__":
    main()
