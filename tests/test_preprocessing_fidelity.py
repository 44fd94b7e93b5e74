"""Preprocessing that matches the ecosystem (HF ViTImageProcessor, timm's eval transform) on real
photographs, presets carried by checkpoints, and robust loading of every common image kind."""

from __future__ import annotations

import io

import numpy as np
import pytest
import sklearn.datasets as sklearn_datasets
import transformers
from PIL import Image

import vit_flax
import vit_torch
from vit_common.config import ViTConfig
from vit_common.preprocessing import (
    MAX_PIXELS,
    PIPELINES,
    load_image,
    preprocess_array,
)

PHOTOS = ["china.jpg", "flower.jpg"]  # real photographs shipped inside scikit-learn


def _photo(name: str) -> np.ndarray:
    return sklearn_datasets.load_sample_image(name)


def _source_constants(preset: str) -> dict[str, tuple[float, ...]]:
    """A normalisation preset's mean and std as the source libraries themselves define them (never
    from our own tables): HF transformers' image_utils and timm's data constants."""
    import timm.data as timm_data
    from transformers import image_utils
    if preset == "imagenet":
        hf = (image_utils.IMAGENET_DEFAULT_MEAN, image_utils.IMAGENET_DEFAULT_STD)
        timm = (timm_data.IMAGENET_DEFAULT_MEAN, timm_data.IMAGENET_DEFAULT_STD)
    elif preset == "inception":
        hf = (image_utils.IMAGENET_STANDARD_MEAN, image_utils.IMAGENET_STANDARD_STD)
        timm = (timm_data.IMAGENET_INCEPTION_MEAN, timm_data.IMAGENET_INCEPTION_STD)
    else:
        raise ValueError(preset)
    assert tuple(hf[0]) == tuple(timm[0]) and tuple(hf[1]) == tuple(timm[1])  # the two agree
    return {"mean": tuple(hf[0]), "std": tuple(hf[1])}


@pytest.mark.parametrize("preset", ["imagenet", "inception"])
def test_presets_are_the_source_libraries_constants(preset: str) -> None:
    want = _source_constants(preset)
    assert PIPELINES[preset].mean == want["mean"] and PIPELINES[preset].std == want["std"]


def test_presets_resize_as_their_sources() -> None:
    """"imagenet" is torchvision's Resize + Normalize (bilinear, no crop); "inception" is HF's
    ViTImageProcessor (bilinear, no crop): their own defaults, not ours."""
    import torchvision
    resize = torchvision.transforms.Resize((224, 224))
    assert resize.interpolation == torchvision.transforms.InterpolationMode.BILINEAR
    assert PIPELINES["imagenet"].resample == "bilinear" and PIPELINES["imagenet"].crop_pct is None
    hf = transformers.ViTImageProcessorPil()
    assert int(hf.resample) == {"bilinear": 2, "bicubic": 3}[PIPELINES["inception"].resample]
    assert PIPELINES["inception"].crop_pct is None and not getattr(hf, "do_center_crop", False)


def test_defaults_are_hf_vit_image_processors() -> None:
    """What a checkpoint that says nothing gets: HF ViTImageProcessor's size and resampling (no
    crop); an HF preprocessor_config.json with no keys reads as HF's processor defaults."""
    from vit_common.preprocessing import Preprocessing, preprocessing_for

    hf = transformers.ViTImageProcessorPil()
    assert hf.size == {"height": 224, "width": 224} and ViTConfig().image_hw == (224, 224)
    assert int(hf.resample) == {"bilinear": 2, "bicubic": 3}[preprocessing_for(None).resample]
    assert preprocessing_for(None).crop_pct is None and not getattr(hf, "do_center_crop", False)
    empty = Preprocessing.from_hf({})
    assert (empty.mean, empty.std) == (tuple(hf.image_mean), tuple(hf.image_std))
    assert int(hf.resample) == {"bilinear": 2, "bicubic": 3}[empty.resample]


