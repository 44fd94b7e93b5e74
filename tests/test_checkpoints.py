"""Checkpoint files: exact round trips through every format, and every bad input refused with a
message naming the file, nothing half-written, nothing overwritten unasked."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping

import ml_dtypes
import numpy as np
import pytest
import torch

from vit_common import checkpoints
from vit_common.checkpoints import load_checkpoint, save_hf, save_npz, save_state_dict
from vit_common.config import ViTConfig
from vit_common.convert import torch_to_flax
from vit_common.fileio import atomic_directory
from vit_common.formats.msgpack_codec import write_msgpack
from vit_common.formats.safetensors_codec import read_safetensors, write_safetensors

CFG = ViTConfig(hidden_size=12, num_attention_heads=3, num_hidden_layers=2, intermediate_size=20,
                image_size=8, patch_size=4, num_labels=5)


def _state(dtype=np.float32, head: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    import vit_torch

    torch.manual_seed(seed)
    model = (vit_torch.ViTForImageClassification if head else vit_torch.VisionTransformer)(CFG)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return {k: v.numpy().astype(dtype) for k, v in model.state_dict().items()}


def _equal(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        bits = lambda x: np.ascontiguousarray(x).view(np.uint8)  # noqa: E731  (NaN-safe, -0 != +0)
        assert np.array_equal(bits(a[k]), bits(b[k])), k


WRITERS = {
    "hf-dir": lambda s, p: save_hf(s, CFG, p / "out"),
    "hf-flax-dir": lambda s, p: save_hf(s, CFG, p / "out", framework="flax"),
    "safetensors": lambda s, p: save_state_dict(s, p / "out.safetensors"),
    "pt": lambda s, p: save_state_dict(s, p / "out.pt"),
    "timm-safetensors": lambda s, p: save_state_dict(s, p / "out.safetensors", naming="timm"),
    "timm-pth": lambda s, p: save_state_dict(s, p / "out.pth", naming="timm"),
    "msgpack": lambda s, p: write_msgpack(p / "out.msgpack", torch_to_flax(s, CFG)),
    "npz": lambda s, p: save_npz(s, CFG, p / "out.npz"),
}


@pytest.mark.parametrize("head", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float64])
@pytest.mark.parametrize("fmt", list(WRITERS))
def test_round_trip_is_bit_exact(tmp_path, fmt: str, dtype, head: bool) -> None:
    state = _state(dtype, head)
    WRITERS[fmt](state, tmp_path)
    out = next(p for p in tmp_path.iterdir() if p.name.startswith("out"))
    back = load_checkpoint(out, CFG)
    _equal(back.state, state)
    assert back.has_head == head


def test_hf_dir_without_config_argument(tmp_path) -> None:
    save_hf(_state(), CFG, tmp_path / "d")
    back = load_checkpoint(tmp_path / "d")
    assert back.config == CFG and back.format == "HF directory (torch)"


def test_safetensors_interop_with_the_library(tmp_path) -> None:
    """Our writer's files read by the safetensors package, and its files read by ours."""
    from safetensors.numpy import load_file, save_file

    state = _state()
    write_safetensors(tmp_path / "ours.safetensors", state, {"format": "pt"})
    _equal(load_file(str(tmp_path / "ours.safetensors")), state)
    save_file(state, str(tmp_path / "lib.safetensors"))
    _equal(dict(read_safetensors(tmp_path / "lib.safetensors")), state)


# --- bad input ---------------------------------------------------------------------------------

class Evil:
    def __reduce__(self):  # what a malicious checkpoint does: run a command on unpickling
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"embeddings.cls_token": torch.zeros(1), "payload": Evil()}, path)
    plain = tmp_path / "evil.bin"
    plain.write_bytes(pickle.dumps({"payload": Evil()}))  # a legacy non-zip pickle
    for p in (path, plain):
        with pytest.raises(ValueError, match=f"{p.name}: refusing to load.*could run code"):
            load_checkpoint(p)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt", "w.npz", "w.msgpack"])
def test_empty_file(tmp_path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=f"{name}: empty"):
        load_checkpoint(tmp_path / name)


def _valid_file(tmp_path, name: str) -> bytes:
    fmt = {"w.safetensors": "safetensors", "w.pt": "pt", "w.npz": "npz", "w.msgpack": "msgpack"}[name]
    WRITERS[fmt](_state(), tmp_path)
    out = next(p for p in tmp_path.iterdir() if p.name.startswith("out"))
    data = out.read_bytes()
    out.unlink()
    return data


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt", "w.npz", "w.msgpack"])
def test_truncated_file(tmp_path, name: str) -> None:
    data = _valid_file(tmp_path, name)
    (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=name):
        load_checkpoint(tmp_path / name, CFG)


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt", "w.npz", "w.msgpack"])
def test_wrong_format(tmp_path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=name):
        load_checkpoint(tmp_path / name, CFG)


