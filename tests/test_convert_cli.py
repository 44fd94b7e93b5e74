"""vit-convert: formats, --verify, --force and exit codes (0 done, 1 verify failed, 2 bad input,
3 destination exists)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import vit_torch
from vit_cli.convert_tool import main as convert_main
from vit_common import layouts
from vit_common.checkpoints import load_checkpoint, save_state_dict
from vit_common.checkpoints import timm_state as to_timm
from vit_common.config import SWITCHES, ViTConfig

CFG = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=48,
                image_size=16, patch_size=8, num_labels=3, layer_norm_eps=1e-6)


@pytest.fixture()
def timm_file(tmp_path) -> Path:
    torch.manual_seed(0)
    state = {k: v.numpy() for k, v in vit_torch.ViTForImageClassification(CFG).state_dict().items()}
    path = tmp_path / "timm.pth"
    save_state_dict(state, path, naming="timm")
    (tmp_path / "heads.json").write_text('{"num_attention_heads": 4}')
    return path


@pytest.mark.parametrize("dst, to, kind", [
    ("hf_dir", None, "hf"), ("flax_dir", "flax", "flax"), ("p.msgpack", None, "flax"),
    ("p.safetensors", None, "torch"), ("t.safetensors", "timm", "timm"), ("g.npz", None, "npz"),
])
def test_convert_and_verify(timm_file, capsys, dst: str, to: str | None, kind: str) -> None:
    out = timm_file.parent / dst
    args = [str(timm_file), "-o", str(out), "--config", str(timm_file.parent / "heads.json"), "--verify"]
    assert convert_main(args + (["--to", to] if to else [])) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} ({kind})" in text and "verify: OK" in text
    assert "read " in text and "timm (.pth)" in text
    back = load_checkpoint(out, CFG)
    original = load_checkpoint(timm_file, CFG)
    for k, v in original.state.items():
        assert np.array_equal(back.state[k], v), k
    if kind in ("timm", "npz", "torch"):
        assert "hold no config" in text


def test_exit_codes(timm_file, capsys) -> None:
    heads = ["--config", str(timm_file.parent / "heads.json")]
    out = timm_file.parent / "x.safetensors"
    # 2: the head count is missing, and the message says how to give it
    assert convert_main([str(timm_file), "-o", str(out)]) == 2
    assert "num_attention_heads" in capsys.readouterr().err and not out.exists()
    assert convert_main([str(timm_file), "-o", str(out), *heads]) == 0
    before = out.read_bytes()
    # 3: an existing output is kept unless --force
    assert convert_main([str(timm_file), "-o", str(out), *heads]) == 3
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert convert_main([str(timm_file), "-o", str(out), *heads, "--force"]) == 0
    # 1: --verify above tolerance (torch -> flax is not bit-exact, so a zero bound fails)
    assert convert_main([str(timm_file), "-o", str(timm_file.parent / "f.msgpack"), *heads,
                         "--verify", "--tolerance", "0"]) == 1
    assert "verify: FAILED" in capsys.readouterr().out
    # 2: unreadable input, impossible target
    (timm_file.parent / "bad.safetensors").write_bytes(b"garbage!" * 4)
    assert convert_main([str(timm_file.parent / "bad.safetensors"), "-o",
                         str(timm_file.parent / "y.safetensors")]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
    assert convert_main([str(timm_file), "-o", str(timm_file.parent / "x.npz"), "--to", "hf"]) == 2
    assert "save_pretrained directory" in capsys.readouterr().err
    assert sorted(p.name for p in timm_file.parent.iterdir()) == [
        "bad.safetensors", "f.msgpack", "heads.json", "timm.pth", "x.safetensors"]


def test_console_script_help() -> None:
    script = Path(sys.executable).parent / "vit-convert"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "exit codes" in out.stdout and "--verify" in out.stdout


def test_preset_config(tmp_path) -> None:
    config = ViTConfig.from_preset("Ti/16", num_hidden_layers=12, image_size=32, num_labels=2)
    with torch.device("meta"):
        shapes = vit_torch.ViTForImageClassification(config).state_dict()
    rng = np.random.default_rng(0)
    state = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in shapes.items()}
    save_state_dict(to_timm(state), tmp_path / "ti.safetensors")  # timm names, as given
    assert convert_main([str(tmp_path / "ti.safetensors"), "-o", str(tmp_path / "hf"),
                         "--config", "Ti/16"]) == 0
    assert load_checkpoint(tmp_path / "hf").config.num_attention_heads == 3


# --- the family: every format each family exists in, --verify reading the result back in its layout

_KW = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, image_size=28,
           patch_size=14)
_TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48)
HF_SOURCES = {
    "dinov2": lambda: transformers.Dinov2Model(transformers.Dinov2Config(**_KW)),
    "dinov2-registers-classifier": lambda: transformers.Dinov2WithRegistersForImageClassification(
        transformers.Dinov2WithRegistersConfig(**_KW, num_register_tokens=2, num_labels=3)),
    "clip-classifier": lambda: transformers.CLIPForImageClassification(
        transformers.CLIPConfig(vision_config=_KW, text_config=_TEXT, num_labels=3)),
    "siglip": lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**_KW)),
    "deit-teacher": lambda: transformers.DeiTForImageClassificationWithTeacher(
        transformers.DeiTConfig(**_KW, num_labels=3)),
}
# (family, destination, --to): every format that holds the family
FAMILY_TARGETS = [(f, d, t) for f in HF_SOURCES for d, t in (("hf_dir", None), ("p.msgpack", None))] + [
    ("dinov2", "t.safetensors", "timm"), ("siglip", "t.safetensors", "timm"), ("siglip", "b.npz", None),
    ("deit-teacher", "t.safetensors", "timm"),
    # a Flax folder of a family HF has no Flax class for: the family's config.json beside our tree
    ("deit-teacher", "flax_dir", "flax"), ("siglip", "flax_dir", "flax")]
# what a format cannot hold is refused by name, nothing written
FAMILY_REFUSALS = [
    ("dinov2-registers-classifier", "t.safetensors", "timm", "classifier_input='cls_patch_mean'"),
    ("clip-classifier", "b.npz", None, "classifier_input='patch_mean'"),
    ("dinov2", "b.npz", None, "layer_scale=True"),
    ("clip-classifier", "t.safetensors", "timm", "classifier_input='patch_mean'"),
]


def _hf_source(family: str, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = HF_SOURCES[family]()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # LayerScale, norms and biases away from their init
    model.save_pretrained(tmp_path / "src")
    return tmp_path / "src"


@pytest.mark.parametrize("family, dst, to", FAMILY_TARGETS)
def test_family_convert_and_verify(family: str, dst: str, to: str | None, tmp_path, capsys) -> None:
    src = _hf_source(family, tmp_path)
    rc = convert_main([str(src), "-o", str(tmp_path / dst), "--verify", "--quiet"]
                      + (["--to", to] if to else []))
    text = capsys.readouterr().out
    assert rc == 0 and "verify: OK" in text, text
    assert ("logits" in text) == ("classifier" in family or family.startswith("deit"))


@pytest.mark.parametrize("family, dst, to, words", FAMILY_REFUSALS)
def test_family_formats_refuse_what_they_cannot_hold(family: str, dst: str, to: str | None, words: str,
                                                     tmp_path, capsys) -> None:
    src = _hf_source(family, tmp_path)
    rc = convert_main([str(src), "-o", str(tmp_path / dst), "--quiet"] + (["--to", to] if to else []))
    assert rc == 2 and words in capsys.readouterr().err
    assert not (tmp_path / dst).exists()


TIMM_SMALL = dict(embed_dim=32, depth=2, num_heads=2, img_size=28, patch_size=14)
# (timm name, kwargs, --config fields beyond the head count, the HF class its HF output loads in)
TIMM_SOURCES = [
    ("vit_small_patch14_reg4_dinov2", dict(init_values=0.5), {}, "Dinov2WithRegistersModel"),
    ("vit_small_patch14_dinov2", dict(init_values=0.5), {}, "Dinov2Model"),
    ("deit_tiny_distilled_patch16_224", dict(num_classes=3), {}, "DeiTForImageClassificationWithTeacher"),
    ("vit_base_patch16_siglip_224", {}, {"hidden_act": "gelu"}, None),
    ("vit_base_patch16_clip_224", {}, {"layer_norm_eps": 1e-5}, None),
    ("vit_base_patch16_gap_224", {}, {}, None),
    ("vit_medium_patch16_reg4_gap_256", {}, {}, None),
    ("vit_small_patch16_224", dict(qk_norm=True, init_values=0.3, num_classes=4), {}, None),
]


@pytest.mark.parametrize("name, kwargs, fields, hf_class", TIMM_SOURCES)
def test_timm_family_files_need_only_the_head_count(name: str, kwargs: dict, fields: dict,
                                                    hf_class: str | None, tmp_path, capsys) -> None:
    """A timm file of any family converts with --config stating only what tensors cannot say (the
    head count; eps / activation where timm's differ from the defaults): the switches are read
    from the tensors, the result is checked by --verify, and equals timm's own architecture."""
    import json

    import timm
    model = timm.create_model(name, pretrained=False, **{**TIMM_SMALL, **kwargs}).eval()
    save_state_dict({k: v.numpy() for k, v in model.state_dict().items()}, tmp_path / "t.safetensors")
    (tmp_path / "cfg.json").write_text(json.dumps({"num_attention_heads": 2, **fields}))
    read = load_checkpoint(tmp_path / "t.safetensors", tmp_path / "cfg.json").config
    want = layouts.timm_form(ViTConfig.from_timm(name, **{**TIMM_SMALL, **kwargs}))
    assert {k: getattr(read, k) for k in SWITCHES} == {k: getattr(want, k) for k in SWITCHES}
    dst = tmp_path / ("hf" if hf_class else "p.msgpack")
    rc = convert_main([str(tmp_path / "t.safetensors"), "-o", str(dst), "--config", str(tmp_path / "cfg.json"),
                       "--verify", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "verify: OK" in text, text
    if hf_class:
        back, info = getattr(transformers, hf_class).from_pretrained(dst, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]


def test_max_shard_size_writes_hf_shards(timm_file, capsys) -> None:
    out = timm_file.parent / "sharded"
    assert convert_main([str(timm_file), "-o", str(out), "--config", str(timm_file.parent / "heads.json"),
                         "--max-shard-size", "20kB", "--verify"]) == 0
    assert "verify: OK" in capsys.readouterr().out
    assert len(list(out.glob("model-*-of-*.safetensors"))) >= 2 and (out / "model.safetensors.index.json").exists()
    with pytest.raises(SystemExit) as e:  # argparse: exit 2 before any work
        convert_main([str(timm_file), "-o", str(timm_file.parent / "x"), "--max-shard-size", "lots"])
    assert e.value.code == 2 and "expected a size such as 5GB" in capsys.readouterr().err
    assert not (timm_file.parent / "x").exists()
