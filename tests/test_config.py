from __future__ import annotations

import dataclasses
import json

import pytest

import vit_common.families as families
from vit_common.config import MODEL_PRESETS, ViTConfig


@pytest.mark.parametrize("field, value, words", [
    ("hidden_size", 0, "hidden_size"),
    ("hidden_size", 50, "divisible by num_attention_heads"),
    ("num_attention_heads", -1, "num_attention_heads"),
    ("num_hidden_layers", 1.5, "num_hidden_layers"),
    ("num_hidden_layers", 10**9, "an int in [1, 4,096]"),
    ("intermediate_size", True, "intermediate_size"),
    ("image_size", 15, "at least patch_size"),
    ("image_size", (224, 0), "image_size"),
    ("image_size", (224, 224, 3), "image_size"),
    ("patch_size", 0, "patch_size"),
    ("num_channels", 0, "num_channels"),
    ("layer_norm_eps", 0.0, "layer_norm_eps"),
    ("layer_norm_eps", float("nan"), "layer_norm_eps"),
    ("hidden_dropout_prob", 1.0, "hidden_dropout_prob"),
    ("attention_probs_dropout_prob", -0.1, "attention_probs_dropout_prob"),
    ("hidden_act", "relu", "hidden_act"),
    ("hidden_act", "gelu_fast", "gelu_pytorch_tanh"),
    ("qkv_bias", 1, "qkv_bias"),
    ("num_labels", -1, "num_labels"),
    ("initializer_range", 0, "initializer_range"),
])
def test_validation_names_field_and_value(field: str, value: object, words: str) -> None:
    with pytest.raises(ValueError) as e:
        ViTConfig(**{field: value})
    assert words in str(e.value)
    assert repr(value) in str(e.value) or str(value) in str(e.value)


def test_frozen_and_hashable() -> None:
    c = ViTConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.hidden_size = 1  # type: ignore[misc]
    assert hash(c) == hash(ViTConfig())
    assert c.replace(num_labels=10) != c


def test_derived_sizes_non_square() -> None:
    c = ViTConfig(image_size=(32, 48), patch_size=16, hidden_size=64, num_attention_heads=4)
    assert c.image_hw == (32, 48) and c.grid_size == (2, 3) and c.num_patches == 6
    assert c.head_dim == 16
    assert ViTConfig(image_size=[48, 48]).image_size == 48  # a square pair is a plain int


@pytest.mark.parametrize("name", ["B/16", "b16", "vit-b16", "ViT-B/16", "vit_base_patch16",
                                  "vit-base-patch16-224", "B-16"])
def test_preset_aliases(name: str) -> None:
    assert ViTConfig.from_preset(name) == ViTConfig.from_preset("B/16")


def test_preset_values_and_overrides() -> None:
    h14 = ViTConfig.from_preset("H/14")
    assert (h14.hidden_size, h14.num_hidden_layers, h14.num_attention_heads, h14.intermediate_size,
            h14.patch_size) == (1280, 32, 16, 5120, 14)
    ti = ViTConfig.from_preset("Ti/16")
    assert (ti.hidden_size, ti.num_attention_heads, ti.intermediate_size) == (192, 3, 768)
    s32 = ViTConfig.from_preset("s32", layer_norm_eps=1e-6, num_labels=10)
    assert s32.patch_size == 32 and s32.hidden_size == 384 and s32.layer_norm_eps == 1e-6
    assert ViTConfig.from_preset("vit-base-patch16-384").image_size == 384
    assert set(MODEL_PRESETS) == {"Ti/16", "S/16", "S/32", "B/16", "B/32", "L/16", "L/32", "H/14"}


@pytest.mark.parametrize("name", ["B/8", "X/16", "", "B16x", "Ti/32x"])
def test_unknown_preset_lists_the_valid_ones(name: str) -> None:
    with pytest.raises(ValueError) as e:
        ViTConfig.from_preset(name)
    assert repr(name) in str(e.value) and "B/16" in str(e.value)


