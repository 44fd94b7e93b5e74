"""Checkpoint interop against the ecosystems' own code: HF transformers and timm build reference
models with random weights, save them, and both our frameworks load and reproduce them; our npz is
checked by timm's own npz loader. fp32 bound on tiny configs: 1e-5."""

from __future__ import annotations

import functools
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import timm.models.vision_transformer as timm_vit
import torch
import transformers

import vit_flax  # noqa: E402
import vit_torch  # noqa: E402
from parity_tests.twins import max_diff  # noqa: E402
from vit_common import checkpoints  # noqa: E402
from vit_common.checkpoints import UnsupportedCheckpoint  # noqa: E402
from vit_common.checkpoints import npz_arrays as to_npz
from vit_common.config import ViTConfig  # noqa: E402

FP32 = 1e-5
CFG = ViTConfig(hidden_size=48, num_attention_heads=3, num_hidden_layers=2, intermediate_size=96,
                image_size=(24, 36), patch_size=6, num_labels=7)


def _x(config: ViTConfig, seed: int = 0) -> tuple[torch.Tensor, jnp.ndarray]:
    h, w = config.image_hw
    x = np.random.default_rng(seed).normal(size=(2, h, w, config.num_channels)).astype(np.float32)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), jnp.asarray(x)


def _check_both(path, want: torch.Tensor, config=None, kind: str = "cls", **kw) -> None:
    """Our torch and flax from_pretrained reproduce `want` (CLS or logits)."""
    model = vit_torch.from_pretrained(path, config, **kw)
    fx, params = vit_flax.from_pretrained(path, config, **kw)
    x_pt, x_fx = _x(model.config)
    with torch.no_grad():
        got = model(x_pt)
    assert not model.training
    assert (kind == "logits") == isinstance(model, vit_torch.ViTForImageClassification)
    assert max_diff(want, got.numpy()) <= FP32
    assert max_diff(want, fx.apply({"params": params}, x_fx)) <= FP32


def _quiet_save(model, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(path)


# --- HF transformers -------------------------------------------------------------------------

def test_hf_vitmodel_with_pooler(tmp_path) -> None:
    torch.manual_seed(0)
    hf = transformers.ViTModel(transformers.ViTConfig.from_dict(CFG.to_hf())).eval()  # pooler on
    _quiet_save(hf, tmp_path)
    with torch.no_grad():
        want = hf(pixel_values=_x(CFG)[0]).last_hidden_state[:, 0]
    with pytest.warns(UserWarning, match="dropped the HF pooler.*pooler.dense.weight"):
        _check_both(tmp_path, want)


def test_hf_image_classification_dir_and_bare_files(tmp_path) -> None:
    torch.manual_seed(1)
    hf = transformers.ViTForImageClassification(transformers.ViTConfig.from_dict(CFG.to_hf())).eval()
    _quiet_save(hf, tmp_path / "dir")
    with torch.no_grad():
        want = hf(pixel_values=_x(CFG)[0]).logits
    _check_both(tmp_path / "dir", want, kind="logits")
    # bare files: the on-disk names (safetensors) and transformers 5's in-memory names (torch.save)
    (tmp_path / "bare.safetensors").write_bytes((tmp_path / "dir" / "model.safetensors").read_bytes())
    _check_both(tmp_path / "bare.safetensors", want, tmp_path / "dir" / "config.json", kind="logits")
    torch.save(hf.state_dict(), tmp_path / "inmemory.bin")
    _check_both(tmp_path / "inmemory.bin", want, tmp_path / "dir" / "config.json", kind="logits")


def test_hf_loads_our_save_pretrained(tmp_path) -> None:
    torch.manual_seed(2)
    ours = vit_torch.ViTForImageClassification(CFG).eval()
    vit_torch.save_pretrained(ours, tmp_path / "pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf, info = transformers.ViTForImageClassification.from_pretrained(
            tmp_path / "pt", output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    x_pt, _ = _x(CFG)
    with torch.no_grad():
        assert max_diff(hf.eval()(pixel_values=x_pt).logits, ours(x_pt).numpy()) <= FP32
    # the Flax twin's HF Flax directory reads back to the same weights, bit for bit
    fx, params = vit_flax.from_pretrained(tmp_path / "pt")
    vit_flax.save_pretrained(fx, params, tmp_path / "fx")
    assert sorted(p.name for p in (tmp_path / "fx").iterdir()) == ["config.json", "flax_model.msgpack"]
    back = vit_torch.from_pretrained(tmp_path / "fx")
    for k, v in ours.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


# --- timm --------------------------------------------------------------------------------------

def _timm(config: ViTConfig, **kw) -> torch.nn.Module:
    h, w = config.image_hw
    return timm_vit.VisionTransformer(
        img_size=(h, w), patch_size=config.patch_size, in_chans=config.num_channels,
        embed_dim=config.hidden_size, depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        mlp_ratio=config.intermediate_size / config.hidden_size, qkv_bias=config.qkv_bias,
        num_classes=config.num_labels, **kw).eval()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_timm_state_dict(tmp_path, suffix: str, qkv_bias: bool) -> None:
    config = CFG.replace(qkv_bias=qkv_bias, layer_norm_eps=1e-6)
    torch.manual_seed(3)
    t = _timm(config)
    path = tmp_path / f"timm{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": t.state_dict()}, path)  # a training-style wrapper
    else:
        from safetensors.torch import save_file

        save_file(t.state_dict(), str(path))
    x_pt, _ = _x(config)
    with torch.no_grad():
        want = t(x_pt)
    with pytest.raises(ValueError, match="cannot read from timm weights: image_size .*; "
                                         "num_attention_heads"):
        vit_torch.from_pretrained(path)
    _check_both(path, want, config=config, kind="logits")