def test_timm_vit_pretrained_config_round_trips() -> None:
    """A timm ViT's own pretrained config (mean, std, interpolation, crop_pct, input size) through
    our Preprocessing equals timm's eval transform on a real photo."""
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model("vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=False)
    cfg = resolve_data_config({}, model=model)
    ours = preprocess_array(_photo("china.jpg"), image_size=cfg["input_size"][1:], mean=cfg["mean"],
                            std=cfg["std"], resample=cfg["interpolation"], crop_pct=cfg["crop_pct"])
    want = create_transform(**cfg)(Image.fromarray(_photo("china.jpg"))).numpy()
    assert float(np.abs(ours.transpose(2, 0, 1) - want).max()) <= 1e-6


@pytest.mark.parametrize("name", ["eva02_large_patch14_448", "vit_base_patch16_rope_reg1_gap_256",
                                  "vit_pe_core_tiny_patch16_384", "aimv2_large_patch14_224",
                                  "vit_small_patch16_dinov3"])
def test_timm_names_preprocess_as_their_default_tag(name: str) -> None:
    """from_timm(name) carries the default tag's pretrained_cfg (squash, crop 0.95, 0.5 / CLIP /
    ImageNet statistics ...): our pixels equal timm's eval transform for that model on a photo."""
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(name, pretrained=False, device="meta")
    want = create_transform(**resolve_data_config({}, model=model))(Image.fromarray(_photo("china.jpg"))).numpy()
    config = ViTConfig.from_timm(name)
    got = vit_torch.preprocess_image(_photo("china.jpg"), config)[0].numpy()
    assert got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-6


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
@pytest.mark.parametrize("preset", ["inception", "imagenet"])
@pytest.mark.parametrize("photo", PHOTOS)
def test_matches_hf_vit_image_processor(photo: str, preset: str, resample: str) -> None:
    p = _source_constants(preset)  # the processor built from HF's constants, not ours
    hf = transformers.ViTImageProcessorPil(image_mean=list(p["mean"]), image_std=list(p["std"]),
                                           resample={"bilinear": 2, "bicubic": 3}[resample])
    want = hf(images=_photo(photo), return_tensors="np")["pixel_values"]  # (1, 3, 224, 224)
    got = vit_torch.preprocess_image(_photo(photo), image_size=224, preset=preset, resample=resample)
    assert got.shape == want.shape
    assert float(np.abs(got.numpy() - want).max()) <= 1e-6


@pytest.mark.parametrize("crop_pct, resample", [(0.875, "bicubic"), (0.9, "bilinear"), (1.0, "bicubic")])
def test_crop_pct_matches_timm_eval_transform(crop_pct: float, resample: str) -> None:
    import timm.data as timm_data
    transform = timm_data.create_transform(input_size=(3, 224, 224), crop_pct=crop_pct,
                                           interpolation=resample, mean=timm_data.IMAGENET_DEFAULT_MEAN,
                                           std=timm_data.IMAGENET_DEFAULT_STD)
    for photo in PHOTOS:
        want = transform(Image.fromarray(_photo(photo))).numpy()  # (3, 224, 224)
        got = preprocess_array(_photo(photo), image_size=224, preset="imagenet", resample=resample,
                               crop_pct=crop_pct)
        assert float(np.abs(got.transpose(2, 0, 1) - want).max()) <= 1e-6


def test_batches_and_frameworks_agree() -> None:
    photos = [_photo(n) for n in PHOTOS]
    pt = vit_torch.preprocess_image(photos, image_size=(96, 128), preset="inception")
    fx = vit_flax.preprocess_image(photos, image_size=(96, 128), preset="inception")
    assert pt.shape == (2, 3, 96, 128) and fx.shape == (2, 96, 128, 3)
    np.testing.assert_array_equal(pt.numpy().transpose(0, 2, 3, 1), np.asarray(fx))
    np.testing.assert_array_equal(pt[1].numpy(), vit_torch.preprocess_image(
        photos[1], image_size=(96, 128), preset="inception")[0].numpy())


def test_checkpoint_carries_its_preprocessing(tmp_path) -> None:
    """An HF directory's preprocessor_config.json travels with the model: preprocess_image(x,
    model.config) reproduces HF's processor for it, and save_pretrained writes it back."""
    config = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1,
                       intermediate_size=32, image_size=64, patch_size=16, num_labels=2)
    vit_torch.save_pretrained(vit_torch.ViTForImageClassification(config), tmp_path / "m")
    hf = transformers.ViTImageProcessorPil(size={"height": 64, "width": 64}, resample=3)
    hf.save_pretrained(tmp_path / "m")
    model = vit_torch.from_pretrained(tmp_path / "m")
    want = hf(images=_photo("flower.jpg"), return_tensors="np")["pixel_values"]
    got = vit_torch.preprocess_image(_photo("flower.jpg"), model.config)
    assert float(np.abs(got.numpy() - want).max()) <= 1e-6
    fx, _ = vit_flax.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(np.asarray(vit_flax.preprocess_image(_photo("flower.jpg"), fx.config)),
                                  got.numpy().transpose(0, 2, 3, 1))
    vit_torch.save_pretrained(model, tmp_path / "again")
    again = transformers.ViTImageProcessorPil.from_pretrained(tmp_path / "again")
    assert (list(again.image_mean), again.resample) == ([0.5, 0.5, 0.5], 3)
    # a checkpoint that says nothing gets the seed's ImageNet default
    plain = preprocess_array(_photo("flower.jpg"), config)
    np.testing.assert_array_equal(plain, preprocess_array(_photo("flower.jpg"), config, preset="imagenet"))


