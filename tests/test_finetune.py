"""vit-finetune: the same recipe in both frameworks tracks closely, writes loadable checkpoints and
a plot; the full run (slow) reaches >= 95% test accuracy on sklearn's digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vit_common.families as families
import vit_flax
import vit_torch
from vit_cli.finetune import DIGITS_CONFIG, DIGITS_FAMILIES, FinetuneOptions, main, run
from vit_common.datasets import batches, load_digits
from vit_common.preprocessing import patchify

# Same initial weights, same batches, dropout off: the two loss curves may only differ by float32
# rounding, which grows slowly over steps; over the first 10 steps it stays far below this.
FIRST_STEPS_BOUND = 1e-4


def test_smoke_run_both_frameworks(tmp_path) -> None:
    summary = run(FinetuneOptions(str(tmp_path / "run"), epochs=2, framework="both", max_steps=40, seed=0, quiet=True))
    a, b = np.asarray(summary["flax"]["losses"]), np.asarray(summary["torch"]["losses"])
    assert len(a) == len(b) == 40
    assert summary["max_abs_loss_diff_first_10_steps"] <= FIRST_STEPS_BOUND
    assert a[-5:].mean() < a[:5].mean() and b[-5:].mean() < b[:5].mean()  # on its way down
    for sub in ("torch", "flax"):
        model = vit_torch.from_pretrained(tmp_path / "run" / sub)
        fx, params = vit_flax.from_pretrained(tmp_path / "run" / sub)
        assert model.config.num_labels == 10 and fx.config.image_size == 8
    assert (tmp_path / "run" / "loss_curves.png").stat().st_size > 1000
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert set(history) >= {"flax", "torch", "max_abs_loss_diff_first_10_steps"}
    assert main(["-o", str(tmp_path / "run"), "--steps", "2", "--quiet"]) == 3  # not without --force


def test_data_and_batches_are_deterministic() -> None:
    x_train, y_train, x_test, y_test = load_digits(0)
    assert x_train.shape == (1437, 8, 8, 1) and x_test.shape == (360, 8, 8, 1)
    assert -1.0 <= x_train.min() and x_train.max() <= 1.0 and set(np.unique(y_train)) == set(range(10))
    first = list(batches(len(x_train), 64, 2, 0))
    assert [b.tolist() for b in first] == [b.tolist() for b in batches(len(x_train), 64, 2, 0)]
    assert len(first) == 2 * (1437 // 64)
    assert x_train.shape[1:] == (*DIGITS_CONFIG.image_hw, DIGITS_CONFIG.num_channels)


@pytest.mark.slow
def test_full_run_learns(tmp_path) -> None:
    summary = run(FinetuneOptions(str(tmp_path / "full"), epochs=60, framework="both", max_steps=None, seed=0, quiet=True))
    for name in ("flax", "torch"):
        assert summary[name]["test_accuracy"] >= 0.95, (name, summary[name]["test_accuracy"])


# DINOv2-reg (LayerScale, registers, its [CLS; patch mean] head) in the default run, the rest slow
@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f != "dinov2-registers" else f
                                    for f in DIGITS_FAMILIES if f != "vit"])
def test_every_family_fine_tunes_alike_in_both_frameworks(tmp_path, family: str) -> None:
    """The digits model with each family's switches and HF head: the two loss curves agree, and
    both checkpoints are that family's HF directories, loaded by its HF classifier class and by
    both twins with the same logits."""
    import torch
    import transformers

    summary = run(FinetuneOptions(str(tmp_path / "run"), epochs=1, framework="both", max_steps=12, seed=0, quiet=True,
                  family=family))
    assert summary["family"] == family
    assert summary["max_abs_loss_diff_first_10_steps"] <= FIRST_STEPS_BOUND
    x = torch.from_numpy(load_digits(0)[2][:4].transpose(0, 3, 1, 2).copy())
    for sub in ("torch", "flax"):
        config = json.loads((tmp_path / "run" / sub / "config.json").read_text())
        hf_class = getattr(transformers, config["architectures"][0])
        hf, info = hf_class.from_pretrained(tmp_path / "run" / sub, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], (sub, info)
        ours = vit_torch.from_pretrained(tmp_path / "run" / sub)
        fx, params = vit_flax.from_pretrained(tmp_path / "run" / sub)
        with torch.no_grad():
            if families.timm.is_naflex(ours.config):  # SigLIP 2 NaFlex: HF takes the images as patches
                p, (gh, gw) = ours.config.patch_size, ours.config.grid_size
                patches = np.stack([patchify(img, p) for img in x.numpy().transpose(0, 2, 3, 1)])
                want = hf.eval()(pixel_values=torch.from_numpy(patches),
                                 pixel_attention_mask=torch.ones(patches.shape[:2], dtype=torch.long),
                                 spatial_shapes=torch.tensor([[gh, gw]] * len(patches))).logits.numpy()
            else:
                want = hf.eval()(pixel_values=x).logits.numpy()
            got = ours(x).numpy()
        flax_got = np.asarray(fx.apply({"params": params}, x.numpy().transpose(0, 2, 3, 1)))
        assert float(np.abs(got - want).max()) <= 1e-5 and float(np.abs(flax_got - want).max()) <= 1e-5


@pytest.mark.slow  # CI time; the scanned mesh run below keeps --scan-layers and --mesh in the default set
def test_flax_scale_options_keep_the_loss_curve(tmp_path) -> None:
    """Scanned, rematerialised and on a (1, 1) mesh, the Flax run is the same function and the same
    optimizer: its losses equal the plain run's (float32 rounding of a differently compiled program)."""
    from vit_cli.finetune import FlaxScale

    plain = run(FinetuneOptions(str(tmp_path / "a"), epochs=1, framework="flax", max_steps=8, seed=0, quiet=True))
    scaled = run(FinetuneOptions(str(tmp_path / "b"), epochs=1, framework="flax", max_steps=8, seed=0, quiet=True,
                 scale=FlaxScale(mesh=(1, 1), scan_layers=True, remat=True)))
    a, b = np.asarray(plain["flax"]["losses"]), np.asarray(scaled["flax"]["losses"])
    assert float(np.abs(a - b).max()) <= 1e-5
    back = vit_torch.from_pretrained(tmp_path / "b" / "flax")  # written per layer, as HF's tree
    assert back.config.num_hidden_layers == DIGITS_CONFIG.num_hidden_layers
    half = run(FinetuneOptions(str(tmp_path / "c"), epochs=1, framework="flax", max_steps=8, seed=0, quiet=True,
               scale=FlaxScale(dtype="bfloat16")))
    assert float(np.abs(np.asarray(half["flax"]["losses"]) - a).max()) <= 0.05  # bfloat16 compute
    assert main(["-o", str(tmp_path / "d"), "--mesh", "data=3,model=5", "--steps", "1", "--quiet"]) == 2


