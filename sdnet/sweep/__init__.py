"""Hyperparameter sweeps: many :func:`sdnet.train` runs over a grid (or random ranges) and
seeds, on every device of this machine or on a Ray cluster, resumable, ending with a table
and a plot.

>>> import sdnet
>>> result = sdnet.sweep(base={"epochs": 1}, grid={"p_last": [0.5, 1.0]},
...                      seeds=[0, 1], out_dir="sweeps/p-last")  # doctest: +SKIP

``sdnet sweep SWEEP.toml`` does the same from a TOML file (:func:`read_toml`). Ray is
imported only by the Ray executor (``pip install 'sdnet[sweep]'``). See ``docs/sweeps.md``.
"""

from sdnet.sweep.plan import SweepError, SweepPlan, Trial, read_sweep, read_toml
from sdnet.sweep.plot import plot_sweep
from sdnet.sweep.results import write_tables
from sdnet.sweep.run import SweepResult, run_plan, sweep

__all__ = [
    "sweep",
    "run_plan",
    "SweepResult",
    "SweepPlan",
    "Trial",
    "SweepError",
    "read_toml",
    "read_sweep",
    "write_tables",
    "plot_sweep",
]
