"""What a source family is made of: the parts each module of `vit_common.families` fills in.

A `Family` is everything the library knows of one source of checkpoints: its weight namings (with
the markers that detect its files and what its files cannot say), the switches its names reveal,
its HF model types (`HFModel`: config.json both ways, backbone and classifier classes), its
preprocessing presets and HF image processors. The registry (`vit_common.families`) is built from
these and is the only thing the rest of the library asks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from vit_common.naming import Naming

if TYPE_CHECKING:
    from vit_common.config import ViTConfig

# the mean / std constants of HF's image_utils (and timm's): ImageNet's, Inception's (0.5) and OpenAI CLIP's
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Fields = dict[str, Any]
# (canonical state, its key prefix, {canonical key: the file's key}, the switches read so far) -> more
Reveal = Callable[[Mapping[str, Any], str, Mapping[str, str], Mapping[str, Any]], Fields]


def _no_fields(*_: Any) -> Fields:
    return {}


@dataclasses.dataclass(frozen=True)
class HFModel:
    """One HF `model_type`: its switch values (the rest at classic ViT's), the class defaults for the
    keys its config.json may omit, the switches it leaves free (read from its own keys), its classes
    and its files' naming."""

    model_type: str
    short: str  # its name on the command line (vit-finetune --family)
    backbone: str  # the HF class of the bare tower
    naming: Naming
    switches: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    free: tuple[str, ...] = ()
    # classifier_input -> the HF classifier class whose head reads it
    classifiers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    two_tower: str | None = None  # the two-tower model_type whose vision_config this is (CLIP, SigLIP)
    # the HF class of the tower with its projection (CLIPVisionModelWithProjection): config.json's
    # projection_dim is projection_size when architectures names it, or in the two-tower model
    projection: str | None = None
    omits: tuple[str, ...] = ()  # our fields its config.json does not hold (Siglip2's image_size)
    renamed: Mapping[str, str] = dataclasses.field(default_factory=dict)  # its config key -> our field
    # its own config.json keys -> our fields (after the shared ones), and back
    read: Callable[[Mapping[str, Any]], Fields] = _no_fields
    write: Callable[[ViTConfig], Fields] = _no_fields
    preset: str = "imagenet"  # its preprocessing preset (a vit_common.preprocessing.PIPELINES name)
    resize_processor: str = "ViTImageProcessor"  # the HF processor class of a straight resize
    crop_processor: str = "BitImageProcessor"  # ... and of a shorter-side resize + centre crop
    has_flax: bool = False  # whether HF has a Flax class for it
    # a from-scratch model of this family: the switches and head a tiny model trains with
    example: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def mismatches(self, config: ViTConfig) -> list[str]:
        """The switches of `config` this model type cannot express, as "name=value"."""
        want = {**config.switch_defaults(), **self.switches}
        return [f"{k}={getattr(config, k)!r}" for k, v in want.items()
                if k not in self.free and getattr(config, k) != v]


@dataclasses.dataclass(frozen=True)
class Family:
    """One source family, whole."""

    name: str
    summary: str
    # its weight namings, in detection order; `fallback` namings are tried after every other family's
    namings: tuple[Naming, ...]
    # what a file of each naming cannot say (activation, eps, resampling, switches), by naming name
    naming_defaults: Mapping[str, Fields]
    fallback: tuple[str, ...] = ()
    hf: tuple[HFModel, ...] = ()
    reveal: Reveal | None = None  # switches its own names show (timm's fc_norm)
    # preprocessing pipelines (Preprocessing fields) by preset name, and the switches that mark a
    # config of this family when no model_type says it (for its preset)
    presets: Mapping[str, Fields] = dataclasses.field(default_factory=dict)
    marks: Callable[[ViTConfig], bool] | None = None
    # the preset a file of this family implies when it carries no preprocessing (Google's npz)
    file_preset: str | None = None
    # the HF image processor classes it brings: their defaults for keys a file leaves out
    processors: Mapping[str, Fields] = dataclasses.field(default_factory=dict)
