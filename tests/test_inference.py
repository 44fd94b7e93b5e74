"""vit_flax.inference: padding, dtype and sharding don't change results beyond stated bounds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vit_flax
from vit_common.config import ViTConfig
from vit_flax.inference import InferenceEngine

CFG = ViTConfig(hidden_size=48, num_attention_heads=3, num_hidden_layers=2, intermediate_size=96,
                image_size=(24, 36), patch_size=6, num_labels=5)
# Relative L2 error of the CLS embedding against float32, ~5 units of each format's roundoff
# (bfloat16 2^-8, float16 2^-11): what a few hundred rounded ops per token accumulate.
REL_ERROR_BOUND = {"bfloat16": 2e-2, "float16": 2.5e-3}


def _params(config: ViTConfig = CFG, head: bool = True):
    cls = vit_flax.ViTForImageClassification if head else vit_flax.VisionTransformer
    h, w = config.image_hw
    return cls(config).init(jax.random.key(0), jnp.zeros((1, h, w, 3), jnp.float32))["params"]


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 24, 36, 3)).astype(np.float32)


def _reference(params, x: np.ndarray) -> np.ndarray:
    return np.asarray(vit_flax.ViTForImageClassification(CFG).apply({"params": params}, jnp.asarray(x)))


@pytest.mark.parametrize("n", [1, 3, 4, 5, 11])
def test_padding_and_order(n: int) -> None:
    params = _params()
    engine = InferenceEngine(CFG, params, batch_size=4)
    x = _pixels(n)
    out = engine(x)
    assert out["pooled"].shape == (n, 48) and out["logits"].shape == (n, 5)
    np.testing.assert_allclose(out["logits"], _reference(params, x), atol=1e-5, rtol=0)
    # each row depends on its own image only: padding rows and batch-mates change nothing
    single = np.concatenate([engine(x[i:i + 1])["logits"] for i in range(n)])
    np.testing.assert_allclose(out["logits"], single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("micro_batch", ["auto", 2])
def test_short_batches_run_in_buckets_not_padded_to_batch_size(micro_batch) -> None:
    """An engine of batch_size 32 given 1, 3, 8 or 33 images runs steps of the smallest power-of-two
    bucket that holds them (times a forced micro_batch), not 32 rows each; rows unchanged."""
    params = _params()
    engine = InferenceEngine(CFG, params, batch_size=32, micro_batch=micro_batch)
    ran, step = [], engine._step
    engine._step = lambda p, x: (ran.append(x.shape[0]), step(p, x))[1]
    unit = 1 if micro_batch == "auto" else micro_batch
    for n, want in ((1, [unit]), (3, [4]), (8, [8]), (33, [32, unit])):
        ran.clear()
        x = _pixels(n)
        out = engine(x)
        assert ran == want, (n, ran)
        np.testing.assert_allclose(out["logits"], _reference(params, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("micro_batch", [1, 2, 4])
def test_micro_batches_change_nothing(micro_batch: int) -> None:
    params = _params()
    x = _pixels(7)
    plain = InferenceEngine(CFG, params, batch_size=4)(x)
    sliced = InferenceEngine(CFG, params, batch_size=4, micro_batch=micro_batch)(x)
    for k in ("pooled", "logits"):
        np.testing.assert_allclose(sliced[k], plain[k], atol=1e-6, rtol=0)


def test_embed_logits_and_headless() -> None:
    x = _pixels(3)
    with_head = InferenceEngine(CFG, _params(), batch_size=2)
    np.testing.assert_array_equal(with_head.embed(x), with_head(x)["pooled"])
    headless = InferenceEngine(CFG.replace(num_labels=0), {"params": _params(head=False)}, batch_size=2)
    assert set(headless(x)) == {"pooled"}
    with pytest.raises(ValueError, match="no classifier"):
        headless.logits(x)
    assert headless(x[:0])["pooled"].shape == (0, 48)


@pytest.mark.parametrize("attention_impl", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_error_bound(dtype: str, attention_impl: str) -> None:
    params = _params()
    if dtype == "float16" and attention_impl == "sdpa" and jax.devices()[0].platform == "cpu":
        with pytest.raises(ValueError, match="does not run on CPU"):
            InferenceEngine(CFG, params, dtype=dtype, attention_impl=attention_impl)
        return
    x = _pixels(8)
    ref = InferenceEngine(CFG, params, batch_size=8)(x)["pooled"]
    low = InferenceEngine(CFG, params, batch_size=8, dtype=dtype, attention_impl=attention_impl)
    got = low(x)["pooled"]
    assert got.dtype == np.float32  # results come back in float32 whatever the compute dtype
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert 0 < rel <= REL_ERROR_BOUND[dtype], f"{dtype}: relative error {rel:.2e}"
    # params stay float32 on the device
    assert {p.dtype for p in jax.tree_util.tree_leaves(low.params)} == {jnp.dtype(jnp.float32)}


def test_bad_arguments() -> None:
    params = _params()
    with pytest.raises(ValueError, match="dtype must be one of"):
        InferenceEngine(CFG, params, dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive multiple of the 1 devices"):
        InferenceEngine(CFG, params, batch_size=0)
    with pytest.raises(ValueError, match="micro_batch must divide the 4 images"):
        InferenceEngine(CFG, params, batch_size=4, micro_batch=3)
    engine = InferenceEngine(CFG, params, batch_size=2)
    with pytest.raises(ValueError, match=r"\(N, 24, 36, 3\), got \(2, 3, 24, 36\)"):
        engine(np.zeros((2, 3, 24, 36), np.float32))
    engine.compile()  # ahead of the first batch; the compiled step then serves it
    x = _pixels(2, seed=3)
    np.testing.assert_allclose(engine(x)["logits"], _reference(params, x), atol=1e-5, rtol=0)


SHARDED = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    import vit_flax
    from vit_flax.inference import InferenceEngine
    from vit_common.config import ViTConfig
    cfg = ViTConfig(hidden_size=48, num_attention_heads=3, num_hidden_layers=2,
                    intermediate_size=96, image_size=(24, 36), patch_size=6, num_labels=5)
    assert jax.device_count() == 8, jax.devices()
    params = vit_flax.ViTForImageClassification(cfg).init(
        jax.random.key(0), jnp.zeros((1, 24, 36, 3), jnp.float32))["params"]
    x = np.random.default_rng(0).normal(size=(21, 24, 36, 3)).astype(np.float32)
    sharded = InferenceEngine(cfg, params, batch_size=16)
    single = InferenceEngine(cfg, params, batch_size=16, devices=jax.devices()[:1])
    sliced = InferenceEngine(cfg, params, batch_size=16, micro_batch=1)  # shard_map + lax.map
    a, b, c = sharded(x), single(x), sliced(x)
    for k in ("pooled", "logits"):
        print("micro_" + k, float(np.abs(a[k] - c[k]).max()), c[k].shape)
    out = sharded._step(sharded.params, jax.device_put(x[:16], sharded.batch_sharding))
    assert len(out["pooled"].sharding.device_set) == 8
    assert out["pooled"].addressable_shards[0].data.shape == (2, 48)  # 16 rows over 8 devices
    for k in ("pooled", "logits"):
        print(k, float(np.abs(a[k] - b[k]).max()), a[k].shape)
""")


