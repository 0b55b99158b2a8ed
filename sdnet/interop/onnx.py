"""Export a trained model to ONNX: the evaluation-mode graph, every constant folded in.

The graph computes exactly sdnet's evaluation pass (``model(x, train=False)``), written with
plain ONNX operators (opset 17, ``Conv``, ``AveragePool``, ``Pad``, ``Gemm`` ...):

* batch norm uses its running statistics, so it is folded into the convolution before it:
  ``W' = W * g / sqrt(var + eps)`` (per output channel), ``b' = beta - mean * g / sqrt(var + eps)``;
* the stochastic-depth test-time scaling (``branch * p_l`` under ``scaling="paper"``, 1 under
  ``"inverted"``) is folded into the last affine layer of each residual branch
  (``W'' = p_l W'``, ``b'' = p_l b'``), so no gate and no random number is left in the graph;
* option-A shortcuts are ``AveragePool`` (ceil mode, partial edge windows averaged over their
  real pixels) followed by a ``Pad`` of zero channels.

The folding is done in float64 on the host and stored in the model's dtype. The input is the
normalized image batch ``(N, C, H, W)`` (batch size and image size are free); the model's
configuration and the dataset's normalization (when known) are stored in the model's metadata
(``metadata_props``: ``sdnet_config``, ``dataset``, ``mean``, ``std``).

Needs the ``onnx`` package (``pip install 'sdnet[onnx]'``, which also installs onnxruntime to
run the file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from sdnet._array_api import to_numpy

__all__ = ["export_onnx", "to_onnx", "OPSET"]

OPSET = 17
IR_VERSION = 8  # read by onnxruntime >= 1.10


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("ONNX export needs the onnx package: pip install 'sdnet[onnx]'") from exc
    return onnx


class _Graph:
    """Nodes and initializers under construction, with unique names."""

    def __init__(self, onnx: Any, dtype: np.dtype) -> None:
        self.onnx, self.dtype = onnx, dtype
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint: str, value: np.ndarray, *, cast: bool = True) -> str:
        name = self.name(hint)
        arr = np.asarray(value, dtype=self.dtype) if cast else np.asarray(value)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        out = self.name(hint or op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


_Tensor = tuple[str, int, int]  # (name in the graph, rank, channels or features)


def _host(p: Any) -> np.ndarray:
    return np.asarray(to_numpy(p.value), dtype=np.float64)


def _bn_affine(bn: Any) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation batch norm as ``y = a * x + c`` per channel."""
    a = _host(bn.weight) / np.sqrt(_host(bn.running_var) + bn.eps)  # (C,)
    return a, _host(bn.bias) - _host(bn.running_mean) * a


def _emit_sequence(g: _Graph, layers: list[Any], x: _Tensor, scale: float) -> _Tensor:
    """Emit ``layers`` in order from ``x``; ``scale`` multiplies the output, folded into the
    last layer when it is affine (Conv2d [+ BatchNorm], BatchNorm, Linear)."""
    from sdnet.layers import BatchNorm, Conv2d, Linear, Sequential

    flat: list[Any] = []
    for layer in layers:  # nested Sequentials are walked as one chain
        flat.extend(layer.layers if isinstance(layer, Sequential) else [layer])
    last = len(flat) - 1
    fold_at = last if flat and isinstance(flat[last], Conv2d | Linear | BatchNorm) else None
    i = 0
    while i < len(flat):
        layer, bn = flat[i], None
        if isinstance(layer, Conv2d) and i + 1 < len(flat) and isinstance(flat[i + 1], BatchNorm):
            bn = flat[i + 1]  # batch norm folded into the convolution
            i += 1
        x = _emit_layer(g, layer, bn, x, scale if i == fold_at else 1.0)
        i += 1
    name, rank, ch = x
    if scale != 1.0 and fold_at is None:
        name = g.node("Mul", [name, g.const("scale", np.array(scale))])
    return name, rank, ch


