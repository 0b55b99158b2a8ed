"""Trained sdnet models to PyTorch and back.

sdnet's state names already follow PyTorch's CIFAR ResNet convention (``layer2.0.conv1.weight``,
``bn1.running_var`` ...), so a state dict moves as it is. :func:`to_torch` returns a
``torch.nn.Module`` (defined in :mod:`sdnet.interop.torch_modules`, a file that imports only
PyTorch) loaded with the model's weights, in evaluation mode; its outputs equal sdnet's.
:func:`from_torch` brings a module or a state dict back. PyTorch is imported only when one of
these functions is called: ``pip install torch``.

>>> import sdnet
>>> from sdnet.interop import to_torch, from_torch
>>> model = sdnet.build_model("resnet8", in_channels=1, device="cpu")
>>> module = to_torch(model)          # torch.nn.Module, eval mode, same weights
>>> back = from_torch(module)         # an sdnet.Model again
>>> sorted(back.state_dict()) == sorted(model.state_dict())
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["to_torch", "torch_state_dict", "from_torch"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is in the test extra
        raise ImportError("PyTorch export needs torch: pip install torch") from exc
    return torch


def torch_state_dict(model: Any) -> dict[str, Any]:
    """The model's parameters and buffers as CPU ``torch.Tensor`` s (copies), PyTorch names.

    Parameters
    ----------
    model : sdnet.Model

    Returns
    -------
    dict of str to torch.Tensor
        Loads with ``strict=True`` into the module :func:`to_torch` builds, or into any
        PyTorch CIFAR ResNet with the same layout.
    """
    torch = _torch()
    # np.array keeps 0-d buffers 0-d (ascontiguousarray would make them 1-d)
    return {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}


def to_torch(model: Any) -> Any:
    """An equivalent ``torch.nn.Module`` holding the model's weights, in evaluation mode.

    Parameters
    ----------
    model : sdnet.ResNet or sdnet.SeedNet

    Returns
    -------
    torch.nn.Module
        :class:`~sdnet.interop.torch_modules.SDResNet` or
        :class:`~sdnet.interop.torch_modules.SDSeedNet` on the CPU, in the model's dtype, with
        ``module.sdnet_config`` set to ``model.config`` (what :func:`from_torch` needs). Its
        ``eval()`` outputs equal sdnet's evaluation pass; ``train()`` trains it with
        stochastic depth as sdnet does (gates from PyTorch's generator).
    """
    _torch()
    from sdnet.interop import torch_modules
    from sdnet.models import registry

    config = dict(model.config)
    if not config.get("name"):
        raise ValueError("model has no configuration (model.config['name']); build it with sdnet")
    family, implied = registry.resolve(config["name"])
    cls = getattr(torch_modules, family.torch_class)
    module = cls(
        **family.torch_options({**config, **implied}),
        survival=model.survival,
        mode=config["mode"],
        scaling=config["scaling"],
    )
    module = module.double() if config.get("dtype") == "float64" else module
    module.load_state_dict(torch_state_dict(model), strict=True)
    module.sdnet_config = config  # type: ignore[assignment]
    return module.eval()


def from_torch(source: Any, *, config: Mapping[str, Any] | None = None, device: Any = "cpu") -> Any:
    """An sdnet model from a PyTorch module or state dict.

    Parameters
    ----------
    source : torch.nn.Module or mapping of str to torch.Tensor
        A module made by :func:`to_torch` (possibly trained further in PyTorch), or a state dict
        with sdnet's names.
    config : mapping, optional
        The sdnet model configuration (``model.config``: ``name``, ``num_classes`` ...). Taken
        from ``source.sdnet_config`` when omitted; needed for a bare state dict.
    device : str or sdnet.Backend
        Where the new model lives.

    Returns
    -------
    sdnet.Model

    Raises
    ------
    ValueError
        No configuration was given or found.
    KeyError
        The state dict's names do not match the model's (all differences are listed).
    """
    from sdnet.models import build_model

    if config is None:
        config = getattr(source, "sdnet_config", None)
    if not config or "name" not in config:
        raise ValueError(
            "from_torch needs the model configuration: pass config=model.config (saved with the "
            "state dict), or a module made by sdnet.interop.to_torch"
        )
    state = source.state_dict() if hasattr(source, "state_dict") else source
    host = {k: v.detach().cpu().numpy() if hasattr(v, "detach") else v for k, v in state.items()}
    options = {k: v for k, v in config.items() if k != "name"}
    model = build_model(str(config["name"]), device=device, **options)
    model.load_state_dict(host, strict=True)
    return model
