"""The registry of source families: the only place the rest of the library asks what a family knows.

One module per family (`vit`, `deit`, `dinov2`, `clip`, `siglip`, `timm`, `google`, `open_clip`,
`dinov3`, `eva`, `aimv2`), each a
`Family` (`vit_common.families.base`). Adding a family whose mechanisms exist is one module here,
listed in `FAMILIES`, plus its tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from vit_common.families import aimv2, clip, deit, dinov2, dinov3, eva, google, open_clip, siglip, timm, vit
from vit_common.families.base import Family, Fields, HFModel
from vit_common.naming import Naming

if TYPE_CHECKING:
    from vit_common.config import ViTConfig

FAMILIES: tuple[Family, ...] = (vit.FAMILY, deit.FAMILY, dinov2.FAMILY, clip.FAMILY, siglip.FAMILY,
                                timm.FAMILY, google.FAMILY, open_clip.FAMILY, dinov3.FAMILY,
                                eva.FAMILY, aimv2.FAMILY)
_BY_NAME = {f.name: f for f in FAMILIES}
NAMINGS: dict[str, Naming] = {n.name: n for f in FAMILIES for n in f.namings}
_NAMING_FAMILY = {n.name: f for f in FAMILIES for n in f.namings}
# HF model types, in the order to_hf tries them for a config that names none
HF_MODELS: dict[str, HFModel] = {m.model_type: m for f in FAMILIES for m in f.hf}
# the two-tower model types (CLIPModel, SiglipModel) -> the vision tower's model type
TWO_TOWERS: dict[str, str] = {m.two_tower: m.model_type for m in HF_MODELS.values() if m.two_tower}
# HF classifier class -> what its head reads (classifier_input)
CLASSIFIER_INPUTS: dict[str, str] = {cls: head for m in HF_MODELS.values() for head, cls in m.classifiers.items()}
# preprocessing presets (Preprocessing fields) by name, and HF image processors' defaults by class
PRESETS: dict[str, Fields] = {name: fields for f in FAMILIES for name, fields in f.presets.items()}
PROCESSORS: dict[str, Fields] = {name: fields for f in FAMILIES for name, fields in f.processors.items()}
DEFAULT_PRESET = "imagenet"  # classic ViT's, for a config that no family marks
CLASSIC = "vit"  # the model type of classic ViT: what a config.json without model_type is (HF's default)


def family(name: str) -> Family:
    if name not in _BY_NAME:
        raise ValueError(f"unknown family {name!r}; expected one of {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def family_of_naming(naming: str) -> Family | None:
    return _NAMING_FAMILY.get(naming)


def state_namings() -> tuple[Naming, ...]:
    """The namings a bare state dict is tried against, most specific first: every family's by the
    number of markers (more markers, a narrower match), then the fallbacks (plain HF names)."""
    fallback = {n for f in FAMILIES for n in f.fallback}
    flat = [n for f in FAMILIES for n in f.namings if n.name not in fallback and n.sep == "."]
    return (*sorted(flat, key=lambda n: -len(n.markers)), *(NAMINGS[n] for n in fallback))


def naming_defaults(naming: str) -> Fields:
    """What a file of this naming cannot say: its source's activation, eps and switches."""
    f = _NAMING_FAMILY.get(naming)
    return dict(f.naming_defaults.get(naming, {})) if f is not None else {}


def hf_model(model_type: str) -> HFModel:
    if model_type not in HF_MODELS:
        raise ValueError(f"expected an HF config with model_type one of {', '.join(HF_MODELS)} "
                         f"(or {', '.join(TWO_TOWERS)}), got {model_type!r}")
    return HF_MODELS[model_type]


def hf_model_by_short(short: str) -> HFModel:
    by_short = {m.short: m for m in HF_MODELS.values()}
    if short not in by_short:
        raise ValueError(f"unknown family {short!r}; expected one of {', '.join(by_short)}")
    return by_short[short]


def hf_model_of(config: ViTConfig) -> HFModel:
    """The HF model type a config is written as: the one it was read from, else the first whose
    switches it has, else classic ViT's."""
    stated = config.extra.get("model_type")
    if stated in HF_MODELS:
        return HF_MODELS[stated]
    return next((m for m in HF_MODELS.values() if not m.mismatches(config)), HF_MODELS[CLASSIC])


def preset_name(config: ViTConfig) -> str:
    """The preprocessing preset of a config's family: its HF model type's when it was read from
    one, else that of the first family whose switches mark it, else classic ViT's."""
    stated = config.extra.get("model_type")
    if stated in HF_MODELS:
        return HF_MODELS[stated].preset
    for m in HF_MODELS.values():  # SigLIP 2 NaFlex (HF or timm): its own processor, by its resizing
        if m.switches.get("position_embedding_resampling") == config.position_embedding_resampling \
                and not m.mismatches(config):
            return m.preset
    for f in FAMILIES:
        if f.marks is not None and f.marks(config):
            return next(iter(f.presets))
    return DEFAULT_PRESET


def naming_table(extra: Iterable[Naming] = ()) -> str:
    """Every naming's table as one markdown table (docs/naming.md shows it; a test keeps it current):
    a row per canonical module, a column per naming, each cell their module path and kind."""
    from vit_common.canonical import HEADS, TABLE

    namings = [*extra, *NAMINGS.values()]
    paths = [r.path for r in TABLE + HEADS]
    cells: dict[tuple[str, str], str] = {}
    for n in namings:
        for r in n.backbone + n.top + n.head:
            for p in r.parts:
                stacked = f" (stacks {len(r.parts)})" if len(r.parts) > 1 else ""
                prefix = n.backbone_prefix if r in n.backbone and n.backbone_prefix else ""
                shown = f"[{prefix}]" if prefix else ""
                split = f" (splits in {len(r.their_parts)})" if len(r.their_parts) > 1 else ""
                cell = f"`{shown}{' + '.join(r.their_parts)}` {r.kind}{stacked}{split}"
                cells[(p, n.name)] = f"{cells[(p, n.name)]} or {cell}" if (p, n.name) in cells else cell
    lines = ["| canonical (torch) module | " + " | ".join(n.name for n in namings) + " |",
             "|---|" + "---|" * len(namings)]
    for p in paths:
        lines.append(f"| `{p}` | " + " | ".join(cells.get((p, n.name), "—") for n in namings) + " |")
    return "\n".join(lines)


__all__ = ["FAMILIES", "NAMINGS", "HF_MODELS", "TWO_TOWERS", "CLASSIFIER_INPUTS", "PRESETS", "PROCESSORS",
           "Family", "HFModel", "family", "family_of_naming", "state_namings", "naming_defaults", "hf_model",
           "hf_model_by_short", "hf_model_of", "preset_name", "naming_table"]
