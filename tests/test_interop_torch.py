"""PyTorch export: the module's eval outputs equal sdnet's; state dicts move both ways."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from interop_models import CASES, eval_logits, trained_like

from sdnet.interop import from_torch, to_torch, torch_state_dict

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _torch_logits(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize(("name", "kw"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_torch_module_eval_equals_sdnet(name: str, kw: dict) -> None:
    model = trained_like(name, dtype="float64", **kw)
    module = to_torch(model)
    assert not module.training
    x = np.random.default_rng(0).normal(size=(4, kw.get("in_channels", 1), 28, 28))
    np.testing.assert_allclose(_torch_logits(module, x), eval_logits(model, x), rtol=1e-10,
                               atol=1e-12)  # fmt: skip


def test_float32_module_matches_to_1e5() -> None:
    model = trained_like("resnet20", in_channels=1, p_last=0.5)
    module = to_torch(model)
    assert next(module.parameters()).dtype == torch.float32
    x = np.random.default_rng(1).normal(size=(3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(_torch_logits(module, x), eval_logits(model, x), rtol=0, atol=1e-5)


def test_state_dict_names_and_values() -> None:
    model = trained_like("resnet8", in_channels=1, shortcut="B")
    state = torch_state_dict(model)
    host = model.state_dict()
    assert list(state) == list(host)
    for k, v in state.items():
        assert isinstance(v, torch.Tensor) and tuple(v.shape) == host[k].shape
        np.testing.assert_array_equal(v.numpy(), host[k])
    to_torch(model).load_state_dict(state, strict=True)


def test_trained_further_in_torch_and_back() -> None:
    """A few PyTorch training steps (stochastic depth, batch statistics), then back to sdnet:
    the round trip carries the changed weights and running statistics."""
    model = trained_like("resnet8", in_channels=1, stem_stride=2, p_last=0.5)
    module = to_torch(model).train()
    for block in [*module.layer1, *module.layer2, *module.layer3]:
        block.generator = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(8, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (8,), generator=gen)
        loss = torch.nn.functional.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    back = from_torch(module)
    assert back.config == model.config
    before = model.state_dict()
    after = back.state_dict()
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    x = np.random.default_rng(2).normal(size=(2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(eval_logits(back, x), _torch_logits(module, x), rtol=0, atol=1e-5)


def test_training_pass_equals_sdnet_when_every_gate_is_open() -> None:
    """Training mode with p_l = 1 (no gate can close): batch statistics on both sides."""
    model = trained_like("resnet8", in_channels=1, p_last=1.0, dtype="float64")
    module = to_torch(model).train()
    x = np.random.default_rng(3).normal(size=(6, 1, 28, 28))
    logits, _ = model(model.backend.asarray(x, "float64"), train=True)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, np.asarray(logits), rtol=1e-10, atol=1e-12)


def test_bare_state_dict_needs_the_config() -> None:
    model = trained_like("seednet")
    state = torch_state_dict(model)
    with pytest.raises(ValueError, match="config=model.config"):
        from_torch(state)
    back = from_torch(state, config=model.config)
    x = np.random.default_rng(4).normal(size=(2, 784)).astype(np.float32)
    np.testing.assert_array_equal(eval_logits(back, x), eval_logits(model, x))


def test_mismatched_state_dict_lists_the_differences() -> None:
    model = trained_like("resnet8", in_channels=1)
    state = torch_state_dict(model)
    del state["fc.bias"]
    with pytest.raises(KeyError, match="fc.bias"):
        from_torch(state, config=model.config)


def test_importing_sdnet_imports_neither_torch_nor_onnx() -> None:
    code = (
        "import sys, sdnet, sdnet.interop, sdnet.predict, sdnet.cli; sdnet.cli.build_parser(); "
        "sdnet.build_model('resnet8', in_channels=1); "
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_torch_modules_file_does_not_import_sdnet() -> None:
    """The module definitions can be copied into a PyTorch project on their own."""
    from pathlib import Path

    import sdnet.interop.torch_modules as tm

    text = Path(tm.__file__).read_text()
    assert "import sdnet" not in text and "from sdnet" not in text
