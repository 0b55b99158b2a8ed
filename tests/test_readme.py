"""The README's Python example runs as written and trains (one SGD step lowers the loss)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_example_runs_and_updates_weights() -> None:
    blocks = [b for b in _python_blocks() if "build_model" in b]
    assert blocks, "README.md has no layer-level python example"
    ns: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), ns)
    model, loss = ns["model"], ns["loss"]
    assert model.last_gates is not None and len(model.last_gates) == 9
    # the stem always runs: after the step its gradient is there; a dropped block's is not
    assert dict(model.named_parameters())["conv1.weight"].grad is not None
    for block, kept in zip(model.blocks, model.last_gates, strict=True):
        assert all((p.grad is not None) == kept for p in block.branch.parameters())
    # a second step on the same batch with the gates of the first lowers the loss
    from sdnet.functional import softmax_cross_entropy

    logits, _ = model(ns["x"], train=True, gates=model.last_gates)
    after, _ = softmax_cross_entropy(logits, ns["y"])
    assert float(after) < float(loss)


def _bash_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)\n```", README.read_text(), re.S)]


def test_readme_first_command_installs_and_trains_with_the_defaults() -> None:
    first = _bash_blocks()[0]
    assert "pip install" in first and first.endswith("sdnet train")


def test_readme_second_command_is_the_test_command_ci_runs() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    cmd = _bash_blocks()[1]
    assert "pytest" in cmd
    assert cmd in ci
