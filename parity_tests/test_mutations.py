"""The suite proves its own power: every slip of the catalogue (parity_tests/mutations.py), made in a
temporary copy of the project, makes its named check fail there."""

from __future__ import annotations

import json
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


class _Server:
    """One mutation_server.py process per test worker: the checks run in it one after another,
    the heavy libraries imported once (a fresh process per check spends ~10 s importing them)."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "parity_tests" / "mutation_server.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=ROOT)
        self.count = 0

    def run(self, copy: Path, check: str) -> tuple[int, str]:
        self.count += 1
        token = f"@@mutation-check-{os.getpid()}-{self.count}@@"
        log = copy / "check.log"
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"copy": str(copy), "check": check, "token": token, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:  # the checks' own output may come first: skipped
            if line.startswith(token):
                return int(line.split()[1]), log.read_text()
        raise RuntimeError(f"the mutation server ended while running {check}")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="session")
def server():
    s = _Server()
    yield s
    s.close()


@pytest.mark.parametrize("mutation", CATALOGUE, ids=[m.name for m in CATALOGUE])
def test_the_slip_is_caught(tmp_path: Path, mutation: Mutation, server: _Server) -> None:
    source = (ROOT / mutation.file).read_text()
    assert source.count(mutation.old) == 1, f"{mutation.file} no longer holds {mutation.old!r} once"
    copy = _copy(tmp_path)
    (copy / mutation.file).write_text(source.replace(mutation.old, mutation.new))
    code, out = server.run(copy, mutation.check)
    # 1: tests ran and failed. (0 would be a slip passing the check; 2, 4, 5: it did not run)
    assert code == 1, f"{mutation.name}: {mutation.check} exited {code}\n{out[-3000:]}"
    assert "1 failed" in out.strip().splitlines()[-1]


def _cheapest_per_file() -> list[str]:
    """One check from each test file the catalogue names (its first by name)."""
    first: dict[str, str] = {}
    for check in sorted({m.check for m in CATALOGUE}):
        first.setdefault(check.split("::")[0], check)
    return list(first.values())


@pytest.mark.parametrize("check", _cheapest_per_file(), ids=lambda c: c.split("::")[0])
def test_an_unchanged_copy_passes_each_files_checks(tmp_path: Path, check: str, server: _Server) -> None:
    """The copy and the server work for every test file the catalogue uses (its fixtures, its data,
    its imports from the copy): an unchanged copy passes there, so a failure above is the slip's.
    Each check itself passes in this very run on the project's own tree; the full clean run of
    every check in a fresh process is in the slow set (make test-mutations runs it)."""
    code, out = server.run(_copy(tmp_path), check)
    assert code == 0, f"{check} failed on an unchanged copy\n{out[-3000:]}"
    last = out.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last and "error" not in last, last


@pytest.mark.slow
@pytest.mark.parametrize("half", [0, 1])
def test_the_checks_pass_without_the_slips(tmp_path: Path, half: int) -> None:
    """The same checks on an unchanged copy pass, in a fresh process (not the server): a failure
    above is the slip's doing. In two halves, one per test worker."""
    copy = _copy(tmp_path)
    checks = sorted({m.check for m in CATALOGUE})[half::2]
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-o", "addopts=--strict-markers", "-n", "0", *checks],
                         cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert f"{len(checks)} passed" in out.stdout.splitlines()[-1]
