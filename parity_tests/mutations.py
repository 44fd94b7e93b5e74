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
             "self.layernorm = _Float32LayerNorm(config.hidden_size, eps=config.layer_norm_eps)\n        self.attention_pool",
             "self.layernorm = _Float32LayerNorm(config.hidden_size)\n        self.attention_pool",
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
             "x = self.dropout(self.dense(x), deterministic=not train)\n        return x if residual is None else x + residual",
             "x = self.dense(x) if residual is None else self.dense(x) + residual\n        return self.dropout(x, deterministic=not train)",
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
    # the family's components (issue: each new component enters the catalogue)
    Mutation("LayerScale's first scale on the MLP branch in the Flax twin", "numerics",
             "vit_flax/model.py", "return h + self.layer_scale2(self.output(", "return h + self.layer_scale1(self.output(",
             f"{COMPONENTS}[ViTLayer-dinov2reg-swiglu-qknorm-float64-torch->flax]"),
    Mutation("SwiGLU's halves read as [up; gate] in torch", "numerics", "vit_torch/model.py",
             "gate, up = x.chunk(2, dim=-1)", "up, gate = x.chunk(2, dim=-1)",
             f"{COMPONENTS}[ViTIntermediate-dinov2reg-swiglu-qknorm-float64-torch->flax]"),
    Mutation("the keys normalised with the queries' qk-norm in torch", "numerics", "vit_torch/model.py",
             "self.k_norm(k).to(k.dtype)", "self.q_norm(k).to(k.dtype)",
             f"{COMPONENTS}[ViTSelfAttention-dinov2reg-swiglu-qknorm-float64-torch->flax]"),
    Mutation("a residual around the attention pool's attention in the Flax twin", "numerics",
             "vit_flax/model.py", "x = _at_least_f32(self.attention(probe, train, tokens))",
             "x = _at_least_f32(self.attention(probe, train, tokens) + probe)",
             f"{COMPONENTS}[ViTAttentionPool-siglip-map-noqkvbias-float64-torch->flax]"),
    Mutation("registers in front of [CLS] in the Flax twin", "numerics", "vit_flax/model.py",
             "x = jnp.concatenate([x[:, :len(prefix)], registers, x[:, len(prefix):]],",
             "x = jnp.concatenate([registers, x[:, :len(prefix)], x[:, len(prefix):]],",
             f"{COMPONENTS}[ViTEmbeddings-dinov2reg-swiglu-qknorm-float64-torch->flax]"),
    Mutation("gap pooling over the prefix tokens too in torch", "numerics", "vit_torch/model.py",
             "pooled = tokens[:, config.num_prefix_tokens:].mean(dim=1)", "pooled = tokens.mean(dim=1)",
             f"{COMPONENTS}[VisionTransformer-bigvision-sincos-gap-reg-float64-torch->flax]"),
    Mutation("DeiT pooled from [CLS] alone in torch", "numerics", "vit_torch/model.py",
             "pooled = (tokens[:, 0] + tokens[:, 1]) / 2 if config.distillation_token else tokens[:, 0]",
             "pooled = tokens[:, 0]",
             f"{COMPONENTS}[VisionTransformer-deit-distilled-tanh-float64-torch->flax]"),
    Mutation("quick_gelu's 1.702 rounded to 1.7 in the Flax twin", "numerics", "vit_flax/model.py",
             "return lambda x: x * jax.nn.sigmoid(1.702 * x)", "return lambda x: x * jax.nn.sigmoid(1.7 * x)",
             f"{COMPONENTS}[ViTIntermediate-clip-prenorm-pooled-float64-torch->flax]"),
    Mutation("sincos2d with rows and columns swapped (shared by both twins)", "numerics",
             "vit_common/resample.py", "[np.sin(c), np.cos(c), np.sin(r), np.cos(r)]",
             "[np.sin(r), np.cos(r), np.sin(c), np.cos(c)]",
             "parity_tests/test_families.py::test_sincos2d_is_big_visions_table"),
    Mutation("antialiased resampling without the widened kernel (shared by both twins)", "numerics",
             "vit_common/resample.py", "support = 2.0 * scale if scale >= 1.0 else 2.0", "support = 2.0",
             "parity_tests/test_families.py::test_any_resolution_equals_the_sources_resampling[dinov2-registers]"),
    Mutation("timm's attention-pool kv read as [value; key]", "converter", "vit_common/convert.py",
             'Rename((_P + "attention.attention.key", _P + "attention.attention.value"), "attn_pool.kv")',
             'Rename((_P + "attention.attention.value", _P + "attention.attention.key"), "attn_pool.kv")',
             "parity_tests/test_families.py::test_timm_family_loads_and_writes_back[siglip-map]"),
    Mutation("HF DINOv2-with-registers' [CLS] slot dropped instead of folded on the way to timm",
             "converter", "vit_common/convert.py",
             "out[t] = (to_numpy(out[t]) + pos[:, j:j + 1]).astype(pos.dtype)", "out[t] = to_numpy(out[t])",
             "parity_tests/test_families.py::test_dinov2_registers_hf_to_timm_folds_the_cls_slot"),
)