def test_timm_preset_config_and_headless(tmp_path) -> None:
    config = ViTConfig.from_preset("Ti/16", num_hidden_layers=12, image_size=32, num_labels=0)
    t = _timm(config)  # num_classes=0: no head
    torch.save(t.state_dict(), tmp_path / "ti.pth")
    with pytest.raises(ValueError, match="match preset 'Ti/16' \\(3 heads\\): config='Ti/16'"):
        checkpoints.load_checkpoint(tmp_path / "ti.pth")
    ckpt = checkpoints.load_checkpoint(tmp_path / "ti.pth", "Ti/16")
    assert (ckpt.config.num_attention_heads, ckpt.config.layer_norm_eps, ckpt.config.hidden_act,
            ckpt.config.image_size, ckpt.has_head) == (3, 1e-6, "gelu", 32, False)
    with pytest.raises(ValueError, match="preset 'S/16' does not fit"):
        checkpoints.load_checkpoint(tmp_path / "ti.pth", "S/16")
    x_pt, _ = _x(ckpt.config)
    with torch.no_grad():
        want = t.forward_head(t.forward_features(x_pt), pre_logits=True)  # CLS after the norm
    _check_both(tmp_path / "ti.pth", want, config="Ti/16")


def test_timm_writer_loads_into_timm(tmp_path) -> None:
    config = CFG.replace(layer_norm_eps=1e-6)
    torch.manual_seed(4)
    ours = vit_torch.ViTForImageClassification(config).eval()
    state = {k: v.numpy() for k, v in ours.state_dict().items()}
    checkpoints.save_state_dict(state, tmp_path / "t.safetensors", naming="timm")
    from safetensors.torch import load_file

    t = _timm(config)
    t.load_state_dict(load_file(str(tmp_path / "t.safetensors")), strict=True)
    x_pt, _ = _x(config)
    with torch.no_grad():
        assert max_diff(t(x_pt), ours(x_pt).numpy()) <= FP32


# --- Google npz --------------------------------------------------------------------------------

def _tanh_timm(config: ViTConfig, **kw) -> torch.nn.Module:
    return _timm(config, act_layer=functools.partial(torch.nn.GELU, approximate="tanh"), **kw)


def test_npz_writer_checked_by_timms_loader(tmp_path) -> None:
    config = CFG.replace(hidden_act="gelu_new", layer_norm_eps=1e-6, image_size=36)
    torch.manual_seed(5)
    ours = vit_torch.ViTForImageClassification(config).eval()
    state = {k: v.numpy() for k, v in ours.state_dict().items()}
    checkpoints.save_npz(state, config, tmp_path / "g.npz")
    t = _tanh_timm(config)
    timm_vit._load_weights(t, str(tmp_path / "g.npz"))
    x_pt, _ = _x(config)
    with torch.no_grad():
        want = t(x_pt)
        assert max_diff(want, ours(x_pt).numpy()) <= FP32
    _check_both(tmp_path / "g.npz", want, kind="logits")  # no config: heads, tanh, eps from npz
    back = checkpoints.load_checkpoint(tmp_path / "g.npz")
    assert back.config == config and back.format == "npz (vit)"
    for k, v in state.items():
        assert np.array_equal(back.state[k], v) and back.state[k].dtype == v.dtype, k


