"""The ViT family against its sources: HF transformers and timm models with random weights (random
LayerScale in (0.2, 1): at its 1e-5 init a mapping bug would hide), loaded through from_pretrained
in both twins, must reproduce the source's pooled output, tokens and logits; what we write back
(vit-convert --to hf / --to timm) must load in the source with no missing or unexpected keys and
reproduce them again."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch as safetensors_torch
import timm
import torch
import transformers

import vit_flax  # noqa: E402
import vit_torch  # noqa: E402
from vit_common import checkpoints  # noqa: E402
from vit_common.config import ViTConfig  # noqa: E402

BOUND = 2e-5  # fp32, the bound for every family and direction
KW = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
          image_size=28, patch_size=14)


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lambda1" in name or name.endswith("gamma"):
                p.copy_(0.2 + 0.8 * torch.rand(p.shape, generator=g))  # LayerScale in (0.2, 1)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


_TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48)
HF_FAMILIES = {
    "dinov2": lambda: transformers.Dinov2Model(transformers.Dinov2Config(**KW)),
    "dinov2-swiglu": lambda: transformers.Dinov2Model(transformers.Dinov2Config(**KW, use_swiglu_ffn=True)),
    "dinov2-registers": lambda: transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(**KW, num_register_tokens=3)),
    "clip-vision": lambda: transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**KW)),
    "clip-vision-laion-gelu": lambda: transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(**KW, hidden_act="gelu")),
    "siglip-vision": lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**KW)),
    "deit-distilled-teacher": lambda: transformers.DeiTForImageClassificationWithTeacher(
        transformers.DeiTConfig(**KW, num_labels=5)),
    "deit-model": lambda: transformers.DeiTModel(transformers.DeiTConfig(**KW)),
    # two-tower checkpoints: the vision tower under "vision_model.", a text tower beside it
    "clip-two-tower": lambda: transformers.CLIPModel(transformers.CLIPConfig(
        vision_config=KW, text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=48))),
    "siglip-two-tower": lambda: transformers.SiglipModel(transformers.SiglipConfig(
        vision_config=KW, text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=48))),
    # every HF classifier head: what each reads is classifier_input
    "dinov2-classifier": lambda: transformers.Dinov2ForImageClassification(
        transformers.Dinov2Config(**KW, num_labels=5)),  # [CLS] next to the patch mean, 2 x hidden
    "dinov2-registers-classifier": lambda: transformers.Dinov2WithRegistersForImageClassification(
        transformers.Dinov2WithRegistersConfig(**KW, num_register_tokens=2, num_labels=5)),
    "clip-classifier": lambda: transformers.CLIPForImageClassification(transformers.CLIPConfig(
        vision_config=KW, text_config=_TEXT, num_labels=5)),  # patch mean before post_layernorm
    "siglip-classifier": lambda: transformers.SiglipForImageClassification(transformers.SiglipConfig(
        vision_config=KW, text_config=_TEXT, num_labels=5)),  # mean of the normalised tokens
    "deit-cls-classifier": lambda: transformers.DeiTForImageClassification(
        transformers.DeiTConfig(**KW, num_labels=5)),  # [CLS] only, the DIST token unused
}


def _hf_outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        if isinstance(model, (transformers.CLIPModel, transformers.SiglipModel)):
            out = model.vision_model(pixel_values=x)
        else:
            out = model(pixel_values=x)
        # CLIP's image embedding: the pooled output after visual_projection, as CLIPModel gives it
        image_embeds = (model.get_image_features(pixel_values=x).pooler_output
                        if isinstance(model, transformers.CLIPModel) else getattr(out, "image_embeds", None))
    if hasattr(out, "logits") and out.logits is not None:
        return {"logits": out.logits}
    tokens = out.last_hidden_state
    pooled = getattr(out, "pooler_output", None) if isinstance(model, transformers.DeiTModel) is False else None
    if image_embeds is not None:
        pooled = image_embeds
    if pooled is None:  # DeiT: (CLS + DIST) / 2, what HF's WithTeacher head averages over
        pooled = (tokens[:, 0] + tokens[:, 1]) / 2
    return {"pooled": pooled, "tokens": tokens}


def _ours(path, x: torch.Tensor, config=None) -> list[dict[str, np.ndarray]]:
    """The pooled output, tokens and logits of both twins loaded from `path`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the two-tower note, DeiT's dropped pooler
        pt = vit_torch.from_pretrained(path, config)
        fx, params = vit_flax.from_pretrained(path, config)
    x_fx = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    with torch.no_grad():
        if isinstance(pt, vit_torch.ViTForImageClassification):
            torch_out = {"logits": pt(x)}
        else:
            torch_out = {"pooled": pt(x), "tokens": pt.forward_features(x)}
    bound = fx.bind({"params": params})
    if "logits" in torch_out:
        flax_out = {"logits": bound(x_fx)}
    else:
        flax_out = {"pooled": bound(x_fx), "tokens": bound.forward_features(x_fx)}
    return [{k: v.numpy() for k, v in torch_out.items()}, {k: np.asarray(v) for k, v in flax_out.items()}]


