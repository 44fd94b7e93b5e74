"""Conversion benchmark: wall time and peak RSS of vit-convert on an L/16-size checkpoint (~1.2 GB
fp32), against a plain safetensors load + save of the same file, in the same run.

    .venv/bin/python benchmarks/convert_benchmark.py [--preset L/16] [--targets timm,npz,flax,hf]

Each measurement is a fresh subprocess (its own peak RSS, VmHWM from /proc/self/status). Goals: time <= 2x the
plain load + save, peak RSS <= 2.5x the file size. Rows more compare the libraries themselves
where vit_common.formats has code of its own: the same conversion written by
flax.serialization.to_bytes (.msgpack, against our streaming writer) and numpy.savez (which the npz
codec uses), and reading the .npz back with numpy.load against the checked, memory-mapped reader.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from vit_common.canonical import expected_entries  # noqa: E402
from vit_common.config import ViTConfig  # noqa: E402
from vit_common.formats.safetensors_codec import write_safetensors  # noqa: E402

BASELINE = """
import sys
from safetensors.numpy import load_file, save_file
save_file(load_file(sys.argv[1]), sys.argv[2])
"""
LIB_FLAX = """
import sys
from flax import serialization
from vit_common.checkpoints import load_checkpoint
from vit_common.convert import torch_to_flax
ckpt = load_checkpoint(sys.argv[1], sys.argv[3])
with open(sys.argv[2], "wb") as f:
    f.write(serialization.to_bytes(torch_to_flax(ckpt.state, ckpt.config)))
"""
LIB_NPZ = """
import sys
import numpy as np
from vit_common.checkpoints import load_checkpoint, npz_arrays
ckpt = load_checkpoint(sys.argv[1], sys.argv[3])
np.savez(sys.argv[2], **npz_arrays(ckpt.state, ckpt.config))
"""
READ_NUMPY = """
import sys
import numpy as np
with np.load(sys.argv[1]) as npz:
    total = sum(float(np.asarray(npz[k]).sum()) for k in npz.files)
"""
READ_OURS = """
import sys
import numpy as np
from vit_common.formats.npz_codec import read_npz
npz = read_npz(sys.argv[1])
total = sum(float(np.asarray(npz[k]).sum()) for k in npz)
"""
RSS_WRAPPER = """
import resource, runpy, sys
code, argv = sys.argv[1], sys.argv[2:]
try:
    if code == "-m":
        sys.argv = argv  # [module, args...]
        runpy.run_module(argv[0], run_name="__main__")
    else:
        sys.argv = ["<bench>", *argv]
        exec(compile(code, "<bench>", "exec"))
except SystemExit as e:
    if e.code not in (None, 0):
        raise
# VmHWM: this process's own peak. (getrusage's ru_maxrss starts from the parent's peak at fork
# on Linux, so it would report the benchmark's own memory for every row.)
try:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_RSS_KB", peak, file=sys.stderr)
"""


def measure(code: str, argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one fresh python process."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RSS_WRAPPER, code, *argv], capture_output=True,
                         text=True, cwd=os.path.dirname(HERE))
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{argv} failed:\n{out.stderr[-2000:]}")
    kb = int(next(line.split()[1] for line in out.stderr.splitlines() if line.startswith("PEAK_RSS_KB")))
    return wall, kb * 1024


def make_checkpoint(path: str, config: ViTConfig) -> int:
    rng = np.random.default_rng(0)
    state = {e.torch_key: rng.standard_normal(e.torch_shape, dtype=np.float32)
             for e in expected_entries(config, with_head=True)}
    write_safetensors(path, state, {"format": "pt"})
    return os.path.getsize(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="L/16")
    p.add_argument("--targets", default="timm,npz,flax,hf")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    args = p.parse_args()
    config = ViTConfig.from_preset(args.preset, num_labels=1000)
    work = tempfile.mkdtemp(prefix="vit-convert-bench-")
    try:
        src = os.path.join(work, "src.safetensors")
        size = make_checkpoint(src, config)
        print(f"{args.preset} checkpoint: {size / 2**30:.2f} GiB fp32 safetensors, "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")

        def remove(dst: str) -> None:
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            elif os.path.exists(dst):
                os.unlink(dst)

        # (row, code, argv, output to remove afterwards); reading rows need the npz written first
        dsts = {"timm": "out.safetensors", "npz": "out.npz", "flax": "out.msgpack", "hf": "out_hf"}
        base_dst = os.path.join(work, "plain.safetensors")
        jobs = [("plain safetensors load + save", BASELINE, [src, base_dst], base_dst)]
        npz_in = os.path.join(work, "in.npz")
        for target in args.targets.split(","):
            dst = os.path.join(work, dsts[target])
            argv = ["vit_cli.convert_tool", src, "-o", dst, "--to", target, "--config", args.preset, "--quiet"]
            jobs.append((f"vit-convert --to {target}", "-m", argv, dst))
            library = {"flax": ("flax.serialization.to_bytes", LIB_FLAX),
                       "npz": ("numpy.savez", LIB_NPZ)}.get(target)
            if library:
                jobs.append((f"  same via {library[0]}", library[1], [src, dst, args.preset], dst))
            if target == "npz":  # reading back: numpy.load vs the checked, memory-mapped reader
                measure("-m", ["vit_cli.convert_tool", src, "-o", npz_in, "--config", args.preset, "--quiet"])
                jobs += [("  read all via numpy.load", READ_NUMPY, [npz_in], ""),
                         ("  read all via npz_codec", READ_OURS, [npz_in], "")]
        # round robin, best of --repeat: drift on a shared machine hits every row alike
        results: dict[str, list[tuple[float, int]]] = {name: [] for name, *_ in jobs}
        for _ in range(args.repeat):
            for name, code, argv, dst in jobs:
                results[name].append(measure(code, argv))
                remove(dst)
        rows = [(name, min(t for t, _ in r), min(m for _, m in r)) for name, r in results.items()]
        base_t = rows[0][1]
        print(f"\n| {'run':38} | wall s | x plain | peak RSS GiB | x file size |")
        print(f"|{'-' * 40}|--------|---------|--------------|-------------|")
        for name, t, rss in rows:
            print(f"| {name:38} | {t:6.2f} | {t / base_t:7.2f} | {rss / 2**30:12.2f} | "
                  f"{rss / size:11.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