def test_unknown_paths(tmp_path) -> None:
    with pytest.raises(ValueError, match="nope.safetensors: no such file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown checkpoint type .onnx"):
        load_checkpoint(tmp_path / "w.onnx")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="no weights in this directory.*model.safetensors"):
        load_checkpoint(tmp_path / "empty_dir")


def test_unrecognised_names(tmp_path) -> None:
    write_safetensors(tmp_path / "w.safetensors", {"fc.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(ValueError, match="unrecognised weight names.*fc.weight"):
        load_checkpoint(tmp_path / "w.safetensors")


def test_all_mismatches_in_one_error(tmp_path) -> None:
    state = _state()
    del state["vit.encoder.layer.0.intermediate.dense.bias"]
    state["vit.layernorm.bias"] = np.zeros(13, np.float32)
    state["vit.encoder.layer.1.attention.attention.extra"] = np.zeros(1, np.float32)
    write_safetensors(tmp_path / "w.safetensors", state)
    with pytest.raises(ValueError) as e:
        load_checkpoint(tmp_path / "w.safetensors", CFG)
    msg = str(e.value)
    assert "w.safetensors" in msg and "missing: vit.encoder.layer.0.intermediate.dense.bias" in msg
    assert "unexpected: vit.encoder.layer.1.attention.attention.extra" in msg
    assert "vit.layernorm.bias expected (12,) got (13,)" in msg


def test_timm_unplaced_keys_are_reported(tmp_path) -> None:
    timm = checkpoints.timm_state(_state())
    timm["blocks.0.ls1.gamma"] = np.ones(12, np.float32)  # LayerScale: not in this model
    write_safetensors(tmp_path / "t.safetensors", timm)
    with pytest.raises(ValueError, match="unexpected: blocks.0.ls1.gamma"):
        load_checkpoint(tmp_path / "t.safetensors", CFG.replace(layer_norm_eps=1e-6))


# --- nothing lost --------------------------------------------------------------------------------

def _failing_save(tensors, filename, metadata=None):  # noqa: ANN001
    """A safetensors writer that dies halfway through the file."""
    with open(filename, "wb") as f:
        f.write(b"half a header")
    raise OSError("disk on fire")


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    import safetensors.numpy

    path = tmp_path / "w.safetensors"
    with monkeypatch.context() as m:
        m.setattr(safetensors.numpy, "save_file", _failing_save)
        with pytest.raises(OSError, match="disk on fire"):
            write_safetensors(path, _state())
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="w.safetensors exists"):
        write_safetensors(path, _state())
    with monkeypatch.context() as m:
        m.setattr(safetensors.numpy, "save_file", _failing_save)
        with pytest.raises(OSError, match="disk on fire"):
            write_safetensors(path, _state(), overwrite=True)
    assert path.read_bytes() == b"precious" and list(tmp_path.iterdir()) == [path]
    write_safetensors(path, _state(), overwrite=True)
    _equal(dict(read_safetensors(path)), _state())


def test_atomic_directory(tmp_path) -> None:
    target = tmp_path / "model"

    def boom(tmp: str) -> None:
        (open(os.path.join(tmp, "config.json"), "w")).close()
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_directory(target, boom)
    assert list(tmp_path.iterdir()) == []
    save_hf(_state(), CFG, target)
    before = sorted((p.name, p.read_bytes()) for p in target.iterdir())
    with pytest.raises(FileExistsError, match="model exists"):
        save_hf(_state(seed=1), CFG, target)
    with pytest.raises(RuntimeError):
        atomic_directory(target, boom, overwrite=True)
    assert sorted((p.name, p.read_bytes()) for p in target.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    save_hf(_state(seed=1), CFG, target, overwrite=True)
    _equal(load_checkpoint(target).state, _state(seed=1))
    assert oct(target.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode


def test_npz_is_plain_arrays(tmp_path) -> None:
    save_npz(_state(), CFG, tmp_path / "g.npz")
    with zipfile.ZipFile(tmp_path / "g.npz") as zf:
        assert all(n.endswith(".npy") for n in zf.namelist())
    data = np.load(tmp_path / "g.npz", allow_pickle=False)
    assert data["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"].shape == (12, 3, 4)
    assert data["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel"].shape == (3, 4, 12)
    assert data["head/kernel"].shape == (12, 5)


@pytest.mark.parametrize("fmt", ["npz", "msgpack", "safetensors"])
def test_progress_callback_counts_every_byte(tmp_path, fmt: str) -> None:
    state = _state()
    seen: list[int] = []
    if fmt == "npz":
        save_npz(state, CFG, tmp_path / "p.npz", progress=seen.append)
    elif fmt == "msgpack":
        checkpoints.save_msgpack(state, CFG, tmp_path / "p.msgpack", progress=seen.append)
    else:
        save_state_dict(state, tmp_path / "p.safetensors", progress=seen.append)
    assert sum(seen) == sum(v.nbytes for v in state.values())


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_msgpack_interop_with_flax(tmp_path, dtype) -> None:
    """Our streaming msgpack writer and reader against flax.serialization, both ways."""
    from flax import serialization

    from vit_common.checkpoints import read_msgpack
    from vit_common.convert import flatten_params

    params = torch_to_flax(_state(dtype), CFG)
    write_msgpack(tmp_path / "ours.msgpack", params)
    restored = serialization.msgpack_restore((tmp_path / "ours.msgpack").read_bytes())
    (tmp_path / "flax.msgpack").write_bytes(serialization.msgpack_serialize(restored))
    for tree in (restored, read_msgpack(tmp_path / "flax.msgpack")):
        flat, want = flatten_params(tree), flatten_params(params)
        assert set(flat) == set(want)
        for k in want:
            assert np.asarray(flat[k]).dtype == want[k].dtype
            assert np.array_equal(np.asarray(flat[k]), want[k]), k


def test_msgpack_reads_flax_chunked_arrays(tmp_path, monkeypatch) -> None:
    from flax import serialization

    from vit_common.checkpoints import read_msgpack

    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 64)  # force flax to chunk every array
    tree = {"a": {"kernel": np.arange(300, dtype=np.float32).reshape(20, 15)}}
    (tmp_path / "c.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    np.testing.assert_array_equal(read_msgpack(tmp_path / "c.msgpack")["a"]["kernel"], tree["a"]["kernel"])


def test_msgpack_writer_chunks_large_arrays_as_flax_does(tmp_path) -> None:
    """Arrays over the chunk size go out in flax's chunked layout, which flax reads back."""
    from flax import serialization

    from vit_common.formats.msgpack_codec import read_msgpack

    tree = {"a": {"kernel": np.arange(300, dtype=np.float32).reshape(20, 15),
                  "bias": np.arange(3, dtype=np.float32)}}
    write_msgpack(tmp_path / "c.msgpack", tree, chunk_bytes=64)
    raw = (tmp_path / "c.msgpack").read_bytes()
    assert b"__msgpack_chunked_array__" in raw
    restored = serialization.msgpack_restore(raw)
    np.testing.assert_array_equal(restored["a"]["kernel"], tree["a"]["kernel"])
    np.testing.assert_array_equal(restored["a"]["bias"], tree["a"]["bias"])
    np.testing.assert_array_equal(read_msgpack(tmp_path / "c.msgpack")["a"]["kernel"], tree["a"]["kernel"])


def test_large_weights_are_sharded_as_hf_does(tmp_path) -> None:
    """Over max_shard_size the weights go to model-0000i-of-0000N.safetensors + an index, as HF
    writes them: HF loads the directory strictly, and our reader takes it back exactly."""
    import json

    import torch
    import transformers

    import vit_torch
    config = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=3, intermediate_size=64,
                       image_size=16, patch_size=4, num_labels=3)
    torch.manual_seed(0)
    model = vit_torch.ViTForImageClassification(config).eval()
    vit_torch.save_pretrained(model, tmp_path / "m", max_shard_size=40_000)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) >= 3 and "model.safetensors.index.json" in files and "model.safetensors" not in files
    assert all(f.endswith(f"-of-{len(shards):05d}.safetensors") for f in shards)
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.state_dict()) and set(index["weight_map"].values()) == set(shards)
    assert all((tmp_path / "m" / f).stat().st_size <= 40_000 + 10_000 for f in shards)  # + header
    hf, info = transformers.ViTForImageClassification.from_pretrained(tmp_path / "m", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    back = vit_torch.from_pretrained(tmp_path / "m")
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert float((hf.eval()(pixel_values=x).logits - model(x)).abs().max()) <= 1e-5
    with pytest.raises(ValueError, match="max_shard_size"):
        vit_torch.save_pretrained(model, tmp_path / "n", max_shard_size=0)
