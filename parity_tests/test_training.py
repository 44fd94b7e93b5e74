"""Training parity: gradients, optimizer steps and dropout, optax + jax against torch autograd +
torch.optim, from converted weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

import vit_flax
import vit_torch
from parity_tests.twins import FAMILY_CONFIGS, TINY_CONFIGS, make_twin, pixels
from vit_common.config import ViTConfig
from vit_common.convert import flatten_params, torch_to_flax

GRAD_REL = {"float64": 1e-10, "float32": 1e-4}
STEP_REL = 1e-10  # float64, parameters after every optimizer step


def _labels(n: int, num_labels: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_labels, n)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the tensor's largest magnitude."""
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))


def _compare_trees(torch_named: dict[str, np.ndarray], flax_tree, config, bound: float, what: str,
                   zero_grad_keys: bool = False, key_bias_abs: float | None = None) -> None:
    """Per-tensor relative error. With `zero_grad_keys`, the key biases are instead checked to be
    ~0 in both: softmax ignores a shift shared by every key, so their exact gradient is 0 and
    only rounding noise is left to compare. With qk-norm that shift is k_norm's bias (the key
    projection's bias then passes through the norm and has a real gradient); the MAP head's
    attention has no qk-norm."""
    shared_shift = ("k_norm", "bias") if config.qk_norm else ("key", "bias")
    want = flatten_params(torch_to_flax(torch_named, config))
    got = flatten_params(flax_tree)
    assert set(want) == set(got)
    scale = max(float(np.abs(v).max()) for v in want.values())
    worst = (0.0, "")
    for k in want:
        a, b = want[k], np.asarray(got[k])
        if zero_grad_keys and k[-2:] == (("key", "bias") if "attention_pool" in k else shared_shift):
            assert max(np.abs(a).max(), np.abs(b).max()) <= bound * scale, k
            continue
        if key_bias_abs is not None and k[-2:] == ("key", "bias"):
            assert float(np.abs(a - b).max()) <= key_bias_abs, k
            continue
        worst = max(worst, (_rel(a, b), "/".join(k)))
    assert worst[0] <= bound, f"{what}: worst relative error {worst[0]:.2e} at {worst[1]}"


def _flax_loss(model, x, y):
    def loss(params, x=x):
        logits = model.apply({"params": params}, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss


# float64 is the contract (<= 1e-10); the float32 runs are in the slow set (CI time)
@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
@pytest.mark.parametrize("config_name", ["h48-3heads", "nonsquare-noqkvbias-tanh", "1channel-pttanh-eps1e-12"])
def test_gradients_match(config_name: str, dtype: str) -> None:
    t = make_twin(TINY_CONFIGS[config_name], dtype, "torch->flax")
    x_pt, x_fx = pixels(t.config, dtype, batch=4)
    y = _labels(4, t.config.num_labels)
    pt = t.torch_model.train()  # dropout probabilities are 0 in these configs
    x_pt.requires_grad_(True)
    F.cross_entropy(pt(x_pt), torch.from_numpy(y)).backward()
    grads_pt = {k: p.grad.numpy() for k, p in pt.named_parameters()}
    loss = _flax_loss(t.flax_model, x_fx, jnp.asarray(y))
    grads_fx = jax.grad(loss)(t.params)
    _compare_trees(grads_pt, grads_fx, t.config, GRAD_REL[dtype], f"{config_name} {dtype} params",
                   zero_grad_keys=True)
    grad_x = jax.grad(lambda x: loss(t.params, x))(x_fx)  # (B, H, W, C)
    assert _rel(x_pt.grad.numpy().transpose(0, 2, 3, 1), np.asarray(grad_x)) <= GRAD_REL[dtype]


# every switch on at once (two configs: a DeiT / DINOv2 / CLIP mix with both heads, and a
# MAP-pooled model with no [CLS], big_vision's fixed table and the pooled final norm)
ALL_SWITCHES: dict[str, ViTConfig] = {
    "all-switches-cls": ViTConfig(
        hidden_size=24, num_attention_heads=2, num_hidden_layers=2, intermediate_size=20,
        image_size=(12, 8), patch_size=4, num_labels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        distillation_token=True, num_register_tokens=2, pre_norm=True, patch_bias=False,
        layer_scale=True, layerscale_value=0.5, mlp_type="swiglu", qk_norm=True, mask_token=True,
        position_embedding_resampling="bicubic_antialias"),
    "all-switches-map": ViTConfig(
        hidden_size=24, num_attention_heads=3, num_hidden_layers=2, intermediate_size=32,
        image_size=(8, 12), patch_size=4, num_labels=2, hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6, class_token=False, num_register_tokens=1, pooling="map",
        final_norm="pooled", position_embedding_type="sincos2d", pre_norm=True, layer_scale=True,
        layerscale_value=0.7, mlp_type="swiglu", qk_norm=True, qkv_bias=False),
}


@pytest.mark.parametrize(("config_name", "dtype"), [
    *((name, "float64") for name in ALL_SWITCHES),
    *(pytest.param(name, "float32", marks=pytest.mark.slow) for name in ALL_SWITCHES),
    *(pytest.param(name, "float64", marks=pytest.mark.slow) for name in FAMILY_CONFIGS)])
def test_gradients_match_with_the_family_switches(config_name: str, dtype: str) -> None:
    """Gradients of every parameter (LayerScale, SwiGLU halves, qk-norm, MAP probe and head, both
    DeiT heads, registers...) and of the pixels; an unused tensor (the mask token) has none in
    either."""
    config = ALL_SWITCHES.get(config_name) or FAMILY_CONFIGS[config_name]
    t = make_twin(config, dtype, "torch->flax")
    x_pt, x_fx = pixels(t.config, dtype, batch=3)
    y = _labels(3, t.config.num_labels)
    pt = t.torch_model.train()  # dropout probabilities are 0 in these configs
    x_pt.requires_grad_(True)
    F.cross_entropy(pt(x_pt), torch.from_numpy(y)).backward()
    grads_pt = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).numpy()
                for k, p in pt.named_parameters()}
    loss = _flax_loss(t.flax_model, x_fx, jnp.asarray(y))
    grads_fx = jax.grad(loss)(t.params)
    if config.mask_token:
        assert not np.asarray(grads_fx["vit"]["embeddings"]["mask_token"]).any()
        assert pt.vit.embeddings.mask_token.grad is None
    _compare_trees(grads_pt, grads_fx, t.config, GRAD_REL[dtype], f"{config_name} {dtype} params",
                   zero_grad_keys=True)
    grad_x = jax.grad(lambda x: loss(t.params, x))(x_fx)  # (B, H, W, C)
    assert _rel(x_pt.grad.numpy().transpose(0, 2, 3, 1), np.asarray(grad_x)) <= GRAD_REL[dtype]