def _check(reference: dict[str, torch.Tensor], ours: list[dict[str, np.ndarray]], what: str) -> None:
    for twin, out in zip(("vit_torch", "vit_flax"), ours):
        for key, ref in reference.items():
            if key == "tokens" and key not in out:
                continue
            diff = float(np.abs(out[key] - ref.numpy()).max())
            assert diff <= BOUND, f"{what}: {twin} {key} max |diff| {diff:.2e} > {BOUND}"


@pytest.mark.parametrize("family", list(HF_FAMILIES))
def test_hf_family_loads_and_writes_back(family: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = _randomise(HF_FAMILIES[family]())
    model.save_pretrained(tmp_path / "hf")
    x = torch.randn(2, 3, 28, 28)
    reference = _hf_outputs(model, x)
    _check(reference, _ours(tmp_path / "hf", x), f"{family} from HF")
    # written back as HF (vit-convert --to hf): the HF class loads it strictly and agrees
    ckpt = checkpoints.load_checkpoint(tmp_path / "hf") if "two-tower" not in family else None
    if ckpt is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = checkpoints.load_checkpoint(tmp_path / "hf")
    checkpoints.save_hf(ckpt.state, ckpt.config, tmp_path / "ours")
    cls = type(model.vision_model if hasattr(model, "vision_model") and not hasattr(model, "embeddings")
               else model)
    if family.endswith("-classifier"):
        cls = type(model)
    elif family.startswith(("clip-two", "siglip-two")):  # CLIP's tower keeps its projection
        cls = transformers.CLIPVisionModelWithProjection if family.startswith("clip") else transformers.SiglipVisionModel
    if family == "deit-model":
        back = transformers.DeiTModel.from_pretrained(tmp_path / "ours", add_pooling_layer=False,
                                                      output_loading_info=True)
    else:
        back = cls.from_pretrained(tmp_path / "ours", output_loading_info=True)
    reloaded, info = back
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    again = _hf_outputs(reloaded.eval(), x)
    for key, ref in reference.items():
        if key == "tokens" and family.startswith("deit-model"):
            continue
        assert float((again[key] - ref).abs().max()) <= BOUND, f"{family}: {key} after the round trip"


TIMM_FAMILIES = {
    "deit-distilled": ("deit_tiny_distilled_patch16_224", dict(num_classes=5)),
    "dinov2": ("vit_small_patch14_dinov2", dict()),
    "dinov2-swiglu-giant-style": ("vit_giant_patch14_dinov2", dict(num_classes=4)),
    "dinov2-reg4": ("vit_small_patch14_reg4_dinov2", dict(dynamic_img_size=True)),
    "clip": ("vit_base_patch16_clip_224", dict()),
    "clip-quickgelu": ("vit_base_patch16_clip_quickgelu_224", dict()),
    "siglip-map": ("vit_base_patch16_siglip_224", dict()),
    "gap-fc-norm": ("vit_base_patch16_224", dict(class_token=False, global_pool="avg", num_classes=3)),
    "reg4-gap": ("vit_base_patch16_reg4_gap_256", dict()),
    "qk-norm-layerscale": ("vit_small_patch16_224", dict(qk_norm=True, init_values=0.5, num_classes=3)),
}
# the small sizes every timm model is built with here
TIMM_SMALL = dict(embed_dim=32, depth=2, num_heads=2, img_size=28, patch_size=14)


@pytest.mark.parametrize("family", list(TIMM_FAMILIES))
def test_timm_family_loads_and_writes_back(family: str, tmp_path) -> None:
    name, kwargs = TIMM_FAMILIES[family]
    kwargs = {**TIMM_SMALL, **kwargs}
    torch.manual_seed(0)
    model = _randomise(timm.create_model(name, pretrained=False, **kwargs))
    safetensors_torch.save_file(model.state_dict(), str(tmp_path / "timm.safetensors"))
    config = ViTConfig.from_timm(name, **kwargs)
    cls = vit_torch.ViTForImageClassification if config.num_labels else vit_torch.VisionTransformer
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in cls(config).parameters())
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        tokens = model.forward_features(x)
        reference = ({"logits": model(x)} if config.num_labels else
                     {"pooled": model.forward_head(tokens, pre_logits=True), "tokens": tokens})
    _check(reference, _ours(tmp_path / "timm.safetensors", x, config), f"{family} from timm")
    # written back as timm (vit-convert --to timm): timm loads it strictly and agrees
    ckpt = checkpoints.load_checkpoint(tmp_path / "timm.safetensors", config)
    checkpoints.save_state_dict(ckpt.state, tmp_path / "ours.safetensors", naming="timm", config=config)
    fresh = timm.create_model(name, pretrained=False, **kwargs).eval()
    fresh.load_state_dict(safetensors_torch.load_file(str(tmp_path / "ours.safetensors")), strict=True)
    with torch.no_grad():
        assert float((fresh(x) - model(x)).abs().max()) <= BOUND


