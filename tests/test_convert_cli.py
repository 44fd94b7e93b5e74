"""vit-convert: formats, --verify, --force and exit codes (0 done, 1 verify failed, 2 bad input,
3 destination exists)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vit_torch
from vit_cli.convert import main as convert_main
from vit_common.checkpoints import load_checkpoint, save_state_dict
from vit_common.checkpoints import timm_state as to_timm
from vit_common.config import ViTConfig

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
