"""``sdnet.evaluate``: loss and accuracy of a model on a dataset split (evaluation mode)."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["evaluate", "evaluate_loader"]


def evaluate_loader(model: Any, loader: Any) -> dict[str, float]:
    """Mean cross-entropy and accuracy over every batch of ``loader`` (no shuffling needed).

    Sums stay on the device; two scalars come back at the end. The model's device is made
    current for the whole pass (the loader makes it current for its own work).
    """
    with model.backend.activate():
        return _evaluate(model, loader)


def _evaluate(model: Any, loader: Any) -> dict[str, float]:
    from sdnet.functional import softmax_cross_entropy

    xp = model.backend.xp
    loss_sum: Any = 0.0  # device sums in the model's dtype (no float64 work on a device)
    correct: Any = 0.0
    count = 0
    for x, y in loader.batches(loader.plan_epoch(None)):
        logits, _ = model(x, train=False, grad=False)
        loss, _ = softmax_cross_entropy(logits, y)
        n = int(y.shape[0])
        loss_sum = loss_sum + loss * n
        correct = correct + xp.sum(xp.astype(xp.argmax(logits, axis=1) == y, logits.dtype))
        count += n
    if count == 0:
        raise ValueError("nothing to evaluate: the dataset split is empty")
    return {"loss": float(loss_sum) / count, "accuracy": float(correct) / count, "count": count}


def _check_classes(model: Any, ds: Any) -> None:
    """Refuse a dataset whose labels the model cannot predict (more classes than its outputs)."""
    classes = (getattr(model, "config", None) or {}).get("num_classes")
    labels = ds.labels
    if classes is None or not len(labels):
        return
    high = int(labels.max())
    if high >= classes:
        raise ValueError(
            f"the model predicts {classes} classes (0..{classes - 1}) but the labels of "
            f"{ds.name} {ds.split} go up to {high}: evaluate it on the dataset it was trained for"
        )


def evaluate(
    model: Any,
    dataset: Any = "mnist",
    *,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 1000,
    limit: int | None = None,
    download: bool = True,
    normalize: str | None = None,
) -> dict[str, float]:
    """Evaluate ``model`` (evaluation mode: running statistics, every block, test-time scaling).

    Parameters
    ----------
    model : sdnet.Model
    dataset : str or sdnet.data.ArrayDataset
        A dataset name (``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"cifar100"``),
        looked up like :func:`sdnet.train` does, or an already loaded dataset.
    split : {"test", "train"}
    data_dir : path, optional
    batch_size : int
    limit : int, optional
        Only the first ``limit`` images.
    download : bool
        Download the dataset when it is not found locally.
    normalize : {"dataset", "unit"}, optional
        The input scaling the model was trained with (a training run stores it with the
        weights, as ``extra["normalize"]``; ``sdnet eval`` reads it from there). Default: the
        dataset's own statistics.

    Returns
    -------
    dict
        ``{"loss": mean cross-entropy, "accuracy": fraction correct, "count": images}``.

    Raises
    ------
    ValueError
        The dataset's labels are not integers in ``0 .. K-1`` for the model's K classes.
    """
    import numpy as np

    from sdnet.data import Loader, load_dataset

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ds = (
        load_dataset(dataset, split=split, data_dir=data_dir, download=download)
        if isinstance(dataset, str)
        else dataset
    )
    if limit is not None:
        ds = ds.subset(np.arange(min(limit, len(ds.labels))))
    if normalize is not None:
        ds = ds.scaled(normalize)
    _check_classes(model, ds)
    loader = Loader(
        ds, batch_size=batch_size, backend=model.backend, dtype=model.dtype, shuffle=False
    )
    return evaluate_loader(model, loader)
