"""docs/tutorial.md runs: its ```python blocks, in order, in one namespace, in a temporary folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced ```python blocks of ``markdown``, in order.

    >>> python_blocks("text\\n```python\\nx = 1\\n```\\n```bash\\nls\\n```\\n")
    ['x = 1\\n']
    """
    return re.findall(r"^```python\n(.*?)^```$", markdown, re.S | re.M)


def test_the_tutorial_has_code() -> None:
    assert len(python_blocks(TUTORIAL.read_text(encoding="utf-8"))) >= 10


@pytest.mark.slow
def test_the_tutorial_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "tutorial"}
    for number, block in enumerate(python_blocks(TUTORIAL.read_text(encoding="utf-8")), start=1):
        try:
            exec(compile(block, f"docs/tutorial.md, block {number}", "exec"), namespace)  # noqa: S102
        except Exception as exc:
            raise AssertionError(f"docs/tutorial.md, block {number} fails: {exc!r}\n{block}") from exc
    assert (tmp_path / "report.html").stat().st_size > 100_000
    assert (tmp_path / "store").is_dir() and (tmp_path / "registry").is_dir()
