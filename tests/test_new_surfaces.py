"""The new surfaces, tried as an attacker would and as a user would: the mirrored engines and training
steps, training checkpoints (torch and orbax), torch.distributed checkpoints' metadata, npz bombs
and bad CRCs, huge numbers, file names no terminal can print. Each bad input is one clear error with
the documented exit code, nothing lost, nothing run."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from PIL import Image

import vit_flax
import vit_torch
from vit_common.config import ViTConfig
from vit_common.convert import torch_to_flax
from vit_common.formats.npz_codec import read_npz

CFG = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                image_size=16, patch_size=4, num_labels=5, layer_norm_eps=1e-6)


def _torch_model(config: ViTConfig = CFG, seed: int = 0) -> vit_torch.ViTForImageClassification:
    torch.manual_seed(seed)
    return vit_torch.ViTForImageClassification(config).eval()


# --- the mirrored engines -----------------------------------------------------------------------

@pytest.mark.parametrize("config", [CFG, CFG.replace(class_token=False, pooling="map",
                                                     position_embedding_covers_prefix=False)],
                         ids=["vit", "siglip-map"])
def test_torch_and_flax_engines_give_the_same_outputs(config: ViTConfig) -> None:
    model = _torch_model(config)
    params = torch_to_flax(model.state_dict(), config)
    x = np.random.default_rng(0).normal(size=(7, 16, 16, 3)).astype(np.float32)
    pt = vit_torch.InferenceEngine(config, model.state_dict(), batch_size=4)
    fx = vit_flax.InferenceEngine(config, params, batch_size=4)
    a, b = pt(x), fx(x)
    assert set(a) == set(b) == {"pooled", "logits"}
    for k in a:
        assert a[k].shape == b[k].shape and float(np.abs(a[k] - b[k]).max()) <= 1e-5, k
    np.testing.assert_array_equal(pt.embed(x), a["pooled"])
    np.testing.assert_array_equal(pt.logits(x), a["logits"])
    with torch.no_grad():  # the pooled output is the model's own (SigLIP: its attention pool)
        want = model.vit(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert float(np.abs(a["pooled"] - want).max()) <= 1e-5
    assert pt(x[:0])["pooled"].shape == (0, config.hidden_size)


def test_the_old_cls_output_name_reads_pooled_with_a_warning() -> None:
    model = _torch_model()
    x = np.zeros((2, 16, 16, 3), np.float32)
    for engine in (vit_torch.InferenceEngine(CFG, model), vit_flax.InferenceEngine(CFG, torch_to_flax(model.state_dict()))):
        out = engine(x)
        with pytest.warns(DeprecationWarning, match="pooled"):
            old = out["cls"]
        np.testing.assert_array_equal(old, out["pooled"])
        assert "cls" not in out and set(out) == {"pooled", "logits"}


@pytest.mark.parametrize("kwargs, name", [({"batch_size": "3"}, "batch_size"), ({"batch_size": 0}, "batch_size"),
                                          ({"micro_batch": "3"}, "micro_batch"), ({"batch_size": True}, "batch_size")])
def test_engine_arguments_are_checked_by_name(kwargs: dict, name: str) -> None:
    params = torch_to_flax(_torch_model().state_dict())
    with pytest.raises(ValueError, match=name):
        vit_flax.InferenceEngine(CFG, params, **kwargs)
    if "micro_batch" not in kwargs:
        with pytest.raises(ValueError, match=name):
            vit_torch.InferenceEngine(CFG, _torch_model(), **kwargs)


# --- the mirrored training steps ------------------------------------------------------------------

def test_torch_and_flax_train_steps_take_the_same_step() -> None:
    """One SGD step of each twin's TrainStep from the same weights and batch: the same loss and the
    same updated weights (float32 rounding only)."""
    from vit_common.convert import flax_to_torch
    from vit_flax.training import make_train_step as flax_step
    from vit_torch.training import make_train_step as torch_step

    model = _torch_model()
    params = jax.tree_util.tree_map(jnp.asarray, torch_to_flax(model.state_dict()))
    x = np.random.default_rng(1).normal(size=(4, 16, 16, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    fstep = flax_step(vit_flax.ViTForImageClassification(CFG), optax.sgd(0.1))
    new_params, _, floss = fstep(params, fstep.init(params), x, y)
    tstep = torch_step(model, torch.optim.SGD(model.parameters(), lr=0.1))
    tloss = tstep(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y))
    assert abs(float(floss) - tloss) <= 1e-5
    back = flax_to_torch(jax.tree_util.tree_map(np.asarray, new_params))
    for k, v in model.state_dict().items():
        assert float(np.abs(back[k] - v.numpy()).max()) <= 1e-5, k


# --- torch training state --------------------------------------------------------------------------

def _torch_state_file(tmp_path: Path, config: ViTConfig = CFG) -> tuple[Path, torch.nn.Module, torch.optim.Optimizer]:
    from vit_torch.training import cosine_schedule, save_train_state

    model = _torch_model(config)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    path = tmp_path / "step_00000001.pt"
    save_train_state(path, model, opt, cosine_schedule(opt, 10), 1)
    return path, model, opt


def test_torch_train_state_round_trips(tmp_path: Path) -> None:
    from vit_torch.training import cosine_schedule, restore_train_state

    path, model, _ = _torch_state_file(tmp_path)
    other = _torch_model(seed=1)
    opt = torch.optim.AdamW(other.parameters(), 1e-3)
    assert restore_train_state(path, other, opt, cosine_schedule(opt, 10)) == 1
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v)


def test_torch_train_state_of_another_model_or_without_optimizer_is_refused(tmp_path: Path) -> None:
    from vit_torch.training import restore_train_state

    path, _, _ = _torch_state_file(tmp_path)
    bigger = _torch_model(CFG.replace(hidden_size=64, intermediate_size=96))
    with pytest.raises(ValueError, match=f"{path}.*another model"):
        restore_train_state(path, bigger, torch.optim.AdamW(bigger.parameters()))
    saved = torch.load(path, weights_only=True)
    del saved["optimizer"]
    torch.save(saved, tmp_path / "no_opt.pt")
    model = _torch_model()
    with pytest.raises(ValueError, match="no_opt.pt.*no optimizer"):
        restore_train_state(tmp_path / "no_opt.pt", model, torch.optim.AdamW(model.parameters()))


def test_torch_train_state_never_replaces_a_users_file(tmp_path: Path) -> None:
    from vit_torch.training import save_train_state

    mine = tmp_path / "step_00000001.pt"
    mine.write_text("my notes")
    model = _torch_model()
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(FileExistsError):
        save_train_state(mine, model, opt, None, 1)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        save_train_state(mine, model, opt, None, 1, overwrite=True)
    assert mine.read_text() == "my notes"


# --- orbax training state ----------------------------------------------------------------------------

def _orbax_state(tmp_path: Path) -> tuple[Path, dict, dict]:
    from vit_flax.training import save_train_state

    params = {"w": jnp.arange(12.0).reshape(3, 4), "b": jnp.ones(4)}
    opt_state = {"mu": jnp.zeros((3, 4))}
    path = tmp_path / "step_00000002"
    save_train_state(path, params, opt_state, 2)
    return path, params, opt_state


def test_orbax_state_onto_a_directory_of_other_files_is_refused(tmp_path: Path) -> None:
    from vit_flax.training import save_train_state

    path, params, opt_state = _orbax_state(tmp_path)
    save_train_state(path, params, opt_state, 3, overwrite=True)  # ours: replaced
    users = tmp_path / "mine"
    users.mkdir()
    (users / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        save_train_state(users, params, opt_state, 1, overwrite=True)
    assert (users / "mine.txt").read_text() == "keep me"


def test_damaged_orbax_state_is_one_error_naming_the_directory(tmp_path: Path) -> None:
    code = f"""