def _emit_layer(g: _Graph, layer: Any, bn: Any, x: _Tensor, s: float) -> _Tensor:
    """Emit one layer (a Conv2d with the BatchNorm ``bn`` after it, or None); ``s`` scales
    the output of an affine layer."""
    from sdnet.layers import (
        Arctan,
        BatchNorm,
        Conv2d,
        GlobalAvgPool,
        Linear,
        ReLU,
        ShortcutA,
        Tanh,
    )
    from sdnet.models.stochastic_depth import ResidualBlock

    name, rank, ch = x
    if isinstance(layer, Conv2d):
        return _emit_conv(g, layer, bn, x, s)
    if isinstance(layer, BatchNorm):
        return _emit_batchnorm(g, layer, x, s)
    if isinstance(layer, Linear):
        return _emit_linear(g, layer, x, s)
    if isinstance(layer, ReLU | Arctan | Tanh):
        op = {ReLU: "Relu", Arctan: "Atan", Tanh: "Tanh"}[type(layer)]
        return g.node(op, [name]), rank, ch
    if isinstance(layer, GlobalAvgPool):
        name = g.node("GlobalAveragePool", [name])  # (N, C, 1, 1)
        return g.node("Flatten", [name], axis=1), 2, ch  # (N, C)
    if isinstance(layer, ShortcutA):
        return _emit_shortcut_a(g, layer, x)
    if isinstance(layer, ResidualBlock):
        return _emit_block(g, layer, x)
    raise TypeError(f"ONNX export does not know the layer {type(layer).__name__}")


def _emit_conv(g: _Graph, conv: Any, bn: Any, x: _Tensor, s: float) -> _Tensor:
    """``Conv`` with ``bn`` (a BatchNorm, or None) and the output scale ``s`` folded in."""
    name, rank, _ = x
    w = _host(conv.weight)  # (O, I, k, k)
    b = _host(conv.bias) if conv.bias is not None else np.zeros(w.shape[0])
    if bn is not None:
        a, c = _bn_affine(bn)
        w, b = w * a[:, None, None, None], b * a + c
    k = w.shape[-1]
    name = g.node(
        "Conv",
        [name, g.const("W", w * s), g.const("B", b * s)],
        kernel_shape=[k, k],
        strides=[conv.stride] * 2,
        pads=[conv.padding] * 4,
    )
    return name, rank, w.shape[0]


def _emit_batchnorm(g: _Graph, bn: Any, x: _Tensor, s: float) -> _Tensor:
    """A BatchNorm not after a convolution: ``Mul`` and ``Add`` per channel (scaled by ``s``)."""
    name, rank, ch = x
    a, c = _bn_affine(bn)
    shape = (-1,) + (1,) * (rank - 2)
    name = g.node("Mul", [name, g.const("bn_scale", (a * s).reshape(shape))])
    name = g.node("Add", [name, g.const("bn_shift", (c * s).reshape(shape))])
    return name, rank, ch


def _emit_linear(g: _Graph, linear: Any, x: _Tensor, s: float) -> _Tensor:
    """``Gemm`` (after a ``Flatten`` when the input is not yet (N, features)), scaled by ``s``."""
    name, rank, _ = x
    if rank != 2:
        name, rank = g.node("Flatten", [name], axis=1), 2
    w = _host(linear.weight)  # (out, in)
    b = _host(linear.bias) if linear.bias is not None else np.zeros(w.shape[0])
    name = g.node("Gemm", [name, g.const("W", w * s), g.const("B", b * s)], transB=1)
    return name, rank, w.shape[0]


def _emit_shortcut_a(g: _Graph, shortcut: Any, x: _Tensor) -> _Tensor:
    """Option-A shortcut: ``AveragePool`` (when strided), then a ``Pad`` of zero channels."""
    name, rank, ch = x
    st = shortcut.stride
    if st > 1:  # (N, C, ceil(H/s), ceil(W/s)), partial windows over their real pixels
        name = g.node(
            "AveragePool",
            [name],
            kernel_shape=[st, st],
            strides=[st, st],
            ceil_mode=1,
            count_include_pad=0,
        )
    pads = np.array([0, 0, 0, 0, 0, shortcut.out_channels - ch, 0, 0], dtype=np.int64)
    name = g.node("Pad", [name, g.const("pads", pads, cast=False)])  # zero channels
    return name, rank, shortcut.out_channels


