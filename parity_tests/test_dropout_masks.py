"""Training-mode parity: both twins driven by the same dropout masks.

Every dropout site of the torch twin (an `nn.Dropout` module) is replaced by "multiply by this mask,
divide by the keep probability"; the Flax twin's `nn.Dropout` calls are intercepted
(`flax.linen.intercept_methods`) and given the same mask, looked up by the same module path (the
twins mirror each other, so the paths agree). With every site driven alike the outputs must agree
to the suite's bounds: a dropout moved around a residual add, added at a new place or missing in
one twin shows. Also: no dropout at evaluation time (p > 0, eval == p = 0) in every attention path,
and the fused paths' own dropout (torch sdpa's `dropout_p`, Flax sdpa's refusal) checked.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn

import vit_flax
import vit_torch
from parity_tests.twins import TINY_CONFIGS, TOLERANCE, max_diff, perturb_torch, pixels
from vit_common.convert import torch_to_flax

P = 0.3
CONFIGS = {name: c.replace(hidden_dropout_prob=P, attention_probs_dropout_prob=P)
           for name, c in TINY_CONFIGS.items()}
# every dropout site a model has: embeddings, attention probabilities, attention output, MLP output
SITES_PER_LAYER = ("attention.attention.dropout", "attention.output.dropout", "output.dropout")


class Masks:
    """One fixed Bernoulli(1 - p) mask per (site, shape), drawn on first use."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.masks: dict[str, np.ndarray] = {}
        self.used: dict[str, set[str]] = {"torch": set(), "flax": set()}

    def get(self, site: str, shape: tuple[int, ...], p: float, who: str) -> np.ndarray:
        self.used[who].add(site)
        if site not in self.masks:
            self.masks[site] = (self.rng.random(shape) >= p).astype(np.float64)
        mask = self.masks[site]
        assert mask.shape == shape, f"{site}: the twins drop over different shapes {mask.shape} vs {shape}"
        return mask


def drive_torch(model: torch.nn.Module, masks: Masks) -> None:
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout):
            def forward(x: torch.Tensor, name: str = name, p: float = module.p,
                        module: torch.nn.Module = module) -> torch.Tensor:
                if not module.training or p == 0:
                    return x
                m = masks.get(name.removeprefix("vit."), tuple(x.shape), p, "torch")
                return x * torch.from_numpy(m).to(x.dtype) / (1 - p)

            module.forward = forward  # type: ignore[method-assign]


def flax_interceptor(masks: Masks) -> Any:
    def intercept(next_fun: Any, args: tuple, kwargs: dict, context: Any) -> Any:
        module = context.module
        if not isinstance(module, nn.Dropout) or context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        x = args[0]
        deterministic = kwargs.get("deterministic", args[1] if len(args) > 1 else module.deterministic)
        if deterministic or module.rate == 0:
            return x
        site = ".".join(module.path).removeprefix("vit.")
        m = masks.get(site, tuple(x.shape), module.rate, "flax")
        return x * jnp.asarray(m, x.dtype) / (1 - module.rate)

    return intercept


def _pair(config_name: str, dtype: str, head: bool) -> tuple[torch.nn.Module, Any, Any]:
    config = CONFIGS[config_name]
    torch.manual_seed(3)
    cls_pt = vit_torch.ViTForImageClassification if head else vit_torch.VisionTransformer
    cls_fx = vit_flax.ViTForImageClassification if head else vit_flax.VisionTransformer
    pt = cls_pt(config, "eager").to({"float32": torch.float32, "float64": torch.float64}[dtype])  # masks need eager
    perturb_torch(pt, 3)
    jdt = {"float32": jnp.float32, "float64": jnp.float64}[dtype]
    fx = cls_fx(config, dtype=jdt, param_dtype=jdt)
    params = jax.tree_util.tree_map(jnp.asarray, torch_to_flax(pt.state_dict(), config))
    return pt, fx, params


@pytest.mark.parametrize("head", [True, False])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_same_masks_same_outputs(config_name: str, dtype: str, head: bool) -> None:
    pt, fx, params = _pair(config_name, dtype, head)
    config = CONFIGS[config_name]
    masks = Masks(seed=11)
    drive_torch(pt, masks)
    x_pt, x_fx = pixels(config, dtype)
    pt.train()
    with torch.no_grad():
        want = pt(x_pt)
        clean = pt.eval()(x_pt)
    with nn.intercept_methods(flax_interceptor(masks)):
        got = fx.apply({"params": params}, x_fx, train=True, rngs={"dropout": jax.random.key(0)})
    expected_sites = {"embeddings.dropout"} | {f"encoder.layer.{i}.{s}" for i in
                                               range(config.num_hidden_layers) for s in SITES_PER_LAYER}
    assert masks.used["torch"] == expected_sites, "the torch twin's dropout sites"
    assert masks.used["flax"] == expected_sites, "the Flax twin's dropout sites"
    assert max_diff(want, clean.numpy()) > 1e-3  # the masks changed the output: they were applied
    assert max_diff(want, got) <= TOLERANCE[dtype] * max(1.0, float(want.abs().max()))


@pytest.mark.parametrize("attention_impl", ["eager", "sdpa"])
@pytest.mark.parametrize("head", [True, False])
def test_no_dropout_at_evaluation_time(attention_impl: str, head: bool) -> None:
    """p > 0 in eval mode computes exactly what p = 0 computes, in both twins and both paths."""
    config = CONFIGS["h48-3heads"]
    torch.manual_seed(4)
    cls_pt = vit_torch.ViTForImageClassification if head else vit_torch.VisionTransformer
    cls_fx = vit_flax.ViTForImageClassification if head else vit_flax.VisionTransformer
    with_p = cls_pt(config, attention_impl).eval()
    without = cls_pt(config.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                     attention_impl).eval()
    without.load_state_dict(with_p.state_dict())
    x_pt, x_fx = pixels(config, "float32")
    with torch.no_grad():
        assert torch.equal(with_p(x_pt), without(x_pt))
    params = torch_to_flax(with_p.state_dict(), config)
    fx_p = cls_fx(config, attention_impl=attention_impl)
    fx_0 = cls_fx(config.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                  attention_impl=attention_impl)
    np.testing.assert_array_equal(np.asarray(fx_p.apply({"params": params}, x_fx)),
                                  np.asarray(fx_0.apply({"params": params}, x_fx)))


def test_fused_attention_dropout() -> None:
    """torch's sdpa path hands the configured probability to the fused kernel in training and 0 at
    evaluation; Flax's fused path has no probability dropout and refuses to train with one."""
    from unittest import mock

    config = CONFIGS["h48-3heads"]
    pt = vit_torch.VisionTransformer(config, "sdpa")
    seen: list[float] = []
    fused = torch.nn.functional.scaled_dot_product_attention

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(kwargs.get("dropout_p", 0.0))
        return fused(*args, **kwargs)

    x_pt, x_fx = pixels(config, "float32")
    with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", spy), torch.no_grad():
        pt.train()(x_pt)
        assert seen == [P] * config.num_hidden_layers
        seen.clear()
        pt.eval()(x_pt)
        assert seen == [0.0] * config.num_hidden_layers
    fx = vit_flax.VisionTransformer(config, attention_impl="sdpa")
    params = torch_to_flax(pt.state_dict(), config)
    with pytest.raises(ValueError, match="sdpa.*no attention dropout"):
        fx.apply({"params": params}, x_fx, train=True, rngs={"dropout": jax.random.key(0)})