# --- family presets: each family's HF processor as its released checkpoints configure it ----------


def _released_processor(family: str):
    """The PIL processor of a family's released checkpoints (openai/clip-vit-*, google/siglip-*,
    facebook/dinov2-*, facebook/deit-*), built from HF's own classes and constants."""
    from transformers import image_utils as iu

    imagenet = dict(image_mean=iu.IMAGENET_DEFAULT_MEAN, image_std=iu.IMAGENET_DEFAULT_STD)
    return {
        "clip": lambda: transformers.CLIPImageProcessorPil(),
        "siglip": lambda: transformers.SiglipImageProcessorPil(),
        "dinov2": lambda: transformers.BitImageProcessorPil(size={"shortest_edge": 256}, **imagenet),
        "deit": lambda: transformers.DeiTImageProcessorPil(**imagenet),
        "dinov3": lambda: transformers.DINOv3ViTImageProcessor(),  # torchvision only: no PIL class
        "aimv2": lambda: transformers.CLIPImageProcessorPil(),  # apple/aimv2-*'s CLIPImageProcessor
    }[family]()


FAMILY_PRESETS = ["clip", "siglip", "dinov2", "deit", "dinov3", "aimv2"]
# HF's DINOv3 processor resizes the image as float32 with torchvision, ours as float32 with PIL: the
# same antialiased bilinear filter, 3e-5 apart; resized in 8 bits it would be one level (1.7e-2) off
TOLERANCE = {"dinov3": 1e-4}


@pytest.mark.parametrize("family", FAMILY_PRESETS)
@pytest.mark.parametrize("photo", PHOTOS)
def test_family_preset_equals_its_hf_processor(family: str, photo: str) -> None:
    hf = _released_processor(family)
    want = hf(images=_photo(photo), return_tensors="np")["pixel_values"]  # (1, 3, 224, 224)
    got = vit_torch.preprocess_image(_photo(photo), image_size=224, preset=family)
    assert got.shape == want.shape
    assert float(np.abs(got.numpy() - want).max()) <= TOLERANCE.get(family, 1e-6)
    fx = vit_flax.preprocess_image(_photo(photo), image_size=224, preset=family)
    np.testing.assert_array_equal(np.asarray(fx), got.numpy().transpose(0, 2, 3, 1))


def test_hf_centres_crops_by_flooring() -> None:
    """HF floors the centring offset where torchvision rounds: on china.jpg (427 x 640) CLIP's crop
    margin is odd, and the rounded crop is one pixel off HF's."""
    want = _released_processor("clip")(images=_photo("china.jpg"), return_tensors="np")["pixel_values"]
    import dataclasses

    timm_style = dataclasses.replace(PIPELINES["clip"], crop_rounding="round")
    off = preprocess_array(_photo("china.jpg"), ViTConfig(image_size=224, extra={"preprocessing": timm_style}))
    assert float(np.abs(off.transpose(2, 0, 1) - want[0]).max()) > 0.1