import sys, os, shutil, jax.numpy as jnp
from vit_flax.training import save_train_state, restore_train_state
params, opt = {{"w": jnp.arange(4096.0)}}, {{"mu": jnp.zeros(4096)}}
for case in ("truncated", "manifest"):
    d = os.path.join({str(tmp_path)!r}, case)
    save_train_state(d, params, opt, 1)
    if case == "truncated":
        for root, _, files in os.walk(os.path.join(d, "ocdbt.process_0", "d")):
            for f in files:
                open(os.path.join(root, f), "r+b").truncate(8)
    else:
        os.remove(os.path.join(d, "manifest.ocdbt"))
    try:
        restore_train_state(d, params, opt)
        print(case, "restored")
    except ValueError as e:
        print(case, "ValueError", d in str(e))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["truncated", "ValueError", "True", "manifest", "ValueError", "True"], out.stdout
    assert "Task exception was never retrieved" not in out.stderr and "Traceback" not in out.stderr


# --- torch.distributed.checkpoint metadata --------------------------------------------------------------

class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_sharded_checkpoint_metadata_never_runs(tmp_path: Path) -> None:
    from vit_torch.distributed import load_sharded_checkpoint

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / ".metadata").write_bytes(pickle.dumps(_Payload(str(marker))))
    model = _torch_model()
    with pytest.raises(ValueError, match="refusing to read the checkpoint metadata.*system"):
        load_sharded_checkpoint(model, None, str(ckpt))
    assert not marker.exists()
    (ckpt / ".metadata").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match=".metadata"):
        load_sharded_checkpoint(model, None, str(ckpt))


def test_sharded_checkpoint_of_another_model_is_a_value_error(tmp_path: Path) -> None:
    from vit_torch.distributed import load_sharded_checkpoint, save_sharded_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_sharded_checkpoint(_torch_model(), None, str(tmp_path / "ckpt"))
        bigger = _torch_model(CFG.replace(hidden_size=64, intermediate_size=96))
        with pytest.raises(ValueError, match="ckpt: not a readable sharded checkpoint"):
            load_sharded_checkpoint(bigger, None, str(tmp_path / "ckpt"))
        shard = next((tmp_path / "ckpt").glob("*.distcp"))
        shard.write_bytes(shard.read_bytes()[:100])
        with pytest.raises(ValueError, match="ckpt: not a readable sharded checkpoint"):
            load_sharded_checkpoint(_torch_model(), None, str(tmp_path / "ckpt"))


