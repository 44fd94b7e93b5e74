"""The suite proves its own power: every slip of the catalogue (parity_tests/mutations.py), made in a
temporary copy of the project, makes its named check fail there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from parity_tests.mutations import CATALOGUE, Mutation

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("vit_common", "vit_torch", "vit_flax", "vit_cli", "parity_tests", "tests")


def _copy(tmp: Path) -> Path:
    for name in COPIED:
        shutil.copytree(ROOT / name, tmp / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def _run(copy: Path, check: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "-o", "addopts=--strict-markers", "-n", "0", check],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("mutation", CATALOGUE, ids=[m.name for m in CATALOGUE])
def test_the_slip_is_caught(tmp_path: Path, mutation: Mutation) -> None:
    source = (ROOT / mutation.file).read_text()
    assert source.count(mutation.old) == 1, f"{mutation.file} no longer holds {mutation.old!r} once"
    copy = _copy(tmp_path)
    (copy / mutation.file).write_text(source.replace(mutation.old, mutation.new))
    out = _run(copy, mutation.check)
    # 1: tests ran and failed. (0 would be a slip passing the check; 2, 4, 5: it did not run)
    assert out.returncode == 1, (
        f"{mutation.name}: {mutation.check} exited {out.returncode}\n{out.stdout[-3000:]}{out.stderr[-2000:]}")
    assert "1 failed" in out.stdout.splitlines()[-1]


def test_the_checks_pass_without_the_slips(tmp_path: Path) -> None:
    """The same checks on an unchanged copy pass: a failure above is the slip's doing."""
    copy = _copy(tmp_path)
    checks = sorted({m.check for m in CATALOGUE})
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-o", "addopts=--strict-markers", "-n", "0", *checks],
                         cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert f"{len(checks)} passed" in out.stdout.splitlines()[-1]
