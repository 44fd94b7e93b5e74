"""What both InferenceEngines (vit_torch.inference, vit_flax.inference) share: their output names
and the checks of their arguments."""

from __future__ import annotations

import warnings
from typing import Any

OUTPUT_NAMES = ("pooled", "logits")  # the family's pooled embedding; the classifier's logits


class Outputs(dict):
    """The engines' outputs: "pooled" (the family's pooled embedding) and "logits". "cls", the
    pooled embedding's name before it was called what it holds (SigLIP has no [CLS]), still reads
    it for this release, with a DeprecationWarning."""

    def __missing__(self, key: str) -> Any:
        if key == "cls" and "pooled" in self:
            warnings.warn('the engines\' "cls" output is now called "pooled"', DeprecationWarning, stacklevel=2)
            return self["pooled"]
        raise KeyError(key)


def positive_int(value: Any, name: str) -> int:
    """`value` when it is an int >= 1 (not a bool, not a str): else a ValueError naming `name`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value
