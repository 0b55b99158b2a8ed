"""What a sweep trains: the base options, the grid, the random ranges and the seeds.

A :class:`SweepPlan` expands into :class:`Trial` s: the Cartesian product of the grid (in the
order its keys were given), optionally crossed with ``samples`` random draws from ranges, and
each configuration trained once per seed. Seeds are the outer loop, so an interrupted sweep
has every configuration at the first seed before any at the second.

The plan is stored in ``SWEEP_DIR/sweep.json``; rerunning a sweep in that directory with a
different plan is refused (:func:`check_or_write_plan`). Where the data lies (``data_dir``,
``download``) may change between runs, since it does not change what a trial computes.

A TOML file (:func:`read_toml`) holds the same things::

    seeds = [0, 1]
    out_dir = "sweeps/p-last"          # optional; relative to the current directory

    [base]                              # any sdnet.train option but seed, device, run_dir
    model = "resnet20"
    epochs = 1

    [grid]                              # every combination
    p_last = [0.5, 1.0]

    [random]                            # optional: `samples` draws per grid point
    samples = 4
    seed = 0
    lr = { low = 0.01, high = 0.3, log = true }
    batch_size = { choices = [64, 128] }
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import os
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdnet.config import ConfigError, TrainConfig, check_keys

__all__ = [
    "SweepPlan",
    "Trial",
    "SweepError",
    "read_toml",
    "check_or_write_plan",
    "read_sweep",
    "SWEEP_JSON",
    "MAX_TRIALS",
]

SWEEP_JSON = "sweep.json"
FORMAT = "sdnet-sweep"
VERSION = 1
# the most trials one sweep may plan: counted before anything is expanded, so a grid of 10^9
# combinations is refused at once (each planned trial costs about 1 KB in sweep.json and in
# memory); more is several sweeps
MAX_TRIALS = 10_000
# the longest trial id: ids name files (status/<id>.outcome.json, .<id>.json.<random>.tmp),
# which must stay under the usual 255-byte limit of a file name
MAX_ID = 120

# options a sweep sets for each trial itself
_RESERVED = {
    "seed": "list the seeds in `seeds`",
    "run_dir": "each trial gets SWEEP_DIR/trials/<id>",
    "device": "choose devices with devices=... (sdnet sweep --devices)",
    "progress": "trials log plain lines to SWEEP_DIR/logs/",
}
# options that say where the data is, not what a trial computes: they may change on a rerun
_WHERE = ("data_dir", "download")

# top-level keys of a sweep TOML file
TOML_KEYS = (
    "base",
    "grid",
    "random",
    "seeds",
    "out_dir",
    "devices",
    "executor",
    "address",
    "max_concurrent",
    "cpus_per_trial",
    "gpus_per_trial",
)


class SweepError(ValueError):
    """A sweep cannot go on as asked (another plan in the directory, a locked directory, a
    directory that is not a sweep); the message says what to do."""


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep: a configuration (the swept values) and a seed.

    Attributes
    ----------
    index : int
        Position in the plan (0-based); trials run in this order.
    id : str
        Directory-safe name, e.g. ``"003-p_last=0.5-seed=1"``.
    params : dict
        The swept options and their values in this trial.
    seed : int
    """

    index: int
    id: str
    params: dict[str, Any]
    seed: int

    def options(self, base: dict[str, Any]) -> dict[str, Any]:
        """The keyword options of :func:`sdnet.train` (but ``run_dir``, ``device``,
        ``progress``, which the executor sets)."""
        return {**base, **self.params, "seed": self.seed}

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "params": self.params, "seed": self.seed}


