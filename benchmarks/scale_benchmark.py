"""Scale benchmark: what scanned layers and rematerialisation cost and save, in one run.

    .venv/bin/python benchmarks/scale_benchmark.py [--preset S/16] [--batch 8] [--depths 12,24,36,48]

1. Training-step temporary memory, Flax: XLA's compiled memory analysis (temp_size_in_bytes) of a
   jit-compiled AdamW step on the preset at the batch, unrolled / scanned, with and without remat.
2. Training-step activation memory, torch: the bytes autograd saves for the backward pass in one
   step (saved_tensors_hooks), with and without gradient_checkpointing, and the step's wall time.
3. Compile time against depth (hidden 64, 4 heads, 8 x 8 patches of a 32 px image), unrolled and
   scanned: jax.jit(...).lower(...).compile() of the forward, fresh each time; plotted.

Writes benchmarks/results/scale.json, scale.md and compile_time.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import vit_flax  # noqa: E402
import vit_torch  # noqa: E402
from vit_common.config import ViTConfig  # noqa: E402
from vit_common.convert import stack_layers, torch_to_flax  # noqa: E402
from vit_flax.training import make_train_step  # noqa: E402

RESULTS = os.path.join(HERE, "results")


def flax_step_memory(config: ViTConfig, params: dict, batch: int, scan: bool, remat: bool) -> dict:
    model = vit_flax.ViTForImageClassification(config, scan_layers=scan, remat=remat)
    p = stack_layers(params) if scan else params
    p = jax.tree_util.tree_map(jnp.asarray, p)
    step = make_train_step(model, optax.adamw(1e-3))  # the step vit-finetune and the tests run
    opt = step.init(p)
    x = jnp.zeros((batch, *config.image_hw, config.num_channels), jnp.float32)
    y = jnp.zeros((batch,), jnp.int32)
    rng = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    compiled = step.lower(p, opt, x, y, rng).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    compiled(p, opt, x, y, rng)[2].block_until_ready()
    t0 = time.perf_counter()
    compiled(p, opt, x, y, rng)[2].block_until_ready()
    return {"temp_bytes": int(mem.temp_size_in_bytes), "compile_s": compile_s,
            "step_s": time.perf_counter() - t0}


def torch_step_memory(config: ViTConfig, state: dict, batch: int, checkpointing: bool) -> dict:
    model = vit_torch.ViTForImageClassification(config, gradient_checkpointing=checkpointing).train()
    model.load_state_dict(state)
    x = torch.zeros(batch, config.num_channels, *config.image_hw)
    y = torch.zeros(batch, dtype=torch.long)
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    F.cross_entropy(model(x), y).backward()  # warm-up
    model.zero_grad()
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(x), y).backward()
    return {"saved_bytes": saved[0], "step_s": time.perf_counter() - t0}


def compile_times(depths: list[int]) -> dict:
    out: dict = {"unrolled": {}, "scanned": {}}
    for depth in depths:
        config = ViTConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=depth,
                           intermediate_size=256, image_size=32, patch_size=8, num_labels=0)
        torch.manual_seed(0)
        params = torch_to_flax(vit_torch.VisionTransformer(config).state_dict(), config)
        x = jnp.zeros((2, 32, 32, 3), jnp.float32)
        for name, scan in (("unrolled", False), ("scanned", True)):
            model = vit_flax.VisionTransformer(config, scan_layers=scan)
            p = jax.tree_util.tree_map(jnp.asarray, stack_layers(params) if scan else params)
            t0 = time.perf_counter()
            jax.jit(model.apply).lower({"params": p}, x).compile()
            out[name][depth] = time.perf_counter() - t0
            print(f"compile, depth {depth}, {name}: {out[name][depth]:.2f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="S/16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--depths", default="12,24,36,48")
    args = ap.parse_args()
    config = ViTConfig.from_preset(args.preset, num_labels=10)
    torch.manual_seed(0)
    state = vit_torch.ViTForImageClassification(config).state_dict()
    params = torch_to_flax(state, config)
    flax_rows = {}
    for scan in (False, True):
        for remat in (False, True):
            key = f"{'scanned' if scan else 'unrolled'}{', remat' if remat else ''}"
            flax_rows[key] = flax_step_memory(config, params, args.batch, scan, remat)
            print(f"flax {key}: {flax_rows[key]}", flush=True)
    torch_rows = {name: torch_step_memory(config, state, args.batch, ckpt)
                  for name, ckpt in (("plain", False), ("gradient_checkpointing", True))}
    print(f"torch: {torch_rows}", flush=True)
    depths = [int(d) for d in args.depths.split(",")]
    compile_s = compile_times(depths)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, " \
              f"torch {torch.__version__}, {jax.devices()[0].platform}"
    results = {"machine": machine, "preset": args.preset, "batch": args.batch, "flax": flax_rows,
               "torch": torch_rows, "compile_s": compile_s}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "scale.json"), "w") as f:
        json.dump(results, f, indent=1)
    mib = 2 ** 20
    base = flax_rows["unrolled"]["temp_bytes"]
    lines = [f"Machine: {machine}. {args.preset}, batch {args.batch}, fp32, one AdamW step.", "",
             "| Flax training step | temporary memory (XLA) | vs unrolled | compile | step |", "|---|---|---|---|---|"]
    for key, r in flax_rows.items():
        lines.append(f"| {key} | {r['temp_bytes'] / mib:,.1f} MiB | {r['temp_bytes'] / base:.2f}x | "
                     f"{r['compile_s']:.1f} s | {r['step_s']:.2f} s |")
    tb = torch_rows["plain"]["saved_bytes"]
    lines += ["", "| torch training step | activations saved for backward | vs plain | step |", "|---|---|---|---|"]
    for key, r in torch_rows.items():
        lines.append(f"| {key} | {r['saved_bytes'] / mib:,.1f} MiB | {r['saved_bytes'] / tb:.2f}x | {r['step_s']:.2f} s |")
    lines += ["", "| depth | compile unrolled | compile scanned |", "|---|---|---|"]
    for d in depths:
        lines.append(f"| {d} | {compile_s['unrolled'][d]:.2f} s | {compile_s['scanned'][d]:.2f} s |")
    with open(os.path.join(RESULTS, "scale.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, style in (("unrolled", "o-"), ("scanned", "s-")):
            ax.plot(depths, [compile_s[name][d] for d in depths], style, label=name)
        ax.set_xlabel("layers (hidden 64)")
        ax.set_ylabel("jit compile time of the forward (s)")
        ax.set_title("vit_flax: compile time against depth")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, "compile_time.png"), dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot")


if __name__ == "__main__":
    main()
