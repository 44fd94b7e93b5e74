"""vit_common.convert: exact round trips, layouts, and one error that lists every problem."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

import vit_flax
import vit_torch
from vit_common.config import ViTConfig
from vit_common.convert import flax_to_torch, torch_to_flax
from vit_common.formats.torch_codec import to_torch
from vit_common.infer import infer_config

TINY = ViTConfig(hidden_size=12, num_attention_heads=3, num_hidden_layers=2, intermediate_size=20,
                 image_size=(8, 12), patch_size=4, num_labels=5)


def _torch_state(config: ViTConfig = TINY, head: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    cls = vit_torch.ViTForImageClassification if head else vit_torch.VisionTransformer
    model = cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()  # every value distinct, so any mix-up shows
    return model.state_dict()


def _flax_params(config: ViTConfig = TINY, head: bool = True) -> dict:
    cls = vit_flax.ViTForImageClassification if head else vit_flax.VisionTransformer
    h, w = config.image_hw
    return cls(config).init(jax.random.key(0), jnp.zeros((1, h, w, config.num_channels)))["params"]


@pytest.mark.parametrize("head", [True, False])
def test_tree_is_the_flax_models_tree(head: bool) -> None:
    converted = torch_to_flax(_torch_state(head=head))
    expected = _flax_params(head=head)
    shapes = lambda t: jax.tree_util.tree_map(np.shape, t)  # noqa: E731
    assert shapes(converted) == shapes(jax.tree_util.tree_map(np.asarray, expected))
    if head:
        assert set(converted) == {"vit", "classifier"}
        assert set(converted["vit"]["encoder"]["layer"]) == {"0", "1"}


def test_layout_rules() -> None:
    state = {k: v.numpy() for k, v in _torch_state().items()}
    p = torch_to_flax(state)
    q = state["vit.encoder.layer.1.attention.attention.query.weight"]  # (out, in)
    np.testing.assert_array_equal(p["vit"]["encoder"]["layer"]["1"]["attention"]["attention"]["query"]["kernel"], q.T)
    conv = state["vit.embeddings.patch_embeddings.projection.weight"]  # (O, I, kh, kw)
    kernel = p["vit"]["embeddings"]["patch_embeddings"]["projection"]["kernel"]  # (kh, kw, I, O)
    assert kernel.shape == (4, 4, 3, 12)
    np.testing.assert_array_equal(kernel[1, 2, 0, 5], conv[5, 0, 1, 2])
    np.testing.assert_array_equal(p["vit"]["layernorm"]["scale"], state["vit.layernorm.weight"])
    np.testing.assert_array_equal(p["vit"]["embeddings"]["cls_token"], state["vit.embeddings.cls_token"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_round_trip_is_bit_exact(dtype: torch.dtype) -> None:
    state = {k: v.to(dtype) for k, v in _torch_state().items()}
    back = flax_to_torch(torch_to_flax(state))
    assert set(back) == set(state)
    for k, v in state.items():
        t = to_torch(back[k])
        assert t.dtype == dtype and torch.equal(t, v), k


def test_flax_side_round_trip_and_inputs() -> None:
    """jax arrays and {"params": ...} variables are accepted; flax -> torch -> flax is exact."""
    params = _flax_params(head=False)
    state = flax_to_torch({"params": params})
    again = torch_to_flax(state)
    flat_a = jax.tree_util.tree_leaves_with_path(params)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(again))
    assert len(flat_a) == len(flat_b)
    for path, leaf in flat_a:
        assert np.array_equal(np.asarray(leaf), flat_b[path]), path


def test_bfloat16_numpy_is_kept() -> None:
    state = {k: v.to(torch.bfloat16) for k, v in _torch_state().items()}
    p = torch_to_flax(state)
    assert p["classifier"]["kernel"].dtype == ml_dtypes.bfloat16


def test_no_qkv_bias() -> None:
    config = TINY.replace(qkv_bias=False)
    state = _torch_state(config)
    assert "vit.encoder.layer.0.attention.attention.query.bias" not in state
    p = torch_to_flax(state)
    assert set(p["vit"]["encoder"]["layer"]["0"]["attention"]["attention"]["query"]) == {"kernel"}
    assert set(flax_to_torch(p)) == set(state)


def test_every_problem_in_one_error() -> None:
    state = dict(_torch_state())
    del state["vit.encoder.layer.1.output.dense.bias"]  # missing
    state["vit.encoder.layer.0.extra.weight"] = torch.zeros(3)  # unexpected
    state["vit.layernorm.weight"] = torch.zeros(11)  # misshapen
    with pytest.raises(ValueError) as e:
        torch_to_flax(state, TINY)
    msg = str(e.value)
    assert "1 missing: vit.encoder.layer.1.output.dense.bias" in msg
    assert "1 unexpected: vit.encoder.layer.0.extra.weight" in msg
    assert "vit.layernorm.weight expected (12,) got (11,)" in msg


def test_flax_errors_use_flax_names_and_layout() -> None:
    params = jax.tree_util.tree_map(np.asarray, _flax_params())
    del params["vit"]["encoder"]["layer"]["0"]["layernorm_after"]["scale"]
    params["vit"]["encoder"]["layer"]["1"]["intermediate"]["dense"]["kernel"] = np.zeros((12, 21))
    params["vit"]["pooler"] = {"dense": {"kernel": np.zeros((12, 12))}}
    with pytest.raises(ValueError) as e:
        flax_to_torch(params, TINY)
    msg = str(e.value)
    assert "missing: vit/encoder/layer/0/layernorm_after/scale" in msg
    assert "vit/encoder/layer/1/intermediate/dense/kernel expected (12, 20) got (12, 21)" in msg
    assert "unexpected: vit/pooler/dense/kernel" in msg


def test_config_mismatch_is_reported() -> None:
    """Weights of a 2-layer model against a 3-layer config: the third layer is missing."""
    with pytest.raises(ValueError, match="missing: .*vit.encoder.layer.2.attention"):
        torch_to_flax(_torch_state(), TINY.replace(num_hidden_layers=3))


def test_infer_config() -> None:
    c = infer_config(_torch_state(TINY.replace(image_size=12, patch_size=4)))
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.patch_size, c.image_size,
            c.num_labels, c.qkv_bias) == (12, 2, 20, 4, 12, 5, True)
    with pytest.raises(ValueError, match="not a square grid"):
        infer_config(_torch_state())  # the 2 x 3 grid of TINY cannot be read from 6 tokens
    with pytest.raises(ValueError, match="embeddings.patch_embeddings.projection.weight"):
        infer_config({"foo": np.zeros(1)})


def test_docs_show_every_naming_table() -> None:
    """docs/naming.md's table is the one the code applies (regenerate it from naming_table())."""
    from pathlib import Path

    from vit_common.convert import FLAX
    from vit_common.families import NAMINGS, naming_table

    page = (Path(__file__).resolve().parents[1] / "docs" / "naming.md").read_text()
    shown = page.split("<!-- naming-table -->\n", 1)[1].split("\n<!-- /naming-table -->", 1)[0]
    assert shown == naming_table(extra=(FLAX,))
    assert all(f" {name} |" in shown.splitlines()[0] for name in [*NAMINGS, "flax"])


@pytest.mark.parametrize("name", ["hf", "transformers-5", "timm", "flax", "npz"])
@pytest.mark.parametrize("head", [True, False])
def test_every_naming_round_trips_exactly(name: str, head: bool) -> None:
    from vit_common.convert import FLAX
    from vit_common.families import NAMINGS
    from vit_common.naming import from_naming, to_naming

    NAMINGS = {**NAMINGS, "flax": FLAX}
    state = _torch_state(head=head)
    theirs = {k: make() for k, make in to_naming(NAMINGS[name], state, TINY)}
    back, unplaced, problems = from_naming(NAMINGS[name], theirs)
    assert not unplaced and not problems and set(back) == set(state)
    for k in state:
        assert back[k].shape == state[k].shape and np.array_equal(back[k], state[k]), k