@dataclass
class SweepPlan:
    """The trials of a sweep: ``base`` options, a ``grid`` of values, random ranges, seeds.

    Parameters
    ----------
    base : dict
        Options of :func:`sdnet.train` common to every trial (not ``seed``, ``device``,
        ``run_dir``, ``progress``).
    grid : dict of str to list
        Values of each swept option; every combination is trained.
    seeds : list of int
        Each configuration is trained once per seed.
    random : dict of str to dict
        Random search: ``{"lr": {"low": 0.01, "high": 0.3, "log": True}}`` (``"integer":
        True`` rounds to whole numbers) or ``{"batch_size": {"choices": [64, 128]}}``.
    samples : int
        Random draws per grid point (required with ``random``).
    random_seed : int
        Seeds the random draws (a :class:`numpy.random.Generator`), so a plan is reproducible.
    """

    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    random: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: int = 0
    random_seed: int = 0

    # -- checks -----------------------------------------------------------------------------
    def validate(self) -> SweepPlan:
        """Check the plan and every trial's options; raise :class:`~sdnet.ConfigError` (or
        ``TypeError`` for a misspelt option name) saying what to change."""
        for what, table in (("base", self.base), ("grid", self.grid), ("random", self.random)):
            if not isinstance(table, dict):
                raise ConfigError(f"sweep {what} must be a table of options, got {table!r}")
            check_keys(table)
            for key in table:
                if key in _RESERVED:
                    raise ConfigError(
                        f"{key!r} cannot be set in the sweep's {what}: {_RESERVED[key]}"
                    )
        self._check_grid()
        self._check_random()
        self._check_seeds()
        self.count()  # refuses too many trials before any is expanded
        for trial in self.trials():
            try:
                TrainConfig(**trial.options(self.base)).validate()
            except ConfigError as exc:
                raise ConfigError(f"trial {trial.id}: {exc}") from None
        return self

    def _check_grid(self) -> None:
        for key in self.grid:
            if key in self.base:
                raise ConfigError(f"{key!r} is both in base and grid: keep it in one of them")
            values = self.grid[key]
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key} must be a non-empty list, got {values!r}")
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise ConfigError(f"grid.{key} lists a value twice: {values!r}")

    def _check_random(self) -> None:
        for key, spec in self.random.items():
            if key in self.base or key in self.grid:
                raise ConfigError(f"{key!r} is both random and in base or grid: keep one")
            _check_range(key, spec)
        if self.random and not (_whole(self.samples) and self.samples >= 1):
            raise ConfigError(f"random search needs samples >= 1 (got {self.samples!r})")
        if not self.random and self.samples:
            raise ConfigError("samples is set but no random ranges are given")
        if not (_whole(self.random_seed) and self.random_seed >= 0):
            raise ConfigError(f"random.seed must be a whole number >= 0, got {self.random_seed!r}")

    def _check_seeds(self) -> None:
        seeds = self.seeds
        if not isinstance(seeds, list) or not seeds or not all(_whole(s) for s in seeds):
            raise ConfigError(f"seeds must be a non-empty list of whole numbers, got {seeds!r}")
        if any(s < 0 for s in seeds):
            raise ConfigError(f"seeds must be whole numbers >= 0, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds lists a seed twice: {seeds}")

    def count(self) -> int:
        """The number of trials, counted without expanding the plan; refuses more than
        :data:`MAX_TRIALS` with :class:`~sdnet.ConfigError`."""
        configs = math.prod(len(v) for v in self.grid.values() if isinstance(v, list))
        configs *= self.samples if self.random and _whole(self.samples) else 1
        n = configs * (len(self.seeds) if isinstance(self.seeds, list) else 1)
        if n > MAX_TRIALS:
            raise ConfigError(
                f"the sweep plans {n:,} trials ({configs:,} configurations x {len(self.seeds)} "
                f"seed(s)); a sweep runs at most {MAX_TRIALS:,}: sweep fewer values, or split "
                "it into several sweeps (each its own out_dir)"
            )
        return n

    # -- expansion --------------------------------------------------------------------------
    def swept(self) -> list[str]:
        """Names of the options that vary between configurations (grid, then random)."""
        return list(self.grid) + list(self.random)

    def configurations(self) -> list[dict[str, Any]]:
        """Every configuration (swept values), grid product x random draws, in order (at most
        :data:`MAX_TRIALS`: see :meth:`count`)."""
        self.count()
        points = [
            dict(zip(self.grid, values, strict=True))
            for values in itertools.product(*self.grid.values())
        ]
        if not self.random:
            return points
        import numpy as np

        rng = np.random.default_rng(self.random_seed)
        out = []
        for point in points:
            for _ in range(self.samples):
                draw = {k: _draw(rng, spec) for k, spec in self.random.items()}
                out.append({**point, **draw})
        return out

    def trials(self) -> list[Trial]:
        """Every trial, seeds outer, configurations inner."""
        configs = self.configurations()
        n = len(configs) * len(self.seeds)
        width = max(3, len(str(n - 1)))
        out: list[Trial] = []
        for seed in self.seeds:
            for params in configs:
                i = len(out)
                slug = "-".join(f"{k}={_short(v)}" for k, v in params.items())
                head, tail = f"{i:0{width}d}-", f"seed={seed}"
                room = MAX_ID - len(head) - len(tail) - 1  # the index keeps ids unique
                slug = slug if len(slug) <= room else slug[: max(0, room - 3)] + "..."
                name = f"{head}{slug + '-' if slug else ''}{tail}"
                out.append(Trial(i, re.sub(r"[^A-Za-z0-9._=+-]", "_", name), params, seed))
        return out

    # -- storage ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepPlan:
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """The parts that decide what the trials compute (all but where the data lies)."""
        d = json.loads(json.dumps(self.to_dict()))
        for key in _WHERE:
            d["base"].pop(key, None)
        return d

    def with_absolute_data_dir(self, relative_to: str | os.PathLike[str]) -> SweepPlan:
        """A copy whose relative ``base.data_dir`` is made absolute (trials run elsewhere)."""
        data_dir = self.base.get("data_dir")
        if not data_dir or Path(data_dir).is_absolute():
            return self
        absolute = str((Path(relative_to) / data_dir).resolve())
        return dataclasses.replace(self, base={**self.base, "data_dir": absolute})


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_range(key: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        raise ConfigError(f"random.{key} must be a table like {{low=..., high=...}}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(f"random.{key}: give only choices = [a non-empty list]")
        return
    unknown = set(spec) - {"low", "high", "log", "integer"}
    if unknown or "low" not in spec or "high" not in spec:
        raise ConfigError(
            f"random.{key} needs low and high (optional log, integer) or choices; got {spec}"
        )
    low, high = spec["low"], spec["high"]
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in (low, high)
    ):
        raise ConfigError(f"random.{key}: low and high must be finite numbers")
    if not low < high:
        raise ConfigError(f"random.{key}: low ({low}) must be below high ({high})")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"random.{key}: a log range needs low > 0")


