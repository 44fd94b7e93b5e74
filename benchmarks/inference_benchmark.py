"""Inference throughput of ViT-B/16 against the peers, all in one run, random weights.

    .venv/bin/python benchmarks/inference_benchmark.py [--batches 1,8,32] [--dtype float32]
        [--iters 3] [--out benchmarks/results] [--only vit_flax_jit,timm_eager,...]

Each contender runs in its own fresh process (so peak RSS is its own): vit_flax jit (eager and
fused attention), vit_torch eager (eager and sdpa), vit_torch under torch.compile, timm eager and
HF transformers eager, plus vit_flax.InferenceEngine with default arguments (on CPU it runs big
batches as slices of 8 by itself). vit_torch_eager is the written-out attention; the torch twin's
default construction is vit_torch_eager_sdpa. Reported: images/s (best of --iters after a warm-up), achieved GFLOP/s from
the model's FLOP count, that as a share of a GEMM peak measured in the same run (the faster of
torch's matmul, its oneDNN linear and XLA's dot over the B/16 GEMM shapes), compile time (first call) and peak RSS. On a CUDA
machine it runs unchanged (use --dtype bfloat16) and reports MFU against the measured bf16 GEMM peak
and, for known cards, the datasheet peak. Writes results.json, results.md and results.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

CONTENDERS = ["vit_flax_engine", "vit_flax_jit", "vit_flax_jit_sdpa", "vit_torch_eager", "vit_torch_eager_sdpa",
              "vit_torch_compiled", "timm_eager", "hf_eager"]
DATASHEET_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def flops_per_image(config) -> float:
    """Forward FLOPs (a multiply-add = 2) of VisionTransformer + classifier."""
    n_patches = config.num_patches
    n, d, i = n_patches + 1, config.hidden_size, config.intermediate_size
    patch = 2 * n_patches * config.num_channels * config.patch_size ** 2 * d
    layer = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * i
    return patch + config.num_hidden_layers * layer + 2 * d * config.num_labels


# ---------------------------------------------------------------------------------------------
# one contender, in its own process


def run_contender(name: str, batches: list[int], dtype_name: str, iters: int) -> dict:
    import resource

    import numpy as np
    import torch

    from vit_common.config import ViTConfig

    config = ViTConfig.from_preset("B/16", num_labels=1000)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch_dtype = getattr(torch, dtype_name)
    results: dict = {"name": name, "batches": {}}

    def timed(run, sync) -> tuple[float, float]:
        t = time.perf_counter()
        run()
        sync()
        first = time.perf_counter() - t
        best = float("inf")
        for _ in range(iters):
            t = time.perf_counter()
            run()
            sync()
            best = min(best, time.perf_counter() - t)
        return first, best

    if name == "vit_flax_engine":  # the public inference API: vit_flax.InferenceEngine
        import jax
        import jax.numpy as jnp

        import vit_flax

        model = vit_flax.ViTForImageClassification(config)
        params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))["params"]
        # default arguments (batch_size 32; a shorter call runs in its own bucket, on CPU in slices)
        engine = vit_flax.InferenceEngine(config, params, dtype=dtype_name)
        for b in batches:
            x = np.random.default_rng(1).normal(size=(b, 224, 224, 3)).astype(np.float32)
            first, best = timed(lambda: engine(x), lambda: None)
            results["batches"][b] = {"img_s": b / best, "first_call_s": first}
        results["device"] = str(jax.devices()[0].device_kind)
    elif name.startswith("vit_flax"):
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        import jax
        import jax.numpy as jnp

        import vit_flax

        impl = "sdpa" if name.endswith("sdpa") else "eager"
        model = vit_flax.ViTForImageClassification(config, dtype=getattr(jnp, dtype_name),
                                                   param_dtype=jnp.float32, attention_impl=impl)
        params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
        for b in batches:
            x = jax.random.normal(jax.random.key(1), (b, 224, 224, 3), jnp.float32)
            fn = jax.jit(model.apply)
            out = []
            first, best = timed(lambda: out.append(fn(params, x)), lambda: out[-1].block_until_ready())
            results["batches"][b] = {"img_s": b / best, "first_call_s": first}
        results["device"] = str(jax.devices()[0].device_kind)
    else:
        torch.manual_seed(0)
        if name.startswith("vit_torch"):
            import vit_torch

            impl = "sdpa" if name in ("vit_torch_eager_sdpa", "vit_torch_compiled") else "eager"
            model = vit_torch.ViTForImageClassification(config, attention_impl=impl)
        elif name == "timm_eager":
            from timm.models.vision_transformer import VisionTransformer

            model = VisionTransformer(num_classes=1000)
        elif name == "hf_eager":
            import transformers

            model = transformers.ViTForImageClassification(
                transformers.ViTConfig.from_dict(config.to_hf()))
        else:
            raise ValueError(f"unknown contender {name!r}")
        model = model.to(device=device, dtype=torch_dtype).eval()
        forward = torch.compile(model) if name == "vit_torch_compiled" else model
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        for b in batches:
            x = torch.randn(b, 3, 224, 224, device=device, dtype=torch_dtype)
            with torch.no_grad():
                first, best = timed(lambda: forward(pixel_values=x) if name == "hf_eager"
                                    else forward(x), sync)
            results["batches"][b] = {"img_s": b / best, "first_call_s": first}
        results["device"] = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    results["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if cuda:
        results["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return results


def gemm_peak(dtype_name: str, batches: list[int]) -> dict:
    """Best GFLOP/s over the ViT-B/16 GEMM shapes (QKV/out, MLP up, MLP down) at every benchmarked
    batch, of each matmul either twin can run: torch's `a @ w`, the oneDNN linear the torch twin
    runs for fp32 inference on CPU, and XLA's dot. The fastest of them is the peak."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    mm = jax.jit(lambda x, y: x @ y)
    onednn = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    use_onednn = (onednn is not None and not cuda and dtype_name == "float32"
                  and torch.backends.mkldnn.is_available())

    def rate(run, m: int, k: int, n: int) -> float:
        run()
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t)
        return 2 * m * k * n / best / 1e9

    out = {"torch": 0.0, "onednn": 0.0, "xla": 0.0}
    rng = np.random.default_rng(0)
    torch_dtype, jax_dtype = getattr(torch, dtype_name), getattr(jnp, dtype_name)
    for b in batches:
        for k, n in ((768, 768), (768, 3072), (3072, 768)):
            m = b * 197
            a, w = (torch.randn(m, k, device=device, dtype=torch_dtype),
                    torch.randn(k, n, device=device, dtype=torch_dtype))
            out["torch"] = max(out["torch"], rate(lambda: (a @ w, sync()), m, k, n))
            if use_onednn:
                wt = w.t().contiguous()  # (out, in), nn.Linear's layout
                out["onednn"] = max(out["onednn"], rate(lambda: onednn(a, wt, None, "none", [], ""), m, k, n))
            aj = jnp.asarray(rng.normal(size=(m, k)), jax_dtype)
            wj = jnp.asarray(rng.normal(size=(k, n)), jax_dtype)
            out["xla"] = max(out["xla"], rate(lambda: mm(aj, wj).block_until_ready(), m, k, n))
    out["peak"] = max(out["torch"], out["onednn"], out["xla"])
    return out


