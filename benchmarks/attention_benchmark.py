"""The Flax twin's attention core, two spellings of the same function, alternately in one run:
softmax(q k^T / sqrt(d)) @ v (the probabilities normalised, then the product) against the twin's
(exp(s - max) @ v) / sum (the division on the (N, head_dim) output). ViT-B/16 shapes, fp32.

    .venv/bin/python benchmarks/attention_benchmark.py [--batch 8] [--rounds 15]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vit_flax.model import _eager_attention  # noqa: E402


def softmax_then_product(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (args.batch, 12, 197, 64)) for key in keys)
    no_dropout = lambda x, deterministic: x  # noqa: E731  (inference: dropout is the identity)
    ours = jax.jit(lambda q, k, v: _eager_attention(q, k, v, no_dropout, False))
    runs = {"softmax then product": jax.jit(softmax_then_product), "twin (normalised after)": ours}
    diff = float(jnp.abs(runs["softmax then product"](q, k, v) - ours(q, k, v)).max())
    best = {name: float("inf") for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            fn(q, k, v).block_until_ready()
            t = time.perf_counter()
            fn(q, k, v).block_until_ready()
            best[name] = min(best[name], time.perf_counter() - t)
    for name, seconds in best.items():
        print(f"{name}: {seconds * 1e3:.1f} ms")
    print(f"max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