def _draw(rng: Any, spec: dict[str, Any]) -> Any:
    if "choices" in spec:
        return spec["choices"][int(rng.integers(len(spec["choices"])))]
    low, high = float(spec["low"]), float(spec["high"])
    if spec.get("integer"):
        return int(rng.integers(math.ceil(low), math.floor(high) + 1))
    if spec.get("log"):
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


# -- TOML -----------------------------------------------------------------------------------
def read_toml(path: str | os.PathLike[str]) -> tuple[SweepPlan, dict[str, Any]]:
    """Read a sweep file: the plan, and the run settings it gives (``out_dir``, ``devices``,
    ``executor``, ``address``, ``max_concurrent``, ``cpus_per_trial``, ``gpus_per_trial``).

    A relative ``base.data_dir`` is taken relative to the TOML file's folder.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a TOML text file (it is not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for key in data:
        if key not in TOML_KEYS:
            close = difflib.get_close_matches(key, TOML_KEYS, n=2)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint} (known: {', '.join(TOML_KEYS)})")
    for key in ("base", "grid", "random"):
        if not isinstance(data.get(key, {}), dict):
            raise ConfigError(f"{path}: {key} must be a table ([{key}]), got {data[key]!r}")
    random = dict(data.get("random", {}))
    samples = random.pop("samples", 0)
    random_seed = random.pop("seed", 0)
    plan = SweepPlan(
        base=dict(data.get("base", {})),
        grid=dict(data.get("grid", {})),
        seeds=data.get("seeds", [0]),
        random=random,
        samples=samples,
        random_seed=random_seed,
    )
    plan = plan.with_absolute_data_dir(path.resolve().parent)
    settings = {k: data[k] for k in TOML_KEYS[4:] if k in data}
    return plan, settings


# -- sweep.json -----------------------------------------------------------------------------
def check_or_write_plan(sweep_dir: Path, plan: SweepPlan) -> list[Trial]:
    """Write ``sweep.json`` in a new sweep directory, or check that an existing one holds the
    same plan (refusing a changed one); returns the trials.

    A new ``data_dir``/``download`` replaces the stored one (the data may live elsewhere on
    this machine).
    """
    from sdnet.rundir import write_json

    trials = plan.trials()
    path = sweep_dir / SWEEP_JSON
    if path.exists():
        stored, _ = read_sweep(sweep_dir)
        old, new = stored.identity(), plan.identity()
        if old != new:
            changes = "; ".join(_diff(old, new)) or "the plan differs"
            raise SweepError(
                f"{sweep_dir} holds another sweep ({changes}). Rerun it with its own plan "
                f"(stored in {path}), or give the new plan another out_dir"
            )
    elif sweep_dir.exists() and any(p.name != ".lock" for p in sweep_dir.iterdir()):
        raise SweepError(
            f"{sweep_dir} exists and is not a sweep directory (no {SWEEP_JSON}): "
            "choose an empty or new out_dir"
        )
    record = {
        "format": FORMAT,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plan": plan.to_dict(),
        "trials": [t.to_dict() for t in trials],
    }
    if path.exists():
        record["created"] = json.loads(path.read_text()).get("created", record["created"])
    write_json(path, record)
    return trials


def read_sweep(sweep_dir: str | os.PathLike[str]) -> tuple[SweepPlan, list[Trial]]:
    """The plan and trials stored in ``SWEEP_DIR/sweep.json``."""
    path = Path(sweep_dir) / SWEEP_JSON
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{sweep_dir} is not a sweep directory (no {SWEEP_JSON})") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SweepError(f"{path} is not an sdnet sweep file")
    plan = SweepPlan.from_dict(data["plan"])
    trials = [Trial(**t) for t in data["trials"]]
    return plan, trials


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} stored, {b!r} now")
    return out
