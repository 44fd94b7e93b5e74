"""The twin ViT in PyTorch (channels-first input). Never imports jax or flax."""

from vit_common.config import ViTConfig
from vit_torch.image_processing import preprocess_image
from vit_torch.inference import InferenceEngine
from vit_torch.kernels import reference_kernels
from vit_torch.model import (
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
    init_weights,
)
from vit_torch.pretrained import from_pretrained, load_numpy_state_dict, save_pretrained

__all__ = [
    "InferenceEngine", "ViTAttention", "ViTConfig", "ViTEmbeddings", "ViTEncoder", "ViTForImageClassification",
    "ViTIntermediate", "ViTLayer", "ViTOutput", "ViTPatchEmbeddings", "ViTSelfAttention",
    "ViTSelfOutput", "VisionTransformer", "from_pretrained", "init_weights", "load_numpy_state_dict",
    "preprocess_image", "reference_kernels", "save_pretrained",
]
