"""ONNX export: onnxruntime on the CPU gives sdnet's evaluation logits to 1e-5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from interop_models import CASES, eval_logits, trained_like

import sdnet
from sdnet.cli import main
from sdnet.interop import export_onnx, to_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run(proto_or_path, x: np.ndarray) -> np.ndarray:
    src = proto_or_path if isinstance(proto_or_path, str) else proto_or_path.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x})
    return logits


def _images(c: int, n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, c, 28, 28)).astype(np.float32)


@pytest.mark.parametrize(("name", "kw"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_onnxruntime_matches_sdnet_eval(name: str, kw: dict) -> None:
    model = trained_like(name, **kw)
    assert min(model.survival) < 1.0  # the test-time scaling is exercised
    x = _images(kw.get("in_channels", 1))
    shape = (x.shape[1], 28, 28)
    got = _run(to_onnx(model, input_shape=shape), x)
    np.testing.assert_allclose(got, eval_logits(model, x), rtol=0, atol=1e-5)


def test_scaling_is_folded_not_dropped() -> None:
    """The same weights at constant depth give other logits: the graph carries p_l."""
    model = trained_like("resnet20", in_channels=1, p_last=0.5)
    const = sdnet.build_model("resnet20", in_channels=1, p_last=1.0, device="cpu")
    const.load_state_dict(model.state_dict())
    x = _images(1)
    proto = to_onnx(model)
    got = _run(proto, x)
    assert np.abs(got - eval_logits(const, x)).max() > 1e-2
    ops = {n.op_type for n in proto.graph.node}
    # evaluation graph: batch norm folded into the convolutions, nothing random, no gates
    assert "BatchNormalization" not in ops and not any("Random" in op for op in ops)
    assert ops <= {"Conv", "Relu", "Add", "AveragePool", "Pad", "GlobalAveragePool", "Flatten",
                   "Gemm", "Identity"}  # fmt: skip


def test_free_batch_and_image_size() -> None:
    model = trained_like("resnet8", in_channels=1, stem_stride=2)
    proto = to_onnx(model)  # default input (N, 1, height, width)
    for n, hw in ((1, 28), (3, 32)):
        x = np.random.default_rng(n).normal(size=(n, 1, hw, hw)).astype(np.float32)
        np.testing.assert_allclose(_run(proto, x), eval_logits(model, x), rtol=0, atol=1e-5)


def test_float64_model_exports_double() -> None:
    """onnxruntime's CPU kernels are float32; onnx's reference evaluator runs float64."""
    from onnx.reference import ReferenceEvaluator

    model = trained_like("resnet8", in_channels=1, stem_stride=2, p_last=0.5, dtype="float64")
    x = np.random.default_rng(1).normal(size=(2, 1, 28, 28))
    proto = to_onnx(model)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    (got,) = ReferenceEvaluator(proto).run(None, {"input": x})
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, eval_logits(model, x), rtol=0, atol=1e-10)


def test_cli_export_writes_a_checked_file_with_metadata(tmp_path: Path, capsys) -> None:
    model = trained_like("resnet8", in_channels=1, stem_stride=2, p_last=0.5)
    ckpt = sdnet.save(model, tmp_path / "model.npz", extra={"dataset": "mnist", "mean": [0.1307],
                                                             "std": [0.3081]})  # fmt: skip
    out = tmp_path / "model.onnx"
    assert main(["export", str(ckpt), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["dataset"] == "mnist" and meta["mean"] == [0.1307]
    assert meta["sdnet_config"]["name"] == "resnet8"
    x = _images(1)
    np.testing.assert_allclose(_run(str(out), x), eval_logits(model, x), rtol=0, atol=1e-5)


def test_cli_export_refuses_a_damaged_checkpoint(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "model.onnx"
    assert main(["export", str(bad), str(out)]) == 1
    assert "model.npz" in capsys.readouterr().err
    assert not out.exists()


def test_export_onnx_keeps_an_existing_file_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")

    class Unknown(sdnet.Model):
        def __init__(self) -> None:
            super().__init__()
            self.config = {"name": "unknown", "num_classes": 2, "in_channels": 1}
            self.stem = sdnet.layers.Sequential(("odd", sdnet.layers.Layer()))
            self.blocks, self.head = [], None

    with pytest.raises(TypeError, match="does not know the layer Layer"):
        export_onnx(Unknown(), out, input_shape=(1, 4, 4), overwrite=True)
    assert out.read_bytes() == b"previous"
