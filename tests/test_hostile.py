"""Hostile inputs, one class at a time: every case gets one clear error naming the file, the
documented exit code, nothing left behind, nothing clobbered, no hang, bounded memory."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import hostile
from tests.hostile import CFG
from vit_cli.common import EXIT_INTERRUPTED, run
from vit_cli.convert_tool import main as convert_main
from vit_cli.embed import main as embed_main
from vit_common import checkpoints, fileio
from vit_common.checkpoints import load_checkpoint
from vit_common.config import ViTConfig
from vit_common.preprocessing import preprocess_array


def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


# --- 1. data loss ------------------------------------------------------------------------------

def test_force_never_replaces_a_directory_that_is_not_a_checkpoint(tmp_path, capsys, monkeypatch) -> None:
    src = hostile.write("hf", tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(work)
    assert convert_main([str(src), "-o", ".", "--force"]) == 2
    assert "not part of a checkpoint" in capsys.readouterr().err
    assert (work / "thesis.tex").read_text() == "years of work"
    assert convert_main([str(src), "-o", str(work), "--force"]) == 2
    assert _listing(work) == ["thesis.tex"]


def test_force_replaces_a_checkpoint_directory(tmp_path, capsys) -> None:
    src = hostile.write("hf", tmp_path)
    dst = tmp_path / "out"
    assert convert_main([str(src), "-o", str(dst)]) == 0
    assert convert_main([str(src), "-o", str(dst)]) == 3
    assert convert_main([str(src), "-o", str(dst), "--to", "flax", "--force"]) == 0
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "flax_model.msgpack"]


def test_to_hf_and_every_writer_refuse_to_overwrite(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text("mine")
    with pytest.raises(FileExistsError, match="config.json exists"):
        CFG.to_hf(path)
    assert path.read_text() == "mine"
    CFG.to_hf(path, overwrite=True)
    assert ViTConfig.from_hf(path) == CFG


def test_symlink_and_special_targets_are_not_replaced(tmp_path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    link = tmp_path / "w.safetensors"
    link.symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        checkpoints.save_state_dict(hostile.state(), link, overwrite=True)
    assert victim.read_text() == "keep" and link.is_symlink()


# --- 2. path traversal ------------------------------------------------------------------------

@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors",
                                   "..", ""])
def test_shard_index_cannot_leave_its_directory(tmp_path, shard: str) -> None:
    d = hostile.sharded(tmp_path / "ckpt")
    index = d / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = shard
    index.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="model.safetensors.index.json: shard .* is not a file in"):
        load_checkpoint(d)


def test_shard_symlink_out_of_the_tree_is_refused(tmp_path) -> None:
    d = hostile.sharded(tmp_path / "ckpt")
    outside = tmp_path / "elsewhere.safetensors"
    (d / "model-00002-of-00002.safetensors").rename(outside)
    (d / "model-00002-of-00002.safetensors").symlink_to(outside)
    with pytest.raises(ValueError, match="is not a file in"):
        load_checkpoint(d)


def test_sharded_directory_loads(tmp_path) -> None:
    d = hostile.sharded(tmp_path / "ckpt")
    ckpt = load_checkpoint(d)
    assert set(ckpt.state) == set(hostile.state())


def test_shard_holding_keys_the_index_does_not_map_is_refused(tmp_path) -> None:
    d = hostile.sharded(tmp_path / "ckpt")
    index = d / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"].pop(next(iter(data["weight_map"])))
    index.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="which the index maps elsewhere"):
        load_checkpoint(d)


# --- 3. memory bombs ----------------------------------------------------------------------------

def _peak_rss_mib(code: str) -> float:
    # VmHWM, the child's own peak (getrusage's ru_maxrss would start from this test process's peak)
    script = textwrap.dedent(code) + textwrap.dedent("""
        with open("/proc/self/status") as status:
            print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


def test_crop_pct_on_an_extreme_aspect_ratio_stays_small(tmp_path) -> None:
    path = tmp_path / "line.png"
    Image.new("RGB", (1, 100_000), (200, 10, 10)).save(path)
    baseline = _peak_rss_mib("import numpy, PIL.Image\nfrom vit_common.preprocessing import preprocess_array")
    peak = _peak_rss_mib(f"""
        from vit_common.preprocessing import preprocess_array
        x = preprocess_array({str(path)!r}, crop_pct=0.875, image_size=224)
        assert x.shape == (224, 224, 3)
    """)
    assert peak - baseline < 200, f"peak RSS grew by {peak - baseline:.0f} MiB"