def test_hf_round_trip_keeps_unknown_keys(tmp_path) -> None:
    data = {
        "architectures": ["ViTForImageClassification"], "model_type": "vit",
        "hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
        "image_size": 32, "patch_size": 8, "num_channels": 3, "qkv_bias": False,
        "encoder_stride": 8, "pooler_act": "tanh", "torch_dtype": "float32",
        "id2label": {"0": "cat", "1": "dog", "2": "bird"},
        "label2id": {"cat": 0, "dog": 1, "bird": 2},
        "transformers_version": "4.40.0",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    c = ViTConfig.from_hf(path)
    assert c.num_labels == 3 and c.qkv_bias is False and c.hidden_size == 96
    assert c.extra["encoder_stride"] == 8 and c.extra["id2label"][1] == "dog"
    out = c.to_hf(tmp_path / "out.json")
    assert {k: out[k] for k in data} == data  # nothing lost or changed ...
    assert set(out) - set(data) == {"hidden_dropout_prob", "attention_probs_dropout_prob",
                                    "initializer_range"}  # ... our defaults written out
    assert json.loads((tmp_path / "out.json").read_text()) == out
    assert ViTConfig.from_hf(tmp_path) == c  # a directory holding config.json
    assert ViTConfig.from_hf(out) == c


def test_hf_defaults_and_labels() -> None:
    assert ViTConfig.from_hf({}).num_labels == 2  # HF's default when no labels are named
    assert ViTConfig.from_hf({"num_labels": 5}).num_labels == 5
    hf = ViTConfig(num_labels=3).to_hf()
    assert hf["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    assert hf["model_type"] == "vit"


def test_hf_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ValueError, match="model_type one of vit, deit, dinov2.*got 'bert'"):
        ViTConfig.from_hf({"model_type": "bert"})
    with pytest.raises(ValueError, match="config.json: no such config.json"):
        ViTConfig.from_hf(tmp_path)
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not a config.json .invalid JSON"):
        ViTConfig.from_hf(bad)
    with pytest.raises(ValueError, match="3 labels but num_labels is 2"):
        ViTConfig(num_labels=2, extra={"id2label": {0: "a", 1: "b", 2: "c"}})


@pytest.mark.parametrize("fields, words", [
    (dict(hidden_size=42, num_attention_heads=3, position_embedding_type="sincos2d"), "divisible by 4, got 42"),
    (dict(class_token=False, distillation_token=True), "distillation_token needs class_token"),
    (dict(distillation_token=True, pooling="gap"), "needs pooling 'cls'"),
    (dict(class_token=False), "pooling 'cls' needs class_token"),
    (dict(pooling="max"), "pooling"),
    (dict(num_register_tokens=-1), "num_register_tokens"),
])
def test_switch_combinations_that_cannot_run_are_refused(fields: dict, words: str) -> None:
    """Refused when the config is made, not at the first forward (the switch property found the
    sincos2d width)."""
    with pytest.raises(ValueError, match=words):
        ViTConfig(**fields)


def _timm_architecture(model) -> dict:
    """What a timm VisionTransformer built on the meta device is, in our fields."""
    import torch

    block = model.blocks[0]
    act = type(block.mlp.act).__name__ if hasattr(block.mlp, "act") else ""
    norm = model.fc_norm if not isinstance(model.fc_norm, torch.nn.Identity) else model.norm
    return dict(
        hidden_size=model.embed_dim, num_hidden_layers=len(model.blocks), num_attention_heads=block.attn.num_heads,
        qkv_bias=block.attn.qkv.bias is not None, layer_scale=hasattr(block.ls1, "gamma"),
        qk_norm=not isinstance(block.attn.q_norm, torch.nn.Identity), class_token=model.cls_token is not None,
        distillation_token=getattr(model, "dist_token", None) is not None,
        num_register_tokens=model.num_reg_tokens, image_size=tuple(model.patch_embed.img_size),
        patch_size=model.patch_embed.patch_size[0], num_labels=model.num_classes,
        pre_norm=not isinstance(model.norm_pre, torch.nn.Identity),
        pooling={"token": "cls", "avg": "gap", "map": "map"}[model.global_pool],
        final_norm="pooled" if not isinstance(model.fc_norm, torch.nn.Identity) else "tokens",
        position_embedding_covers_prefix=not model.no_embed_class and model.num_prefix_tokens > model.num_reg_tokens,
        layer_norm_eps=getattr(norm, "eps", None),
        hidden_act={"GELU": "gelu", "QuickGELU": "quick_gelu", "GELUTanh": "gelu_pytorch_tanh", "SiLU": "gelu"}.get(act, act),
        swiglu=block.mlp.fc1.out_features == 2 * block.mlp.fc2.in_features)  # SwiGLUPacked: [gate; up]


def test_from_timm_is_what_timm_builds_for_every_name_it_accepts() -> None:
    """Every timm ViT name from_timm accepts, against the model timm itself builds (on the meta
    device: no weights); the rest are refused with a ValueError."""
    import timm
    import torch

    accepted, wrong = 0, {}
    for name in sorted(set(timm.list_models("vit_*") + timm.list_models("deit_*"))):
        if families.eva.is_eva_name(name):
            continue  # timm's Eva class: tests/test_rotary_families.py holds those to timm
        try:
            ours = ViTConfig.from_timm(name)
        except ValueError:
            continue
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
        theirs = _timm_architecture(model)
        mine = {k: getattr(ours, k) for k in theirs if k != "swiglu"}
        mine["image_size"] = ours.image_hw
        mine["swiglu"] = ours.mlp_type == "swiglu"
        if not ours.class_token and not ours.distillation_token:
            theirs["position_embedding_covers_prefix"] = False  # nothing to cover: one spelling
        if mine != theirs:
            wrong[name] = {k: (mine[k], theirs[k]) for k in theirs if mine[k] != theirs[k]}
        accepted += 1
    assert not wrong, wrong
    assert accepted >= 90
