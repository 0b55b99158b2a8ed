"""``sdnet sweep SWEEP.toml``: the command-line face of :func:`sdnet.sweep`.

Settings come from the TOML file (``out_dir``, ``devices``, ``executor``, ...) and the flags
override them. The exit status is 0 when every trial is done, 1 when some failed (the summary
is still written; ``--retry-failed`` runs them again), 2 for a bad file or flag, 130 after
Ctrl-C (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_sweep_parser", "run_command"]


def add_sweep_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand to the ``sdnet`` command's subparsers."""
    sw = sub.add_parser(
        "sweep",
        help="train a grid of configurations x seeds (local devices or Ray); resumable",
        description="Run (or resume) the sweep described by a TOML file.",
    )
    sw.add_argument("toml", metavar="SWEEP.toml", help="the sweep: [base], [grid], seeds, ...")
    sw.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="sweep directory (default: the file's out_dir, else sweeps/<file name>)",
    )
    sw.add_argument("--executor", choices=("local", "ray"), default=None, help="default: local")
    sw.add_argument(
        "--address",
        default=None,
        help="Ray: auto or ray://host:10001 (default: a local Ray instance)",
    )
    sw.add_argument(
        "--devices",
        nargs="+",
        default=None,
        metavar="DEV",
        help="auto, cpu, gpu, or devices such as cuda:0 cuda:1 (default: auto)",
    )
    sw.add_argument(
        "--max-concurrent", type=int, default=None, metavar="N", help="at most N trials at once"
    )
    sw.add_argument(
        "--cpus-per-trial", type=float, default=None, metavar="N", help="Ray: CPUs per trial (1)"
    )
    sw.add_argument(
        "--gpus-per-trial", type=float, default=None, metavar="N", help="Ray: GPUs per trial (1)"
    )
    sw.add_argument("--retry-failed", action="store_true", help="run failed trials again")
    sw.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="where the dataset files are (overrides the file's base.data_dir)",
    )
    sw.add_argument(
        "--heartbeat",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between lines listing running trials (0: none)",
    )
    return sw


def run_command(args: argparse.Namespace) -> int:
    """Handle ``sdnet sweep``; returns the exit status."""
    import dataclasses

    from sdnet.sweep.plan import read_toml
    from sdnet.sweep.run import run_plan

    plan, settings = read_toml(args.toml)
    if args.data_dir is not None:
        plan = dataclasses.replace(plan, base={**plan.base, "data_dir": args.data_dir})
        plan = plan.with_absolute_data_dir(Path.cwd())
    plan.validate()
    out = args.out or settings.get("out_dir") or str(Path("sweeps") / Path(args.toml).stem)
    devices = args.devices or settings.get("devices", "auto")
    if isinstance(devices, list) and len(devices) == 1:
        devices = devices[0]

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name)
        return value if value is not None else settings.get(name, default)

    executor = pick("executor", "local")
    result = run_plan(
        plan,
        out,
        devices=devices,
        executor=executor,
        address=pick("address", None),
        max_concurrent=pick("max_concurrent", None),
        cpus_per_trial=pick("cpus_per_trial", 1),
        gpus_per_trial=pick("gpus_per_trial", 1),
        retry_failed=args.retry_failed,
        heartbeat=args.heartbeat,
    )
    if result.failed:
        print(
            f"sdnet: {len(result.failed)} of {len(result.status)} trials failed "
            f"(errors in {result.sweep_dir}/status/, logs in {result.sweep_dir}/logs/); "
            "rerun with --retry-failed to run them again",
            file=sys.stderr,
        )
        return 1
    print(f"summary: {result.summary_md}")
    return 0