def test_sharded_equals_single_device() -> None:
    out = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    diffs = {line.split()[0]: float(line.split()[1]) for line in out.stdout.splitlines()}
    assert set(diffs) == {"pooled", "logits", "micro_pooled", "micro_logits"}
    assert all(d <= 1e-6 for d in diffs.values()), diffs


DISTRIBUTED = textwrap.dedent("""
    import os, sys
    pid, port = int(sys.argv[1]), sys.argv[2]
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import jax.numpy as jnp, numpy as np
    import vit_flax
    from vit_flax.inference import InferenceEngine
    from vit_common.config import ViTConfig
    cfg = ViTConfig(hidden_size=48, num_attention_heads=3, num_hidden_layers=2,
                    intermediate_size=96, image_size=(24, 36), patch_size=6, num_labels=5)
    model = vit_flax.ViTForImageClassification(cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, 24, 36, 3), jnp.float32))["params"]
    x = np.random.default_rng(0).normal(size=(10, 24, 36, 3)).astype(np.float32)
    mine = x[pid * 5:(pid + 1) * 5]  # each process embeds its own images
    engine = InferenceEngine(cfg, params, batch_size=8)  # 4 devices over 2 processes
    got = engine(mine)["logits"]
    want = np.asarray(model.apply({"params": params}, jnp.asarray(mine)))
    print("RESULT", jax.process_count(), jax.device_count(), float(np.abs(got - want).max()))
""")


@pytest.mark.slow
def test_two_processes_with_jax_distributed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-c", DISTRIBUTED, str(i), port], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        result = next(line for line in out.splitlines() if line.startswith("RESULT")).split()
        assert (result[1], result[2]) == ("2", "4") and float(result[3]) <= 1e-5, result


def test_micro_batching_is_chosen_where_it_pays() -> None:
    """Default micro_batch="auto": on CPU devices a share of more than CPU_SLICE_TOKENS tokens runs
    in slices of its largest divisor that fits (B/16 at 224: 4 images), unless only slices of
    less than half the budget divide a share of at most twice it; smaller shares run whole."""
    from vit_flax.inference import CPU_SLICE_TOKENS, _auto_micro_batch

    b16 = ViTConfig.from_preset("B/16")
    assert CPU_SLICE_TOKENS // 197 == 5
    for batch, want in ((1, None), (5, None), (6, 3), (7, None), (8, 4), (10, 5), (31, 1), (32, 4)):
        assert _auto_micro_batch(b16, batch) == want, batch
    assert _auto_micro_batch(ViTConfig.from_preset("B/16", image_size=384), 8) == 1  # 577 tokens
    params = _params()  # 25 tokens: slices of up to 40 images
    for batch, want in ((1, None), (40, None), (41, None), (48, 24), (83, 1)):
        assert InferenceEngine(CFG, params, batch_size=batch).micro_batch == want, batch
