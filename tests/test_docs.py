"""Every self-contained Python example in docs/ (a block that starts with an import) runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _examples() -> list[pytest.param]:
    out = []
    for page in sorted(DOCS.glob("*.md")):
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
        for i, code in enumerate(blocks):
            if code.lstrip().startswith(("import ", "from ")):
                out.append(pytest.param(code, id=f"{page.stem}-{i}"))
    return out


EXAMPLES = _examples()


def test_docs_have_runnable_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("code", EXAMPLES)
def test_docs_example_runs(code: str) -> None:
    exec(compile(code, "docs-example", "exec"), {"__name__": "docs_example"})