def test_extreme_crop_resamples_the_same_region(tmp_path) -> None:
    """The bounded path (a box of the source) gives what resize-then-crop gives, where the latter fits."""
    from vit_common import preprocessing

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 3000, 3), dtype=np.uint8))
    direct = preprocess_array(img, crop_pct=0.875, image_size=16)
    old = preprocessing.MAX_RESIZE_PIXELS
    try:
        preprocessing.MAX_RESIZE_PIXELS = 0  # force the region path
        boxed = preprocess_array(img, crop_pct=0.875, image_size=16)
    finally:
        preprocessing.MAX_RESIZE_PIXELS = old
    # the same filter at the same scale: at most one 8-bit level apart
    assert np.abs(direct - boxed).max() <= 1 / 255 / 0.225 + 1e-6


def _npz_with_member(path: Path, header_shape: tuple[int, ...], data: bytes,
                     compress: int = zipfile.ZIP_STORED) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": header_shape})
    with zipfile.ZipFile(path, "w", compress) as zf:
        zf.writestr("embedding/kernel.npy", header.getvalue() + data)


def test_npz_header_that_lies_about_its_size_allocates_nothing(tmp_path) -> None:
    path = tmp_path / "bomb.npz"
    _npz_with_member(path, (2**29,), b"\0" * 2**21)  # claims 2 GiB, holds 2 MiB
    peak = _peak_rss_mib(f"""
        from vit_common.checkpoints import load_checkpoint
        try:
            load_checkpoint({str(path)!r})
        except ValueError as e:
            assert "bomb.npz" in str(e) and "holds" in str(e), e
        else:
            raise SystemExit("loaded a lying npz")
    """)
    assert peak < 1024, f"peak RSS {peak:.0f} MiB"


def test_npz_deflate_bomb_is_refused_before_inflating(tmp_path) -> None:
    """A compressed member whose headers claim 2 GiB of inflated data for a few bytes."""
    path = tmp_path / "zbomb.npz"
    _npz_with_member(path, (1000,), b"\0" * 4000, compress=zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    for signature, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local and central headers
        start = raw.index(signature)
        raw[start + at:start + at + 4] = struct.pack("<I", 2**31)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="zbomb.npz.*inflate"):
        load_checkpoint(path)


# --- 4. --verify and non-finite weights ----------------------------------------------------------

