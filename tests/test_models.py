"""Single-framework checks of the two models: sizes, input errors, dtypes, dropout, initialisation."""

from __future__ import annotations

import math
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import vit_flax
import vit_torch
from vit_common.config import ViTConfig

jax.config.update("jax_enable_x64", True)  # for the float64 cases; every other dtype is explicit

TINY = ViTConfig(hidden_size=16, num_attention_heads=2, num_hidden_layers=1, intermediate_size=24,
                 image_size=(8, 12), patch_size=4, num_labels=3)

# Google's vit_jax tests (models_test.py), 1000-class head, 224 px.
GOLDEN_COUNTS = {"Ti/16": 5_717_416, "S/16": 22_050_664, "B/16": 86_567_656, "B/32": 88_224_232,
                 "L/16": 304_326_632, "L/32": 306_535_400, "H/14": 632_045_800}


@pytest.mark.parametrize("preset", list(GOLDEN_COUNTS))
def test_parameter_counts_match_google(preset: str) -> None:
    config = ViTConfig.from_preset(preset, num_labels=1000)
    with torch.device("meta"):  # shapes only: H/14 would need 2.5 GB otherwise
        pt = vit_torch.ViTForImageClassification(config)
    assert sum(p.numel() for p in pt.parameters()) == GOLDEN_COUNTS[preset]
    fx = vit_flax.ViTForImageClassification(config)
    shapes = jax.eval_shape(fx.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    assert sum(math.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes)) == GOLDEN_COUNTS[preset]


