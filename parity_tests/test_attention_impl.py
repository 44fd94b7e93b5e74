"""attention_impl="sdpa" (torch F.scaled_dot_product_attention, jax.nn.dot_product_attention) is
the same function as "eager" (explicit matmul / einsum + softmax), in each framework and across."""

from __future__ import annotations

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import vit_flax
import vit_torch
from parity_tests.twins import TINY_CONFIGS, max_diff, perturb_torch, pixels
from vit_common.convert import torch_to_flax

FP32 = 1e-5
# jax.nn.dot_product_attention takes its softmax in float32 whatever the input dtype, so in
# float64 it agrees to float32 rounding only; torch's sdpa stays in float64.
SDPA_FP64 = {"torch": 1e-12, "flax": 1e-6}


# float32 (the fused kernels' own precision) on every config; float64 on the first, the rest slow
@pytest.mark.parametrize(("config_name", "dtype"), [
    *((name, "float32") for name in TINY_CONFIGS),
    *((name, "float64") if i == 0 else pytest.param(name, "float64", marks=pytest.mark.slow)
      for i, name in enumerate(TINY_CONFIGS))])
def test_sdpa_matches_eager(config_name: str, dtype: str) -> None:
    config = TINY_CONFIGS[config_name]
    torch_dtype, jax_dtype = (torch.float32, jnp.float32) if dtype == "float32" else (torch.float64, jnp.float64)
    torch.manual_seed(0)
    eager = vit_torch.ViTForImageClassification(config).to(torch_dtype).eval()
    perturb_torch(eager, 0)
    sdpa = vit_torch.ViTForImageClassification(config, attention_impl="sdpa").to(torch_dtype).eval()
    sdpa.load_state_dict(eager.state_dict())
    x_pt, x_fx = pixels(config, dtype)
    with torch.no_grad():
        out_eager, out_sdpa = eager(x_pt), sdpa(x_pt)
    bound = FP32 if dtype == "float32" else SDPA_FP64["torch"]
    assert max_diff(out_eager, out_sdpa.numpy()) <= bound
    params = torch_to_flax(eager.state_dict(), config)
    fx = {impl: vit_flax.ViTForImageClassification(config, dtype=jax_dtype, param_dtype=jax_dtype,
                                                   attention_impl=impl).apply({"params": params}, x_fx)
          for impl in ("eager", "sdpa")}
    bound = FP32 if dtype == "float32" else SDPA_FP64["flax"]
    assert max_diff(out_eager, fx["sdpa"]) <= bound  # flax sdpa against torch eager
    assert max_diff(out_sdpa, fx["sdpa"]) <= bound  # sdpa against sdpa across frameworks
    assert float(np.abs(np.asarray(fx["eager"]) - np.asarray(fx["sdpa"])).max()) <= bound


def test_flax_sdpa_refuses_attention_dropout_in_training() -> None:
    config = TINY_CONFIGS["h48-3heads"].replace(attention_probs_dropout_prob=0.1)
    model = vit_flax.VisionTransformer(config, attention_impl="sdpa")
    x = jnp.zeros((1, 24, 24, 3), jnp.float32)
    params = model.init(jax.random.key(0), x)
    model.apply(params, x)  # inference: no dropout, fine
    with pytest.raises(ValueError, match="no attention dropout"):
        model.apply(params, x, train=True, rngs={"dropout": jax.random.key(1)})
    with pytest.raises(ValueError, match="'eager' or 'sdpa', got 'flash'"):
        vit_torch.VisionTransformer(config, attention_impl="flash")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("attention_impl", ["eager", "sdpa"])
def test_torch_compile(attention_impl: str) -> None:
    config = TINY_CONFIGS["nonsquare-noqkvbias-tanh"]
    torch.manual_seed(0)
    model = vit_torch.ViTForImageClassification(config, attention_impl=attention_impl).eval()
    compiled = torch.compile(model)
    x_pt, _ = pixels(config, "float32")
    with torch.no_grad():
        assert max_diff(model(x_pt), compiled(x_pt).numpy()) <= FP32


def test_from_pretrained_picks_the_attention(tmp_path) -> None:
    config = TINY_CONFIGS["h48-3heads"]
    torch.manual_seed(2)
    vit_torch.save_pretrained(vit_torch.ViTForImageClassification(config).eval(), tmp_path / "m")
    x_pt, x_fx = pixels(config, "float32")
    eager = vit_torch.from_pretrained(tmp_path / "m", attention_impl="eager")
    sdpa = vit_torch.from_pretrained(tmp_path / "m")  # the torch twin's default: fused attention
    fx, params = vit_flax.from_pretrained(tmp_path / "m", attention_impl="sdpa")
    assert fx.attention_impl == "sdpa"
    calls = []
    fused = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003
        calls.append(1)
        return fused(*args, **kwargs)

    with torch.no_grad(), mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", counting):
        want = eager(x_pt)
        assert not calls  # the eager model never calls the fused kernel
        assert max_diff(want, sdpa(x_pt).numpy()) <= FP32
        assert len(calls) == config.num_hidden_layers  # the sdpa model calls it in every layer
    assert max_diff(want, fx.apply({"params": params}, x_fx)) <= FP32
