"""The checkpoints people download, written by their own libraries with random weights: timm hub
folders, CLIP with its projection (HF CLIPVisionModelWithProjection, CLIPModel, MetaCLIP 2), SigLIP
(2 FixRes) at sizes off the patch grid, open_clip folders and bare state dicts. Each loads in both
twins from the files alone and reproduces the source; each is written back in a form its library
reads, reproducing it; a config is never lost."""

from __future__ import annotations

import json
import pathlib
import warnings

import jax.numpy as jnp
import numpy as np
import open_clip
import pytest
import safetensors.torch as safetensors_torch
import timm
import torch
import transformers

import vit_flax
import vit_torch
from vit_cli.convert_tool import main as convert_main
from vit_cli.embed import main as embed_main
from vit_common import checkpoints
from vit_common.config import ViTConfig

TOL = 2e-5  # fp32, the bound the sources are held to


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Every parameter moved off its init (norm weights and LayerScale too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _pixels(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(2, 3, h, w)).astype(np.float32))


def _flax(path, x: torch.Tensor, config=None) -> dict[str, np.ndarray]:
    model, params = vit_flax.from_pretrained(path, config)
    bound = model.bind({"params": params})
    x = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    backbone = bound.vit if hasattr(bound, "classifier") else bound
    out = {"pooled": np.asarray(backbone(x)), "tokens": np.asarray(backbone.forward_features(x))}
    if hasattr(bound, "classifier"):
        out["logits"] = np.asarray(bound(x))
    return out


def _torch(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    backbone = model.vit if hasattr(model, "classifier") else model
    with torch.no_grad():
        out = {"pooled": backbone(x).numpy(), "tokens": backbone.forward_features(x).numpy()}
        if hasattr(model, "classifier"):
            out["logits"] = model(x).numpy()
    return out


def _close(want: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: float = TOL) -> None:
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        assert np.abs(got[name] - value).max() <= tol, (name, float(np.abs(got[name] - value).max()))


# ---------------------------------------------------------------------------------------------
# timm hub folders

TIMM_CASES = {
    "vit_tiny_patch16_224": dict(num_classes=7, depth=2, img_size=32),  # classic, with a head
    "vit_base_patch16_siglip_224.v2_webli": dict(depth=2, embed_dim=64, num_heads=4, img_size=32),
    "vit_so400m_patch14_siglip_384": dict(depth=2, embed_dim=48, num_heads=4, img_size=30),  # 30 / 14
    "vit_small_patch14_reg4_dinov2": dict(depth=2, embed_dim=48, num_heads=4, img_size=28),
    "vit_base_patch16_clip_224": dict(depth=2, embed_dim=32, num_heads=2, img_size=32, num_classes=5),
    "deit_tiny_distilled_patch16_224": dict(depth=2, img_size=32, num_classes=3),
    "vit_medium_patch16_gap_256": dict(depth=2, embed_dim=32, num_heads=2, img_size=32),
}


def _timm_folder(name: str, kw: dict, directory: pathlib.Path, safe: bool = True):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kw).eval()
    _perturb(model, 1)
    timm.models.save_for_hf(model, str(directory), safe_serialization=safe)
    return model


def _timm_outputs(model, x) -> dict[str, np.ndarray]:
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        out = {"pooled": pooled.numpy(), "tokens": model.forward_features(x).numpy()}
        if model.num_classes:
            out["logits"] = model(x).numpy()
    return out


def _timm_reads(folder: pathlib.Path):
    """A timm hub folder as timm reads it."""
    cfg = json.loads((folder / "config.json").read_text())
    weights = folder / "model.safetensors"
    return timm.create_model(cfg["architecture"], pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(weights), num_classes=cfg["num_classes"]),
                             **{"num_classes": cfg["num_classes"], **cfg.get("model_args", {})}).eval()


