"""NaFlex parity across the twins: patch inputs of images of different aspect ratios padded
together, masked attention and pooling, the per-image position resize. fp64 to 1e-12, fp32 to
1e-5, gradients fp64 to 1e-10, every parameter and the patches; scanned layers too."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

from parity_tests.test_training import GRAD_REL, _compare_trees, _rel
from parity_tests.twins import TOLERANCE, make_twin
from vit_common.config import ViTConfig

# SigLIP 2 NaFlex's tower, and the same mechanisms beside a [CLS] token, registers and gap pooling
CONFIGS = {
    "siglip2": ViTConfig(hidden_size=24, num_attention_heads=3, num_hidden_layers=2, intermediate_size=40,
                         image_size=(16, 12), patch_size=4, num_labels=3, class_token=False, pooling="map",
                         hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                         position_embedding_resampling="bilinear_antialias", classifier_input="patch_mean"),
    "cls-registers-gap": ViTConfig(hidden_size=24, num_attention_heads=2, num_hidden_layers=2, intermediate_size=20,
                                   image_size=12, patch_size=3, num_labels=2, num_register_tokens=2,
                                   pooling="gap", final_norm="pooled", layer_scale=True, layerscale_value=0.5,
                                   qk_norm=True, position_embedding_resampling="bilinear_antialias"),
}
SHAPES = [(3, 5), (7, 2), (1, 1)]  # wide, tall, one patch: padded together to 16 rows


def _inputs(config: ViTConfig, dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    width = config.patch_size ** 2 * config.num_channels
    x = np.zeros((len(SHAPES), 16, width))
    mask = np.zeros((len(SHAPES), 16), bool)
    for i, (h, w) in enumerate(SHAPES):
        x[i, :h * w] = rng.normal(size=(h * w, width))
        mask[i, :h * w] = True
    x = x.astype(np.float64 if dtype == "float64" else np.float32)
    shapes = np.asarray(SHAPES, np.int64)
    return (torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(shapes)), (jnp.asarray(x), jnp.asarray(mask),
                                                                                      jnp.asarray(shapes))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("direction", ["torch->flax", "flax->torch"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_naflex_parity(name: str, direction: str, dtype: str) -> None:
    t = make_twin(CONFIGS[name], dtype, direction)
    (x, m, s), (xf, mf, sf) = _inputs(t.config, dtype)
    with torch.no_grad():
        logits = t.torch_model(x, pixel_attention_mask=m, spatial_shapes=s)
        pooled = t.torch_model.vit(x, pixel_attention_mask=m, spatial_shapes=s)
        tokens = t.torch_model.vit.forward_features(x, pixel_attention_mask=m, spatial_shapes=s)
    b = t.bound
    got_logits = np.asarray(b(xf, pixel_attention_mask=mf, spatial_shapes=sf))
    got_pooled = np.asarray(b.vit(xf, pixel_attention_mask=mf, spatial_shapes=sf))
    got_tokens = np.asarray(b.vit.forward_features(xf, pixel_attention_mask=mf, spatial_shapes=sf))
    bound = TOLERANCE[dtype]
    assert np.abs(logits.numpy() - got_logits).max() <= bound
    assert np.abs(pooled.numpy() - got_pooled).max() <= bound
    assert np.abs(tokens.numpy() - got_tokens).max() <= bound  # padding rows too: the same function


@pytest.mark.parametrize("name", list(CONFIGS))
def test_naflex_is_the_model_on_each_image_alone(name: str) -> None:
    """Each image of the padded batch gets what it gets alone as pixels: the patch Linear is the
    conv, the per-image resize the table resampled to its grid (bilinear, antialiased), the masks
    leave the real tokens as they are."""
    t = make_twin(CONFIGS[name], "float64", "torch->flax")
    (x, m, s), _ = _inputs(t.config, "float64")
    p, c = t.config.patch_size, t.config.num_channels
    with torch.no_grad():
        batched = t.torch_model(x, pixel_attention_mask=m, spatial_shapes=s)
        for i, (h, w) in enumerate(SHAPES):
            patches = x[i, :h * w].reshape(h, w, p, p, c)
            image = patches.permute(4, 0, 2, 1, 3).reshape(1, c, h * p, w * p)  # (1, C, H, W)
            alone = t.torch_model(image, interpolate_pos_encoding=True)
            assert float((alone[0] - batched[i]).abs().max()) <= 1e-12, (i, h, w)


@pytest.mark.parametrize("scan", [False, True])
def test_naflex_gradients_match(scan: bool) -> None:
    config = CONFIGS["siglip2"]
    t = make_twin(config, "float64", "torch->flax")
    (x, m, s), (xf, mf, sf) = _inputs(config, "float64")
    y = np.array([0, 2, 1])
    pt = t.torch_model.train()
    x.requires_grad_(True)
    F.cross_entropy(pt(x, pixel_attention_mask=m, spatial_shapes=s), torch.from_numpy(y)).backward()
    grads_pt = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).numpy() for k, p in pt.named_parameters()}
    import vit_flax
    from vit_common.convert import stack_layers, unstack_layers

    model = vit_flax.ViTForImageClassification(config, dtype=jnp.float64, param_dtype=jnp.float64, scan_layers=scan)
    params = stack_layers(t.params) if scan else t.params

    def loss(params, xf=xf):
        logits = model.apply({"params": params}, xf, train=True, pixel_attention_mask=mf, spatial_shapes=sf)
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y)).mean()

    grads_fx = jax.grad(loss)(params)
    _compare_trees(grads_pt, unstack_layers(grads_fx) if scan else grads_fx, config, GRAD_REL["float64"],
                   "naflex params", zero_grad_keys=True)
    grad_x = jax.grad(lambda xf: loss(params, xf))(xf)
    real = m.numpy()
    assert _rel(x.grad.numpy()[real], np.asarray(grad_x)[real]) <= GRAD_REL["float64"]
    assert not x.grad.numpy()[~real].any() and not np.asarray(grad_x)[~real].any()  # padding: no gradient
