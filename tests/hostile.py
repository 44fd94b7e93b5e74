"""Builders shared by the hostile-input tests and the fuzzers: valid tiny checkpoints in every format,
made here from random numbers (no downloads, no models)."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from vit_common import checkpoints
from vit_common.canonical import expected_entries
from vit_common.config import ViTConfig

CFG = ViTConfig(hidden_size=12, num_attention_heads=3, num_hidden_layers=2, intermediate_size=20,
                image_size=8, patch_size=4, num_labels=5, layer_norm_eps=1e-6)


def state(head: bool = True, seed: int = 0, config: ViTConfig = CFG) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {e.torch_key: rng.normal(size=e.torch_shape).astype(np.float32)
            for e in expected_entries(config, head)}


def write(fmt: str, directory: pathlib.Path, head: bool = True) -> pathlib.Path:
    """A valid checkpoint of format `fmt` under `directory`; returns its path."""
    s = state(head)
    if fmt == "hf":
        checkpoints.save_hf(s, CFG, directory / "hf")
        return directory / "hf"
    if fmt == "hf-flax":
        checkpoints.save_hf(s, CFG, directory / "hf-flax", framework="flax")
        return directory / "hf-flax"
    if fmt == "safetensors":
        checkpoints.save_state_dict(s, directory / "w.safetensors")
        return directory / "w.safetensors"
    if fmt == "timm":
        checkpoints.save_state_dict(s, directory / "t.safetensors", naming="timm", config=CFG)
        return directory / "t.safetensors"
    if fmt == "pt":
        checkpoints.save_state_dict(s, directory / "w.pt")
        return directory / "w.pt"
    if fmt == "msgpack":
        checkpoints.save_msgpack(s, CFG, directory / "w.msgpack")
        return directory / "w.msgpack"
    if fmt == "npz":
        checkpoints.save_npz(s, CFG, directory / "w.npz")
        return directory / "w.npz"
    raise ValueError(fmt)


def sharded(directory: pathlib.Path, names: tuple[str, str] = ("model-00001-of-00002.safetensors",
                                                             "model-00002-of-00002.safetensors")
            ) -> pathlib.Path:
    """An HF directory whose weights are split over two safetensors shards with an index."""
    from safetensors.numpy import save_file

    directory.mkdir()
    s = state()
    keys = sorted(s)
    halves = (keys[: len(keys) // 2], keys[len(keys) // 2:])
    weight_map = {}
    for name, part in zip(names, halves):
        save_file({k: s[k] for k in part}, str(directory / name))
        weight_map.update({k: name for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps(CFG.to_hf()))
    return directory
