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


@pytest.mark.parametrize("name, code", SNIPPETS, ids=[n for n, _ in SNIPPETS])
def test_snippet_runs_as_written(name: str, code: str, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, f"{name} failed:\n{out.stderr[-3000:]}"
