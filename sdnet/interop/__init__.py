"""sdnet with other libraries: DLPack arrays, PyTorch modules, ONNX files.

* :mod:`sdnet.interop.dlpack`: :func:`from_dlpack`, :func:`to_library`, :func:`apply_model`
  (PyTorch/JAX/CuPy tensors in and out, sharing memory where the libraries allow);
* :mod:`sdnet.interop.torch`: :func:`to_torch`, :func:`torch_state_dict`, :func:`from_torch`
  (an equivalent ``torch.nn.Module`` and back; PyTorch imported only when called);
* :mod:`sdnet.interop.onnx`: :func:`export_onnx`, :func:`to_onnx` (the evaluation graph with
  batch norm and the stochastic-depth scaling folded in; needs ``pip install 'sdnet[onnx]'``).

Importing :mod:`sdnet.interop` imports neither PyTorch nor ONNX.
"""

from sdnet.interop.dlpack import apply_model, from_dlpack, shares_memory, to_library
from sdnet.interop.onnx import export_onnx, to_onnx
from sdnet.interop.torch import from_torch, to_torch, torch_state_dict

__all__ = [
    "from_dlpack",
    "to_library",
    "apply_model",
    "shares_memory",
    "to_torch",
    "torch_state_dict",
    "from_torch",
    "to_onnx",
    "export_onnx",
]
