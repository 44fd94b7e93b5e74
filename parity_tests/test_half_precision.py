"""Reduced precision as a parity target.

The promise, in both twins, when they compute in bfloat16 or float16: matmuls, the patch
convolution and GELU run in the half type; the softmax, the LayerNorm statistics and normalisation,
and the residual stream run in (at least) float32. Two kinds of check:

- Each promise, by the operations themselves (XLA's CPU backend computes half-precision arithmetic
  in float32 and rounds it, so on this machine a softmax written in bfloat16 gives the same numbers
  as one written in float32; the code must still say float32 for GPUs and TPUs): the dtypes the Flax
  twin's jaxpr and the torch twin's dispatched operations use.
- The numbers: the half twins against a float32 reference holding the same (half-rounded) weights,
  and against each other, within 2 u (L + 1) max|reference|, u the format's unit roundoff (2^-8
  bfloat16, 2^-11 float16) and L the depth: each block rounds its matmul inputs and outputs to the
  half type a few times, and the errors add along the residual stream. Measured here: 0.2-0.65
  u (L + 1), on pixels and on drifted residual streams (where a LayerNorm or residual in the half
  type costs 10-17 u (L + 1)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import vit_flax
import vit_torch
from parity_tests.test_numerics import CONFIGS, deep_activations
from parity_tests.twins import perturb_torch, pixels
from vit_common.convert import torch_to_flax

HALF = {"bfloat16": (torch.bfloat16, jnp.bfloat16, 2.0**-8), "float16": (torch.float16, jnp.float16, 2.0**-11)}
C = 2.0  # the bound's constant, 3x the worst measured


def _twins(config_name: str, half: str) -> tuple:
    config = CONFIGS[config_name]
    tdt, jdt, _ = HALF[half]
    torch.manual_seed(0)
    pt = vit_torch.VisionTransformer(config, "eager").eval()
    perturb_torch(pt, 0, vectors_only=True)
    pt_half = pt.to(tdt)
    ref = vit_torch.VisionTransformer(config, "eager").eval()  # float32, the same half-rounded weights
    ref.load_state_dict({k: v.float() for k, v in pt_half.state_dict().items()})
    params = torch_to_flax(ref.state_dict(), config)
    fx_half = vit_flax.VisionTransformer(config, dtype=jdt, param_dtype=jdt)
    params_half = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jdt), params)
    return config, pt_half, ref, fx_half.bind({"params": params_half})


def _bound(ref: np.ndarray, half: str, layers: int) -> float:
    return C * HALF[half][2] * (layers + 1) * float(np.abs(ref).max())


@pytest.mark.parametrize("half", list(HALF))
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_half_twins_on_pixels(config_name: str, half: str) -> None:
    config, pt_half, ref, fx_half = _twins(config_name, half)
    tdt, jdt, _ = HALF[half]
    x_pt, x_fx = pixels(config, "float32")
    with torch.no_grad():
        want = ref.forward_features(x_pt).numpy()
        got_pt = pt_half.forward_features(x_pt.to(tdt)).float().numpy()
    got_fx = np.asarray(fx_half.forward_features(x_fx.astype(jdt)).astype(jnp.float32))
    # the float32 reference computed the way the other framework does it, too
    ref_fx = vit_flax.VisionTransformer(config).apply(
        {"params": torch_to_flax(ref.state_dict(), config)}, x_fx, method="forward_features")
    bound = _bound(want, half, config.num_hidden_layers)
    for name, got, reference in (("torch", got_pt, want), ("flax", got_fx, want),
                                 ("torch vs Flax float32", got_pt, np.asarray(ref_fx)),
                                 ("flax vs Flax float32", got_fx, np.asarray(ref_fx))):
        err = np.abs(got - reference).max()
        assert err <= bound, f"{name} {half} vs float32: {err:.3e} > {bound:.3e}"
    assert np.abs(got_pt - got_fx).max() <= bound, f"twins {half}: {np.abs(got_pt - got_fx).max():.3e} > {bound:.3e}"


@pytest.mark.parametrize("half", list(HALF))
@pytest.mark.parametrize("config_name", ["h48-3heads", "long-257-tokens"])
def test_half_twins_on_a_drifted_residual_stream(config_name: str, half: str) -> None:
    """The encoder and final LayerNorm on a residual stream far from zero: what a half-precision
    residual or LayerNorm cannot carry."""
    config, pt_half, ref, fx_half = _twins(config_name, half)
    d_pt, d_fx = deep_activations((2, config.num_patches + 1, config.hidden_size), "float32")
    with torch.no_grad():
        want = ref.layernorm(ref.encoder(d_pt)).numpy()
        got_pt = pt_half.layernorm(pt_half.encoder(d_pt)).float().numpy()
    got_fx = np.asarray(fx_half.layernorm(fx_half.encoder(d_fx)).astype(jnp.float32))
    bound = _bound(want, half, config.num_hidden_layers)
    for name, got in (("torch", got_pt), ("flax", got_fx)):
        assert np.abs(got - want).max() <= bound, f"{name} {half} vs float32: {np.abs(got - want).max():.3e} > {bound:.3e}"


# --- the float32 promises, by the operations themselves ---------------------------------------

class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, tuple[torch.dtype, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        dtypes = tuple(a.dtype for a in args if isinstance(a, torch.Tensor))
        self.seen.append((str(func.overloadpacket.__name__), dtypes))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("half", list(HALF))
def test_torch_twin_keeps_its_float32_promises(half: str) -> None:
    config, pt_half, _, _ = _twins("h48-3heads", half)
    tdt = HALF[half][0]
    x_pt, _ = pixels(config, "float32")
    ops = _Ops()
    with torch.no_grad(), ops:
        layer_out = pt_half.encoder.layer[0](pt_half.embeddings(x_pt.to(tdt)))
    softmax = [d for name, d in ops.seen if name == "_softmax"]
    norms = [d for name, d in ops.seen if name == "native_layer_norm"]
    matmuls = [d for name, d in ops.seen if name in ("addmm", "mm", "bmm", "linear", "matmul")]
    assert softmax and all(d[0] == torch.float32 for d in softmax), f"softmax in {softmax}"
    assert norms and all(set(d) == {torch.float32} for d in norms), f"LayerNorm in {norms}"
    assert matmuls and all(d[0] == tdt for d in matmuls), "matmuls run in the half type"
    assert layer_out.dtype == torch.float32, "the residual stream leaves a block in float32"


def _eqns(jaxpr) -> list:  # noqa: ANN001
    out = []
    for eqn in jaxpr.eqns:
        out.append(eqn)
        for sub in jax.core.jaxprs_in_params(eqn.params):
            out += _eqns(sub)
    return out


@pytest.mark.parametrize("half", list(HALF))
def test_flax_twin_keeps_its_float32_promises(half: str) -> None:
    config, _, _, fx_half = _twins("h48-3heads", half)
    jdt = HALF[half][1]
    _, x_fx = pixels(config, "float32")
    layer = fx_half.encoder.layer[0]
    h = fx_half.embeddings(x_fx.astype(jdt))
    assert h.dtype == jdt and layer(h).dtype == jnp.float32, "the residual stream leaves a block in float32"
    layer_params = {"params": fx_half.variables["params"]["encoder"]["layer"]["0"]}
    closed = jax.make_jaxpr(lambda p, x: vit_flax.ViTLayer(
        config, dtype=jdt, param_dtype=jdt).apply(p, x))(layer_params, h)
    eqns = _eqns(closed.jaxpr)
    exps = [e for e in eqns if e.primitive.name == "exp"]
    assert exps and all(e.invars[0].aval.dtype == jnp.float32 for e in exps), "softmax's exp in float32"
    reductions = [e for e in eqns if e.primitive.name in ("reduce_sum", "reduce_max")]
    assert reductions and all(e.invars[0].aval.dtype == jnp.float32 for e in reductions), \
        "every reduction (softmax sums and maxima, LayerNorm statistics) in float32"
    dots = [e for e in eqns if e.primitive.name == "dot_general"]
    assert dots and all(e.invars[0].aval.dtype == jdt for e in dots), "matmuls run in the half type"
    # the softmax's sum of exponentials (written after the product: the late normalisation) reads
    # them in float32, never rounded to the half type on the way (jnp.sum of a half array upcasts
    # inside, so the reduction's own dtype cannot tell)
    made_by = {id(v): e for e in eqns for v in e.outvars}
    for e in reductions:
        v, rounded = e.invars[0], False
        while id(v) in made_by and made_by[id(v)].primitive.name == "convert_element_type":
            rounded |= made_by[id(v)].invars[0].aval.dtype == jdt
            v = made_by[id(v)].invars[0]
        producer = made_by.get(id(v))
        assert not (rounded and producer is not None and producer.primitive.name == "exp"), \
            "the exponentials are summed after a round trip through the half type"
