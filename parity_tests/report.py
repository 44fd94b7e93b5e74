"""Print the measured max |diff| of every component, per dtype, over the tiny parity configs.

    python -m parity_tests.report

The figures behind the README's parity table; the tests assert the bounds, this shows the values.
"""

from __future__ import annotations

import torch

from parity_tests import conftest  # noqa: F401  (x64 and full matmul precision)
from parity_tests.test_components import COMPONENTS, DIRECTIONS
from parity_tests.twins import TINY_CONFIGS, make_twin, max_diff


def main() -> None:
    worst: dict[tuple[str, str], float] = {}
    for dtype in ("float64", "float32"):
        for name, config in TINY_CONFIGS.items():
            for direction in DIRECTIONS:
                t = make_twin(config, dtype, direction)  # type: ignore[arg-type]
                for component, (get, make_inputs) in COMPONENTS.items():
                    args_pt, args_fx = make_inputs(t)
                    with torch.no_grad():
                        out_pt = get(t.torch_model)(*args_pt)
                    d = max_diff(out_pt, get(t.bound)(*args_fx))
                    worst[(component, dtype)] = max(worst.get((component, dtype), 0.0), d)
    print(f"{'component':28} {'float64':>10} {'float32':>10}   (worst over {len(TINY_CONFIGS)} "
          f"configs x {len(DIRECTIONS)} directions)")
    for component in COMPONENTS:
        print(f"{component:28} {worst[(component, 'float64')]:10.2e} {worst[(component, 'float32')]:10.2e}")


if __name__ == "__main__":
    main()