@pytest.mark.parametrize("name", list(TIMM_CASES))
def test_timm_hub_folder_both_ways(name: str, tmp_path) -> None:
    model = _timm_folder(name, TIMM_CASES[name], tmp_path / "src", safe=name != "vit_tiny_patch16_224")
    h, w = model.patch_embed.img_size
    x = _pixels(h, w)
    want = _timm_outputs(model, x)
    ours = vit_torch.from_pretrained(tmp_path / "src")
    got = _torch(ours, x)
    if model.num_classes == 0 or name.startswith("deit"):
        want.pop("pooled")  # timm's pre-logits of a distilled / headless model: (CLS, DIST) pair or same
        if name.startswith("deit"):
            got.pop("pooled")
    _close({k: v for k, v in want.items() if k in got}, got)
    _close({k: v for k, v in want.items() if k in got}, _flax(tmp_path / "src", x))
    # preprocessing from pretrained_cfg
    assert ours.config.extra["preprocessing"]["crop_pct"] == model.pretrained_cfg["crop_pct"]
    # written back as a timm hub folder, timm reads it and reproduces the source
    ckpt = checkpoints.load_checkpoint(tmp_path / "src")
    checkpoints.save_timm_hub(ckpt.state, ckpt.config, tmp_path / "back")
    back = _timm_reads(tmp_path / "back")
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    assert vit_torch.from_pretrained(tmp_path / "back").config == ours.config


def test_vit_convert_reads_and_writes_timm_folders(tmp_path, capsys) -> None:
    model = _timm_folder("vit_base_patch16_siglip_224", TIMM_CASES["vit_base_patch16_siglip_224.v2_webli"],
                         tmp_path / "src")
    assert convert_main([str(tmp_path / "src"), "-o", str(tmp_path / "t"), "--to", "timm", "--verify"]) == 0
    assert "timm hub folder" in capsys.readouterr().out
    x = _pixels(32, 32)
    with torch.no_grad():
        assert torch.equal(_timm_reads(tmp_path / "t")(x), model(x))
    # and as a Flax folder, read back as the same model
    assert convert_main([str(tmp_path / "src"), "-o", str(tmp_path / "f"), "--to", "flax", "--verify"]) == 0
    assert "verify: OK" in capsys.readouterr().out


def test_config_takes_a_timm_name(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, img_size=32, num_classes=4).eval()
    _perturb(model, 2)
    safetensors_torch.save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="num_attention_heads"):
        checkpoints.load_checkpoint(tmp_path / "w.safetensors")
    name_config = ViTConfig.from_timm("vit_small_patch16_224", depth=2, img_size=32, num_classes=4)
    ours = vit_torch.from_pretrained(tmp_path / "w.safetensors", name_config)
    x = _pixels(32, 32)
    _close(_timm_outputs(model, x), _torch(ours, x))
    # on the command line, a whole timm model's bare state dict with its name (the head count is
    # what the weights cannot say)
    full = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    safetensors_torch.save_file(full.state_dict(), str(tmp_path / "tiny.safetensors"))
    assert convert_main([str(tmp_path / "tiny.safetensors"), "-o", str(tmp_path / "o"), "--config",
                         "vit_tiny_patch16_224", "--verify", "--quiet"]) == 0
    assert "verify: OK" in capsys.readouterr().out
    assert vit_torch.from_pretrained(tmp_path / "o").config.num_attention_heads == 3
    with pytest.raises(ValueError, match="neither a preset"):
        checkpoints.load_checkpoint(tmp_path / "w.safetensors", "not_a_model")


# ---------------------------------------------------------------------------------------------
# CLIP's projection, MetaCLIP 2, SigLIP off the patch grid (HF)

_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              image_size=30, patch_size=14)  # 30 / 14: two patches per side, two pixels dropped
_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50)


def _hf_image_embeds(model, x) -> np.ndarray:
    with torch.no_grad():
        if hasattr(model, "get_image_features"):
            out = model.get_image_features(pixel_values=x)
            out = getattr(out, "pooler_output", out)
        else:
            out = model(pixel_values=x).image_embeds
    return out.numpy()


@pytest.mark.parametrize("kind", ["clip_projection", "clip_model", "metaclip2_projection", "metaclip2_model"])
def test_clip_projection_both_ways(kind: str, tmp_path) -> None:
    t = transformers
    meta = kind.startswith("metaclip2")
    vision_cfg = (t.MetaClip2VisionConfig if meta else t.CLIPVisionConfig)(**_TOWER, projection_dim=16)
    if kind.endswith("_model"):
        text_cfg = (t.MetaClip2TextConfig if meta else t.CLIPTextConfig)(**_TEXT)
        cfg = (t.MetaClip2Config if meta else t.CLIPConfig)(vision_config=vision_cfg.to_dict(),
                                                            text_config=text_cfg.to_dict(), projection_dim=16)
        hf = (t.MetaClip2Model if meta else t.CLIPModel)(cfg)
    else:
        hf = (t.MetaClip2VisionModelWithProjection if meta else t.CLIPVisionModelWithProjection)(vision_cfg)
    _perturb(hf.eval(), 3)
    hf.save_pretrained(tmp_path / "src")
    x = _pixels(30, 30)
    want = _hf_image_embeds(hf, x)
    ours = vit_torch.from_pretrained(tmp_path / "src")
    assert ours.config.projection_size == 16 and ours.config.grid_size == (2, 2)
    assert np.abs(_torch(ours, x)["pooled"] - want).max() <= TOL
    assert np.abs(_flax(tmp_path / "src", x)["pooled"] - want).max() <= TOL
    # written back: the family's class with its projection, transformers loads it with nothing missing
    vit_torch.save_pretrained(ours, tmp_path / "back")
    cls = t.MetaClip2VisionModelWithProjection if meta else t.CLIPVisionModelWithProjection
    back, info = cls.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert np.abs(_hf_image_embeds(back.eval(), x) - want).max() <= TOL