def test_mesh_run_on_eight_devices_follows_the_single_device_run(tmp_path) -> None:
    """vit-finetune --mesh data=2,model=4 --scan-layers on 8 simulated CPU devices: the loss curve
    of the sharded run equals the one-device run's (fp32)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-m", "vit_cli.finetune", "-o", str(tmp_path / "mesh"), "--framework",
                          "flax", "--steps", "6", "--mesh", "data=2,model=4", "--scan-layers", "--quiet"],
                         capture_output=True, text=True, timeout=600, env=env, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    sharded = json.loads((tmp_path / "mesh" / "history.json").read_text())["flax"]["losses"]
    single = run(FinetuneOptions(str(tmp_path / "one"), epochs=1, framework="flax", max_steps=6, seed=0, quiet=True))
    assert float(np.abs(np.asarray(sharded) - np.asarray(single["flax"]["losses"])).max()) <= 1e-5


def test_an_interrupted_run_resumes_exactly(tmp_path, capsys) -> None:
    """--stop-after 5 (as an interruption), then --resume: both frameworks' loss curves equal the
    uninterrupted run's bit for bit, from orbax (Flax) and torch (model, optimizer, schedule)
    checkpoints."""
    whole = run(FinetuneOptions(str(tmp_path / "whole"), epochs=1, framework="both", max_steps=9, seed=0, quiet=True))
    args = ["-o", str(tmp_path / "cut"), "--epochs", "1", "--steps", "9", "--quiet"]
    assert main(args + ["--stop-after", "5", "--checkpoint-every", "2"]) == 0
    assert "--resume" in capsys.readouterr().out
    assert not (tmp_path / "cut" / "history.json").exists()
    saved = sorted(p.name for p in (tmp_path / "cut" / "checkpoints" / "torch").iterdir())
    assert saved[-2:] == ["step_00000005.json", "step_00000005.pt"] and "step_00000004.pt" in saved
    assert main(args + ["--resume", "--checkpoint-every", "2"]) == 0
    resumed = json.loads((tmp_path / "cut" / "history.json").read_text())
    for name in ("flax", "torch"):
        assert resumed[name]["losses"] == whole[name]["losses"], name
    assert main(["-o", str(tmp_path / "none"), "--resume", "--quiet"]) == 2


def _folder(root, classes=("cat", "dog", "fish"), per_class=10, size=(20, 24)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (*size, 3), np.uint8)
            img[..., c] += 150  # each class its own dominant colour: learnable
            Image.fromarray(img).save(root / name / f"{i:02d}.png")
    (root / "cat" / "notes.txt").write_text("not an image")


@pytest.mark.slow
def test_image_folder_trains_in_both_frameworks(tmp_path) -> None:
    """--data DIR (one subdirectory per class), a timm-named model of a family: the same batches in
    both frameworks (seeded shuffling), the loss curves agree, and the checkpoints carry the labels."""
    _folder(tmp_path / "data")
    summary = run(FinetuneOptions(str(tmp_path / "run"), epochs=2, framework="both", max_steps=None, seed=0, quiet=True,
                  data_dir=str(tmp_path / "data"), model_name="vit_small_patch14_dinov2",
                  image_size=28, batch_size=8))
    assert summary["max_abs_loss_diff_first_10_steps"] <= FIRST_STEPS_BOUND
    assert len(summary["flax"]["losses"]) == 2 * (24 // 8)  # 24 of the 30 images train, 6 test
    torch_dir = tmp_path / "run" / "torch"
    model = vit_torch.from_pretrained(torch_dir)
    assert model.config.extra["id2label"] == {0: "cat", 1: "dog", 2: "fish"} and model.config.layer_scale
    again = run(FinetuneOptions(str(tmp_path / "again"), epochs=2, framework="flax", max_steps=None, seed=0, quiet=True,
                data_dir=str(tmp_path / "data"), model_name="vit_small_patch14_dinov2", image_size=28, batch_size=8))
    assert again["flax"]["losses"] == summary["flax"]["losses"]  # deterministic


def test_image_folder_errors_name_the_folder(tmp_path) -> None:
    (tmp_path / "one" / "only").mkdir(parents=True)
    assert main(["-o", str(tmp_path / "o1"), "--data", str(tmp_path / "one"), "--quiet"]) == 2
    (tmp_path / "two" / "a").mkdir(parents=True)
    (tmp_path / "two" / "b").mkdir()
    assert main(["-o", str(tmp_path / "o2"), "--data", str(tmp_path / "two"), "--quiet"]) == 2
    _folder(tmp_path / "tiny", per_class=2)
    assert main(["-o", str(tmp_path / "o3"), "--data", str(tmp_path / "tiny"), "--image-size", "16",
                 "--quiet"]) == 2  # 4 training images make no batch of 64


@pytest.mark.slow  # B-size CLIP on CPU
@pytest.mark.parametrize("name", ["vit_base_patch16_clip_224", "deit_tiny_distilled_patch16_224"])
def test_image_folder_models_of_other_families(tmp_path, name: str) -> None:
    """Each family trains in its HF layout with its HF head, so the checkpoint is what was trained."""
    import transformers

    _folder(tmp_path / "data", per_class=5)
    run(FinetuneOptions(str(tmp_path / "run"), epochs=1, framework="torch", max_steps=1, seed=0, quiet=True,
        data_dir=str(tmp_path / "data"), model_name=name, image_size=32, batch_size=4))
    config = json.loads((tmp_path / "run" / "torch" / "config.json").read_text())
    hf, info = getattr(transformers, config["architectures"][0]).from_pretrained(
        tmp_path / "run" / "torch", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_image_folder_starts_from_a_checkpoint(tmp_path) -> None:
    """--weights: the checkpoint's backbone (moved to --image-size) under a new head for the
    folder's classes; one AdamW step (lr 1e-3) later every backbone weight is within ~lr of it."""
    import torch

    from vit_common.config import ViTConfig

    source = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=48,
                       image_size=32, patch_size=8, num_labels=7)
    torch.manual_seed(5)
    vit_torch.save_pretrained(vit_torch.ViTForImageClassification(source).eval(), tmp_path / "pre")
    _folder(tmp_path / "data", per_class=5)
    run(FinetuneOptions(str(tmp_path / "run"), epochs=1, framework="torch", max_steps=1, seed=0, quiet=True,
        data_dir=str(tmp_path / "data"), image_size=24, batch_size=4, weights=str(tmp_path / "pre")))
    tuned = vit_torch.from_pretrained(tmp_path / "run" / "torch")
    assert tuned.config.num_labels == 3 and tuned.config.image_size == 24
    pre = vit_torch.from_pretrained(tmp_path / "pre")
    for k, v in pre.vit.state_dict().items():
        if "position_embeddings" not in k:  # resampled to 24 px
            assert float((tuned.vit.state_dict()[k] - v).abs().max()) <= 2e-3, k
    assert main(["-o", str(tmp_path / "x"), "--weights", str(tmp_path / "pre"), "--quiet"]) == 2