# ---------------------------------------------------------------------------------------------
# driver


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--only", default=",".join(CONTENDERS))
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--contender", help=argparse.SUPPRESS)  # internal: run one in this process
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.contender:
        print("RESULT " + json.dumps(run_contender(args.contender, batches, args.dtype, args.iters)))
        return

    from vit_common.config import ViTConfig

    config = ViTConfig.from_preset("B/16", num_labels=1000)
    flops = flops_per_image(config)
    os.makedirs(args.out, exist_ok=True)
    peak = gemm_peak(args.dtype, batches)
    print(f"GEMM peak over the B/16 shapes ({args.dtype}): torch {peak['torch']:.0f}, oneDNN "
          f"{peak['onednn']:.0f}, XLA {peak['xla']:.0f} GFLOP/s; B/16 forward = {flops / 1e9:.2f} "
          "GFLOP/image", flush=True)
    rows = []
    for name in args.only.split(","):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--contender", name, "--batches",
                               args.batches, "--dtype", args.dtype, "--iters", str(args.iters)],
                              capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{name}: FAILED\n{proc.stderr[-2000:]}", flush=True)
            continue
        result = json.loads(line[len("RESULT "):])
        result["batches"] = {int(b): v for b, v in result["batches"].items()}
        rows.append(result)
        summary = ", ".join(f"b{b} {v['img_s']:.2f} img/s" for b, v in result["batches"].items())
        print(f"{name}: {summary} ({time.perf_counter() - t:.0f} s)", flush=True)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"{rows[0]['device'] if rows else '?'}",
              "dtype": args.dtype, "gflop_per_image": flops / 1e9, "gemm_gflops": peak,
              "results": rows}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    md = _table(report, batches)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    print("\n" + md)
    _plot(report, batches, os.path.join(args.out, "results.png"))


def _table(report: dict, batches: list[int]) -> str:
    peak = report["gemm_gflops"]["peak"]
    gflop = report["gflop_per_image"]
    timm = {b: r["batches"][b]["img_s"] for r in report["results"] if r["name"] == "timm_eager"
            for b in r["batches"]}
    device = report["machine"]
    datasheet = next((v for k, v in DATASHEET_TFLOPS.items() if k in device), None)
    lines = [f"{device}, {report['dtype']}, GEMM peak {peak:.0f} GFLOP/s (measured), "
             f"{gflop:.2f} GFLOP/image", "",
             "| contender | batch | img/s | x timm | GFLOP/s | % GEMM peak | first call s | peak RSS GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        for b in batches:
            v = r["batches"].get(b)
            if v is None:
                continue
            achieved = v["img_s"] * gflop
            rel = f"{v['img_s'] / timm[b]:.2f}" if b in timm else "-"
            mfu = f"{100 * achieved / peak:.0f}%"
            if datasheet:
                mfu += f" ({100 * achieved / (datasheet * 1e3):.0f}% of datasheet)"
            lines.append(f"| {r['name']} | {b} | {v['img_s']:.2f} | {rel} | {achieved:.0f} | {mfu} | "
                         f"{v['first_call_s']:.1f} | {r['peak_rss_gib']:.2f} |")
    return "\n".join(lines) + "\n"


def _plot(report: dict, batches: list[int], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (make bench installs it)")
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [r["name"] for r in report["results"]]
    width = 0.8 / max(len(batches), 1)
    for j, b in enumerate(batches):
        vals = [r["batches"].get(b, {}).get("img_s", 0) for r in report["results"]]
        ax.bar([i + j * width for i in range(len(names))], vals, width, label=f"batch {b}")
    peak_ips = report["gemm_gflops"]["peak"] / report["gflop_per_image"]
    ax.axhline(peak_ips, color="gray", linestyle="--", label="measured GEMM peak")
    ax.set_xticks([i + width * (len(batches) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_ylabel("images / s")
    ax.set_title(f"ViT-B/16 {report['dtype']} inference, {report['machine']}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