def test_dinov2_registers_hf_to_timm_folds_the_cls_slot(tmp_path) -> None:
    """HF's DINOv2-with-registers table has a [CLS] slot, timm's (no_embed_class) has not: the
    slot is folded into the token, and timm's model reproduces HF's CLS exactly."""
    torch.manual_seed(0)
    hf = _randomise(transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(**KW, num_register_tokens=4)))
    hf.save_pretrained(tmp_path / "hf")
    ckpt = checkpoints.load_checkpoint(tmp_path / "hf")
    checkpoints.save_state_dict(ckpt.state, tmp_path / "t.safetensors", naming="timm", config=ckpt.config)
    kwargs = {**TIMM_SMALL, "mlp_ratio": 4.0, "num_classes": 0}
    tm = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, **kwargs).eval()
    tm.load_state_dict(safetensors_torch.load_file(str(tmp_path / "t.safetensors")), strict=True)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        diff = (tm.forward_head(tm.forward_features(x), pre_logits=True) - hf(pixel_values=x).pooler_output)
    assert float(diff.abs().max()) <= BOUND


@pytest.mark.parametrize(("name", "kwargs"), [
    ("vit_base_patch16_224", dict(pos_embed="rope")),
    ("vit_base_patch16_224", dict(global_pool="max")),
    ("eva02_enormous_patch14_clip_224", dict()),  # post-norm blocks: no switch of ours
    ("vit_base_patch16_224", dict(block_fn="ParallelBlock")),
])
def test_from_timm_refuses_by_name(name: str, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="rope|max|Eva|block_fn"):
        ViTConfig.from_timm(name, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "deit_base_distilled_patch16_224", "vit_small_patch14_dinov2", "vit_giant_patch14_dinov2",
    "vit_base_patch14_reg4_dinov2", "vit_large_patch14_clip_224", "vit_base_patch16_siglip_224",
    "vit_so400m_patch14_siglip_224", "vit_base_patch16_gap_224"])
