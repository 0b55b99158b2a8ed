"""Models with non-trivial weights for the interop tests (not a test module).

Fresh batch norms are the identity in evaluation mode (mean 0, variance 1, weight 1, bias 0),
which would hide a wrong folding: these models get random running statistics, weights and biases.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import sdnet


def trained_like(name: str, *, seed: int = 0, **kw: Any) -> sdnet.Model:
    """``build_model(name, **kw)`` on the CPU with random batch-norm statistics and biases."""
    model = sdnet.build_model(name, device="cpu", seed=seed, **kw)
    rng = np.random.default_rng(seed + 100)
    state = model.state_dict()
    for key, v in state.items():
        if key.endswith("running_mean") or key.endswith(".bias"):
            state[key] = rng.normal(0.0, 0.3, v.shape).astype(v.dtype)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, v.shape).astype(v.dtype)
        elif v.ndim == 1 and key.endswith(".weight"):  # batch-norm scale
            state[key] = rng.uniform(0.5, 1.5, v.shape).astype(v.dtype)
    model.load_state_dict(state)
    return model


def eval_logits(model: sdnet.Model, x: np.ndarray) -> np.ndarray:
    """sdnet's evaluation pass on host data, as a host array."""
    logits, _ = model(model.backend.asarray(x, model.dtype), train=False)
    return np.asarray(model.backend.to_numpy(logits))


# (name, options): every block kind the exporters handle; p_l < 1 everywhere but SeedNet's first
CASES = [
    ("resnet20", dict(in_channels=1, p_last=0.5)),  # the paper's network, stride-1 stem
    ("resnet8", dict(in_channels=1, stem_stride=2, p_last=0.5)),  # 7x7 -> 4x4: partial windows
    ("resnet8", dict(in_channels=3, shortcut="B", p_last=0.7, scaling="inverted")),
    ("seednet", dict(p_last=0.5)),
]
