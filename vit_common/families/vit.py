"""Classic ViT (HF `ViTModel`, Google's weights converted by HF): the canonical names themselves,
and transformers 5's in-memory names for the same modules."""

from __future__ import annotations

import re

from vit_common.families.base import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    Family,
    HFModel,
)
from vit_common.naming import Kind, Naming, Rename, identity

# HF's own files copy every tensor as it is (the Flax tree transposes: vit_common.convert.FLAX)
HF_COPY: dict[Kind, Kind] = {"linear": "copy", "conv": "copy", "norm": "copy"}
# HF transformers checkpoints on disk: the canonical names themselves
HF = Naming("hf", identity(HF_COPY), (Rename("classifier", "classifier"),), backbone_prefix="vit.",
            markers=("embeddings.patch_embeddings.projection.weight",))

# transformers 5 renamed ViT's modules in memory; save_pretrained still writes the classic names,
# but torch.save(model.state_dict()) records these
_TRANSFORMERS5_LAYER = {
    "attention.attention.query": "attention.q_proj", "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj", "attention.output.dense": "attention.o_proj",
    "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}


def _transformers5_path(path: str) -> str:
    m = re.fullmatch(r"encoder\.layer\.\{i\}\.(.+)", path)
    return "layers.{i}." + _TRANSFORMERS5_LAYER.get(m.group(1), m.group(1)) if m else path


TRANSFORMERS5 = Naming("transformers-5", tuple(Rename(r.ours, _transformers5_path(r.theirs), r.kind)
                                               for r in HF.backbone),
                       HF.head, backbone_prefix="vit.", markers=("layers.0.attention.q_proj.weight",))
_HF_VIT_FILES = {"hidden_act": "gelu", "layer_norm_eps": 1e-12}

FAMILY = Family(
    name="vit",
    summary="classic ViT: HF ViTModel / ViTForImageClassification (the canonical names)",
    namings=(TRANSFORMERS5, HF),
    naming_defaults={"hf": _HF_VIT_FILES, "transformers-5": _HF_VIT_FILES},
    fallback=("hf",),  # any HF-named file that no other family's markers claim
    hf=(HFModel("vit", "vit", "ViTModel", HF, classifiers={"pooled": "ViTForImageClassification"},
                preset="imagenet", has_flax=True),),
    presets={"imagenet": {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}},
    processors={"ViTImageProcessor": {"resample": 2, "image_mean": IMAGENET_STANDARD_MEAN,
                                      "image_std": IMAGENET_STANDARD_STD, "do_center_crop": False}},
)