# --- npz: bombs and damaged members ------------------------------------------------------------------------

def test_npz_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "bomb.npz", **{"embedding/kernel": np.zeros(2**26, np.float32)})
    assert (tmp_path / "bomb.npz").stat().st_size < 2**20  # 256 MiB of zeros in well under a MiB
    with pytest.raises(ValueError, match="decompression bomb"):
        read_npz(tmp_path / "bomb.npz")
    weights = np.random.default_rng(0).normal(size=2**20).astype(np.float32)  # real weights pass
    np.savez_compressed(tmp_path / "ok.npz", w=weights, b=np.zeros(1000, np.float32))
    np.testing.assert_array_equal(read_npz(tmp_path / "ok.npz")["w"], weights)


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_with_a_wrong_crc_is_refused(tmp_path: Path, compressed: bool) -> None:
    path = tmp_path / "w.npz"
    (np.savez_compressed if compressed else np.savez)(path, w=np.arange(256, dtype=np.float32))
    crc = zipfile.ZipFile(path).infolist()[0].CRC.to_bytes(4, "little")
    data = bytearray(path.read_bytes())
    for at in [i for i in range(len(data) - 3) if data[i:i + 4] == crc]:  # local and central records
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        read_npz(path)["w"]


# --- numbers and names ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs, words", [
    ("vit_base_patch16_224", {"mlp_ratio": 1e308}, "mlp_ratio"),
    ("vit_base_patch16_" + "9" * 5000, {}, "not a ViT name"),
    ("vit_base_patch16_" + "9" * 50, {}, "at most 5 digits"),
    ("vit_base_patch16_224", {"mlp_ratio": float("nan")}, "mlp_ratio"),
])
def test_from_timm_refuses_absurd_numbers_by_name(name: str, kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words) as e:
        ViTConfig.from_timm(name, **kwargs)
    assert len(str(e.value)) < 600


def test_a_400_digit_shard_size_is_exit_2(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "vit_cli.convert_tool", str(tmp_path / "x.safetensors"), "-o",
                          str(tmp_path / "y"), "--max-shard-size", "9" * 400], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "--max-shard-size" in out.stderr


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("ckpt") / "model"
    vit_torch.save_pretrained(_torch_model(), where)
    return where


def test_embed_survives_a_file_name_the_terminal_cannot_print(tmp_path: Path, tiny_checkpoint: Path) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    odd = os.fsencode(images) + b"/caf\xe9.png"  # Latin-1, not UTF-8
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(odd.decode("utf-8", "surrogateescape"), format="PNG")
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(images / "plain.png")
    out = subprocess.run([sys.executable, "-m", "vit_cli.embed", str(images), "--weights", str(tiny_checkpoint),
                          "-o", str(tmp_path / "out.npy"), "--quiet"], capture_output=True,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8"}, timeout=300)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    assert np.load(tmp_path / "out.npy").shape == (2, 32) and (tmp_path / "out.json").exists()
    assert b"\\udce9" in out.stdout or b"caf" in out.stdout


def test_embed_reports_a_glob_of_directories(tmp_path: Path, tiny_checkpoint: Path) -> None:
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "one.png")
    out = subprocess.run([sys.executable, "-m", "vit_cli.embed", str(tmp_path / "d*"), str(tmp_path / "one.png"),
                          "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "out.npy"), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "matches only directories" in out.stderr
    assert np.load(tmp_path / "out.npy").shape == (1, 32)


def test_finetune_refuses_a_checkpoint_directory_of_user_files_before_training(tmp_path: Path) -> None:
    from vit_cli.finetune import main

    user = tmp_path / "run" / "checkpoints" / "flax" / "step_00000001"
    user.mkdir(parents=True)
    (user / "mine.txt").write_text("keep me")
    args = ["-o", str(tmp_path / "run"), "--steps", "2", "--epochs", "1", "--checkpoint-every", "1", "--quiet"]
    assert main(args) == 3  # an earlier run's directory: not without --resume / --force
    assert main(args + ["--force"]) == 2  # and never a user's file, even with --force
    assert (user / "mine.txt").read_text() == "keep me"
    assert not (tmp_path / "run" / "history.json").exists()


@pytest.mark.slow
def test_compiled_torch_engine_runs_few_shapes_and_the_same_numbers() -> None:
    """compile=True: short batches padded to power-of-two buckets (rows in order, padding dropped),
    the same outputs as the eager engine."""
    model = _torch_model()
    x = np.random.default_rng(0).normal(size=(11, 16, 16, 3)).astype(np.float32)
    eager = vit_torch.InferenceEngine(CFG, model.state_dict(), batch_size=8)
    compiled = vit_torch.InferenceEngine(CFG, model.state_dict(), batch_size=8, compile=True)
    assert [compiled._bucket(n) for n in (1, 3, 5, 8)] == [1, 4, 8, 8]
    a, b = eager(x), compiled(x)
    for k in a:
        assert float(np.abs(a[k] - b[k]).max()) <= 1e-5, k
