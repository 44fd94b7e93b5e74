"""Runs the mutation catalogue's checks for test_mutations.py, one after another in one process.

Each check is a fresh pytest session on its own mutated copy of the project: the project's modules
are dropped from sys.modules and imported again from the copy, while torch, jax, flax,
transformers and timm stay imported (their imports are most of a check's cost: ~10 of ~17 s).
Requests come on stdin as JSON lines {"copy": dir, "check": node id, "token": str}; each answer is
one line "<token> <exit code>" on stdout (anything else printed there is the checks' own output).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import flax  # noqa: F401  (the expensive imports, made once)
import jax
import numpy  # noqa: F401
import optax  # noqa: F401
import pytest
import timm  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

OURS = ("vit_common", "vit_torch", "vit_flax", "vit_cli", "parity_tests", "tests", "conftest")
BASE_PATH = [p for p in sys.path if p not in ("", os.getcwd())]


def run(copy: str, check: str, log) -> int:
    for name in list(sys.modules):
        if name.split(".")[0] in OURS:
            del sys.modules[name]
    # jax's compilation caches are kept: a copy's functions are new objects (never a stale hit),
    # the primitives' executables are the same whoever calls them, and the config flags (x64,
    # matmul precision) are part of every cache key; as in the main run, where each check finds
    # them warm (a third less time for the catalogue)
    jax.config.update("jax_enable_x64", False)  # as a fresh process starts; conftests set their own
    jax.config.update("jax_default_matmul_precision", None)
    sys.path[:] = [copy, *BASE_PATH]
    os.environ["PYTHONPATH"] = copy  # for the subprocesses a check starts
    os.chdir(copy)
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        code = int(pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=--strict-markers",
                                "-n", "0", check]))
    # the check must have run the copy's code, never the project's own (an editable install's finder)
    stray = [name for name, module in sys.modules.items() if name.split(".")[0] in OURS
             and getattr(module, "__file__", None) and not os.path.realpath(module.__file__).startswith(
                 os.path.realpath(copy) + os.sep)]
    if stray:
        print(f"mutation server: {', '.join(sorted(stray)[:5])} imported from outside {copy}", file=log)
        return 98
    return code


def main() -> None:
    channel = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        with open(request["log"], "w") as log:
            code = run(request["copy"], request["check"], log)
        print(f"{request['token']} {code}", file=channel, flush=True)


if __name__ == "__main__":
    main()