def _emit_block(g: _Graph, block: Any, x: _Tensor) -> _Tensor:
    """``post(shortcut(x) + c * branch(x))``, ``c`` the evaluation coefficient (folded)."""
    coef = block.survival if block.scaling == "paper" else 1.0
    s = _emit_sequence(g, [block.shortcut], x, 1.0) if block.shortcut is not None else x
    b = _emit_sequence(g, [block.branch], x, coef)
    z = g.node("Add", [s[0], b[0]])
    return (g.node("Relu", [z]) if block.post_relu else z), b[1], b[2]


def to_onnx(
    model: Any,
    *,
    input_shape: tuple[int, ...] | None = None,
    extra: dict[str, Any] | None = None,
) -> Any:
    """The ONNX ``ModelProto`` of ``model``'s evaluation pass.

    Parameters
    ----------
    model : sdnet.ResNet or sdnet.SeedNet
    input_shape : tuple of int, optional
        The shape of one input image, e.g. ``(1, 28, 28)``; default ``(in_channels, H, W)`` with
        free ``H``, ``W`` (ResNet) or ``(in_features,)`` (SeedNet). The batch size is always free.
    extra : dict, optional
        Stored as ``metadata_props`` (JSON values), e.g. ``{"dataset": "mnist", "mean": [...]}``.

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker``. Input ``"input"``, output ``"logits"``.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper

    dtype = np.dtype(model.dtype)
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    config = dict(model.config)
    shape: tuple[int | str, ...]  # one image; a str is a free dimension
    if input_shape is not None:
        shape = tuple(input_shape)
    else:
        from sdnet.models import registry

        family, implied = registry.resolve(config.get("name"))
        shape = family.input_shape({**config, **implied})
    g = _Graph(onnx, dtype)
    layers = [p for p in (model.stem, *model.blocks, model.head) if p is not None]
    y, _, _ = _emit_sequence(g, layers, ("input", 1 + len(shape), int(shape[0])), 1.0)
    g.nodes.append(helper.make_node("Identity", [y], ["logits"], name="logits"))
    graph = helper.make_graph(
        g.nodes,
        f"sdnet_{config.get('name', 'model')}",
        [helper.make_tensor_value_info("input", elem, ["batch", *shape])],
        [helper.make_tensor_value_info("logits", elem, ["batch", config.get("num_classes")])],
        initializer=g.inits,
    )
    proto = helper.make_model(
        graph,
        producer_name="sdnet",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string="sdnet evaluation-mode graph; input: normalized images (N, C, H, W)",
    )
    proto.ir_version = IR_VERSION
    meta = {"sdnet_config": config, **(extra or {})}
    helper.set_model_props(proto, {k: json.dumps(v) for k, v in meta.items()})
    onnx.checker.check_model(proto)
    return proto


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    *,
    input_shape: tuple[int, ...] | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    inputs: tuple[str | os.PathLike[str], ...] = (),
) -> Path:
    """Write ``model``'s evaluation-mode ONNX graph to ``path`` (atomically); returns the path.

    See :func:`to_onnx` for ``input_shape`` and ``extra``. An existing ``path`` is replaced only
    with ``overwrite=True``; a path that is not a regular file, or that is one of ``inputs``
    (the files the caller read, e.g. the checkpoint), is always refused with
    :class:`sdnet.WriteRefused`. Run the file with onnxruntime::

        import onnxruntime as ort
        session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"input": x})  # x: normalized float32 (N, C, H, W)
    """
    from sdnet._io import atomic_write_bytes, check_target

    check_target(path, overwrite=overwrite, inputs=inputs)  # before the graph is built
    proto = to_onnx(model, input_shape=input_shape, extra=extra)
    data = proto.SerializeToString()
    return atomic_write_bytes(path, lambda fh: fh.write(data), overwrite=overwrite, inputs=inputs)
