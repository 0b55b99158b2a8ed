"""The measurements behind ``docs/benchmarks.md``: one JSON file, ``docs/benchmarks.json``.

The file holds a list of records, one per measuring run. Every record has

``kind``
    ``"speed"`` (``speed.py``), ``"profile"`` (``profile_step.py``), ``"skip_cost"``
    (``skip_cost.py``) or ``"launches"`` (kernel launches per training step on a GPU).
``key``
    Which record of its kind it is. A new record replaces the one with the same kind and key:
    speed records are keyed by device and thread count (``"cpu, 2 threads"``, ``"gpu: <card>"``),
    skip-cost records by device (``"cpu"``, ``"gpu: <card>"``), profile and launch records by
    their label (``"before"``, ``"after"``; PyTorch's profile: ``"pytorch"``).
``command``
    The exact command, run from the repository root (never an absolute path of the machine).
``commit``
    The sdnet commit measured, ``null`` where it was not recorded.
``machine``
    What ``_machine.machine_info`` records: date, versions, CPU, BLAS, threads, load average;
    ``gpu`` names the card of a GPU run.
``settings``
    The sizes the script ran with (batch, steps, threads ...).
``results``
    The measured values, never formatted text; each kind's layout is described by the function
    of ``_tables`` that renders it.

``render_benchmarks.py`` writes the whole page from this file; the measuring scripts call
:func:`add_record` and then rewrite the page, both only with ``--write`` and never with
``--smoke``.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RECORDS = REPO / "docs" / "benchmarks.json"
KINDS = ("speed", "profile", "skip_cost", "launches")

# an absolute path of a machine: a home, temporary or work folder (a URL's path is not one)
_MACHINE_PATH = re.compile(r"(?<![\w.~$])(?:/(?:tmp|work|root|home|Users)/|[A-Za-z]:\\Users\\)")
# made-up paths in documented examples, not of any machine
PLACEHOLDERS = ("/home/me/",)


def machine_paths(text: str, repo: Path = REPO) -> list[str]:
    """The absolute paths of a machine that ``text`` records, each with what follows it.

    Flags home, temporary and work folders (``/tmp/``, ``/work/``, ``/root/``, ``/home/``,
    ``/Users/``) and the repository's own absolute path; the made-up paths of
    :data:`PLACEHOLDERS` are allowed.
    """
    found = []
    for m in _MACHINE_PATH.finditer(text):
        tail = text[m.start() :].split(None, 1)[0]
        if not tail.startswith(PLACEHOLDERS):
            found.append(tail)
    start = 0
    while (i := text.find(str(repo), start)) >= 0:
        found.append(text[i:].split(None, 1)[0])
        start = i + 1
    return sorted(set(found))


def load_records(path: Path = RECORDS) -> list[dict[str, Any]]:
    """The records in ``path`` (none when the file does not exist)."""
    return json.loads(path.read_text()) if path.exists() else []


def add_record(record: dict[str, Any], path: Path = RECORDS) -> list[dict[str, Any]]:
    """Write ``record`` into ``path``, in place of the record of the same kind and key.

    Raises
    ------
    ValueError
        If the kind is unknown or the record holds an absolute path of this machine.
    """
    if record.get("kind") not in KINDS or "key" not in record:
        raise ValueError(f"a record needs a kind out of {KINDS} and a key: {record.get('kind')!r}")
    text = json.dumps(record)
    if paths := machine_paths(text):
        raise ValueError(f"the record holds paths of this machine: {paths}")
    records = load_records(path)  # re-read: another script may have written meanwhile
    key = (record["kind"], record["key"])
    same = [i for i, r in enumerate(records) if (r["kind"], r["key"]) == key]
    if same:
        records[same[0]] = record
    else:
        records.append(record)
    path.write_text(json.dumps(records, indent=1) + "\n")
    return records


def recorded_command(script: str, argv: list[str], prefix: list[str] | None = None) -> str:
    """The command line to show for a run: ``prefix`` (environment), ``python script`` and
    ``argv`` without ``--records`` (where the record went is not part of what was measured)."""
    shown, skip = [], False
    for a in argv:
        if skip or a.startswith("--records="):
            skip = False
            continue
        skip = a == "--records"
        if not skip:
            shown.append(shlex.quote(a))
    return " ".join([*(prefix or []), "python", script, *shown])
