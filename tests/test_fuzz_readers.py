"""Every reader fuzzed on mutated valid files (hypothesis). The only allowed outcomes: a loaded
checkpoint, or one ValueError that names the file. Anything else (another exception type, a
crash, a hang) fails the test."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import hostile
from tests.hostile import CFG
from vit_common.checkpoints import load_checkpoint

# format -> (the file inside the checkpoint that gets mutated, or "" for a bare file)
FILES = {"safetensors": "", "timm": "", "pt": "", "msgpack": "", "npz": "",
         "hf": "model.safetensors", "hf-flax": "flax_model.msgpack"}
JSON_FILES = ("config.json", "preprocessor_config.json", "model.safetensors.index.json")
FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@cache
def _valid(fmt: str) -> Path:
    """One valid checkpoint per format, built once per test session."""
    directory = Path(tempfile.mkdtemp(prefix=f"fuzz-{fmt}-"))
    if fmt == "sharded":
        path = hostile.sharded(directory / "ckpt")
        (path / "preprocessor_config.json").write_text(json.dumps(
            {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3}))
        return path
    return hostile.write(fmt, directory)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**31), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2**31), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 2**31), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("overwrite"), st.integers(0, 2**31), st.binary(min_size=1, max_size=16)),
)


def _mutate(data: bytes, ops: list[tuple]) -> bytes:
    buf = bytearray(data)
    for op, pos, arg in ops:
        at = pos % (len(buf) + 1)
        if op == "flip" and buf:
            buf[at % len(buf)] ^= arg
        elif op == "truncate":
            del buf[at:]
        elif op == "insert":
            buf[at:at] = arg
        elif op == "overwrite":
            buf[at:at + len(arg)] = arg
    return bytes(buf)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "case" / src.name
    if dst.parent.exists():
        shutil.rmtree(dst.parent)
    dst.parent.mkdir()
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
    return dst


def _load_or_value_error(path: Path, named: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-finite weights are reported as warnings
        try:
            load_checkpoint(path, CFG if path.is_file() else None)
        except ValueError as e:
            assert str(named) in str(e) or named.name in str(e), f"error does not name {named}: {e}"


@pytest.mark.parametrize("fmt", list(FILES))
@FUZZ
@given(ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_weight_files(tmp_path, fmt: str, ops: list[tuple]) -> None:
    path = _copy(_valid(fmt), tmp_path)
    target = path / FILES[fmt] if FILES[fmt] else path
    target.write_bytes(_mutate(target.read_bytes(), ops))
    _load_or_value_error(path, target)


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@pytest.mark.parametrize("name", JSON_FILES)
@FUZZ
@given(key=st.text(max_size=12), value=json_value, replace_key=st.booleans())
def test_mutated_json_documents(tmp_path, name: str, key: str, value, replace_key: bool) -> None:
    """A field of config.json, preprocessor_config.json or the shard index set to any JSON value."""
    path = _copy(_valid("sharded"), tmp_path)
    doc = json.loads((path / name).read_text())
    if name == "model.safetensors.index.json":
        target = doc["weight_map"]
    else:
        target = doc
    if replace_key and target:
        key = sorted(target)[hash(key) % len(target)]
    target[key] = value
    (path / name).write_text(json.dumps(doc))
    _load_or_value_error(path, path / name)


@pytest.mark.parametrize("name", JSON_FILES)
@FUZZ
@given(ops=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_json_bytes(tmp_path, name: str, ops: list[tuple]) -> None:
    path = _copy(_valid("sharded"), tmp_path)
    (path / name).write_bytes(_mutate((path / name).read_bytes(), ops))
    _load_or_value_error(path, path / name)


@cache
def _valid_image(fmt: str) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
@FUZZ
@given(ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_images(tmp_path, fmt: str, ops: list[tuple]) -> None:
    """The image reader (vit-embed, vit-demo, preprocess_image): an array or a ValueError naming
    the file, whatever the bytes."""
    from vit_common.preprocessing import preprocess_array

    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(_mutate(_valid_image(fmt), ops))
    try:
        x = preprocess_array(str(path), image_size=16)
    except ValueError as e:
        assert str(path) in str(e), f"error does not name {path}: {e}"
    else:
        assert x.shape == (16, 16, 3) and x.dtype.name == "float32"


npy_claim = st.fixed_dictionaries({
    "descr": st.sampled_from(["<f4", "<f8", ">f4", "<i4", "|b1", "<f2", "|V2", "|O", "<c8"]),
    "fortran_order": st.booleans(),
    "shape": st.lists(st.integers(0, 2**40), max_size=4).map(tuple)})


@FUZZ
@given(claim=npy_claim, member=st.sampled_from(["embedding/kernel", "cls", "Transformer/encoder_norm/scale"]),
       compressed=st.booleans())
def test_npz_members_whose_headers_claim_anything(tmp_path, claim: dict, member: str,
                                                  compressed: bool) -> None:
    """A valid npz with one member's .npy header replaced by an arbitrary claim."""
    import io
    import zipfile

    import numpy as np

    src = _valid("npz")
    path = tmp_path / "claim.npz"
    header = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(header, claim)
    except ValueError:
        return  # numpy cannot even write such a header
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(
            path, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == member + ".npy":
                data = header.getvalue() + data[128:]
            zout.writestr(info.filename, data)
    _load_or_value_error(path, path)


# --- the training-state readers: torch's train-state file and orbax's checkpoint folder -----------

@cache
def _train_states() -> tuple[Path, Path]:
    """A valid torch train-state file and a valid orbax checkpoint folder, built once."""
    import jax.numpy as jnp
    import torch

    import vit_torch
    from vit_flax.training import save_train_state as save_flax
    from vit_torch.training import cosine_schedule
    from vit_torch.training import save_train_state as save_torch

    directory = Path(tempfile.mkdtemp(prefix="fuzz-train-"))
    torch.manual_seed(0)
    model = vit_torch.ViTForImageClassification(CFG)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    save_torch(directory / "state.pt", model, opt, cosine_schedule(opt, 10), 3)
    save_flax(directory / "orbax", {"w": jnp.arange(64.0)}, {"mu": jnp.zeros(64)}, 3)
    return directory / "state.pt", directory / "orbax"


@FUZZ
@given(ops=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_torch_train_state(ops: list[tuple], tmp_path_factory) -> None:
    import torch

    import vit_torch
    from vit_torch.training import cosine_schedule, restore_train_state

    valid, _ = _train_states()
    path = tmp_path_factory.mktemp("t") / "state.pt"
    path.write_bytes(_mutate(valid.read_bytes(), ops))
    model = vit_torch.ViTForImageClassification(CFG)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    try:
        assert restore_train_state(path, model, opt, cosine_schedule(opt, 10)) >= 0
    except ValueError as e:
        assert str(path) in str(e)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=st.lists(mutation, min_size=1, max_size=2), pick=st.integers(0, 2**16))
def test_mutated_orbax_folder(ops: list[tuple], pick: int, tmp_path_factory) -> None:
    import jax.numpy as jnp

    from vit_flax.training import restore_train_state

    _, valid = _train_states()
    folder = tmp_path_factory.mktemp("o") / "orbax"
    shutil.copytree(valid, folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    target = files[pick % len(files)]
    target.write_bytes(_mutate(target.read_bytes(), ops))
    try:
        restore_train_state(folder, {"w": jnp.zeros(64)}, {"mu": jnp.zeros(64)})
    except ValueError as e:
        assert str(folder) in str(e)


@cache
def _valid_hub(kind: str) -> Path:
    """A timm hub folder and an open_clip folder, as our writers make them (what their libraries
    read: tests/test_hub_formats.py)."""
    import numpy as np

    from vit_common.checkpoints import save_open_clip, save_timm_hub
    from vit_common.config import ViTConfig
    from vit_common.families import open_clip
    from vit_common.canonical import expected_entries

    if kind == "timm":
        config = ViTConfig.from_timm("vit_tiny_patch16_224", depth=1, img_size=16, embed_dim=16, num_heads=2,
                                     num_classes=3)
    else:
        fields, _ = open_clip.config_fields({"model_cfg": {"embed_dim": 8, "vision_cfg": {
            "width": 16, "layers": 1, "head_width": 8, "patch_size": 8, "image_size": 16}}})
        config = ViTConfig(**fields)
    rng = np.random.default_rng(0)
    with_head = kind == "timm"
    state = {e.torch_key: rng.normal(size=e.torch_shape).astype(np.float32)
             for e in expected_entries(config, with_head)}
    path = Path(tempfile.mkdtemp(prefix=f"fuzz-{kind}-")) / "ckpt"
    (save_timm_hub if kind == "timm" else save_open_clip)(state, config, path)
    return path


def _set_somewhere(doc: dict, key: str, value, pick: int) -> None:
    """Set `key` (or an existing key, chosen by `pick`) of the document or of one of its objects."""
    objects = [doc]
    for obj in objects:
        objects += [v for v in obj.values() if isinstance(v, dict)]
    target = objects[pick % len(objects)]
    if pick % 2 and target:
        key = sorted(target)[pick % len(target)]
    target[key] = value


@pytest.mark.parametrize("kind", ["timm", "open_clip"])
@FUZZ
@given(key=st.text(max_size=12), value=json_value, pick=st.integers(0, 2**16))
def test_mutated_hub_configs(tmp_path, kind: str, key: str, value, pick: int) -> None:
    """A field of a timm hub config.json (model_args, pretrained_cfg ...) or an open_clip config
    (model_cfg.vision_cfg, preprocess_cfg ...) set to any JSON value: loaded, or one ValueError."""
    path = _copy(_valid_hub(kind), tmp_path)
    name = "config.json" if kind == "timm" else "open_clip_config.json"
    doc = json.loads((path / name).read_text())
    _set_somewhere(doc, key, value, pick)
    (path / name).write_text(json.dumps(doc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load_checkpoint(path)
        except ValueError as e:
            assert str(path) in str(e), f"error does not name the folder: {e}"
