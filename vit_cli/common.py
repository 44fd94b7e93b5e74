"""What every console tool shares: exit codes, argument types, the progress reporter and the
wrapper that turns failures into one message and a documented exit code, never a traceback."""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from vit_common.config import ViTConfig
from vit_common.fileio import Terminated

EXIT_OK = 0
EXIT_FAILED = 1  # the job ran and found something wrong: --verify differences, skipped images
EXIT_BAD_INPUT = 2  # bad arguments or an unreadable / unsupported / mismatched input
EXIT_EXISTS = 3  # an output exists and --force was not given
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; nothing half-written is left
EXIT_CODES_HELP = ("exit codes: 0 done, 1 the job found a problem (see the tool), 2 bad arguments "
                   "or an unreadable, unsupported or mismatched input, 3 an output exists (use "
                   "--force), 130 interrupted")
MAX_IMAGE_SIDE = 8192  # --image-size; the config's patch limit applies as well
MAX_BATCH = 1024  # --batch-size: memory for a batch is allocated before the first image is read


def run(prog: str, main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> int:
    """Parse arguments (argparse exits 2 on bad ones) and run `main`, mapping every failure to one
    line on stderr and its exit code."""
    args = parser.parse_args(argv)
    try:
        return main(args)
    except FileExistsError as e:
        return fail(prog, str(e), EXIT_EXISTS)
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError) as e:
        return fail(prog, str(e), EXIT_BAD_INPUT)
    except (KeyboardInterrupt, Terminated):
        return fail(prog, "interrupted; no partial output was left", EXIT_INTERRUPTED)
    except MemoryError:
        return fail(prog, "out of memory", EXIT_BAD_INPUT)
    except OSError as e:
        return fail(prog, f"{e.filename or ''}: {e.strerror or e}".lstrip(": "), EXIT_BAD_INPUT)
    except RecursionError:
        return fail(prog, "input nested too deeply", EXIT_BAD_INPUT)


def fail(prog: str, message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------------------------
# argument types: each refuses a bad value with argparse's exit 2 before any work starts


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")


def batch_size(text: str) -> int:
    value = positive_int(text)
    if value > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"a batch is at most {MAX_BATCH} images, got {value}")
    return value
non_negative_int = _int_at_least(0, "an integer >= 0")


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


MAX_BYTE_SIZE = 2**50  # 1 PiB: a larger shard size is a typo, not a plan


def byte_size(text: str) -> int:
    """A size in bytes: 5GB, 500MB, 64MiB, 1000000 (HF's max_shard_size spellings)."""
    import re

    m = re.fullmatch(r"\s*(\d{1,20}(?:\.\d{1,20})?)\s*([a-zA-Z]*)\s*", text) if len(text) < 64 else None
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 5GB, 500MB or 64MiB (at most "
                                         f"{MAX_BYTE_SIZE:,} bytes), got {text[:40]!r}")
    value = int(float(m.group(1)) * _SIZE_UNITS[unit])
    if value > MAX_BYTE_SIZE:
        raise argparse.ArgumentTypeError(f"a size of at most {MAX_BYTE_SIZE:,} bytes (1 PiB), got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"a size must be at least 1 byte, got {text!r}")
    return value


def image_side(text: str) -> int:
    value = positive_int(text)
    if value > MAX_IMAGE_SIDE:
        raise argparse.ArgumentTypeError(f"an image side is at most {MAX_IMAGE_SIDE} pixels, got {value}")
    return value


def model_config(name: str) -> ViTConfig:
    """--preset / --model: a ViT size preset, else a timm model name (ViTConfig.from_timm)."""
    try:
        return ViTConfig.from_preset(name)
    except ValueError as preset_error:
        if "_" not in name:
            raise argparse.ArgumentTypeError(str(preset_error)) from None
    try:
        return ViTConfig.from_timm(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def config_source(text: str) -> ViTConfig | str | pathlib.Path:
    """--config: an existing file is a config file (pathlib.Path: HF's, timm's or open_clip's),
    anything else a preset name or a timm model name, which must be one we know."""
    if os.path.lexists(text):
        return pathlib.Path(text)
    try:
        ViTConfig.from_preset(text)
    except ValueError as e:
        try:
            ViTConfig.from_timm(text)  # a timm model name: load_checkpoint builds its config
        except ValueError as timm_error:
            raise argparse.ArgumentTypeError(f"{e}; nor a timm model name ({timm_error}); nor the path "
                                             f"of a config.json, which does not exist") from None
    return text


def normalisation(values: list[float] | None, name: str, positive: bool = False) -> list[float] | None:
    """--mean / --std: one value for every channel, or three."""
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise ValueError(f"--{name} takes 1 or 3 values (one per channel), got {len(values)}")
    if positive and any(v <= 0 for v in values):
        raise ValueError(f"--{name} values must be > 0, got {values}")
    return values


# ---------------------------------------------------------------------------------------------
# progress


def progress_bar(total_bytes: int, label: str, quiet: bool = False, threshold: int = 200 * 2**20
                 ) -> Any:
    """A tqdm bar in bytes for outputs over `threshold`; its `update` is the library's progress
    callback. Disabled (still callable) for small outputs and with `quiet`."""
    from tqdm import tqdm

    return tqdm(total=total_bytes, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                disable=quiet or total_bytes < threshold, file=sys.stderr, leave=False)
