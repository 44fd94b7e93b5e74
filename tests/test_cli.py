"""vit-demo: the main job shows per-component parity and timings, and fails loudly on a mismatch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import vit_common.convert
from parity_tests.twins import FAMILY_CONFIGS
from vit_cli.demo import run_demo
from vit_common.config import ViTConfig

SMALL = ViTConfig.from_preset("Ti/16", num_hidden_layers=2, image_size=64)


def test_demo_console_script(tmp_path) -> None:
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)).save(image)
    out = subprocess.run(
        [sys.executable, "-m", "vit_cli.demo", str(image), "--preset", "Ti/16", "--batch-size",
         "2", "--iters", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for row in ["embeddings", "encoder.layer.0", "encoder.layer.11", "layernorm", "pooled (cls, full forward)",
                "jit compile", "torch eager", "flax jit", "SAME MODEL"]:
        assert row in text, f"{row!r} missing from the demo output:\n{text}"
    assert str(image) in text


def test_demo_reports_a_mismatch(monkeypatch) -> None:
    real = vit_common.convert.torch_to_flax

    def broken(state, config=None, with_head=None):
        params = real(state, config, with_head)
        dense = params["encoder"]["layer"]["1"]["output"]["dense"]
        # a small, wrong bias in the last layer (not a constant shift, which LayerNorm would erase)
        dense["bias"] = dense["bias"] + 1e-2 * np.random.default_rng(0).normal(size=dense["bias"].shape)
        return params

    monkeypatch.setattr(vit_common.convert, "torch_to_flax", broken)
    lines: list[str] = []
    assert run_demo(SMALL, None, batch_size=1, iters=1, seed=0, out=lines.append) == 1
    assert any(line.startswith("MISMATCH") for line in lines)
    table = {line.split()[0]: line for line in lines if line.startswith("encoder.layer.")}
    # the table points at the layer that differs: layer 0 agrees, layer 1 does not
    assert float(table["encoder.layer.0"].split()[-1]) <= 1e-5
    assert float(table["encoder.layer.1"].split()[-1]) >= 5e-4


@pytest.mark.parametrize("args, message", [
    (["--preset", "Q/16"], "unknown ViT preset 'Q/16'"),
    (["--preset", "vit_pe_spatial_tiny_patch16_512"], "final norm"),
    (["does-not-exist.png", "--preset", "Ti/16"], "does-not-exist.png"),
    (["--batch-size", "0"], "--batch-size"),
])
def test_demo_bad_arguments(args: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, "-m", "vit_cli.demo", *args], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and message in out.stderr


@pytest.mark.parametrize("family", list(FAMILY_CONFIGS))
def test_demo_runs_every_family(family: str) -> None:
    """The component walk follows each family's pipeline (pre-norm, no final token norm, MAP / gap
    pooling) and says SAME MODEL; a slip in a family-only weight is a MISMATCH."""
    config = FAMILY_CONFIGS[family]
    lines: list[str] = []
    assert run_demo(config, None, batch_size=1, iters=1, seed=0, out=lines.append) == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert f"pooled ({config.pooling}, full forward)" in text and "SAME MODEL" in text
    assert ("pre_layernorm" in text) == config.pre_norm
    assert any(line.startswith("layernorm") for line in lines) == (config.final_norm == "tokens")


def test_demo_catches_a_family_slip(monkeypatch) -> None:
    real = vit_common.convert.torch_to_flax

    def broken(state, config=None, with_head=None):
        params = real(state, config, with_head)
        scale = params["encoder"]["layer"]["0"]["layer_scale2"]
        scale["lambda1"] = scale["lambda1"] * 1.5  # a LayerScale slip
        return params

    monkeypatch.setattr(vit_common.convert, "torch_to_flax", broken)
    lines: list[str] = []
    config = FAMILY_CONFIGS["dinov2reg-swiglu-qknorm"]
    assert run_demo(config, None, batch_size=1, iters=1, seed=0, out=lines.append) == 1
    assert any(line.startswith("MISMATCH") for line in lines)


@pytest.mark.parametrize("name, switch, value", [
    ("vit_small_patch14_dinov2", "layer_scale", True),
    ("deit_base_distilled_patch16_224", "distillation_token", True),
    ("vit_base_patch16_clip_224", "pre_norm", True),
    ("vit_base_patch16_siglip_224", "pooling", "map"),
    ("vit_small_patch14_reg4_dinov2", "num_register_tokens", 4),
    ("B/16", "pooling", "cls"),
])
def test_demo_preset_takes_timm_names(name: str, switch: str, value: object) -> None:
    """--preset reads a size preset or a timm name; the sizes are checked against an independent
    source: timm's own model (built on the meta device), or the ViT paper's table for B/16."""
    import timm
    import torch

    from vit_cli.demo import _parser

    config = _parser().parse_args(["--preset", name]).preset
    assert getattr(config, switch) == value
    if "/" in name:  # ViT-B/16 (Dosovitskiy et al., table 1)
        want = (768, 12, 12, 3072, 16, 224)
    else:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
        want = (model.embed_dim, len(model.blocks), model.blocks[0].attn.num_heads,
                model.blocks[0].mlp.fc1.out_features // (2 if config.mlp_type == "swiglu" else 1),
                model.patch_embed.patch_size[0], model.patch_embed.img_size[0])
    got = (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
           config.patch_size, config.image_hw[0])
    assert got == want