def test_vit_embed_gives_the_projected_embedding(tmp_path, capsys) -> None:
    hf = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**_TOWER, projection_dim=16))
    _perturb(hf.eval(), 4)
    hf.save_pretrained(tmp_path / "clip")
    from PIL import Image

    img = (np.random.default_rng(0).uniform(size=(40, 50, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    assert embed_main([str(tmp_path / "a.png"), "--weights", str(tmp_path / "clip"), "-o",
                       str(tmp_path / "e.npy"), "--framework", "torch", "--quiet"]) == 0
    assert "projected image embedding (16-d" in capsys.readouterr().err
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["shape"] == [1, 16] and report["embedding"].startswith("projected")
    from vit_common.preprocessing import preprocess_array

    config = vit_torch.from_pretrained(tmp_path / "clip").config
    pixels = torch.from_numpy(preprocess_array(str(tmp_path / "a.png"), config)[None].transpose(0, 3, 1, 2).copy())
    assert np.abs(np.load(tmp_path / "e.npy") - _hf_image_embeds(hf, pixels)).max() <= 1e-4


@pytest.mark.parametrize("kind", ["siglip_vision", "siglip_model"])
def test_siglip_off_the_patch_grid(kind: str, tmp_path) -> None:
    t = transformers
    vision = t.SiglipVisionConfig(**_TOWER)
    if kind == "siglip_model":  # SigLIP 2 FixRes files are SiglipModel files
        hf = t.SiglipModel(t.SiglipConfig(vision_config=vision.to_dict(), text_config=t.SiglipTextConfig(**_TEXT).to_dict()))
    else:
        hf = t.SiglipVisionModel(vision)
    _perturb(hf.eval(), 5)
    hf.save_pretrained(tmp_path / "src")
    x = _pixels(30, 30)
    with torch.no_grad():
        tower = hf.vision_model if kind == "siglip_model" else hf
        out = tower(pixel_values=x)
    want = {"pooled": out.pooler_output.numpy(), "tokens": out.last_hidden_state.numpy()}
    ours = vit_torch.from_pretrained(tmp_path / "src")
    assert ours.config.num_patches == 4
    _close(want, _torch(ours, x))
    _close(want, _flax(tmp_path / "src", x))


# ---------------------------------------------------------------------------------------------
# open_clip

OC_TEXT = {"context_length": 8, "vocab_size": 50, "width": 16, "heads": 2, "layers": 1}


@pytest.mark.parametrize("variant", [{"quick_gelu": True}, {"vision_cfg": {"pool_type": "avg"}},
                                     {"vision_cfg": {"final_ln_after_pool": True, "ls_init_value": 0.1}}],
                         ids=["openai", "avg", "ln_after_pool_layerscale"])
def test_open_clip_both_ways(variant: dict, tmp_path, capsys) -> None:
    cfg = {"embed_dim": 16, "quick_gelu": variant.get("quick_gelu", False),
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8,
                          **variant.get("vision_cfg", {})}, "text_cfg": OC_TEXT}
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg).eval()
    _perturb(model, 6)
    src = tmp_path / "hub"
    src.mkdir()
    safetensors_torch.save_file(model.state_dict(), str(src / "open_clip_model.safetensors"))
    (src / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": cfg, "preprocess_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.6, 0.7]}}))
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    x = _pixels(32, 32)
    with torch.no_grad():
        want = model.encode_image(x).numpy()
    for path, config in ((src, None), (tmp_path / "bare.pt", pathlib.Path(src / "open_clip_config.json")),
                         (tmp_path / "bare.pt", str(src / "open_clip_config.json"))):  # a str naming a file too
        ours = vit_torch.from_pretrained(path, config)
        assert np.abs(_torch(ours, x)["pooled"] - want).max() <= TOL
        assert np.abs(_flax(path, x, config)["pooled"] - want).max() <= TOL
    assert ours.config.extra["preprocessing"]["mean"] == (0.1, 0.2, 0.3)
    ckpt = checkpoints.load_checkpoint(src)
    assert any("left aside" in n and "text" in n for n in ckpt.notes)
    # written: open_clip's own CLIP(**model_cfg) loads the visual keys, none missing, same encode_image
    assert convert_main([str(src), "-o", str(tmp_path / "out"), "--to", "open_clip", "--verify"]) == 0
    written = json.loads((tmp_path / "out" / "open_clip_config.json").read_text())
    again = open_clip.CLIP(**written["model_cfg"]).eval()
    result = again.load_state_dict(safetensors_torch.load_file(str(tmp_path / "out" / "open_clip_model.safetensors")),
                                   strict=False)
    assert not [k for k in result.missing_keys if k.startswith("visual.")] and not result.unexpected_keys
    with torch.no_grad():
        assert np.abs(again.encode_image(x).numpy() - want).max() <= TOL
    assert written["preprocess_cfg"]["mean"] == [0.1, 0.2, 0.3]


