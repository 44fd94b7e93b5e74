"""Every Python snippet of the README and of docs/ runs as written: each in a fresh interpreter, in an
empty directory, with nothing defined beforehand (the snippets build the files they need)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _snippets() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for n, m in enumerate(FENCE.finditer(page.read_text()), 1):
            found.append((f"{page.relative_to(ROOT)}#{n}", m.group(1)))
    return found


SNIPPETS = _snippets()


def test_the_pages_have_snippets() -> None:
    assert len(SNIPPETS) >= 6 and any(name.startswith("README.md") for name, _ in SNIPPETS)


def test_the_snippet_finder_can_fail() -> None:
    page = "text\n```python\nx = 1\n```\n```bash\nls\n```\n"
    assert [m.group(1) for m in FENCE.finditer(page)] == ["x = 1\n"]


# Snippets that set up the process (XLA_FLAGS before jax is imported) run alone; the others share
# one interpreter (imports paid once), each in its own namespace and its own empty directory.
RUNNER = """
import json, os, sys, tempfile, traceback
failed = {}
for name, code in json.loads(sys.stdin.read()):
    os.chdir(tempfile.mkdtemp())
    try:
        exec(compile(code, name, "exec"), {"__name__": "__main__"})
    except BaseException:
        failed[name] = traceback.format_exc()[-3000:]
print(json.dumps(failed))
"""


def _alone(code: str) -> bool:
    return "XLA_FLAGS" in code


GROUPS = [[s] for s in SNIPPETS if _alone(s[1])] + [[s for s in SNIPPETS if not _alone(s[1])]]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g[0][0] if len(g) == 1 else f"{len(g)}-snippets")
def test_snippets_run_as_written(group: list[tuple[str, str]], tmp_path: Path) -> None:
    import json

    out = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(group), cwd=tmp_path,
                         capture_output=True, text=True, timeout=900,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
                              "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{name} failed:\n{tb}" for name, tb in failed.items())


def test_a_failing_snippet_is_reported(tmp_path: Path) -> None:
    test_snippets_run_as_written([("ok", "x = 1\n")], tmp_path)
    with pytest.raises(AssertionError, match="bad failed"):
        test_snippets_run_as_written([("ok", "x = 1\n"), ("bad", "undefined_name\n")], tmp_path)