def test_verify_fails_on_nan_weights_and_load_reports_them(tmp_path, capsys) -> None:
    s = hostile.state()
    s["vit.layernorm.weight"][0] = np.nan
    s["vit.encoder.layer.0.output.dense.bias"][1] = np.inf
    checkpoints.save_hf(s, CFG, tmp_path / "nan")
    with pytest.warns(UserWarning, match="2 tensor.*NaN or infinite.*vit.encoder.layer.0.output.dense.bias"):
        ckpt = load_checkpoint(tmp_path / "nan")
    assert any("NaN" in n for n in ckpt.notes)
    assert convert_main([str(tmp_path / "nan"), "-o", str(tmp_path / "out.msgpack"), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "verify: FAILED" in out and "non-finite" in out


# --- 5. no tracebacks: malformed documents and shapes ------------------------------------------

@pytest.mark.parametrize("config, match", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply|config.json"),
    ('{"hidden_size": "twelve"}', "hidden_size"),
    ('{"id2label": ["a", "b"]}', "id2label"),
    ('{"id2label": {"x": "a"}}', "integer ids"),
    ('{"label2id": {"a": "b"}}', "label2id"),
    ('{"image_size": [[224]]}', "image_size"),
    ('{"image_size": 80000, "patch_size": 16}', "patches, over the limit"),
    ('"just a string"', "JSON object"),
    ('{"model_type": ["vit"]}', "model_type"),
])
def test_bad_config_json_is_one_error_naming_the_file(tmp_path, config: str, match: str) -> None:
    d = hostile.write("hf", tmp_path)
    (d / "config.json").write_text(config)
    with pytest.raises(ValueError, match=match) as e:
        load_checkpoint(d)
    assert str(d / "config.json") in str(e.value)


@pytest.mark.parametrize("pre, match", [
    ('{"image_mean": "0.5"}', "mean"),
    ('{"image_std": [0.5, 0, 0.5]}', "std must be positive"),
    ('{"resample": "bicubic"}', "resample"),
    ('{"crop_pct": "0.9"}', "crop_pct"),
    ('{"image_mean": [NaN, 0.5, 0.5]}', "mean"),
    ("[1, 2]", "JSON object"),
])
def test_bad_preprocessor_config_is_one_error_naming_the_file(tmp_path, pre: str, match: str) -> None:
    d = hostile.write("hf", tmp_path)
    (d / "preprocessor_config.json").write_text(pre)
    with pytest.raises(ValueError, match=match) as e:
        load_checkpoint(d)
    assert "preprocessor_config.json" in str(e.value)


@pytest.mark.parametrize("index", ['{"weight_map": ["a"]}', '{"weight_map": {"k": 3}}', "[]",
                                   '{"nothing": 1}'])
def test_bad_shard_index_is_one_error(tmp_path, index: str) -> None:
    d = hostile.sharded(tmp_path / "ckpt")
    (d / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ValueError, match="model.safetensors.index.json"):
        load_checkpoint(d)


@pytest.mark.parametrize("key, value, match", [
    ("vit.embeddings.position_embeddings", np.zeros(60, np.float32), "position_embeddings"),
    ("vit.embeddings.patch_embeddings.projection.weight", np.zeros((), np.float32), "projection.weight"),
    ("vit.encoder.layer.0.intermediate.dense.weight", np.zeros((20,), np.float32), "intermediate"),
    ("vit.layernorm.weight", np.ones(12, np.int32), "floating point.*vit.layernorm.weight"),
    ("vit.layernorm.bias", np.zeros(12, bool), "floating point.*vit.layernorm.bias"),
])
def test_malformed_tensors_are_refused_naming_file_and_key(tmp_path, key, value, match) -> None:
    from safetensors.numpy import save_file

    s = hostile.state()
    s[key] = value
    save_file(s, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match=match) as e:
        load_checkpoint(tmp_path / "w.safetensors", CFG)
    assert "w.safetensors" in str(e.value)


def test_timm_rank_errors_are_reported_not_raised(tmp_path) -> None:
    from safetensors.numpy import save_file

    timm = checkpoints.timm_state(hostile.state(), CFG)
    timm["blocks.0.attn.qkv.weight"] = np.zeros((), np.float32)
    save_file(timm, str(tmp_path / "t.safetensors"))
    with pytest.raises(ValueError, match="(?s)t.safetensors.*blocks.0.attn.qkv.weight"):
        load_checkpoint(tmp_path / "t.safetensors", CFG)


def test_big_vision_npz_without_pos_embedding(tmp_path) -> None:
    arrays = checkpoints.npz_arrays(hostile.state(), CFG)
    bv = {}
    for k, v in arrays.items():
        k = k.replace("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0")
        k = k.replace("LayerNorm_2", "LayerNorm_1").replace("MlpBlock_3", "MlpBlock_0")
        if "posembed_input" not in k:
            bv["params/" + k] = v
    np.savez(tmp_path / "bv.npz", **bv)
    # read as big_vision's fixed sincos2d table, which stores nothing: the image size is unknown
    with pytest.raises(ValueError, match="bv.npz.*image_size.*no position table"):
        load_checkpoint(tmp_path / "bv.npz")


def test_deeply_nested_msgpack(tmp_path) -> None:
    (tmp_path / "deep.msgpack").write_bytes(b"\x81\xa1a" * 100_000 + b"\x80")  # {"a": {"a": ...}}
    with pytest.raises(ValueError, match="deep.msgpack"):
        load_checkpoint(tmp_path / "deep.msgpack")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path) -> None:
    path = hostile.write("safetensors", tmp_path)
    path.chmod(0)
    with pytest.raises(ValueError, match="w.safetensors"):
        load_checkpoint(path, CFG)


def test_special_files_are_refused_by_type(tmp_path) -> None:
    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="w.safetensors is a FIFO"):
        load_checkpoint(fifo, CFG)
    with pytest.raises(ValueError, match="is a device|not a regular file"):
        fileio.read_json("/dev/zero")
    with pytest.raises(ValueError, match="image file"):
        preprocess_array(str(fifo))


