"""The parity suite's own power: a catalogue of realistic one-line slips in the twins, the converter
and the preprocessing, each paired with the named check that must fail when the slip is made.

`parity_tests/test_mutations.py` applies each slip to a temporary copy of the project and runs its
check there. A new component adds its slips here. Run the catalogue alone with
`make test-mutations` (it is part of `make test`).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    kind: str  # numerics, reduced precision, training, converter, preprocessing
    file: str  # relative to the repository root
    old: str  # occurs exactly once in `file`
    new: str
    check: str  # the pytest node id that must fail


NUMERICS = "parity_tests/test_numerics.py"
COMPONENTS = "parity_tests/test_components.py::test_component_parity"
DROPOUT = "parity_tests/test_dropout_masks.py"
HALF = "parity_tests/test_half_precision.py"

CATALOGUE: tuple[Mutation, ...] = (
    Mutation("one-pass LayerNorm variance (E[x^2] - E[x]^2) in the Flax twin", "numerics",
             "vit_flax/model.py", "use_fast_variance=False,", "use_fast_variance=True,",
             f"{NUMERICS}::test_final_layernorm_on_deep_layer_activations[h48-3heads-float32-torch->flax]"),
    Mutation("attention scaled by 1/head_dim instead of 1/sqrt(head_dim) in torch", "numerics",
             "vit_torch/model.py", "scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])",
             "scores = q @ k.transpose(-1, -2) / q.shape[-1]",
             f"{COMPONENTS}[ViTSelfAttention-h48-3heads-float64-torch->flax]"),
    Mutation("flax's default (tanh) GELU where the config says exact", "numerics",
             "vit_flax/model.py",
             "return lambda x: x * 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))",
             "return nn.gelu",
             f"{COMPONENTS}[ViTIntermediate-h48-3heads-float64-torch->flax]"),
    Mutation("final LayerNorm with torch's default eps instead of the config's", "numerics",
             "vit_torch/model.py",
             "self.layernorm = _Float32LayerNorm(config.hidden_size, eps=config.layer_norm_eps)",
             "self.layernorm = _Float32LayerNorm(config.hidden_size)",
             f"{COMPONENTS}[VisionTransformer-1channel-pttanh-eps1e-12-float64-torch->flax]"),
    Mutation("patches flattened column-major in torch", "numerics", "vit_torch/model.py",
             "return x.flatten(2).transpose(1, 2)  # (B, N, hidden)",
             "return x.transpose(2, 3).flatten(2).transpose(1, 2)  # (B, N, hidden)",
             f"{COMPONENTS}[ViTPatchEmbeddings-nonsquare-noqkvbias-tanh-float64-torch->flax]"),
    Mutation("softmax taken in the half type in the Flax twin", "reduced precision",
             "vit_flax/model.py",
             "probs = jax.nn.softmax(scores.astype(jnp.promote_types(scores.dtype, jnp.float32)), axis=-1)",
             "probs = jax.nn.softmax(scores, axis=-1)",
             f"{HALF}::test_flax_twin_keeps_its_float32_promises[bfloat16]"),
    Mutation("softmax taken in the half type in the torch twin", "reduced precision",
             "vit_torch/model.py", "return _at_least_f32(scores).softmax(dim=-1).to(scores.dtype)",
             "return scores.softmax(dim=-1)",
             f"{HALF}::test_torch_twin_keeps_its_float32_promises[bfloat16]"),
    Mutation("LayerNorm statistics in the half type in the torch twin", "reduced precision",
             "vit_torch/model.py", "        w = _at_least_f32(self.weight)\n", "        w = self.weight\n",
             f"{HALF}::test_half_twins_on_a_drifted_residual_stream[h48-3heads-bfloat16]"),
    Mutation("residual stream in the half type in the Flax twin", "reduced precision",
             "vit_flax/model.py", "x = _at_least_f32(x)  # the residual stream",
             "x = x  # the residual stream",
             f"{HALF}::test_flax_twin_keeps_its_float32_promises[float16]"),
    Mutation("residual stream in the half type in the torch twin", "reduced precision",
             "vit_torch/model.py", "x = _at_least_f32(x)  # the residual stream",
             "x = x  # the residual stream",
             f"{HALF}::test_torch_twin_keeps_its_float32_promises[float16]"),
    Mutation("dropout moved around the residual add in the Flax MLP", "training", "vit_flax/model.py",
             "return self.dropout(self.dense(x), deterministic=not train) + residual",
             "return self.dropout(self.dense(x) + residual, deterministic=not train)",
             f"{DROPOUT}::test_same_masks_same_outputs[h48-3heads-float32-True]"),
    Mutation("attention-probability dropout applied at evaluation time (torch, eager)", "training",
             "vit_torch/model.py", "return dropout(_attention_probs(q, k)) @ v",
             "return F.dropout(_attention_probs(q, k), dropout.p, training=True) @ v",
             f"{DROPOUT}::test_no_dropout_at_evaluation_time[True-eager]"),
    Mutation("Flax embeddings without their dropout", "training", "vit_flax/model.py",
             "return self.dropout(x, deterministic=not train)", "return x",
             f"{DROPOUT}::test_same_masks_same_outputs[h48-3heads-float32-True]"),
    Mutation("patch kernel's spatial axes swapped by the converter", "converter",
             "vit_common/convert.py", "lambda w, c: w.transpose(2, 3, 1, 0),",
             "lambda w, c: w.transpose(3, 2, 1, 0),",
             f"{COMPONENTS}[ViTPatchEmbeddings-h48-3heads-float64-torch->flax]"),
    Mutation("timm's fused qkv split in the wrong order", "converter", "vit_common/convert.py",
             'Rename(tuple(_L + f"attention.attention.{n}" for n in ("query", "key", "value")),',
             'Rename(tuple(_L + f"attention.attention.{n}" for n in ("key", "query", "value")),',
             "parity_tests/test_interop.py::test_timm_state_dict[True-.safetensors]"),
    Mutation("Google attention-output kernel reshaped (head_dim, heads) instead of (heads, head_dim)",
             "converter", "vit_common/convert.py",
             "blocked_contiguous(w.T).reshape(c.num_attention_heads, c.head_dim, c.hidden_size)",
             "blocked_contiguous(w.T).reshape(c.head_dim, c.num_attention_heads, c.hidden_size)",
             "tests/test_checkpoints.py::test_npz_is_plain_arrays"),  # timm's loader flattens it back
    Mutation("two ImageNet std values swapped", "preprocessing", "vit_common/preprocessing.py",
             "IMAGENET_DEFAULT_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)",
             "IMAGENET_DEFAULT_STD: tuple[float, float, float] = (0.224, 0.229, 0.225)",
             "tests/test_preprocessing_fidelity.py::test_presets_are_the_source_libraries_constants[imagenet]"),
    Mutation("bilinear and bicubic resampling swapped", "preprocessing", "vit_common/preprocessing.py",
             '_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}',
             '_RESAMPLE = {"bilinear": Image.Resampling.BICUBIC, "bicubic": Image.Resampling.BILINEAR}',
             "tests/test_preprocessing_fidelity.py::test_matches_hf_vit_image_processor[china.jpg-imagenet-bilinear]"),
    Mutation("crop_pct's centre crop rounded down instead of to nearest", "preprocessing",
             "vit_common/preprocessing.py", "left = int(round((new[0] - width) / 2.0))",
             "left = (new[0] - width) // 2",
             "tests/test_preprocessing_fidelity.py::test_crop_pct_matches_timm_eval_transform[0.875-bicubic]"),
)