def test_published_architectures_have_timms_parameter_count(name: str) -> None:
    import jax

    import vit_flax.model as fm

    config = ViTConfig.from_timm(name)
    with torch.device("meta"):
        theirs = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
        cls = vit_torch.ViTForImageClassification if config.num_labels else vit_torch.VisionTransformer
        ours = sum(p.numel() for p in cls(config).parameters())
    h, w = config.image_hw
    flax_cls = fm.ViTForImageClassification if config.num_labels else fm.VisionTransformer
    shapes = jax.eval_shape(flax_cls(config).init, jax.random.key(0), jnp.zeros((1, h, w, 3)))
    flax_count = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    assert ours == theirs == flax_count


@pytest.mark.parametrize("family", ["dinov2", "dinov2-registers", "clip-vision", "siglip-vision"])
def test_any_resolution_equals_the_sources_resampling(family: str, tmp_path) -> None:
    """interpolate_pos_encoding at another grid (up in height, down in width) equals HF's own
    resampling: plain bicubic for DINOv2, CLIP and SigLIP, antialiased for DINOv2 with registers."""
    torch.manual_seed(0)
    small = HF_FAMILIES[family]()
    kw = dict(KW, image_size=56)  # a 4 x 4 grid: 70 px (5 patches) grows it, 28 px (2) shrinks it
    model = _randomise(type(small)(type(small.config)(**{**small.config.to_dict(), **kw})))
    model.save_pretrained(tmp_path / "hf")
    pt = vit_torch.from_pretrained(tmp_path / "hf")
    fx, params = vit_flax.from_pretrained(tmp_path / "hf")
    for h, w in ((70, 28), (42, 70)):
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = model(pixel_values=x, interpolate_pos_encoding=True).pooler_output
            ours = pt(x, interpolate_pos_encoding=True)
        theirs = fx.apply({"params": params}, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)),
                          interpolate_pos_encoding=True)
        assert float((ours - ref).abs().max()) <= BOUND, (family, h, w)
        assert float(np.abs(np.asarray(theirs) - ref.numpy()).max()) <= BOUND, (family, h, w)


def test_timm_dynamic_img_size_resamples_as_timm(tmp_path) -> None:
    kwargs = {**TIMM_SMALL, "img_size": 56, "dynamic_img_size": True}
    torch.manual_seed(0)
    model = _randomise(timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, **kwargs))
    safetensors_torch.save_file(model.state_dict(), str(tmp_path / "t.safetensors"))
    config = ViTConfig.from_timm("vit_small_patch14_reg4_dinov2", **kwargs)
    pt = vit_torch.from_pretrained(tmp_path / "t.safetensors", config)
    x = torch.randn(1, 3, 42, 70)
    with torch.no_grad():
        ref = model.forward_head(model.forward_features(x), pre_logits=True)
        assert float((pt(x, interpolate_pos_encoding=True) - ref).abs().max()) <= BOUND


def test_sincos2d_is_big_visions_table() -> None:
    """posemb_sincos_2d(h, w, D), element by element from its definition: omega_k = 1e4 **
    -(k / (D/4 - 1)); token t = r*w + c holds [sin(c omega), cos(c omega), sin(r omega), cos(r omega)]."""
    import math

    from vit_common.resample import sincos2d_table

    h, w, d = 3, 5, 16
    q = d // 4
    table = sincos2d_table((h, w), d)
    for r in range(h):
        for c in range(w):
            for k in range(q):
                omega = 1e4 ** -(k / (q - 1))
                want = (math.sin(c * omega), math.cos(c * omega), math.sin(r * omega), math.cos(r * omega))
                got = tuple(table[r * w + c, j * q + k] for j in range(4))
                assert np.allclose(got, want, rtol=0, atol=1e-12), (r, c, k)