def test_cli_exit_2_without_traceback(tmp_path) -> None:
    src = hostile.write("safetensors", tmp_path)
    for args in (["--image-size", "80000"], ["--tolerance", "nan"], ["--config", "Z/99"]):
        out = subprocess.run([sys.executable, "-m", "vit_cli.convert_tool", str(src), "-o",
                              str(tmp_path / "o.safetensors"), *args],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and "Traceback" not in out.stderr, (args, out.stderr)
    out = subprocess.run([sys.executable, "-m", "vit_cli.convert_tool", str(src), "-o",
                          str(tmp_path / "o.safetensors"), "--config", "B/16"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "does not fit" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o.safetensors").exists()


# --- 6. errors name the file ------------------------------------------------------------------

def test_safetensors_header_shape_lies_name_the_file(tmp_path) -> None:
    path = hostile.write("safetensors", tmp_path)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    key = next(k for k in header if k != "__metadata__")
    header[key]["shape"] = [7, 7, 7]
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    with pytest.raises(ValueError, match="w.safetensors"):
        load_checkpoint(path, CFG)


# --- 7. vit-embed -------------------------------------------------------------------------------

@pytest.fixture()
def embed_workspace(tmp_path):
    weights = hostile.write("hf", tmp_path)
    good = []
    rng = np.random.default_rng(0)
    for i in range(2):
        p = tmp_path / f"good{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(p)
        good.append(p)
    dds = tmp_path / "fake.jpg"
    dds.write_bytes(b"DDS " + struct.pack("<I", 124) + b"\xff" * 200)
    # EXIF whose Orientation (must be a SHORT) is typed ASCII
    ifd = struct.pack("<H", 1) + struct.pack("<HHI4s", 0x0112, 2, 4, b"abc\0") + struct.pack("<I", 0)
    exif = b"II*\x00" + struct.pack("<I", 8) + ifd
    bad_exif = tmp_path / "exif.jpg"
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(bad_exif, exif=exif)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    return tmp_path, weights, good, [dds, bad_exif, fifo]


def test_embed_keeps_good_images_and_never_hangs(embed_workspace) -> None:
    d, weights, good, bad = embed_workspace
    out = subprocess.run([sys.executable, "-m", "vit_cli.embed", str(good[0]), *map(str, bad),
                          str(good[1]), "--weights", str(weights), "-o", str(d / "e.npy"),
                          "--framework", "torch", "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert "Traceback" not in out.stderr, out.stderr
    report = json.loads((d / "e.json").read_text())
    # the mistyped EXIF is ignored (the picture itself is fine): embedded or skipped, never fatal
    assert [p for p in report["paths"] if Path(p).name.startswith("good")] == [str(good[0]), str(good[1])]
    assert np.load(d / "e.npy").shape == (len(report["paths"]), CFG.hidden_size)
    skipped = {s["path"] for s in report["skipped"]}
    assert str(d / "fake.jpg") in skipped and str(d / "pipe.png") in skipped
    assert skipped | set(report["paths"]) == {str(p) for p in [*good, *bad]}
    assert out.returncode == 1


def _exit_code(main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse refuses a bad value itself, with exit 2
        return int(e.code)


@pytest.mark.parametrize("args, match", [
    (["--mean", "0.5", "0.5"], "--mean takes 1 or 3"),
    (["--std", "0"], "--std values must be > 0"),
    (["--std", "nan"], "finite"),
    (["--batch-size", "0"], "positive"),
])
def test_embed_refuses_bad_arguments_before_work(embed_workspace, capsys, args, match) -> None:
    d, weights, good, _ = embed_workspace
    argv = [str(good[0]), "--weights", str(weights), "-o", str(d / "e.npy"), *args]
    assert _exit_code(embed_main, argv) == 2
    assert match in capsys.readouterr().err
    assert not (d / "e.npy").exists() and not (d / "e.json").exists()


def test_embed_outputs_are_a_pair(embed_workspace, capsys) -> None:
    d, weights, good, _ = embed_workspace
    (d / "e.json").mkdir()  # the second output cannot be written
    assert embed_main([str(good[0]), "--weights", str(weights), "-o", str(d / "e.npy"),
                       "--force", "--quiet"]) == 2
    assert not (d / "e.npy").exists()
    files_before = _listing(d)
    (d / "e.json").rmdir()
    assert embed_main([str(good[0]), "--weights", str(weights), "-o", str(d / "e.npy"),
                       "--quiet"]) == 0
    assert (d / "e.npy").exists() and (d / "e.json").exists()
    assert not [p for p in files_before if p.startswith(".")]


def test_pair_write_failure_restores_both(tmp_path) -> None:
    a, b = tmp_path / "a.npy", tmp_path / "b.json"
    a.write_bytes(b"old a")
    b.write_bytes(b"old b")

    def boom(f) -> None:  # noqa: ANN001
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        fileio.atomic_write_files({a: lambda f: f.write(b"new a"), b: boom}, overwrite=True)
    assert a.read_bytes() == b"old a" and b.read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.json"]


# --- 8. parser differential: our safetensors reader is the library's ---------------------------

def _st(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("name, blob", [
    ("overlap", _st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12)),
    ("reused", _st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)),
    ("trailing", _st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 16)),
    ("duplicate", b"".join([struct.pack("<Q", 128), (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                                     b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
                                                     ).ljust(128), b"\0" * 8])),
])
def test_safetensors_parser_refuses_what_the_library_refuses(tmp_path, name: str, blob: bytes) -> None:
    from safetensors.numpy import load_file

    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(blob)
    with pytest.raises(Exception):  # noqa: B017  (the library's own error type)
        load_file(str(path))
    with pytest.raises(ValueError, match=f"{name}.safetensors"):
        load_checkpoint(path, CFG)


# --- 9. signals, races, parents, crops ---------------------------------------------------------

def test_sigterm_during_a_write_leaves_no_temp_file(tmp_path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from vit_common.fileio import atomic_write
        def slow(f):
            f.write(b"x" * 1000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        atomic_write({str(tmp_path / "out.bin")!r}, slow)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_is_a_message_not_a_traceback(capsys) -> None:
    import argparse

    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    assert run("vit-x", interrupted, argparse.ArgumentParser(), []) == EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err


def test_failed_directory_write_removes_the_parents_it_made(tmp_path) -> None:
    def boom(tmp: str) -> None:
        raise RuntimeError("fail")

    with pytest.raises(RuntimeError):
        fileio.atomic_directory(tmp_path / "a" / "b" / "c", boom)
    with pytest.raises(RuntimeError):
        fileio.atomic_write(tmp_path / "x" / "y.bin", lambda f: boom(""))
    assert list(tmp_path.iterdir()) == []


def test_a_file_created_during_the_write_is_not_replaced(tmp_path) -> None:
    target = tmp_path / "out.bin"

    def racing(f) -> None:  # noqa: ANN001
        f.write(b"ours")
        target.write_bytes(b"someone else's")  # appears between any check and the final step

    with pytest.raises(FileExistsError):
        fileio.atomic_write(target, racing)
    assert target.read_bytes() == b"someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_non_square_crop_pct_matches_timm(tmp_path) -> None:
    import timm  # noqa: F401  (a test dependency: missing, this fails)
    from timm.data import create_transform

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))
    cfg = ViTConfig(hidden_size=12, num_attention_heads=3, num_hidden_layers=1, intermediate_size=8,
                    image_size=(96, 128), patch_size=16)
    ours = preprocess_array(img, cfg, crop_pct=0.875, resample="bicubic")
    tf = create_transform(input_size=(3, 96, 128), crop_pct=0.875, interpolation="bicubic")
    theirs = tf(img).numpy().transpose(1, 2, 0)
    assert ours.shape == theirs.shape == (96, 128, 3)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_torch_tensors_numpy_cannot_hold_are_refused(tmp_path) -> None:
    import torch

    s = {k: torch.from_numpy(v) for k, v in hostile.state().items()}
    s["vit.layernorm.weight"] = s["vit.layernorm.weight"].to_sparse()
    torch.save(s, tmp_path / "sparse.pt")
    with pytest.raises(ValueError, match="(?s)sparse.pt.*vit.layernorm.weight is not a plain dense tensor"):
        load_checkpoint(tmp_path / "sparse.pt", CFG)


def test_big_endian_npz_loads_in_native_order(tmp_path) -> None:
    import vit_torch

    arrays = checkpoints.npz_arrays(hostile.state(), CFG)
    np.savez(tmp_path / "be.npz", **{k: v.astype(v.dtype.newbyteorder(">")) for k, v in arrays.items()})
    ckpt = load_checkpoint(tmp_path / "be.npz")
    assert all(v.dtype.isnative for v in ckpt.state.values())
    model = vit_torch.from_pretrained(tmp_path / "be.npz")  # torch takes native order only
    assert model.config.hidden_size == CFG.hidden_size


def test_absurd_crop_pct_is_refused() -> None:
    for crop in (5e-324, 0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="crop_pct"):
            preprocess_array(np.zeros((4, 4, 3), np.uint8), crop_pct=crop, image_size=8)


@pytest.mark.parametrize("tool, args", [
    ("vit_cli.demo", ["/dev/zero", "--preset", "Ti/16"]),
    ("vit_cli.demo", ["--batch-size", "100000000"]),
    ("vit_cli.demo", ["missing.png", "--preset", "Ti/16"]),
    ("vit_cli.embed", ["x.png", "--weights", "w.safetensors", "-o", "o.npy", "--batch-size", "999999999"]),
])
def test_tools_refuse_before_work_without_traceback(tmp_path, tool: str, args: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", tool, *args], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip()
    assert list(tmp_path.iterdir()) == []