@pytest.mark.parametrize("family", FAMILY_PRESETS)
def test_hf_processor_configs_read_and_write_as_the_preset(family: str, tmp_path) -> None:
    """A released processor's preprocessor_config.json reads as the family preset; written back by
    to_hf it loads in HF as a processor that gives the same pixels."""
    from vit_common.preprocessing import Preprocessing

    hf = _released_processor(family)
    hf.save_pretrained(tmp_path / "hf")
    read = Preprocessing.from_hf_file(tmp_path / "hf" / "preprocessor_config.json")
    assert read == PIPELINES[family]
    config = ViTConfig(image_size=224, patch_size=16, hidden_size=32, num_attention_heads=2,
                       num_hidden_layers=1, intermediate_size=32, **FAMILY_SWITCHES[family])
    (tmp_path / "ours").mkdir()
    import json

    (tmp_path / "ours" / "preprocessor_config.json").write_text(json.dumps(read.to_hf(config)))
    again = transformers.AutoImageProcessor.from_pretrained(tmp_path / "ours", backend="pil")
    want = hf(images=_photo("china.jpg"), return_tensors="np")["pixel_values"]
    got = again(images=_photo("china.jpg"), return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(got, want)


# the switches that make a config one of the HF families
FAMILY_SWITCHES = {
    "clip": dict(pre_norm=True, patch_bias=False, final_norm="pooled", hidden_act="quick_gelu",
                 layer_norm_eps=1e-5),
    "siglip": dict(class_token=False, pooling="map", position_embedding_covers_prefix=False,
                   hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
    "dinov2": dict(layer_scale=True, mask_token=True, layer_norm_eps=1e-6),
    "deit": dict(distillation_token=True),
    "dinov3": dict(position_embedding_type="none", rope_type="dinov3", layer_scale=True, key_bias=False,
                   mask_token=True, num_register_tokens=4, layer_norm_eps=1e-5),
    "aimv2": dict(class_token=False, norm_type="rmsnorm", patch_norm=True, mlp_type="swiglu",
                  position_embedding_covers_prefix=False, pooling="gap", layer_norm_eps=1e-5),
}


@pytest.mark.parametrize("family", FAMILY_PRESETS)
def test_family_configs_default_to_their_preset(family: str) -> None:
    from vit_common.preprocessing import preprocessing_for

    config = ViTConfig(image_size=224, patch_size=16, hidden_size=32, num_attention_heads=2,
                       num_hidden_layers=1, intermediate_size=32, **FAMILY_SWITCHES[family])
    assert preprocessing_for(config) == PIPELINES[family]
    assert preprocessing_for(ViTConfig()) == PIPELINES["imagenet"]  # classic ViT: the seed's


def test_family_checkpoint_carries_its_processor(tmp_path) -> None:
    """An HF DINOv2 directory with its released processor: from_pretrained carries it, and
    preprocess_image(x, model.config) gives HF's pixels in both twins."""
    model = transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
        image_size=224, patch_size=16))
    model.save_pretrained(tmp_path / "m")
    hf = _released_processor("dinov2")
    hf.save_pretrained(tmp_path / "m")
    want = hf(images=_photo("flower.jpg"), return_tensors="np")["pixel_values"]
    pt = vit_torch.from_pretrained(tmp_path / "m")
    got = vit_torch.preprocess_image(_photo("flower.jpg"), pt.config)
    assert float(np.abs(got.numpy() - want).max()) <= 1e-6
    fx, _ = vit_flax.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(np.asarray(vit_flax.preprocess_image(_photo("flower.jpg"), fx.config)),
                                  got.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("data, message", [
    ({"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 256},
      "crop_size": {"height": 224, "width": 200}}, "one crop fraction"),
    ({"image_processor_type": "DeiTImageProcessor", "size": {"longest_edge": 256}}, "not supported"),
    ({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 200},
      "crop_size": {"height": 224, "width": 224}}, "one crop fraction"),
    ({"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": "224"}}, "positive integers"),
])
def test_hf_crops_we_cannot_express_are_refused(data: dict, message: str) -> None:
    from vit_common.preprocessing import Preprocessing

    with pytest.raises(ValueError, match=message):
        Preprocessing.from_hf(data)