def test_open_clip_from_an_hf_clip(tmp_path) -> None:
    """CLIP's tower with its projection, HF in, open_clip out, the same image embedding."""
    hf = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
        **{**_TOWER, "image_size": 28}, projection_dim=16))
    _perturb(hf.eval(), 7)
    hf.save_pretrained(tmp_path / "hf")
    assert convert_main([str(tmp_path / "hf"), "-o", str(tmp_path / "oc"), "--to", "open_clip", "--quiet"]) == 0
    cfg = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())["model_cfg"]
    model = open_clip.CLIP(**cfg).eval()
    model.load_state_dict(safetensors_torch.load_file(str(tmp_path / "oc" / "open_clip_model.safetensors")), strict=False)
    x = _pixels(28, 28)
    with torch.no_grad():
        assert np.abs(model.encode_image(x).numpy() - _hf_image_embeds(hf, x)).max() <= TOL


# ---------------------------------------------------------------------------------------------
# a config that is never lost

@pytest.mark.parametrize("framework", ["torch", "flax"])
def test_a_config_no_hf_family_expresses_is_kept(framework: str, tmp_path) -> None:
    """A timm SigLIP with gap (timm's config.json) and a big_vision sincos2d model (our own
    config.json): written as a directory of either framework, read back as the same model."""
    for i, config in enumerate((
            ViTConfig.from_timm("vit_base_patch16_siglip_gap_224", depth=2, embed_dim=32, num_heads=2, img_size=32),
            ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                      patch_size=8, position_embedding_type="sincos2d", pooling="gap", class_token=False,
                      num_labels=0, qk_norm=True))):
        torch.manual_seed(i)
        model = vit_torch.VisionTransformer(config).eval()
        _perturb(model, 8)
        out = tmp_path / f"{framework}{i}"
        if framework == "torch":
            vit_torch.save_pretrained(model, out)
        else:
            fx = vit_flax.VisionTransformer(config)
            from vit_common.convert import torch_to_flax

            vit_flax.save_pretrained(fx, torch_to_flax(model.state_dict(), config), out)
        data = json.loads((out / "config.json").read_text())
        assert ("architecture" in data) == (i == 0) and (data.get("model_type") == "twin_vit") == (i == 1)
        back = vit_torch.from_pretrained(out)
        x = _pixels(32, 32)
        assert back.config == config
        _close(_torch(model, x), _torch(back, x), 1e-6)


def test_own_config_round_trips_every_field() -> None:
    config = ViTConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=40,
                       image_size=(30, 46), patch_size=7, projection_size=12, num_labels=3, layer_scale=True,
                       layerscale_value=0.3, qk_norm=True, mlp_type="swiglu", pooling="map", class_token=False,
                       extra={"id2label": {0: "a", 1: "b", 2: "c"}, "note": [1, 2]})
    back = ViTConfig.from_hf(json.loads(json.dumps(config.to_own())))
    assert back == config and back.extra == config.extra


# ---------------------------------------------------------------------------------------------
# errors a user can act on

