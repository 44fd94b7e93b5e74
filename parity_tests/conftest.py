"""Cross-framework parity: shared set-up.

float64 needs jax_enable_x64 before any array is made, and the comparisons are only meaningful at
full matmul precision (JAX on GPU/TPU defaults to TF32 / bf16 passes, torch may use TF32).
"""

import jax
import torch

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
