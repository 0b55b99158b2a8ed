"""Softmax cross-entropy, mean over the batch, computed stably through log-sum-exp.

z = logits - max_k logits,  log p = z - log(sum_k exp z)
loss = -(1/N) sum_n log p[n, label_n]
dlogits = (softmax(logits) - onehot(labels)) / N
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sdnet._array_api import device, namespace, on_input_device

__all__ = ["softmax_cross_entropy", "softmax_cross_entropy_backward", "one_hot"]

Array = Any


class CESaved(NamedTuple):
    probs: Array  # (N, K)
    onehot: Array  # (N, K)


@on_input_device
def one_hot(labels: Array, num_classes: int, dtype: Any) -> Array:
    """(N,) integer labels -> (N, K) one-hot of ``dtype`` on the labels' device."""
    xp = namespace(labels)
    classes = xp.arange(num_classes, device=device(labels))  # (K,)
    return xp.astype(labels[:, None] == xp.astype(classes, labels.dtype)[None, :], dtype)


@on_input_device
def softmax_cross_entropy(logits: Array, labels: Array) -> tuple[Array, CESaved]:
    """Mean cross-entropy of ``logits`` (N, K) against integer ``labels`` (N,).

    Returns a 0-d array (kept on the device) and what the backward needs.
    """
    xp = namespace(logits, labels)
    if logits.ndim != 2 or labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"cross-entropy: logits {logits.shape} and labels {labels.shape} disagree")
    n, k = logits.shape
    z = logits - xp.max(logits, axis=1, keepdims=True)  # (N, K)
    e = xp.exp(z)
    s = xp.sum(e, axis=1, keepdims=True)  # (N, 1)
    onehot = one_hot(labels, k, logits.dtype)
    logp_true = xp.sum(z * onehot, axis=1) - xp.log(xp.reshape(s, (n,)))  # (N,)
    loss = -xp.mean(logp_true)
    return loss, CESaved(e / s, onehot)


@on_input_device
def softmax_cross_entropy_backward(saved: CESaved, dloss: float | Array = 1.0) -> Array:
    """d loss / d logits, times the upstream scalar ``dloss``."""
    n = saved.probs.shape[0]
    return (saved.probs - saved.onehot) * (dloss / n)