def _no_decay(path: str) -> bool:
    """Biases and LayerNorm parameters: the usual weight-decay exclusions."""
    return path.endswith(".bias") or "layernorm" in path


@pytest.mark.parametrize("optimizer", ["adamw", "adamw-masked", "sgd-momentum", "sgd-momentum-wd"])
def test_optimizer_steps_match(optimizer: str) -> None:
    """Five steps on different batches; parameters compared after every step (float64).

    Mapping: torch AdamW(lr, betas, eps, weight_decay) == optax.adamw(lr, b1, b2, eps,
    weight_decay) (both decoupled: p -= lr * (adam + wd * p)); torch excludes parameters from decay
    with a param group of weight_decay=0, optax with mask=. torch SGD(lr, momentum,
    weight_decay) == optax.chain(add_decayed_weights(wd), sgd(lr, momentum)) (L2 added to the
    gradient before momentum)."""
    config = TINY_CONFIGS["h48-3heads"]
    t = make_twin(config, "float64", "torch->flax")
    pt = t.torch_model.train()
    named = dict(pt.named_parameters())
    lr, wd = 1e-2, 0.1
    if optimizer.startswith("adamw"):
        if optimizer == "adamw-masked":
            groups = [{"params": [p for k, p in named.items() if not _no_decay(k)], "weight_decay": wd},
                      {"params": [p for k, p in named.items() if _no_decay(k)], "weight_decay": 0.0}]
            mask = jax.tree_util.tree_map_with_path(
                lambda path, _: not (path[-1].key == "bias" or any("layernorm" in str(p.key) for p in path)),
                t.params)
        else:
            groups, mask = [{"params": list(named.values()), "weight_decay": wd}], None
        opt_pt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)
        tx = optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=wd, mask=mask)
    else:
        sgd_wd = wd if optimizer.endswith("-wd") else 0.0
        opt_pt = torch.optim.SGD(pt.parameters(), lr=lr, momentum=0.9, weight_decay=sgd_wd)
        tx = optax.chain(optax.add_decayed_weights(sgd_wd), optax.sgd(lr, momentum=0.9))
    params = t.params
    opt_state = tx.init(params)
    for step in range(5):
        x_pt, x_fx = pixels(config, "float64", batch=4, seed=10 + step)
        y = _labels(4, config.num_labels, seed=20 + step)
        opt_pt.zero_grad()
        F.cross_entropy(pt(x_pt), torch.from_numpy(y)).backward()
        opt_pt.step()
        grads = jax.grad(_flax_loss(t.flax_model, x_fx, jnp.asarray(y)))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        state = {k: p.detach().numpy() for k, p in pt.named_parameters()}
        # key biases get only rounding noise as gradient (see _compare_trees), which Adam divides by
        # sqrt(v) + eps: their steps differ by up to lr * noise / eps ~ 1e-11, so absolutely
        _compare_trees(state, params, config, STEP_REL, f"{optimizer} step {step + 1}",
                       key_bias_abs=1e-9)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_in_training_mode(p: float) -> None:
    """Dropout on: kept entries scaled by 1/(1-p), dropped ones 0, keep rate 1-p (within 4 sigma);
    checked statistically in both frameworks, not bit-for-bit (their RNGs differ)."""
    config = TINY_CONFIGS["h48-3heads"].replace(hidden_dropout_prob=p)
    n_checked = []
    # torch: ViTEmbeddings' dropout, train vs eval on the same pixels
    torch.manual_seed(0)
    emb = vit_torch.ViTEmbeddings(config)
    vit_torch.init_weights(config, emb)
    x_pt, x_fx = pixels(config, "float32", batch=64)
    with torch.no_grad():
        clean = emb.eval()(x_pt).numpy()
        noisy = emb.train()(x_pt).numpy()
    n_checked.append((clean, noisy))
    # flax: the same module with train=True and a dropout rng
    fx = vit_flax.ViTEmbeddings(config)
    params = fx.init(jax.random.key(0), x_fx)
    clean_fx = np.asarray(fx.apply(params, x_fx))
    noisy_fx = np.asarray(fx.apply(params, x_fx, train=True, rngs={"dropout": jax.random.key(1)}))
    n_checked.append((clean_fx, noisy_fx))
    for clean, noisy in n_checked:
        kept = noisy != 0
        rate = kept.mean()
        sigma = np.sqrt(p * (1 - p) / kept.size)
        assert abs(rate - (1 - p)) <= 4 * sigma, (rate, 1 - p)
        np.testing.assert_allclose(noisy[kept], clean[kept] / (1 - p), rtol=1e-5, atol=1e-6)