def test_folders_we_cannot_read_say_what_they_are(tmp_path) -> None:
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224"}))
    with pytest.raises(ValueError, match="timm hub folder .* without its weights"):
        checkpoints.load_checkpoint(tmp_path / "timm")
    (tmp_path / "oc").mkdir()
    (tmp_path / "oc" / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": {"embed_dim": 8, "vision_cfg": {"timm_model_name": "convnext_base"}}}))
    (tmp_path / "oc" / "open_clip_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="timm_model_name='convnext_base'") as e:
        checkpoints.load_checkpoint(tmp_path / "oc")
    assert len(str(e.value).splitlines()) == 1
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "hiera"}))
    safetensors_torch.save_file({"w": torch.zeros(1)}, str(tmp_path / "hf" / "model.safetensors"))
    with pytest.raises(ValueError, match="'hiera'") as e:
        checkpoints.load_checkpoint(tmp_path / "hf")
    assert len(str(e.value).splitlines()) == 1
    # a timm model with an architecture we cannot build: its name, once
    (tmp_path / "eva").mkdir()
    (tmp_path / "eva" / "config.json").write_text(json.dumps({"architecture": "eva02_enormous_patch14_clip_224"}))
    safetensors_torch.save_file({"w": torch.zeros(1)}, str(tmp_path / "eva" / "model.safetensors"))
    with pytest.raises(ValueError, match="eva02_enormous_patch14_clip_224") as e:
        checkpoints.load_checkpoint(tmp_path / "eva")
    assert len(str(e.value).splitlines()) == 1


def test_writers_refuse_what_they_cannot_hold(tmp_path) -> None:
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=16, patch_size=8, num_labels=0, projection_size=8)
    state = {k: v.numpy() for k, v in vit_torch.VisionTransformer(config).state_dict().items()}
    with pytest.raises(ValueError, match="projection_size=8"):
        checkpoints.save_timm_hub(state, config, tmp_path / "t")
    with pytest.raises(ValueError, match="cannot hold projection.weight"):
        checkpoints.save_npz(state, config, tmp_path / "x.npz")
    plain = {k: v for k, v in state.items() if k != "projection.weight"}
    with pytest.raises(ValueError, match="no projection"):
        checkpoints.save_open_clip(plain, config.replace(projection_size=0), tmp_path / "o")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_a_bare_safetensors_file_carries_its_config(tmp_path) -> None:
    """Our .safetensors state dicts (HF or timm names) hold the config in their header's metadata:
    they load back as the same model with no config given; timm and safetensors ignore it."""
    config = ViTConfig.from_timm("vit_base_patch16_siglip_gap_224", depth=2, embed_dim=32, num_heads=2, img_size=32)
    torch.manual_seed(9)
    model = vit_torch.VisionTransformer(config).eval()
    _perturb(model, 9)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    checkpoints.save_state_dict(state, tmp_path / "t.safetensors", naming="timm", config=config)
    x = _pixels(32, 32)
    back = vit_torch.from_pretrained(tmp_path / "t.safetensors")
    assert back.config.num_attention_heads == 2 and back.config.pooling == "gap"
    _close(_torch(model, x), _torch(back, x), 1e-6)
    reference = timm.create_model("vit_base_patch16_siglip_gap_224", pretrained=False, depth=2, embed_dim=32,
                                  num_heads=2, img_size=32).eval()
    reference.load_state_dict(safetensors_torch.load_file(str(tmp_path / "t.safetensors")), strict=True)
    with torch.no_grad():
        assert np.abs(reference(x).numpy() - _torch(model, x)["pooled"]).max() <= TOL
    clip = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                     image_size=16, patch_size=8, num_labels=0, projection_size=8, pre_norm=True, patch_bias=False,
                     final_norm="pooled", hidden_act="quick_gelu", layer_norm_eps=1e-5)
    model = vit_torch.VisionTransformer(clip).eval()
    checkpoints.save_state_dict({k: v.numpy() for k, v in model.state_dict().items()}, tmp_path / "c.safetensors",
                                config=clip)
    assert checkpoints.load_checkpoint(tmp_path / "c.safetensors").config.num_attention_heads == 4
    # a header that lies: one clear error naming the file
    safetensors_torch.save_file(model.state_dict(), str(tmp_path / "bad.safetensors"),
                                metadata={"twin_vit_config": "{\"model_type\": \"twin_vit\", \"hidden_size\": -1}"})
    with pytest.raises(ValueError, match="bad.safetensors: its twin_vit_config metadata"):
        checkpoints.load_checkpoint(tmp_path / "bad.safetensors")
