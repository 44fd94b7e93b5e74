"""SigLIP 2 NaFlex: images at their own aspect ratio and resolution, as patches, padded together.
HF `Siglip2VisionModel` / `Siglip2Model` / `Siglip2ForImageClassification` and timm `naflexvit_*`
checkpoints, written by their libraries with random weights, in both twins both ways; the
preprocessing against `Siglip2ImageProcessor`; the engines' length buckets; padding invariance."""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.datasets as sklearn_datasets
import timm
import torch
import transformers

import vit_flax
import vit_torch
from vit_cli.embed import main as embed_main
from vit_common import checkpoints
from vit_common.engines import NAFLEX_LENGTHS
from vit_common.preprocessing import naflex_batch, naflex_size
from vit_common.resample import bilinear_antialias_matrix

TOL = 2e-5
_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_patches=16,
              patch_size=4)
_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _perturb(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _batch(shapes: list[tuple[int, int]], length: int, width: int = 48, seed: int = 0) -> dict[str, np.ndarray]:
    """Random patches of images of these (h, w) patch grids, padded together to `length` rows."""
    rng = np.random.default_rng(seed)
    values = np.zeros((len(shapes), length, width), np.float32)
    mask = np.zeros((len(shapes), length), np.int32)
    for i, (h, w) in enumerate(shapes):
        values[i, :h * w] = rng.normal(size=(h * w, width))
        mask[i, :h * w] = 1
    return {"pixel_values": values, "pixel_attention_mask": mask, "spatial_shapes": np.asarray(shapes, np.int64)}


def _torch_args(batch):
    return (torch.from_numpy(batch["pixel_values"]),
            dict(pixel_attention_mask=torch.from_numpy(batch["pixel_attention_mask"]),
                 spatial_shapes=torch.from_numpy(batch["spatial_shapes"])))


def _flax_out(path, batch) -> dict[str, np.ndarray]:
    model, params = vit_flax.from_pretrained(path)
    bound = model.bind({"params": params})
    args = dict(pixel_attention_mask=jnp.asarray(batch["pixel_attention_mask"]),
                spatial_shapes=jnp.asarray(batch["spatial_shapes"]))
    x = jnp.asarray(batch["pixel_values"])
    backbone = bound.vit if hasattr(bound, "classifier") else bound
    out = {"pooled": np.asarray(backbone(x, **args)), "tokens": np.asarray(backbone.forward_features(x, **args))}
    if hasattr(bound, "classifier"):
        out["logits"] = np.asarray(bound(x, **args))
    return out


def _torch_out(model, batch) -> dict[str, np.ndarray]:
    x, args = _torch_args(batch)
    backbone = model.vit if hasattr(model, "classifier") else model
    with torch.no_grad():
        out = {"pooled": backbone(x, **args).numpy(), "tokens": backbone.forward_features(x, **args).numpy()}
        if hasattr(model, "classifier"):
            out["logits"] = model(x, **args).numpy()
    return out


def _close_real_rows(want: dict, got: dict, shapes, tol: float = TOL) -> None:
    for name, value in want.items():
        if name == "tokens":
            for i, (h, w) in enumerate(shapes):
                diff = np.abs(got[name][i, :h * w] - value[i, :h * w]).max()
                assert diff <= tol, (name, i, float(diff))
        else:
            assert np.abs(got[name] - value).max() <= tol, (name, float(np.abs(got[name] - value).max()))


SHAPES = [(3, 5), (6, 2)]  # two images of different aspect ratios in one batch, padded to 24 rows


def test_bilinear_antialias_matrix_is_torchs_interpolate() -> None:
    for n_in, n_out in [(16, 7), (16, 23), (5, 5), (4, 1), (3, 10)]:
        x = torch.randn(1, 2, n_in, 3, dtype=torch.float64)
        want = torch.nn.functional.interpolate(x, size=(n_out, 3), mode="bilinear", align_corners=False,
                                               antialias=True)
        got = np.einsum("oi,bciw->bcow", bilinear_antialias_matrix(n_in, n_out), x.numpy())
        np.testing.assert_allclose(got, want.numpy(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["vision", "classifier", "two_tower"])
def test_hf_siglip2_both_twins_both_ways(kind: str, tmp_path) -> None:
    t = transformers
    torch.manual_seed(0)
    vision = t.Siglip2VisionConfig(**_TOWER)
    if kind == "vision":
        hf = t.Siglip2VisionModel(vision)
    elif kind == "classifier":
        hf = t.Siglip2ForImageClassification(t.Siglip2Config(vision_config=vision.to_dict(),
                                                             text_config=t.Siglip2TextConfig(**_TEXT).to_dict(),
                                                             num_labels=3))
    else:
        hf = t.Siglip2Model(t.Siglip2Config(vision_config=vision.to_dict(), text_config=t.Siglip2TextConfig(**_TEXT).to_dict()))
    _perturb(hf.eval(), 1)
    hf.save_pretrained(tmp_path / "src")
    batch = _batch(SHAPES, 24)
    x, args = _torch_args(batch)
    with torch.no_grad():
        if kind == "classifier":
            out = hf.vision_model(x, **args)
            want = {"tokens": out.last_hidden_state.numpy(), "logits": hf(x, **args).logits.numpy()}
        else:
            out = (hf.vision_model if kind == "two_tower" else hf)(x, **args)
            want = {"tokens": out.last_hidden_state.numpy(), "pooled": out.pooler_output.numpy()}
    ours = vit_torch.from_pretrained(tmp_path / "src")
    assert ours.config.position_embedding_resampling == "bilinear_antialias" and ours.config.grid_size == (4, 4)
    _close_real_rows(want, _torch_out(ours, batch), SHAPES)
    _close_real_rows(want, _flax_out(tmp_path / "src", batch), SHAPES)
    if kind == "two_tower":
        return
    # written back: transformers loads it with nothing missing and computes the same
    vit_torch.save_pretrained(ours, tmp_path / "back")
    cls = t.Siglip2ForImageClassification if kind == "classifier" else t.Siglip2VisionModel
    back, info = cls.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        got = back.eval()(x, **args)
    assert np.abs((got.logits if kind == "classifier" else got.pooler_output).numpy()
                  - want["logits" if kind == "classifier" else "pooled"]).max() <= TOL


def test_timm_naflex_both_ways(tmp_path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("naflexvit_base_patch16_siglip", pretrained=False, depth=2, embed_dim=32, num_heads=2,
                              patch_size=4, pos_embed_grid_size=(4, 4)).eval()
    _perturb(model, 2)
    timm.models.save_for_hf(model, str(tmp_path / "src"), safe_serialization=True)
    batch = _batch(SHAPES, 24)
    x, args = _torch_args(batch)
    coord = torch.zeros(len(SHAPES), 24, 2, dtype=torch.long)
    for i, (h, w) in enumerate(SHAPES):
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        coord[i, :h * w] = torch.stack([yy.flatten(), xx.flatten()], -1)
    valid = args["pixel_attention_mask"].bool()
    with torch.no_grad():
        feats = model.forward_features(x, patch_coord=coord, patch_valid=valid)
        want = {"pooled": model(x, patch_coord=coord, patch_valid=valid).numpy(), "tokens": feats["patches"].numpy()}
    ours = vit_torch.from_pretrained(tmp_path / "src")
    _close_real_rows(want, _torch_out(ours, batch), SHAPES)
    _close_real_rows(want, _flax_out(tmp_path / "src", batch), SHAPES)
    ckpt = checkpoints.load_checkpoint(tmp_path / "src")
    checkpoints.save_timm_hub(ckpt.state, ckpt.config, tmp_path / "back")
    cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    assert cfg["architecture"] == "naflexvit_base_patch16_siglip"
    back = timm.create_model(cfg["architecture"], pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(tmp_path / "back" / "model.safetensors")),
                             **cfg["model_args"]).eval()
    with torch.no_grad():
        assert torch.equal(back(x, patch_coord=coord, patch_valid=valid), model(x, patch_coord=coord, patch_valid=valid))
    # and as HF's Siglip2 (the same model, its other home)
    checkpoints.save_hf(ckpt.state, ckpt.config, tmp_path / "hf")
    hf = transformers.Siglip2VisionModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert np.abs(hf(x, **args).pooler_output.numpy() - want["pooled"]).max() <= TOL


# --- preprocessing ------------------------------------------------------------------------------

def _photos() -> list[np.ndarray]:
    china, flower = (sklearn_datasets.load_sample_image(n) for n in ("china.jpg", "flower.jpg"))
    return [china, flower, china[:100, :400], flower[:, :50]]  # wide, tall, very wide, very tall


@pytest.mark.parametrize("max_num_patches", [64, 256])
def test_naflex_batch_is_siglip2s_processor(max_num_patches: int) -> None:
    from vit_common.config import ViTConfig

    cfg = ViTConfig(position_embedding_resampling="bilinear_antialias", class_token=False, pooling="map",
                    image_size=256, patch_size=16)
    photos = _photos()
    pil = transformers.models.siglip2.image_processing_pil_siglip2.Siglip2ImageProcessorPil(
        max_num_patches=max_num_patches)
    want = pil(images=photos, return_tensors="np")
    got = naflex_batch(photos, cfg, max_num_patches=max_num_patches)
    np.testing.assert_array_equal(got["spatial_shapes"], want["spatial_shapes"])
    np.testing.assert_array_equal(got["pixel_attention_mask"], want["pixel_attention_mask"])
    assert float(np.abs(got["pixel_values"] - want["pixel_values"]).max()) <= 1e-6
    # the default (torchvision) processor resizes in uint8 with its own rounding: one level apart
    tv = transformers.Siglip2ImageProcessor(max_num_patches=max_num_patches)(images=photos, return_tensors="np")
    np.testing.assert_array_equal(got["spatial_shapes"], tv["spatial_shapes"])
    assert float(np.abs(got["pixel_values"] - tv["pixel_values"]).max()) <= 2 / 255 + 1e-6


def test_naflex_size_keeps_the_aspect_ratio_within_the_budget() -> None:
    for (h, w) in [(427, 640), (640, 427), (100, 4000), (16, 16), (1, 1)]:
        th, tw = naflex_size(h, w, 16, 256)
        assert th % 16 == tw % 16 == 0 and (th // 16) * (tw // 16) <= 256
        assert th >= 16 and tw >= 16


# --- padding invariance, engines, vit-embed -------------------------------------------------------

@pytest.fixture(scope="module")
def siglip2_dir(tmp_path_factory):
    torch.manual_seed(3)
    hf = transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**{**_TOWER, "patch_size": 8})).eval()
    _perturb(hf, 3)
    path = tmp_path_factory.mktemp("siglip2") / "model"
    hf.save_pretrained(path)
    return path, hf


def test_an_images_outputs_do_not_depend_on_its_batch(siglip2_dir) -> None:
    path, _ = siglip2_dir
    photos = _photos()
    model = vit_torch.from_pretrained(path)
    fx, params = vit_flax.from_pretrained(path)
    together = naflex_batch(photos, model.config, max_num_patches=64)
    for i, photo in enumerate(photos):
        alone = naflex_batch(photo, model.config, max_num_patches=64)
        rows = int(alone["spatial_shapes"].prod()) + 1  # alone, and with one padding row instead of many
        alone = {k: (v[:, :rows] if k != "spatial_shapes" else v) for k, v in alone.items()}
        with torch.no_grad():
            a = model(*_torch_args(alone)[:1], **_torch_args(alone)[1])[0]
            b = model(*_torch_args(together)[:1], **_torch_args(together)[1])[i]
        assert float((a - b).abs().max()) <= 1e-5
        fa = fx.apply({"params": params}, jnp.asarray(alone["pixel_values"]),
                      pixel_attention_mask=jnp.asarray(alone["pixel_attention_mask"]),
                      spatial_shapes=jnp.asarray(alone["spatial_shapes"]))[0]
        assert float(np.abs(np.asarray(fa) - b.numpy()).max()) <= 1e-5


def test_engines_run_naflex_batches_in_length_buckets(siglip2_dir) -> None:
    path, hf = siglip2_dir
    photos = _photos()
    model = vit_torch.from_pretrained(path)
    fx, params = vit_flax.from_pretrained(path)
    batch = naflex_batch(photos, model.config, max_num_patches=64)
    x, args = _torch_args(batch)
    with torch.no_grad():
        want = hf(x, **args).pooler_output.numpy()
    flax_engine = vit_flax.InferenceEngine(fx.config, params, batch_size=4)
    torch_engine = vit_torch.InferenceEngine(model.config, model, batch_size=4)
    for engine in (flax_engine, torch_engine):
        assert np.abs(engine(batch)["pooled"] - want).max() <= TOL
    # images of other shapes in the same length bucket reuse the compiled program
    before = flax_engine._naflex_step._cache_size()
    for crop in (photos[0][:200, :300], photos[1][:300, :120], photos[0][:90, :410]):
        flax_engine(naflex_batch(crop, model.config, max_num_patches=64))
    assert flax_engine._naflex_step._cache_size() == before + 1  # batch bucket 1, length 64: once
    assert 64 in NAFLEX_LENGTHS
    with pytest.raises(ValueError, match="first h \\* w rows"):
        bad = dict(batch, pixel_attention_mask=np.ones_like(batch["pixel_attention_mask"]))
        flax_engine(bad)


def test_vit_embed_embeds_mixed_aspect_ratios_natively(siglip2_dir, tmp_path, capsys) -> None:
    path, hf = siglip2_dir
    from PIL import Image

    files = []
    for i, photo in enumerate(_photos()):
        files.append(tmp_path / f"p{i}.png")
        Image.fromarray(photo).save(files[-1])
    for framework in ("flax", "torch"):
        out = tmp_path / f"e-{framework}.npy"
        assert embed_main([*map(str, files), "--weights", str(path), "-o", str(out), "--framework", framework,
                           "--max-num-patches", "64", "--quiet"]) == 0
        assert "own aspect ratio (NaFlex)" in capsys.readouterr().err
        batch = naflex_batch([str(f) for f in files], vit_torch.from_pretrained(path).config, max_num_patches=64)
        x, args = _torch_args(batch)
        with torch.no_grad():
            want = hf(x, **args).pooler_output.numpy()
        assert np.abs(np.load(out) - want).max() <= 1e-4


def test_naflex_inputs_are_checked() -> None:
    from vit_common.config import ViTConfig

    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=16,
                       patch_size=4, class_token=False, pooling="map", num_labels=0,
                       position_embedding_resampling="bilinear_antialias")
    model = vit_torch.VisionTransformer(config).eval()
    x = torch.zeros(1, 8, 48)
    with pytest.raises(ValueError, match="h \\* w <= 8"):
        model(x, pixel_attention_mask=torch.ones(1, 8), spatial_shapes=torch.tensor([[3, 3]]))
    with pytest.raises(ValueError, match=r"\(B, N, 48\)"):
        model(torch.zeros(1, 8, 47), pixel_attention_mask=torch.ones(1, 8), spatial_shapes=torch.tensor([[2, 2]]))
    with pytest.raises(ValueError, match="integers"):
        model(x, pixel_attention_mask=torch.ones(1, 8), spatial_shapes=torch.tensor([[2.0, 2.0]]))
    bicubic = vit_torch.VisionTransformer(config.replace(position_embedding_resampling="bicubic")).eval()
    with pytest.raises(ValueError, match="bilinearly with antialiasing"):
        bicubic(x, pixel_attention_mask=torch.ones(1, 8), spatial_shapes=torch.tensor([[2, 2]]))
    fx = vit_flax.VisionTransformer(config)
    params = fx.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="h \\* w <= 8"):
        fx.apply(params, jnp.zeros((1, 8, 48)), pixel_attention_mask=jnp.ones((1, 8)),
                 spatial_shapes=jnp.asarray([[3, 3]]))
    with pytest.raises(ValueError, match="max_num_patches"):
        naflex_batch(np.zeros((8, 8, 3), np.uint8), config, max_num_patches=0)
