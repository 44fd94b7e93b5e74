"""CLIP's vision tower (HF `CLIPVisionModel`, `CLIPVisionModelWithProjection`, the vision half of
`CLIPModel`; MetaCLIP 2's `MetaClip2*` classes, the same model; timm `vit_*_clip_*`): a norm before
the encoder, no patch bias, the final norm on the pooled [CLS], quick GELU, and the projection
(`visual_projection`) to the image-text space where the file has one."""

from __future__ import annotations

from vit_common.canonical import LAYER
from vit_common.families.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Family, HFModel
from vit_common.naming import Naming, Rename

_L = LAYER
_CL = "encoder.layers.{i}."


def clip_layers() -> tuple[Rename, ...]:
    """The encoder, patch embedding, position table and final norm as CLIP names them (SigLIP too)."""
    return (*(Rename(_L + f"attention.attention.{n}", _CL + f"self_attn.{t}_proj")
              for n, t in (("query", "q"), ("key", "k"), ("value", "v"))),
            Rename(_L + "attention.output.dense", _CL + "self_attn.out_proj"),
            Rename(_L + "layernorm_before", _CL + "layer_norm1"),
            Rename(_L + "layernorm_after", _CL + "layer_norm2"),
            Rename(_L + "intermediate.dense", _CL + "mlp.fc1"),
            Rename(_L + "output.dense", _CL + "mlp.fc2"),
            Rename("embeddings.patch_embeddings.projection", "embeddings.patch_embedding"),
            Rename("embeddings.position_embeddings", "embeddings.position_embedding", "table"),
            Rename("layernorm", "post_layernorm"))


# bare keys (transformers 5) or under "vision_model." (4.x and two-tower checkpoints: the loader
# takes that tower)
HF_CLIP = Naming("hf-clip", (Rename("embeddings.cls_token", "embeddings.class_embedding", "vector"),
                             Rename("pre_layernorm", "pre_layrnorm"), *clip_layers()),
                 (Rename("classifier", "classifier"),), backbone_prefix="vision_model.",
                 markers=("embeddings.class_embedding", "encoder.layers.0.self_attn.q_proj.weight"),
                 top=(Rename("projection", "visual_projection", when=lambda c: c.projection_size > 0),))
# the class defaults of CLIP's and SigLIP's vision configs for the keys a config.json may omit
TOWER_SIZES = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, image_size=224, num_channels=3)
# attention_dropout is CLIP's and SigLIP's name for attention_probs_dropout_prob
RENAMED = {"attention_dropout": "attention_probs_dropout_prob"}
_SWITCHES = {"pre_norm": True, "patch_bias": False, "final_norm": "pooled"}
_DEFAULTS = {**TOWER_SIZES, "patch_size": 32, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}


FAMILY = Family(
    name="clip",
    summary="CLIP vision towers: HF CLIPVisionModel, CLIPModel's vision half, CLIPForImageClassification",
    namings=(HF_CLIP,),
    naming_defaults={"hf-clip": {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, **_SWITCHES}},
    hf=(HFModel("clip_vision_model", "clip", "CLIPVisionModel", HF_CLIP, switches=_SWITCHES, defaults=_DEFAULTS,
                projection="CLIPVisionModelWithProjection",
                classifiers={"patch_mean": "CLIPForImageClassification"}, two_tower="clip", renamed=RENAMED,
                preset="clip", crop_processor="CLIPImageProcessor",
                example={**_SWITCHES, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
                         "classifier_input": "patch_mean"}),
        # MetaCLIP 2 (worldwide CLIP): CLIP's architecture and keys under its own model types
        HFModel("metaclip_2_vision_model", "metaclip2", "MetaClip2VisionModel", HF_CLIP, switches=_SWITCHES,
                defaults=_DEFAULTS, projection="MetaClip2VisionModelWithProjection",
                classifiers={"patch_mean": "MetaClip2ForImageClassification"}, two_tower="metaclip_2",
                renamed=RENAMED, preset="clip", crop_processor="CLIPImageProcessor",
                example={**_SWITCHES, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
                         "classifier_input": "patch_mean"})),
    # CLIPImageProcessor: shorter side to 224, centre crop 224
    presets={"clip": {"mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD, "resample": "bicubic", "crop_pct": 1.0,
                      "crop_mode": "center", "crop_rounding": "floor"}},
    marks=lambda c: c.pre_norm,
    processors={"CLIPImageProcessor": {"resample": 3, "image_mean": OPENAI_CLIP_MEAN,
                                       "image_std": OPENAI_CLIP_STD, "do_center_crop": True,
                                       "size": {"shortest_edge": 224},
                                       "crop_size": {"height": 224, "width": 224}}},
)
