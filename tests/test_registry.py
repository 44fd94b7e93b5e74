"""The house: every family is one module of vit_common/families with every part, the registry is the
only thing the rest of the library asks, and no other file holds a family's table or branch."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import vit_common.families as families
from vit_common.canonical import LEAVES
from vit_common.checkpoints import hf_config_dict
from vit_common.config import ViTConfig
from vit_common.naming import KINDS, Naming
from vit_common.preprocessing import PIPELINES, Preprocessing

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FAMILIES = ("vit", "deit", "dinov2", "clip", "siglip", "timm", "google", "open_clip", "dinov3", "eva", "aimv2")


def test_one_module_per_source_family() -> None:
    modules = sorted(p.stem for p in (ROOT / "vit_common" / "families").glob("*.py") if p.stem not in ("__init__", "base"))
    assert modules == sorted(SOURCE_FAMILIES)
    assert [f.name for f in families.FAMILIES] == list(SOURCE_FAMILIES)
    for name in SOURCE_FAMILIES:  # each module holds its family
        module = __import__(f"vit_common.families.{name}", fromlist=["FAMILY"])
        assert module.FAMILY is families.family(name)


def family_module(name: str):
    return __import__(f"vit_common.families.{name}", fromlist=["FAMILY"])


@pytest.mark.parametrize("family", families.FAMILIES, ids=lambda f: f.name)
def test_every_family_has_every_part(family: families.Family) -> None:
    assert family.summary
    # namings: each with markers that detect its files, and what its files cannot say
    assert family.namings and all(isinstance(n, Naming) and n.markers for n in family.namings)
    for n in family.namings:
        defaults = family.naming_defaults[n.name]
        assert {"hidden_act", "layer_norm_eps"} <= set(defaults), n.name
        ViTConfig(**{k: v for k, v in defaults.items()})  # valid values of real fields
        assert all(r.kind in KINDS for r in n.backbone + n.head), n.name
    assert set(family.fallback) <= {n.name for n in family.namings}
    # preprocessing presets: whole pipelines
    assert family.presets and all(isinstance(PIPELINES[p], Preprocessing) for p in family.presets)
    # config both ways: an HF config.json, timm's name grammar or the npz arrays' switches
    if family.hf:
        for model in family.hf:
            assert model.naming in family.namings and model.backbone
            assert model.preset in PIPELINES
            if not model.classifiers:  # HF has no classifier class of this family (DINOv3)
                continue
            config = ViTConfig(**{k: v for k, v in model.example.items()}).replace(
                extra={"model_type": model.model_type})
            assert not model.mismatches(config), model.model_type
            written = hf_config_dict(config, with_head=True)  # config.json both ways, with its head
            back = ViTConfig.from_hf(written)
            assert back == config and back.extra["model_type"] == model.model_type
            assert model.classifiers[config.classifier_input] in str(written["architectures"])
    elif family.name == "timm":
        assert ViTConfig.from_timm("vit_small_patch16_224").hidden_size == 384
    elif family.name == "eva":  # timm's Eva definitions, by name
        assert ViTConfig.from_timm("vit_small_patch16_dinov3").rope_type == "dinov3"
    elif family.name == "open_clip":
        fields, pre = family_module("open_clip").config_fields(
            {"model_cfg": {"embed_dim": 16, "vision_cfg": {"width": 32, "layers": 2, "patch_size": 8,
                                                          "image_size": 32, "head_width": 16}}})
        config = ViTConfig(**fields)
        assert (config.num_attention_heads, config.projection_size, pre) == (2, 16, None)
        assert family_module("open_clip").model_cfg(config)["vision_cfg"]["head_width"] == 16
    elif family.name == "google":
        assert family.file_preset in PIPELINES
    else:
        pytest.fail(f"{family.name}: no way to read its config")


def test_the_registry_walk_can_fail() -> None:
    broken = dataclasses.replace(families.family("deit"), presets={})
    with pytest.raises(AssertionError):
        test_every_family_has_every_part(broken)


def test_namings_are_unique_and_detection_ends_with_the_fallback() -> None:
    names = [n.name for f in families.FAMILIES for n in f.namings]
    assert len(names) == len(set(names))
    order = [n.name for n in families.state_namings()]
    assert order[-1] == "hf" and order.index("hf-dinov2-registers") < order.index("hf-dinov2")


def test_kinds_and_the_canonical_leaves_agree() -> None:
    for kind, leaves in LEAVES.items():
        assert tuple(leaf.ours for leaf in KINDS[kind]) == leaves, kind


# names only a family may spell: HF model types and naming names
_FAMILY_WORDS = ({m for m in families.HF_MODELS if m != families.CLASSIC} | set(families.TWO_TOWERS)
                 | {n for n in families.NAMINGS if n.startswith("hf-")} | {"transformers-5", "big_vision"})
_LIBRARY = [p for pkg in ("vit_common", "vit_torch", "vit_flax", "vit_cli") for p in (ROOT / pkg).rglob("*.py")
            if "families" not in p.parts]


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings}


@pytest.mark.parametrize("path", _LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_family_knowledge_outside_the_families(path: Path) -> None:
    """No string constant outside vit_common/families names a family's model type or naming (an
    `if model_type == "dinov2"` branch, a per-family table)."""
    found = sorted(_string_constants(path) & _FAMILY_WORDS)
    assert not found, f"{path.relative_to(ROOT)} spells {found}: ask vit_common.families"


def test_the_family_word_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('"""doc mentions dinov2"""\nif x == "dinov2":\n    pass\n')
    assert _string_constants(bad) & _FAMILY_WORDS == {"dinov2"}


def test_no_cli_module_imports_another() -> None:
    for path in (ROOT / "vit_cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.startswith("vit_cli"):
                    assert name in ("vit_cli.common", "vit_cli"), f"{path.name} imports {name}"


def test_no_vit_common_file_over_500_lines() -> None:
    for path in (ROOT / "vit_common").rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 520, path


def test_no_mutable_module_state_in_the_torch_twin() -> None:
    """vit_torch's modules never rebind a module global at run time (no `global` statement)."""
    for path in (ROOT / "vit_torch").glob("*.py"):
        tree = ast.parse(path.read_text())
        assert not any(isinstance(n, ast.Global) for n in ast.walk(tree)), path
