"""The twin ViT in Flax linen (channels-last input). Never imports torch."""

from vit_common.config import ViTConfig
from vit_flax.image_processing import preprocess_image
from vit_flax.inference import InferenceEngine
from vit_flax.model import (
    VisionTransformer,
    ViTAttention,
    ViTEmbeddings,
    ViTEncoder,
    ViTForImageClassification,
    ViTIntermediate,
    ViTLayer,
    ViTOutput,
    ViTPatchEmbeddings,
    ViTSelfAttention,
    ViTSelfOutput,
)
from vit_flax.pretrained import from_pretrained, save_pretrained

__all__ = [
    "InferenceEngine", "ViTAttention", "ViTConfig", "ViTEmbeddings", "ViTEncoder", "ViTForImageClassification",
    "ViTIntermediate", "ViTLayer", "ViTOutput", "ViTPatchEmbeddings", "ViTSelfAttention",
    "ViTSelfOutput", "VisionTransformer", "from_pretrained", "save_pretrained", "preprocess_image",
]
