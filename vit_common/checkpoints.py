"""Checkpoint files: reading every supported format into the canonical state dict, and writing
every format back, safely.

Canonical = the keys and layouts of `vit_torch` models (HF ViT checkpoint names), numpy arrays.
Readers: HF directories (torch and Flax), bare state dicts (.safetensors, .pt/.pth/.bin, .msgpack)
in HF or timm naming, Google .npz (vision_transformer and big_vision layouts).
Writers: HF directories (torch and Flax), bare state dicts (HF or timm naming), Google .npz.

Safety: pickles are only ever read with `torch.load(weights_only=True)`; every output is written to
a temporary name beside the target and renamed into place, so a failure leaves nothing behind; an
existing output is replaced only with `overwrite=True`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Literal

import numpy as np

from vit_common.config import PRESETS, ViTConfig
from vit_common.convert import c_order

Format = Literal["hf", "hf-flax", "safetensors", "torch", "msgpack", "npz"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
              "flax_model.msgpack")
POOLER_KEYS = ("pooler.dense.weight", "pooler.dense.bias")
# Each source's real model, for what weights cannot say (DESIGN.md, issue 3).
SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "hf": {"hidden_act": "gelu", "layer_norm_eps": 1e-12},
    "timm": {"hidden_act": "gelu", "layer_norm_eps": 1e-6},
    "npz": {"hidden_act": "gelu_new", "layer_norm_eps": 1e-6},  # flax's tanh GELU, flax's eps
}


# ---------------------------------------------------------------------------------------------
# atomic writes


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *,
                 overwrite: bool = True) -> None:
    """Write `path` through `write(file)`: all of it or, on any error, nothing."""
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists; refusing to overwrite it (pass overwrite=True / --force)")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), overwrite=overwrite)


def atomic_directory(path: str | os.PathLike, fill: Callable[[str], None], *,
                     overwrite: bool = False) -> None:
    """Create directory `path` by `fill(tmp_dir)` and one rename; on failure nothing is left. An
    existing `path` is replaced only with `overwrite`, and only once the new one is complete."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite it (pass overwrite=True / --force)")
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is not a directory")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    old = None
    try:
        fill(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(path):
            os.replace(old, path)  # put the previous output back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# safetensors, written and read here: streaming writes (one tensor in memory at a time) and
# memory-mapped reads, with every header field checked against the file's real size.

_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
              "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
              "BOOL": "bool"}


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None, *, overwrite: bool = False,
                      progress: Progress | None = None) -> None:
    names = list(tensors)
    by_dtype = {v: k for k, v in _ST_DTYPES.items()}
    header: dict[str, Any] = {}
    offset = 0
    for name in names:
        arr = tensors[name]
        dtype = by_dtype.get(np.dtype(arr.dtype).name)
        if dtype is None:
            raise ValueError(f"{name}: dtype {arr.dtype} cannot be stored in safetensors")
        size = int(np.prod(arr.shape, dtype=np.int64)) * np.dtype(arr.dtype).itemsize
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)

    def write(f: IO[bytes]) -> None:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in names:
            arr = c_order(tensors[name])
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            f.write(memoryview(arr.reshape(-1).view(np.uint8)))
            if progress:
                progress.update(arr.nbytes)

    atomic_write(path, write, overwrite=overwrite)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors as read-only memory-mapped numpy arrays, metadata)."""
    path = os.fspath(path)
    size = _nonempty(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or n <= 0 or n > size - 8 or n > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header length {n} for a file of "
                             f"{size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    data_len = size - 8 - n
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if data_len else np.zeros(0, np.uint8)
    tensors = {}
    for name, info in header.items():
        try:
            dtype = _np_dtype(_ST_DTYPES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: malformed safetensors header entry for {name!r}: {info!r}") from None
        if not 0 <= start <= end <= data_len or end - start != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{path}: truncated or corrupt: tensor {name!r} needs bytes "
                             f"{start}..{end} of a {data_len}-byte data section")
        tensors[name] = data[start:end].view(dtype).reshape(shape)
    return tensors, metadata


# ---------------------------------------------------------------------------------------------
# other containers


def _nonempty(path: str) -> int:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, expected a file")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"{path}: empty file")
    return size


def read_torch(path: str | os.PathLike) -> dict[str, Any]:
    """A torch.save file, unpickled with weights_only=True: tensors and plain containers only."""
    import pickle

    import torch

    path = os.fspath(path)
    _nonempty(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: refusing to load: the pickle holds more than tensors and plain containers, "
            f"and unpickling it could run code (torch.load weights_only=True said: "
            f"{str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'truncated'})") from None
    return _unwrap_state(obj, path)


def _unwrap_state(obj: Any, path: str) -> dict[str, Any]:
    # training checkpoints wrap the weights: {"state_dict": ...}, {"model": ...}, {"params": ...}
    for key in ("state_dict", "model", "params"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), got "
                         f"{type(obj).__name__}")
    return dict(obj)


def write_torch(path: str | os.PathLike, state: Mapping[str, np.ndarray], *,
                overwrite: bool = False) -> None:
    import torch

    from vit_common.convert import to_torch

    tensors = {k: to_torch(v) for k, v in state.items()}
    atomic_write(path, lambda f: torch.save(tensors, f), overwrite=overwrite)


# Flax's msgpack format (flax.serialization): nested maps of str keys; each array an ext record of
# type 1 holding msgpack (shape, dtype name, C-order bytes); arrays over 1 GiB split into chunks.
# Written and read here with the msgpack package alone: one tensor in memory at a time, no jax.
_MSGPACK_NDARRAY = 1
_MSGPACK_CHUNKED = "__msgpack_chunked_array__"


def read_msgpack(path: str | os.PathLike) -> dict[str, Any]:
    import msgpack

    path = os.fspath(path)
    _nonempty(path)
    with open(path, "rb") as f:
        data = f.read()

    def ext_hook(code: int, payload: bytes) -> Any:
        if code != _MSGPACK_NDARRAY:
            raise ValueError(f"unsupported msgpack ext type {code}")
        shape, dtype, buffer = msgpack.unpackb(payload, raw=True)
        return np.frombuffer(buffer, dtype=_np_dtype(dtype.decode())).reshape(shape)

    try:
        tree = msgpack.unpackb(data, ext_hook=ext_hook, raw=False)
    except Exception as e:  # msgpack raises many types for garbage or truncated input
        raise ValueError(f"{path}: not a readable Flax msgpack file ({type(e).__name__}: {e})") from None
    if not isinstance(tree, Mapping):
        raise ValueError(f"{path}: expected a params tree, got {type(tree).__name__}")
    return _unchunk(tree)


def _unchunk(node: Any) -> Any:
    if not isinstance(node, Mapping):
        return node
    if node.get(_MSGPACK_CHUNKED):  # {"shape": {"0": d0, ...}, "chunks": {"0": flat0, ...}}
        shape = [node["shape"][str(i)] for i in range(len(node["shape"]))]
        chunks = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
        return np.concatenate(chunks).reshape(shape)
    return {k: _unchunk(v) for k, v in node.items()}


def write_msgpack(path: str | os.PathLike, params: Mapping[str, Any], *, overwrite: bool = False,
                  progress: Progress | None = None) -> None:
    import msgpack

    packer = msgpack.Packer(use_bin_type=True)

    def emit(f: IO[bytes], node: Any) -> None:
        if isinstance(node, Mapping):
            f.write(packer.pack_map_header(len(node)))
            for key, value in node.items():
                f.write(packer.pack(str(key)))
                emit(f, value)
            return
        arr = c_order(np.asarray(node))
        if arr.nbytes > 2**30:
            raise ValueError(f"a {arr.nbytes / 2**30:.1f} GiB array needs flax's chunked msgpack "
                             f"layout, which this writer does not produce")
        # ext record (type 1) around msgpack [shape, dtype name, bin]; headers packed here so the
        # array's bytes go to the file straight from its buffer
        inner = (packer.pack_array_header(3) + packer.pack(list(arr.shape)) +
                 packer.pack(arr.dtype.name) + b"\xc6" + arr.nbytes.to_bytes(4, "big"))  # bin 32
        size = len(inner) + arr.nbytes
        f.write(b"\xc9" + size.to_bytes(4, "big") + bytes([_MSGPACK_NDARRAY]) + inner)
        f.write(memoryview(arr.reshape(-1).view(np.uint8)))
        if progress:
            progress.update(arr.nbytes)

    atomic_write(path, lambda f: emit(f, params), overwrite=overwrite)


def read_npz(path: str | os.PathLike) -> Mapping[str, np.ndarray]:
    path = os.fspath(path)
    _nonempty(path)
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive of named arrays, got a single array")
    return _NpzReader(arrays, path)


class _NpzReader(Mapping):
    """An NpzFile whose failures name the file (a truncated member only fails when read)."""

    def __init__(self, npz: Any, path: str) -> None:
        self.npz, self.path = npz, path

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            arr = self.npz[key]
        except KeyError:
            raise
        except Exception as e:
            raise ValueError(f"{self.path}: array {key!r} is unreadable ({e})") from None
        # .npy has no bfloat16: such arrays come back as 2-byte voids (big_vision's convention)
        return arr.view(_np_dtype("bfloat16")) if arr.dtype == np.dtype("V2") else arr

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.npz.files)

    def __len__(self) -> int:
        return len(self.npz.files)

    def __contains__(self, key: object) -> bool:
        return key in self.npz.files


def write_npz(path: str | os.PathLike,
              arrays: Mapping[str, np.ndarray] | Sequence[tuple[str, Callable[[], np.ndarray]]], *,
              overwrite: bool = False, progress: Progress | None = None) -> None:
    """An uncompressed .npz written one array at a time (np.savez's format, no pickles). `arrays`
    may be (name, function making the array) pairs: the next one is then made on a second thread
    while this one is written (numpy's copies, zlib's CRC and the file writes all release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    entries = (list(arrays) if not isinstance(arrays, Mapping)
               else [(k, functools.partial(arrays.__getitem__, k)) for k in arrays])

    def write(f: IO[bytes]) -> None:
        with ThreadPoolExecutor(max_workers=1) as pool, \
                zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            pending = pool.submit(entries[0][1]) if entries else None
            for i, (name, _) in enumerate(entries):
                arr = pending.result()  # type: ignore[union-attr]
                if i + 1 < len(entries):
                    pending = pool.submit(entries[i + 1][1])
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    # transposed kernels go out as Fortran-order .npy, strided ones in chunks:
                    # write_array never needs a whole contiguous copy
                    np.lib.format.write_array(member, arr, allow_pickle=False)
                if progress:
                    progress.update(arr.nbytes)

    atomic_write(path, write, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------
# progress for large files


class Progress:
    """A plain progress line on stderr for outputs over `threshold` bytes."""

    def __init__(self, total: int, label: str, threshold: int = 200 * 2**20,
                 stream: IO[str] | None = None) -> None:
        self.total, self.label, self.done, self.shown = total, label, 0, -1
        self.stream = stream or sys.stderr
        self.enabled = total >= threshold

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        pct = int(100 * self.done / max(self.total, 1))
        if pct // 10 > self.shown:
            self.shown = pct // 10
            self.stream.write(f"\r{self.label}: {self.done / 2**20:,.0f} / "
                              f"{self.total / 2**20:,.0f} MiB ({pct}%)")
            self.stream.flush()
            if self.done >= self.total:
                self.stream.write("\n")


# ---------------------------------------------------------------------------------------------
# reading any supported checkpoint


@dataclasses.dataclass
class Checkpoint:
    state: dict[str, np.ndarray]  # canonical names and layouts
    config: ViTConfig
    format: str  # what was read, e.g. "hf", "timm (.safetensors)", "npz (big_vision)"
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def has_head(self) -> bool:
        return "classifier.weight" in self.state

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.state.values())


def detect_format(path: str | os.PathLike) -> tuple[Format, str]:
    """(format, the file holding the weights) for a checkpoint path."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file or directory: {path}")
    if os.path.isdir(path):
        for name in HF_WEIGHTS:
            if os.path.exists(os.path.join(path, name)):
                fmt: Format = "hf-flax" if name.endswith(".msgpack") else "hf"
                return fmt, os.path.join(path, name)
        raise ValueError(f"{path}: no weights in this directory; expected one of {', '.join(HF_WEIGHTS)}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".safetensors":
        return "safetensors", path
    if suffix in TORCH_SUFFIXES:
        return "torch", path
    if suffix == ".npz":
        return "npz", path
    if suffix == ".msgpack":
        return "msgpack", path
    raise ValueError(f"{path}: unknown checkpoint type {suffix or '(no suffix)'}; expected a "
                     f"directory (HF save_pretrained) or a .safetensors, {', '.join(TORCH_SUFFIXES)}, "
                     f".npz or .msgpack file")


def load_checkpoint(path: str | os.PathLike, config: ViTConfig | str | os.PathLike | None = None,
                    *, drop_pre_logits: bool = False) -> Checkpoint:
    """Any supported checkpoint -> canonical state dict + the config it needs.

    `config`: a ViTConfig (used as is), a config.json path (its stated fields override what is
    read from the weights, so {"num_attention_heads": 4} is enough), or a preset name ("B/16")
    that supplies the head count after checking that its sizes fit the weights.
    """
    from vit_common import foreign
    from vit_common.convert import check_state_dict, flax_to_torch

    path = os.fspath(path)
    fmt, weights = detect_format(path)
    notes: list[str] = []
    unplaced: list[str] = []
    hf_config: ViTConfig | None = None
    if fmt in ("hf", "hf-flax") and os.path.exists(os.path.join(path, "config.json")):
        hf_config = ViTConfig.from_hf(os.path.join(path, "config.json"))

    if fmt == "npz":
        arrays = read_npz(weights)
        state, unplaced = foreign.from_npz(arrays, weights, drop_pre_logits=drop_pre_logits)
        fields = foreign.read_npz_config(arrays, weights)
        naming, known = "npz", {"num_attention_heads": fields["num_attention_heads"]}
        if drop_pre_logits and any(k.endswith("pre_logits/kernel") for k in arrays):
            notes.append("dropped the pre_logits layer and the head above it (drop_pre_logits)")
        layout, scanned = foreign.npz_layout(arrays)
        described = f"npz ({layout}{', scanned' if scanned else ''})"
    else:
        known = {}
        if fmt in ("hf-flax", "msgpack"):
            tree = read_msgpack(weights)
            tree, dropped = _drop_flax_pooler(tree)
            state = flax_to_torch(tree)
            naming = "hf"
        else:
            raw = read_safetensors(weights)[0] if weights.endswith(".safetensors") else (
                _read_sharded(path) if weights.endswith(".index.json") else read_torch(weights))
            if foreign.is_timm(raw):
                state, unplaced = foreign.from_timm(raw)
                naming, dropped = "timm", []
            else:
                if foreign.is_hf5(raw):
                    raw, unplaced = foreign.from_hf5(raw)
                state, dropped = _hf_names(raw, weights)
                naming = "hf"
        if dropped:
            msg = (f"{weights}: dropped the HF pooler ({', '.join(dropped)}): twin-vit returns the "
                   f"[CLS] token after the final LayerNorm, the pooler's input")
            warnings.warn(msg, stacklevel=3)
            notes.append(msg)
        described = naming if fmt in ("hf", "hf-flax") else f"{naming} ({os.path.splitext(weights)[1]})"
        if fmt in ("hf", "hf-flax"):
            described = "HF directory (torch)" if fmt == "hf" else "HF directory (Flax)"

    with_head = "classifier.weight" in state
    resolved = _resolve_config(config, hf_config, state, with_head, naming, known, weights)
    check_state_dict(state, resolved, with_head, what=weights, unexpected=unplaced)
    preprocessing = _preprocessing(path, naming)
    if preprocessing is not None and "preprocessing" not in resolved.extra:
        resolved = resolved.replace(extra={**resolved.extra, "preprocessing": preprocessing})
    return Checkpoint(state, resolved, described, notes)


def _preprocessing(path: str, naming: str) -> dict[str, Any] | None:
    """How the checkpoint's pixels should be prepared: an HF directory's preprocessor_config.json,
    else Google's convention for npz (mean = std = 0.5); None when the source does not say."""
    from vit_common.preprocessing import PRESETS, Preprocessing

    pre = os.path.join(path, "preprocessor_config.json") if os.path.isdir(path) else ""
    if pre and os.path.exists(pre):
        try:
            with open(pre, encoding="utf-8") as f:
                settings = Preprocessing.from_hf(json.load(f))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{pre}: not a readable preprocessor config ({e})") from None
    elif naming == "npz":
        settings = PRESETS["inception"]
    else:
        return None
    return dataclasses.asdict(settings)


def _read_sharded(directory: str) -> dict[str, np.ndarray]:
    index_path = os.path.join(directory, "model.safetensors.index.json")
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{index_path}: not a safetensors index ({e})") from None
    state: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        state.update(read_safetensors(os.path.join(directory, shard))[0])
    return state


def _hf_names(raw: Mapping[str, Any], source: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """HF-named tensors with or without "vit." (and a classifier), pooler removed."""
    from vit_common.convert import BACKBONE_PREFIX, to_numpy

    state = {k: to_numpy(v) for k, v in raw.items()}
    anchor = "embeddings.patch_embeddings.projection.weight"
    if anchor not in state and BACKBONE_PREFIX + anchor not in state:
        sample = ", ".join(sorted(state)[:4])
        raise ValueError(f"{source}: unrecognised weight names; expected HF ViT names "
                         f"({anchor}, ...) or timm names (patch_embed.proj.weight, "
                         f"blocks.0.attn.qkv.weight, ...), got {len(state)} keys such as {sample}")
    has_head = "classifier.weight" in state
    if BACKBONE_PREFIX + anchor in state and not has_head:
        state = {k[len(BACKBONE_PREFIX):] if k.startswith(BACKBONE_PREFIX) else k: v
                 for k, v in state.items()}
    prefix = BACKBONE_PREFIX if has_head else ""
    dropped = [prefix + k for k in POOLER_KEYS if prefix + k in state]
    for k in dropped:
        del state[k]
    return state, dropped


def _drop_flax_pooler(tree: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    tree = dict(tree)
    if "params" in tree and len(tree) == 1:
        tree = dict(tree["params"])
    if "pooler" in tree:
        del tree["pooler"]
        return tree, ["pooler/dense"]
    if "vit" in tree and "pooler" in tree["vit"]:
        tree["vit"] = {k: v for k, v in tree["vit"].items() if k != "pooler"}
        return tree, ["vit/pooler/dense"]
    return tree, []


def _resolve_config(config: ViTConfig | str | os.PathLike | None, hf_config: ViTConfig | None,
                    state: Mapping[str, np.ndarray], with_head: bool, naming: str,
                    known: Mapping[str, Any], source: str) -> ViTConfig:
    from vit_common.convert import NonSquareGrid, infer_config

    if isinstance(config, ViTConfig):
        return config
    given: dict[str, Any] = {}  # fields a (possibly partial) config.json states explicitly
    if config is not None and (os.path.isfile(config) or os.fspath(config).endswith(".json")):
        parsed = ViTConfig.from_hf(config)
        with open(config, encoding="utf-8") as f:
            stated = set(json.load(f))
        given = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(ViTConfig)
                 if f.name in stated or (f.name == "num_labels" and "id2label" in stated)}
        if "id2label" in stated:
            given["extra"] = parsed.extra
        config = None
    elif config is None and hf_config is not None:
        return hf_config
    unknown = []  # what the weights cannot say, reported together
    try:  # a non-square grid cannot be read from a token count; a stated image_size settles it
        shapes = infer_config(state, with_head, square="image_size" not in given)
    except NonSquareGrid:
        tokens = np.shape(state[("vit." if with_head else "") + "embeddings.position_embeddings"])[1]
        unknown.append(f"image_size ({tokens - 1} patches do not form a square grid)")
        shapes = infer_config(state, with_head, square=False)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    fields = {f.name: getattr(shapes, f.name) for f in dataclasses.fields(ViTConfig)
              if f.name not in ("extra", "num_attention_heads")}
    fields.update(SOURCE_DEFAULTS[naming])
    fields.update(known)
    fields.update(given)
    if config is not None:  # a preset name: its head count, after checking it fits the weights
        preset = ViTConfig.from_preset(os.fspath(config))
        clash = [f"{n} {getattr(preset, n)} vs {fields[n]}" for n in
                 ("hidden_size", "num_hidden_layers", "intermediate_size", "patch_size")
                 if getattr(preset, n) != fields[n]]
        if clash:
            raise ValueError(f"{source}: preset {config!r} does not fit these weights "
                             f"(preset vs weights: {'; '.join(clash)})")
        fields["num_attention_heads"] = preset.num_attention_heads
    hint = ""
    if "num_attention_heads" not in fields:
        unknown.append("num_attention_heads (it changes no tensor shape)")
        match = _matching_preset(fields)
        if match:
            hint = (f"; these sizes match preset {match!r} "
                    f"({ViTConfig.from_preset(match).num_attention_heads} heads): config={match!r}")
    if unknown:
        raise ValueError(
            f"{source}: cannot read from {naming} weights: {'; '.join(unknown)}. Pass config= a "
            f"ViTConfig, a config.json path (a partial one such as {{\"num_attention_heads\": 12}} "
            f"will do) or a preset name (vit-convert --config){hint}")
    return ViTConfig(**fields)


def _matching_preset(fields: Mapping[str, Any]) -> str | None:
    for name in PRESETS:
        p = ViTConfig.from_preset(name)
        if all(getattr(p, n) == fields[n] for n in
               ("hidden_size", "num_hidden_layers", "intermediate_size", "patch_size")):
            return name
    return None


# ---------------------------------------------------------------------------------------------
# writing


def hf_config_dict(config: ViTConfig, with_head: bool) -> dict[str, Any]:
    data = config.to_hf()
    data.setdefault("architectures", ["ViTForImageClassification" if with_head else "ViTModel"])
    return data


def save_hf(state: Mapping[str, np.ndarray], config: ViTConfig, directory: str | os.PathLike, *,
            framework: Literal["torch", "flax"] = "torch", overwrite: bool = False,
            progress: bool = True) -> None:
    """An HF save_pretrained directory: config.json + model.safetensors (torch) or
    flax_model.msgpack (Flax)."""
    from vit_common.convert import torch_to_flax

    with_head = "classifier.weight" in state
    prog = Progress(sum(v.nbytes for v in state.values()), f"writing {directory}") if progress else None

    def fill(tmp: str) -> None:
        from vit_common.preprocessing import Preprocessing

        data = hf_config_dict(config, with_head)
        carried = data.pop("preprocessing", None)  # goes to its own file, as in HF
        atomic_write_text(os.path.join(tmp, "config.json"),
                          json.dumps(data, indent=2, sort_keys=True) + "\n")
        if carried is not None:
            pre = Preprocessing(**carried).to_hf(config)
            atomic_write_text(os.path.join(tmp, "preprocessor_config.json"),
                              json.dumps(pre, indent=2, sort_keys=True) + "\n")
        if framework == "torch":
            write_safetensors(os.path.join(tmp, "model.safetensors"), state,
                              metadata={"format": "pt"}, progress=prog)
        elif framework == "flax":
            write_msgpack(os.path.join(tmp, "flax_model.msgpack"), torch_to_flax(state, config),
                          progress=prog)
        else:
            raise ValueError(f"framework must be 'torch' or 'flax', got {framework!r}")

    atomic_directory(directory, fill, overwrite=overwrite)


def save_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                    naming: Literal["hf", "timm"] = "hf", overwrite: bool = False,
                    progress: bool = True) -> None:
    """A bare state dict, .safetensors (preferred) or .pt/.pth/.bin, in HF or timm naming."""
    from vit_common import foreign

    if naming == "timm":
        state = foreign.to_timm(state)
    elif naming != "hf":
        raise ValueError(f"naming must be 'hf' or 'timm', got {naming!r}")
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    prog = Progress(sum(v.nbytes for v in state.values()), f"writing {path}") if progress else None
    if suffix == ".safetensors":
        write_safetensors(path, state, metadata={"format": "pt"}, overwrite=overwrite, progress=prog)
    elif suffix in TORCH_SUFFIXES:
        write_torch(path, state, overwrite=overwrite)
    else:
        raise ValueError(f"{path}: a state dict is written as .safetensors or "
                         f"{'/'.join(TORCH_SUFFIXES)}, not {suffix or '(no suffix)'}")


def save_npz(state: Mapping[str, np.ndarray], config: ViTConfig, path: str | os.PathLike, *,
             overwrite: bool = False, progress: bool = True) -> None:
    """Google's vision_transformer .npz layout (readable by its code, timm and big_vision)."""
    from vit_common import foreign

    entries = foreign.npz_entries(state, config)
    prog = Progress(sum(v.nbytes for v in state.values()), f"writing {path}") if progress else None
    write_npz(path, entries, overwrite=overwrite, progress=prog)

