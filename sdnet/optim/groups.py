"""Split named parameters into SGD parameter groups: per-pattern learning rates, no-decay 1-D.

SeedNet's blog trained its shortcut weights (``block{i}.wh.weight``) with their own learning
rate; with groups that is one line::

    SGD(param_groups(model.named_parameters(), lr_mult={"*.wh.weight": 0.01}), lr=1e-3)

and the shortcut weights step with lr 1e-5 while everything else uses 1e-3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from sdnet.layers.base import Param

__all__ = ["param_groups"]


def param_groups(
    named_params: Iterable[tuple[str, Param]],
    *,
    weight_decay: float | None = None,
    decay_bn_and_bias: bool = True,
    lr_mult: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Group ``(name, Param)`` pairs for :class:`sdnet.optim.SGD`.

    Parameters
    ----------
    named_params : iterable of (name, Param)
        Usually ``model.named_parameters()``.
    weight_decay : float, optional
        Weight decay of the decayed groups. ``None``: those groups carry no ``weight_decay``
        key and use the ``weight_decay`` given to ``SGD``.
    decay_bn_and_bias : bool
        ``False`` puts every parameter with at most one dimension (batch-norm weights and
        biases, linear and convolution biases) in groups with ``weight_decay = 0``.
    lr_mult : mapping of str to float, optional
        ``fnmatch`` patterns over parameter names (case-sensitive; ``*`` also matches dots)
        to learning-rate multipliers. Patterns are tried in order and the first match wins.

    Returns
    -------
    list of dict
        ``{"name", "params": [(name, Param), ...], "lr_mult", ["weight_decay"]}`` for each
        non-empty combination, in this order: the unmatched parameters (``"default"``, then
        ``"no_decay"``), then each pattern (``"<pattern>"``, then ``"<pattern> no_decay"``).
        Parameters keep their order inside a group.

    Raises
    ------
    ValueError
        When a pattern matches no parameter, or only parameters that an earlier pattern
        already took (a typo, usually): the message names it and lists some parameter names.
        When a multiplier or ``weight_decay`` is negative.
    """
    pairs = list(named_params)
    _check_arguments(pairs, weight_decay)
    patterns = dict(lr_mult or {})
    for pattern, mult in patterns.items():
        if mult < 0:
            raise ValueError(f"lr_mult[{pattern!r}] must be >= 0, got {mult}")
    buckets, taken = _fill_buckets(pairs, patterns, decay_bn_and_bias)
    _check_patterns_used(taken, [name for name, _ in pairs])
    return _groups_of(buckets, patterns, weight_decay)


_Key = tuple[str | None, bool]  # (the lr_mult pattern, None when none matched; decayed)
_Bucket = list[tuple[str, Param]]


def _check_arguments(pairs: list[Any], weight_decay: float | None) -> None:
    """TypeError unless ``pairs`` are (name, Param); ValueError for a negative decay."""
    for item in pairs:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Param)):
            raise TypeError(
                "param_groups needs (name, Param) pairs, e.g. model.named_parameters(); "
                f"got {type(item).__name__}"
            )
    if weight_decay is not None and weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


def _fill_buckets(
    pairs: list[tuple[str, Param]], patterns: dict[str, float], decay_bn_and_bias: bool
) -> tuple[dict[_Key, _Bucket], dict[str, int]]:
    """Each parameter in the bucket of its first matching pattern and its decay; and how
    many parameters each pattern took."""
    # insertion order fixes the order of the groups
    buckets: dict[_Key, _Bucket] = {
        (pat, decayed): [] for pat in (None, *patterns) for decayed in (True, False)
    }
    taken = {pattern: 0 for pattern in patterns}
    for name, p in pairs:
        pattern = next((pat for pat in patterns if fnmatchcase(name, pat)), None)
        if pattern is not None:
            taken[pattern] += 1
        decayed = decay_bn_and_bias or p.value.ndim > 1
        buckets[(pattern, decayed)].append((name, p))
    return buckets, taken


def _check_patterns_used(taken: dict[str, int], names: list[str]) -> None:
    """ValueError naming the first pattern that took no parameter, with some names."""
    for pattern, count in taken.items():
        if count == 0:
            matched = [n for n in names if fnmatchcase(n, pattern)]
            why = (
                f"only matches parameters an earlier pattern took ({matched[:3]})"
                if matched
                else "matches no parameter"
            )
            raise ValueError(
                f"lr_mult pattern {pattern!r} {why}; parameter names look like "
                f"{names[:3] + names[-2:] if len(names) > 5 else names} ({len(names)} in all)"
            )


def _groups_of(
    buckets: dict[_Key, _Bucket], patterns: dict[str, float], weight_decay: float | None
) -> list[dict[str, Any]]:
    """One group per non-empty bucket, named, with its ``lr_mult`` and ``weight_decay``."""
    groups = []
    for (pattern, decayed), members in buckets.items():
        if not members:
            continue
        label = "default" if pattern is None else pattern
        name = label if decayed else ("no_decay" if pattern is None else f"{label} no_decay")
        group: dict[str, Any] = {
            "name": name,
            "params": members,
            "lr_mult": 1.0 if pattern is None else float(patterns[pattern]),
        }
        if not decayed:
            group["weight_decay"] = 0.0
        elif weight_decay is not None:
            group["weight_decay"] = float(weight_decay)
        groups.append(group)
    return groups