def _big_vision_npz(path, config: ViTConfig, scanned: bool, seed: int = 0) -> None:
    """A big_vision-layout checkpoint from random arrays, names written out here independently."""
    rng = np.random.default_rng(seed)
    h, heads, hd, mlp, p = (config.hidden_size, config.num_attention_heads, config.head_dim,
                            config.intermediate_size, config.patch_size)
    r = lambda *shape: (0.2 * rng.normal(size=shape)).astype(np.float32)  # noqa: E731
    block = {
        "LayerNorm_0/scale": 1 + r(h), "LayerNorm_0/bias": r(h),
        "LayerNorm_1/scale": 1 + r(h), "LayerNorm_1/bias": r(h),
        "MlpBlock_0/Dense_0/kernel": r(h, mlp), "MlpBlock_0/Dense_0/bias": r(mlp),
        "MlpBlock_0/Dense_1/kernel": r(mlp, h), "MlpBlock_0/Dense_1/bias": r(h),
        "MultiHeadDotProductAttention_0/out/kernel": r(heads, hd, h),
        "MultiHeadDotProductAttention_0/out/bias": r(h),
        **{f"MultiHeadDotProductAttention_0/{n}/{leaf}": r(*shape)
           for n in ("query", "key", "value")
           for leaf, shape in (("kernel", (h, heads, hd)), ("bias", (heads, hd)))},
    }
    arrays = {
        "params/img/embedding/kernel": r(p, p, config.num_channels, h),
        "params/img/embedding/bias": r(h), "params/img/cls": r(1, 1, h),
        "params/img/pos_embedding": r(1, config.num_patches, h),
        "params/img/Transformer/encoder_norm/scale": 1 + r(h),
        "params/img/Transformer/encoder_norm/bias": r(h),
        "params/img/head/kernel": r(h, config.num_labels), "params/img/head/bias": r(config.num_labels),
    }
    for name in block:
        layers = [block[name] if i == 0 else r(*block[name].shape) for i in range(config.num_hidden_layers)]
        if scanned:
            arrays[f"params/img/Transformer/encoderblock/{name}"] = np.stack(layers)
        else:
            arrays.update({f"params/img/Transformer/encoderblock_{i}/{name}": a for i, a in enumerate(layers)})
    np.savez(path, **arrays)


@pytest.mark.parametrize("scanned", [False, True])
def test_big_vision_npz(tmp_path, scanned: bool) -> None:
    config = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64,
                       image_size=24, patch_size=8, num_labels=5, hidden_act="gelu_new",
                       layer_norm_eps=1e-6)
    _big_vision_npz(tmp_path / "bv.npz", config, scanned)
    # big_vision adds position embeddings before prepending [CLS]: timm's no_embed_class
    t = _tanh_timm(config, no_embed_class=True)
    timm_vit._load_weights(t, str(tmp_path / "bv.npz"))
    x_pt, _ = _x(config)
    with torch.no_grad():
        want = t(x_pt)
    assert checkpoints.load_checkpoint(tmp_path / "bv.npz").format == (
        f"npz (big_vision{', scanned' if scanned else ''})")
    _check_both(tmp_path / "bv.npz", want, kind="logits")


def test_big_vision_scanned_npz_loads_into_the_scanned_twin(tmp_path) -> None:
    """A scanned big_vision checkpoint (encoderblock with a leading layer axis) goes straight to the
    scanned Flax twin: the stacked MLP kernels are the file's own arrays, the logits timm's."""
    config = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=3, intermediate_size=64,
                       image_size=24, patch_size=8, num_labels=5, hidden_act="gelu_new", layer_norm_eps=1e-6)
    _big_vision_npz(tmp_path / "bv.npz", config, scanned=True)
    model, params = vit_flax.from_pretrained(tmp_path / "bv.npz", scan_layers=True)
    stacked = np.load(tmp_path / "bv.npz")["params/img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"]
    np.testing.assert_array_equal(np.asarray(params["vit"]["encoder"]["layer"]["intermediate"]["dense"]["kernel"]),
                                  stacked)
    t = _tanh_timm(config, no_embed_class=True)
    timm_vit._load_weights(t, str(tmp_path / "bv.npz"))
    x_pt, x_fx = _x(config)
    with torch.no_grad():
        want = t(x_pt).numpy()
    got = np.asarray(model.apply({"params": params}, x_fx))
    assert float(np.abs(got - want).max()) <= 2e-5


def test_npz_opt_target_prefix_and_pre_logits(tmp_path) -> None:
    config = CFG.replace(hidden_act="gelu_new", layer_norm_eps=1e-6, image_size=36)
    torch.manual_seed(6)
    ours = vit_torch.ViTForImageClassification(config).eval()
    arrays = to_npz({k: v.numpy() for k, v in ours.state_dict().items()}, config)
    np.savez(tmp_path / "old.npz", **{f"opt/target/{k}": v for k, v in arrays.items()})
    x_pt, _ = _x(config)
    with torch.no_grad():
        want = ours(x_pt)
    _check_both(tmp_path / "old.npz", want, kind="logits")

    h = config.hidden_size
    rng = np.random.default_rng(0)
    arrays.update({"pre_logits/kernel": rng.normal(size=(h, h)).astype(np.float32),
                   "pre_logits/bias": np.zeros(h, np.float32)})
    np.savez(tmp_path / "21k.npz", **arrays)
    with pytest.raises(UnsupportedCheckpoint, match="pre_logits.*drop_pre_logits=True"):
        vit_torch.from_pretrained(tmp_path / "21k.npz")
    backbone = vit_torch.from_pretrained(tmp_path / "21k.npz", drop_pre_logits=True)
    assert isinstance(backbone, vit_torch.VisionTransformer)
    with torch.no_grad():
        assert max_diff(ours.vit(x_pt), backbone(x_pt).numpy()) == 0.0
