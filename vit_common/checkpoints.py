"""Reading and writing files safely. Every output is written to a temporary file beside the target
and renamed into place, so a failure never leaves a half-written file, and an existing file is only
replaced when the caller says so."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *,
                 overwrite: bool = True) -> None:
    """Write `path` through `write(file)`: all of it or, on any error, nothing."""
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists; refusing to overwrite it without an explicit flag")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), overwrite=overwrite)