def test_timm_crop_survives_to_hf() -> None:
    """A timm crop (rounded centring) written for HF keeps its crop_pct and reads back unchanged."""
    from vit_common.preprocessing import Preprocessing

    timm_crop = Preprocessing(resample="bicubic", crop_pct=0.9)
    data = timm_crop.to_hf(ViTConfig())
    assert data["image_processor_type"] == "BitImageProcessor" and data["size"] == {"shortest_edge": 248}
    assert Preprocessing.from_hf(data) == timm_crop


# --- robust loading -----------------------------------------------------------------------------

RGB = np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "RGB", "I;16", "1"])
def test_pil_modes(mode: str) -> None:
    if mode == "I;16":
        img = Image.fromarray(RGB[..., 0].astype(np.uint16) * 257)
        assert img.mode == "I;16"
        want = np.repeat(RGB[..., :1].astype(np.float32) / 255, 3, axis=-1)  # 16-bit gray, kept exact
        got = load_image(img)
        np.testing.assert_allclose(got, want, atol=1e-6)
    else:
        img = Image.fromarray(RGB).convert(mode)
        got = load_image(img)
        assert isinstance(got, Image.Image) and got.mode == "RGB" and got.size == (40, 30)
        if mode in ("RGB", "RGBA"):  # alpha dropped: the colour values are kept as they are
            np.testing.assert_array_equal(np.asarray(got), RGB)
        if mode in ("L", "LA"):
            gray = np.asarray(Image.fromarray(RGB).convert("L"))
            np.testing.assert_array_equal(np.asarray(got), np.repeat(gray[..., None], 3, axis=-1))
    out = preprocess_array(img, image_size=16)
    assert out.shape == (16, 16, 3) and np.isfinite(out).all()


def test_rgba_alpha_rule() -> None:
    rgba = np.concatenate([RGB, np.zeros((30, 40, 1), np.uint8)], axis=-1)  # fully transparent
    np.testing.assert_array_equal(preprocess_array(rgba, image_size=16), preprocess_array(RGB, image_size=16))


def test_bytes_float_arrays_and_grayscale() -> None:
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, format="PNG")
    np.testing.assert_array_equal(preprocess_array(buf.getvalue(), image_size=16),
                                  preprocess_array(RGB, image_size=16))
    as_float = RGB.astype(np.float32) / 255  # float in [0, 1]: resized in float, no 8-bit rounding
    np.testing.assert_allclose(preprocess_array(as_float, image_size=16),
                               preprocess_array(RGB, image_size=16), atol=2e-2)
    np.testing.assert_allclose(preprocess_array(as_float, image_size=(30, 40)),
                               preprocess_array(RGB, image_size=(30, 40)), atol=1e-5)
    gray = preprocess_array(RGB[..., 0], image_size=(30, 40))  # (H, W) -> three equal planes
    assert np.allclose(gray[..., 0] * PIPELINES["imagenet"].std[0] + PIPELINES["imagenet"].mean[0],
                       gray[..., 2] * PIPELINES["imagenet"].std[2] + PIPELINES["imagenet"].mean[2], atol=1e-6)


def test_exif_orientation_is_applied(tmp_path) -> None:
    img = Image.fromarray(RGB)  # 40 wide, 30 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    loaded = load_image(tmp_path / "rot.jpg")
    assert loaded.size == (30, 40)  # displayed upright: 30 wide, 40 high


def test_bad_files_name_the_file(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        preprocess_array(tmp_path / "notes.txt")
    Image.fromarray(RGB).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.jpg.*truncated or corrupt"):
        preprocess_array(tmp_path / "cut.jpg")
    with pytest.raises(ValueError, match="image bytes"):
        preprocess_array(b"\x00\x01 not an image")


def test_decompression_bomb_is_refused(tmp_path) -> None:
    Image.new("1", (12_000, 8_000)).save(tmp_path / "bomb.png")  # 96 Mpx, a few KB on disk
    with pytest.raises(ValueError, match=f"bomb.png: 12000x8000 = 96,000,000 pixels exceeds the limit of {MAX_PIXELS:,}"):
        preprocess_array(tmp_path / "bomb.png")
    with pytest.raises(ValueError, match="exceeds the limit of 1,000"):
        preprocess_array(_png_bytes(), max_pixels=1_000)


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, format="PNG")
    return buf.getvalue()
