"""What every sdnet model shares: stem -> gated residual blocks -> head, gates, devices.

``model(x, train=True, gates=None) -> (logits, backprop)``; ``backprop(dlogits) -> dx`` and
accumulates every parameter's gradient. In training, gates are drawn from the model's own host
stream (seeded) unless the caller forces them for this pass; ``model.last_gates`` reports the
gates used and ``model.survival`` the survival probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sdnet._array_api import device, namespace
from sdnet.backends import Backend, get_backend
from sdnet.layers.base import Backprop, Layer
from sdnet.layers.batchnorm import BatchNorm, RunningStats, deferred_running_stats
from sdnet.layers.sequential import chain
from sdnet.models import subset
from sdnet.models.stochastic_depth import ResidualBlock, RowGate, normalize_gate
from sdnet.random import draw_gates, make_streams

__all__ = ["Model"]


class Model(Layer):
    """Base class of :class:`~sdnet.models.ResNet` and :class:`~sdnet.models.SeedNet`.

    Subclasses build ``self.stem`` (a layer or ``None``), ``self.blocks`` (residual blocks, in
    order) and ``self.head`` in ``__init__``, using ``self.backend``, ``self.dtype`` and the init
    stream ``self.init_rng``.
    """

    blocks: list[ResidualBlock]
    stem: Layer | None
    head: Layer | None

    def __init__(self, *, device: Any = "cpu", dtype: str = "float32", seed: int = 0) -> None:
        super().__init__()
        self.backend: Backend = get_backend(device)
        self.dtype = dtype
        self.backend.dtype(dtype)  # validates
        streams = make_streams(seed)
        self.init_rng = streams.init
        self.gate_rng = streams.gates
        self.last_gates: list[Any] | None = None
        self.config: dict[str, Any] = {}

    @property
    def survival(self) -> list[float]:
        """Survival probability p_l of each residual block, first to last."""
        return [b.survival for b in self.blocks]

    @property
    def mode(self) -> str:
        return self.blocks[0].mode if self.blocks else "batch"

    def draw_gates(self, batch_size: int) -> list[Any]:
        """Draw the next training pass's gates from the model's gate stream."""
        return draw_gates(self.gate_rng, self.survival, self.mode, batch_size)

    def _check_gates(self, gates: Sequence[Any], batch_size: int) -> list[Any]:
        gates = list(gates)
        if len(gates) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} gates (one per block), got {len(gates)}")
        return [normalize_gate(g, self.mode, batch_size) for g in gates]

    def forward(
        self,
        x: Any,
        *,
        train: bool = True,
        gates: Sequence[Any] | None = None,
        grad: bool = True,
        need_dx: bool = True,
    ) -> tuple[Any, Backprop]:
        """Run the network.

        Parameters
        ----------
        x : array
            A batch on this model's device.
        train : bool
            Training pass (batch statistics, stochastic gates) or evaluation (running
            statistics, every branch scaled by its survival probability under paper scaling).
        gates : sequence, optional
            Force this training pass's gates: one bool per block (or, in row mode, a bool or N
            bools per block). Drawn from the model's seeded gate stream when omitted.
        grad : bool
            ``False`` when no backward pass will follow (inference): what each layer keeps
            for its backward is released as soon as the next layer has run, so memory stays
            at about one residual block's activations instead of the whole network's.
        need_dx : bool
            ``False`` when the gradient with respect to ``x`` is not wanted (training on data):
            the first layer skips computing it and ``backprop`` returns ``None``.

        Returns
        -------
        logits : array (N, num_classes)
        backprop : callable
            ``backprop(dlogits) -> dx`` (``None`` with ``need_dx=False``); adds every
            parameter's gradient into ``Param.grad``.
        """
        self._check_input(x)
        if train and x.shape[0] == 0:
            raise ValueError(
                "a training pass needs at least one sample: the batch is empty (nothing is "
                "updated); check the data given to the model"
            )
        if not train:
            if gates is not None:
                raise ValueError("gates apply to training passes; evaluation uses every block")
            use: list[Any] = [True] * len(self.blocks)
        elif gates is None:
            use = self._check_gates(self.draw_gates(x.shape[0]), x.shape[0])
        else:
            use = self._check_gates(gates, x.shape[0])
        self.last_gates = use if train else None
        with self.backend.activate():
            return self._run(x, train, self._row_gates(use), grad, need_dx)

    def _row_gates(self, use: list[Any]) -> list[Any]:
        """Row mode: every block's per-sample coefficients (gate, divided by p_l under
        inverted scaling) copied to the device at once, one row per block. Subset mode: every
        block's sample indices, at once (:func:`sdnet.models.subset.prepare`)."""
        if not any(isinstance(g, list) for g in use):
            return use
        if self.mode == "subset":
            return subset.prepare(use, self.backend)
        rows = []
        for block, g in zip(self.blocks, use, strict=True):
            inv = 1.0 / block.survival if block.scaling == "inverted" else 1.0
            rows.append([inv if k else 0.0 for k in g] if isinstance(g, list) else [])
        n = max(len(r) for r in rows)
        coefs = self.backend.asarray([r or [0.0] * n for r in rows], self.dtype)  # (L, N)
        return [RowGate(g, coefs[i, :]) if isinstance(g, list) else g for i, g in enumerate(use)]

    def _check_input(self, x: Any) -> None:
        """Refuse inputs that would silently compute elsewhere or in another precision."""
        hint = f"copy it with model.backend.asarray(x, {self.dtype!r})"
        try:
            xp = namespace(x)
        except TypeError:
            msg = f"model input must be an array, got {type(x).__name__}; {hint}"
            raise TypeError(msg) from None
        if xp is not self.backend.xp or device(x) != self.backend.device:
            raise ValueError(
                f"input is a {type(x).__module__}.{type(x).__name__} on {device(x)}, "
                f"but the model is on {self.backend}; {hint}"
            )
        if x.dtype != self.backend.dtype(self.dtype):
            raise ValueError(f"input dtype {x.dtype} differs from the model's {self.dtype}; {hint}")

    def _run(
        self, x: Any, train: bool, use: list[Any], grad: bool, need_dx: bool
    ) -> tuple[Any, Backprop]:
        calls: list[tuple[Layer, dict[str, Any]]] = [] if self.stem is None else [(self.stem, {})]
        calls += [(block, {"gate": g}) for block, g in zip(self.blocks, use, strict=True)]
        calls += [] if self.head is None else [(self.head, {})]
        if not train:
            y, walk = chain(calls, x, train=False, need_dx=need_dx, keep=grad)
        else:  # the batch norms' running statistics, updated together after the pass
            with deferred_running_stats() as pending:
                y, walk = chain(calls, x, train=True, need_dx=need_dx, keep=grad)
            if pending:
                self._running_stats().apply(pending)
        if walk is None:  # grad=False: each backprop was freed at once
            return y, _no_backprop

        def backprop(dy: Any) -> Any:
            with self.backend.activate():
                return walk(dy)

        return y, backprop

    def _running_stats(self) -> RunningStats:
        """The batch-norm layers' running statistics, packed (made at the first training pass)."""
        if getattr(self, "_packed_stats", None) is None:
            layers = [m for m in self.sublayers() if isinstance(m, BatchNorm)]
            self._packed_stats = RunningStats(layers)
        return self._packed_stats

    def to_device(self, device: Any) -> Model:  # type: ignore[override]
        """Move every parameter and buffer to ``device`` (a string or a Backend); returns self."""
        backend = get_backend(device)
        super().to_device(backend)
        self.backend = backend
        return self

    def kept_fraction(self) -> float:
        """Fraction of residual branches computed in the last pass (row mode: of rows).

        1.0 after an evaluation pass, which computes every branch."""
        if not self.last_gates:
            return 1.0
        vals = [
            float(sum(map(bool, g)) / len(g)) if not isinstance(g, bool) else float(g)
            for g in self.last_gates
        ]
        return sum(vals) / len(vals)


def _no_backprop(dy: Any) -> Any:
    raise RuntimeError(
        "this forward pass ran with grad=False and kept nothing for a backward pass; "
        "run model(x, train=..., grad=True) to backpropagate"
    )
