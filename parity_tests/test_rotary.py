"""The rotary generation's components across the twins: rotary tables (dinov3, axial with a
reference grid and offset, mixed with learned frequencies; halves and pairs; yx and xy), RMSNorm,
the key without bias, bias-free projections, the attention's and the MLP's norms, the MAP head's own
head count. Whole models at grids off the config's, fp64 <= 1e-12 and fp32 <= 1e-5, gradients
fp64 <= 1e-10, scanned layers; in half precision the tables and RMSNorm's statistics stay float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import vit_flax
import vit_torch
from parity_tests.test_half_precision import _eqns
from parity_tests.twins import TOLERANCE, perturb_torch
from vit_common.config import ViTConfig
from vit_common.convert import flatten_params, stack_layers, torch_to_flax
from vit_common.rotary import rope_tables

_BASE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, image_size=(24, 32),
             patch_size=8, layer_norm_eps=1e-5, num_labels=3)
CONFIGS = {
    "dinov3": ViTConfig(**_BASE, rope_type="dinov3", position_embedding_type="none", key_bias=False,
                        layer_scale=True, num_register_tokens=2, mlp_type="swiglu"),
    "axial-pairs-xy-ref": ViTConfig(**_BASE, rope_type="axial", rope_layout="pairs", rope_axis_order="xy",
                                    rope_ref_grid=(5, 7), rope_grid_offset=1.0, rope_theta=1e4, pre_norm=True,
                                    patch_bias=False, pooling="map", map_num_heads=4),
    "mixed-gap": ViTConfig(**_BASE, rope_type="mixed", rope_layout="pairs", rope_axis_order="xy", rope_theta=10.0,
                           class_token=False, pooling="gap", final_norm="pooled", num_register_tokens=1,
                           position_embedding_covers_prefix=False),
    "eva-clip-norms": ViTConfig(**_BASE, rope_type="axial", rope_layout="pairs", attention_norm=True, mlp_norm=True,
                                mlp_type="swiglu", key_bias=False, qk_norm=True),
    "rmsnorm-biasless": ViTConfig(**_BASE, norm_type="rmsnorm", qkv_bias=False, proj_bias=False, mlp_bias=False,
                                  class_token=False, pooling="probe", patch_norm=True, mlp_type="swiglu"),
}


def _twins(config: ViTConfig, dtype: str, seed: int = 0):
    torch.manual_seed(seed)
    pt = vit_torch.ViTForImageClassification(config, "eager").to(getattr(torch, dtype)).eval()
    perturb_torch(pt, seed)  # norm weights, LayerScale and frequencies away from their init
    params = torch_to_flax(pt.state_dict(), config)
    return pt, params


def _pixels(dtype: str, h: int = 40, w: int = 24, seed: int = 1):
    x = np.random.default_rng(seed).normal(size=(2, 3, h, w)).astype(dtype)
    return torch.from_numpy(x), jnp.asarray(x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_rotary_models_agree(name: str, dtype: str) -> None:
    config = CONFIGS[name]
    pt, params = _twins(config, dtype)
    x_pt, x_fx = _pixels(dtype)  # a 5 x 3 grid: the config's is 3 x 4
    with torch.no_grad():
        want = pt(x_pt, interpolate_pos_encoding=True).numpy()
    for scan in (False, True):
        fx = vit_flax.ViTForImageClassification(config, dtype=dtype, param_dtype=dtype, scan_layers=scan)
        p = stack_layers(params) if scan else params
        got = np.asarray(fx.apply({"params": p}, x_fx, interpolate_pos_encoding=True))
        assert np.abs(got - want).max() <= TOLERANCE[dtype] * max(1.0, np.abs(want).max()), (scan, name)


@pytest.mark.parametrize("name", ["dinov3", "mixed-gap", "rmsnorm-biasless"])
def test_rotary_gradients_agree(name: str) -> None:
    config = CONFIGS[name]
    pt, params = _twins(config, "float64")
    x_pt, x_fx = _pixels("float64")
    pt.train()
    loss = (pt(x_pt, interpolate_pos_encoding=True) ** 2).sum()
    loss.backward()
    want = torch_to_flax({k: p.grad for k, p in pt.named_parameters()}, config)
    fx = vit_flax.ViTForImageClassification(config, dtype="float64", param_dtype="float64")
    grads = jax.grad(lambda p: (fx.apply({"params": p}, x_fx, interpolate_pos_encoding=True) ** 2).sum())(params)
    flat_want, flat_got = flatten_params(want), flatten_params(grads)
    assert set(flat_want) == set(flat_got)
    for k in flat_want:
        assert np.abs(np.asarray(flat_got[k]) - np.asarray(flat_want[k])).max() <= 1e-10, k
    if config.rope_type == "mixed":  # the learned frequencies take part
        assert np.abs(flat_want[("vit", "rope", "freqs")]).max() > 0


def test_rotary_tables_are_the_sources() -> None:
    """DINOv3's and EVA's tables as their definitions write them (HF's periods, timm's bands)."""
    c = CONFIGS["dinov3"]
    sin, cos = rope_tables(c, (2, 3))
    prefix = c.num_prefix_tokens  # [CLS] and the registers: angle 0
    assert np.array_equal(sin[:prefix], np.zeros_like(sin[:prefix])) and np.array_equal(cos[:prefix], 1 + sin[:prefix])
    sin, cos = sin[prefix:], cos[prefix:]
    hd = c.head_dim
    inv = 1 / 100.0 ** (np.arange(0, 1, 4 / hd))  # HF: 1 / theta ** arange(0, 1, 4 / head_dim)
    ys, xs = np.meshgrid((np.arange(2) + 0.5) / 2 * 2 - 1, (np.arange(3) + 0.5) / 3 * 2 - 1, indexing="ij")
    angles = 2 * np.pi * np.stack([ys.ravel(), xs.ravel()], -1)[:, :, None] * inv
    angles = np.tile(angles.reshape(6, -1), 2)
    assert np.allclose(sin, np.sin(angles), atol=1e-15) and np.allclose(cos, np.cos(angles), atol=1e-15)
    e = CONFIGS["axial-pairs-xy-ref"]
    sin = rope_tables(e, (3, 2))[0][e.num_prefix_tokens:]
    bands = 1e4 ** -(np.arange(e.head_dim // 4) / (e.head_dim // 4))
    t_x = (np.arange(2) + 1.0) / 2 * 7  # xy: columns first, each rescaled to its reference size
    t_y = (np.arange(3) + 1.0) / 3 * 5
    xs, ys = np.meshgrid(t_x, t_y, indexing="xy")
    angles = np.concatenate([xs.ravel()[:, None] * bands, ys.ravel()[:, None] * bands], -1)
    assert np.allclose(sin, np.sin(np.repeat(angles, 2, -1)), atol=1e-15)


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
def test_half_precision_keeps_tables_and_rms_statistics_in_float32(half: str) -> None:
    config = CONFIGS["dinov3"].replace(norm_type="rmsnorm")
    pt = vit_torch.VisionTransformer(config, "eager").eval()
    pt_half = pt.to(getattr(torch, half))
    x = torch.zeros(1, 3, 24, 32, dtype=getattr(torch, half))
    sin, cos = pt_half.rope((3, 4), x)
    assert sin.dtype == cos.dtype == torch.float32
    params = torch_to_flax(pt.float().state_dict(), config)
    jdt = getattr(jnp, half)
    fx = vit_flax.VisionTransformer(config, dtype=jdt, param_dtype=jdt)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jdt), params)
    bound = fx.bind({"params": params})
    assert all(t.dtype == jnp.float32 for t in bound.rope((3, 4)))
    layer = {"params": params["encoder"]["layer"]["0"]}
    h = jnp.zeros((1, 2 + 1 + 12, config.hidden_size), jdt)
    rope = bound.rope((3, 4))
    closed = jax.make_jaxpr(lambda p, x: vit_flax.ViTLayer(config, dtype=jdt, param_dtype=jdt).apply(
        p, x, False, None, rope))(layer, h)
    eqns = _eqns(closed.jaxpr)
    reductions = [e for e in eqns if e.primitive.name == "reduce_sum"]
    assert reductions and all(e.invars[0].aval.dtype == jnp.float32 for e in reductions), \
        "RMSNorm's mean square and the softmax sums in float32"
    # the rotation's products: (1, heads, 3 prefix + 12 patches, head_dim)
    muls = [e for e in eqns if e.primitive.name == "mul" and e.invars[1].aval.shape[-2:] == (15, config.head_dim)]
    assert muls and all(e.outvars[0].aval.dtype == jnp.float32 for e in muls), "the rotation in float32"


# every norm of a family, fed a drifted stream (a large common offset: the one-pass variance
# E[x^2] - E[x]^2 loses it in float32): CLIP's pre-norm, EVA CLIP's attention and MLP norms, qk-norm,
# the MAP head's, RMSNorm
NORM_CONFIGS = {
    "clip-pre-norm": ViTConfig(**_BASE, pre_norm=True, patch_bias=False, final_norm="pooled"),
    "eva-clip-norms": CONFIGS["eva-clip-norms"],
    "map-head": CONFIGS["axial-pairs-xy-ref"],
    "rmsnorm": CONFIGS["rmsnorm-biasless"],
}


def _flax_module(bound, path: str):
    m = bound
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


@pytest.mark.parametrize("name", list(NORM_CONFIGS))
def test_every_norm_on_a_drifted_stream(name: str) -> None:
    config = NORM_CONFIGS[name]
    pt, params = _twins(config, "float32")
    fx = vit_flax.ViTForImageClassification(config).bind({"params": params})
    norms = [(n, m) for n, m in pt.named_modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm))]
    assert len(norms) >= 5
    rng = np.random.default_rng(0)
    for path, module in norms:
        width = module.normalized_shape[0]
        h = (1000.0 + rng.normal(size=(2, 5, width))).astype(np.float32)  # drifted: mean >> spread
        with torch.no_grad():
            want = module(torch.from_numpy(h)).numpy()
        got = np.asarray(_flax_module(fx, path)(jnp.asarray(h)))
        # float32 two-pass rounding of the offset: ~4e-4; the one-pass variance: ~3e-2
        assert np.abs(got - want).max() <= 3e-3, path


def test_tables_once_per_grid_and_no_retrace(monkeypatch) -> None:
    """One table per forward (not per layer), cached per grid; the jitted Flax model compiles once
    per input shape, not per call."""
    import vit_common.rotary as rotary

    config = CONFIGS["dinov3"].replace(num_hidden_layers=3)
    calls = []
    real = rotary.rope_tables
    monkeypatch.setattr("vit_torch.model.rope_tables", lambda c, g: calls.append(g) or real(c, g))
    pt = vit_torch.VisionTransformer(config).eval()
    with torch.no_grad():
        pt(torch.zeros(1, 3, 24, 32))
    assert calls == [(3, 4)]
    before = rotary._tables.cache_info().hits
    real(config, (3, 4))
    assert rotary._tables.cache_info().hits == before + 1  # the grid's table is made once
    fx = vit_flax.VisionTransformer(config)
    params = fx.init(jax.random.PRNGKey(0), jnp.zeros((1, 24, 32, 3)))
    apply = jax.jit(fx.apply)
    for seed in range(3):
        apply(params, jnp.full((2, 24, 32, 3), float(seed)))
    assert apply._cache_size() == 1
    any_size = jax.jit(lambda p, x: fx.apply(p, x, interpolate_pos_encoding=True))
    for shape in ((2, 40, 24, 3), (2, 24, 32, 3), (2, 40, 24, 3), (2, 24, 32, 3)):
        any_size(params, jnp.zeros(shape))
    assert any_size._cache_size() == 2  # one program per grid