def test_torch_input_errors() -> None:
    model = vit_torch.VisionTransformer(TINY)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) = \(B, 3, 8, 12\), got \(3, 8, 12\) \(rank 3\)"):
        model(torch.zeros(3, 8, 12))
    with pytest.raises(ValueError, match=r"got \(1, 1, 8, 12\)"):
        model(torch.zeros(1, 1, 8, 12))
    with pytest.raises(ValueError, match=r"got \(1, 3, 12, 8\)"):
        model(torch.zeros(1, 3, 12, 8))
    with pytest.raises(ValueError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        model(torch.zeros(2, 8, 12, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(np.zeros((1, 3, 8, 12), np.float32))


def test_flax_input_errors() -> None:
    model = vit_flax.VisionTransformer(TINY)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 12, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\) = \(B, 8, 12, 3\), got \(8, 12, 3\) \(rank 3\)"):
        model.apply(params, jnp.zeros((8, 12, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"channels-first.*transpose\(0, 2, 3, 1\)"):
        model.apply(params, jnp.zeros((2, 3, 8, 12), jnp.float32))
    with pytest.raises(ValueError, match=r"got \(1, 12, 8, 3\)"):
        model.apply(params, jnp.zeros((1, 12, 8, 3), jnp.float32))


def test_classifier_needs_labels() -> None:
    with pytest.raises(ValueError, match="num_labels >= 1, got 0"):
        vit_torch.ViTForImageClassification(TINY.replace(num_labels=0))
    with pytest.raises(ValueError, match="num_labels >= 1, got 0"):
        vit_flax.ViTForImageClassification(TINY.replace(num_labels=0)).init(
            jax.random.key(0), jnp.zeros((1, 8, 12, 3), jnp.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_torch_dtypes(dtype: torch.dtype) -> None:
    model = vit_torch.ViTForImageClassification(TINY).to(dtype).eval()
    out = model(torch.randn(2, 3, 8, 12, dtype=dtype))
    assert out.dtype == dtype and out.shape == (2, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize("dtype, param_dtype", [
    (jnp.float32, jnp.float32), (jnp.bfloat16, jnp.float32), (jnp.bfloat16, jnp.bfloat16),
    (jnp.float64, jnp.float64)])
def test_flax_dtypes(dtype, param_dtype) -> None:
    model = vit_flax.ViTForImageClassification(TINY, dtype=dtype, param_dtype=param_dtype)
    x = jax.random.normal(jax.random.key(1), (2, 8, 12, 3), jnp.float32)
    params = model.init(jax.random.key(0), x)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(param_dtype)}
    out = model.apply(params, x)
    assert out.dtype == jnp.dtype(dtype) and out.shape == (2, 3) and bool(jnp.isfinite(out).all())


def test_flax_float64_without_x64_is_refused() -> None:
    code = ("import jax.numpy as jnp, vit_flax; from vit_common import ViTConfig\n"
            "try:\n    vit_flax.VisionTransformer(ViTConfig(), dtype=jnp.float64)\n"
            "except ValueError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "jax_enable_x64" in out.stdout


DROPPY = TINY.replace(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)


def test_torch_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = vit_torch.VisionTransformer(DROPPY)
    plain = vit_torch.VisionTransformer(TINY)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 12)
    model.eval()
    plain.eval()
    assert torch.equal(model(x), model(x)) and torch.equal(model(x), plain(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_flax_dropout_only_in_training() -> None:
    model, plain = vit_flax.VisionTransformer(DROPPY), vit_flax.VisionTransformer(TINY)
    x = jax.random.normal(jax.random.key(1), (2, 8, 12, 3), jnp.float32)
    params = model.init(jax.random.key(0), x)
    eval_out = model.apply(params, x)
    np.testing.assert_array_equal(eval_out, plain.apply(params, x))
    a = model.apply(params, x, train=True, rngs={"dropout": jax.random.key(2)})
    b = model.apply(params, x, train=True, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(a, eval_out) and not np.allclose(a, b)
    # training with dropout 0 is inference
    np.testing.assert_array_equal(plain.apply(params, x, train=True), eval_out)
    with pytest.raises(Exception, match="dropout"):
        model.apply(params, x, train=True)  # no rng given


INIT = ViTConfig(hidden_size=256, num_attention_heads=4, num_hidden_layers=1, intermediate_size=1024,
                 image_size=64, patch_size=16, num_labels=10)
# std of N(0, s^2) truncated at +-2s: s * sqrt(1 - 2 * 2 phi(2) / (2 Phi(2) - 1))
_PHI2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
TRUNC_STD = INIT.initializer_range * math.sqrt(1 - 4 * _PHI2 / math.erf(2 / math.sqrt(2)))


def _init_stats(arrays: dict[str, np.ndarray]) -> None:
    s = INIT.initializer_range
    for name in ("intermediate", "query", "patch", "pos"):
        w = arrays[name].astype(np.float64).ravel()
        assert abs(w.std() - TRUNC_STD) < 0.03 * TRUNC_STD, (name, w.std())
        assert abs(w.mean()) < 0.05 * s and np.abs(w).max() <= 2 * s + 1e-9, name
    assert np.all(arrays["bias"] == 0) and np.all(arrays["ln_scale"] == 1) and np.all(arrays["ln_bias"] == 0)


def test_initialisation_torch() -> None:
    torch.manual_seed(0)
    m = vit_torch.ViTForImageClassification(INIT)
    layer = m.vit.encoder.layer[0]
    _init_stats({
        "intermediate": layer.intermediate.dense.weight.detach().numpy(),
        "query": layer.attention.attention.query.weight.detach().numpy(),
        "patch": m.vit.embeddings.patch_embeddings.projection.weight.detach().numpy(),
        "pos": m.vit.embeddings.position_embeddings.detach().numpy(),
        "bias": layer.output.dense.bias.detach().numpy(),
        "ln_scale": layer.layernorm_before.weight.detach().numpy(),
        "ln_bias": m.vit.layernorm.bias.detach().numpy(),
    })


def test_initialisation_flax() -> None:
    p = vit_flax.ViTForImageClassification(INIT).init(
        jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32))["params"]
    layer = p["vit"]["encoder"]["layer"]["0"]
    _init_stats({
        "intermediate": np.asarray(layer["intermediate"]["dense"]["kernel"]),
        "query": np.asarray(layer["attention"]["attention"]["query"]["kernel"]),
        "patch": np.asarray(p["vit"]["embeddings"]["patch_embeddings"]["projection"]["kernel"]),
        "pos": np.asarray(p["vit"]["embeddings"]["position_embeddings"]),
        "bias": np.asarray(layer["output"]["dense"]["bias"]),
        "ln_scale": np.asarray(layer["layernorm_before"]["scale"]),
        "ln_bias": np.asarray(p["vit"]["layernorm"]["bias"]),
    })


@pytest.mark.parametrize("package, layout", [("vit_torch", "(1, 3, 224, 224)"),
                                             ("vit_flax", "(1, 224, 224, 3)")])
def test_module_demo(package: str, layout: str) -> None:
    out = subprocess.run([sys.executable, "-m", package, "Ti/16"], capture_output=True, text=True,
                         check=True, timeout=300)
    assert f"input {layout} -> CLS token (1, 192)" in out.stdout


FRAMEWORKS = ("torch", "jax", "flax", "optax", "matplotlib", "sklearn")
PACKAGES = {"vit_common": FRAMEWORKS, "vit_torch": ("jax", "flax", "optax"),
            "vit_flax": ("torch",), "vit_cli": ()}
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _modules(package: str) -> list[str]:
    """Every module of a package, from its files (nothing skipped)."""
    base = ROOT / package
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in base.rglob("*.py"))


@pytest.mark.parametrize("package", [p for p in PACKAGES if PACKAGES[p]])
def test_import_rules(package: str) -> None:
    """Importing any module of a package loads none of the frameworks it must not use."""
    forbidden = PACKAGES[package]
    modules = _modules(package)
    assert len(modules) >= 4
    code = ("import sys, importlib\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            f"print(sorted(m for m in {forbidden!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"importing {package} pulled in {out.stdout.strip()}"


def _imports(module: str) -> set[str]:
    """The project modules `module` imports at module level (not inside functions)."""
    import ast

    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, trail: list[str]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, f"import cycle: {' -> '.join(trail + [m])}"
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, trail + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])


def test_no_import_cycles() -> None:
    """The module-level import graph of the whole project is acyclic."""
    modules = [m for p in PACKAGES for m in _modules(p)]
    graph = {m: {n for n in _imports(m) if n in modules and n != m} for m in modules}
    assert graph["vit_common.checkpoints"] and graph["vit_cli.convert_tool"]  # the walk sees edges
    _assert_acyclic(graph)


def test_cycle_detection_can_fail() -> None:
    with pytest.raises(AssertionError, match="import cycle: a -> b -> a"):
        _assert_acyclic({"a": {"b"}, "b": {"a"}})


def test_run_time_fused_qkv_is_the_same_function_and_follows_the_weights() -> None:
    """Inference computes q, k, v with one GEMM over [query; key; value] (built at run time, cached):
    equal to the three projections (fp64), rebuilt after the weights change, never in the state dict."""
    import torch

    import vit_torch
    from vit_common.config import ViTConfig

    config = ViTConfig(hidden_size=24, num_attention_heads=3, num_hidden_layers=2, intermediate_size=32,
                       image_size=12, patch_size=4, num_labels=3, qk_norm=True)
    torch.manual_seed(0)
    model = vit_torch.ViTForImageClassification(config, "eager").double().eval()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        fused = model(x)
    with torch.enable_grad():
        separate = model(x).detach()  # gradients on: the three projections
    assert float((fused - separate).abs().max()) <= 1e-12
    with torch.no_grad():
        model.vit.encoder.layer[0].attention.attention.value.weight.mul_(1.5)  # in place: a new version
        after = model(x)
    with torch.enable_grad():
        want = model(x).detach()
    assert float((after - want).abs().max()) <= 1e-12 and float((after - fused).abs().max()) > 1e-6
    assert not any("fused" in k for k in model.state_dict())


@pytest.mark.parametrize("switches", [dict(), dict(hidden_act="gelu_pytorch_tanh", qk_norm=True),
                                      dict(hidden_act="quick_gelu"), dict(mlp_type="swiglu", qkv_bias=False)])
def test_fast_inference_kernels_are_the_reference_function(switches, monkeypatch) -> None:
    """In fp32 on CPU without autograd, the projections run as oneDNN GEMMs (bias and GELU in the
    epilogue): the same outputs as the written-out kernels (fp32 rounding only), every projection
    really taken by it, a hook on a Linear still sees that Linear's own output, and the
    backward path (gradients on) never uses it."""
    import torch

    import vit_torch
    import vit_torch.kernels as vtk
    from vit_common.config import ViTConfig

    if not vtk.onednn_works():
        pytest.skip("this torch build has no oneDNN linear")
    config = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=48,
                       image_size=16, patch_size=4, num_labels=5, **switches)
    torch.manual_seed(0)
    model = vit_torch.ViTForImageClassification(config).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad(), vit_torch.reference_kernels():
        want = model(x)
    calls, onednn_linear = [], vtk.ONEDNN_LINEAR

    def counting(*args):
        calls.append(args[3:])
        return onednn_linear(*args)

    monkeypatch.setattr(vtk, "ONEDNN_LINEAR", counting)
    with torch.no_grad():
        got = model(x)
    assert float((got - want).abs().max()) <= 2e-5 * max(1.0, float(want.abs().max()))
    fused_gelu = config.mlp_type == "mlp" and config.hidden_act != "quick_gelu"
    assert len(calls) == 4 * config.num_hidden_layers  # qkv, attention output, fc1, fc2
    assert sum(c[0] == "gelu" for c in calls) == (config.num_hidden_layers if fused_gelu else 0)
    seen = []
    dense = model.vit.encoder.layer[0].intermediate.dense
    handle = dense.register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
    with torch.no_grad():
        hooked = model(x)
    handle.remove()
    assert len(seen) == 1 and float((hooked - want).abs().max()) <= 2e-5 * max(1.0, float(want.abs().max()))
    inputs, output = seen[0]  # the Linear's own output, before the activation
    with torch.no_grad():
        assert float((output - torch.nn.functional.linear(inputs, dense.weight, dense.bias)).abs().max()) <= 1e-5
    calls.clear()
    model(x).sum().backward()  # gradients on: the written-out kernels
    assert calls == [] and model.vit.encoder.layer[0].output.dense.weight.grad is not None


def test_fast_inference_falls_back_when_onednn_fails(monkeypatch) -> None:
    """A oneDNN linear that raises (a shape or CPU it cannot take): the model still answers,
    through F.linear, with the reference outputs; a build whose probe fails never calls it."""
    import torch

    import vit_torch
    import vit_torch.kernels as vtk
    from vit_common.config import ViTConfig

    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("could not create a primitive")

    monkeypatch.setattr(vtk, "ONEDNN_LINEAR", broken)
    config = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=48,
                       image_size=16, patch_size=4, num_labels=5)
    torch.manual_seed(0)
    model = vit_torch.ViTForImageClassification(config).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad(), vit_torch.reference_kernels():
        want = model(x)
    with torch.no_grad():
        got = model(x)
    assert float((got - want).abs().max()) <= 1e-6
    assert calls or not vtk.onednn_works()  # it was tried, where the build has it
    calls.clear()
    monkeypatch.setattr(vtk, "onednn_works", lambda: False)  # a build whose probe failed
    with torch.no_grad():
        again = model(x)
    assert calls == [] and float((again - want).abs().max()) <= 1e-6


def test_reference_kernels_is_scoped_to_its_thread() -> None:
    """reference_kernels() in one thread leaves another thread's fast kernels on (no module state)."""
    import threading

    import vit_torch.kernels as vtk

    inside, other = threading.Event(), []
    release = threading.Event()

    def hold() -> None:
        with vtk.reference_kernels():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(10)
    probe = threading.Thread(target=lambda: other.append(vtk.fast_kernels_enabled()))
    probe.start()
    probe.join()
    here = vtk.fast_kernels_enabled()
    release.set()
    t.join()
    assert other == [True] and here is True
    with vtk.reference_kernels():
        assert vtk.fast_kernels_enabled() is False
    assert vtk.fast_kernels_enabled() is True
