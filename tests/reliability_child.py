"""Training processes for the reliability tests.

``python reliability_child.py RUN_DIR OPTIONS`` starts the run in ``RUN_DIR`` with the JSON
``OPTIONS``, or resumes it when ``RUN_DIR`` already holds a ``config.json`` (what a user does
after a crash: ``sdnet train --resume RUN_DIR``). It prints ``START`` once sdnet is imported
and ``FINISHED`` at the end.

``python reliability_child.py --serve`` imports sdnet once, then for each JSON line
``{"run": ..., "options": ..., "pause": ...}`` on stdin forks a process that does the same and
prints ``FORKED <pid>``; the process prints ``PAUSED <pid>`` when it pauses and ``DONE <pid>``
when it ends on its own (finished or failed). The next stdin line (``reap``) makes the server
collect it and print ``EXIT <pid> <status>`` (``-9`` when killed by SIGKILL): until then an
ended process stays a zombie, so its pid cannot be reused and a late SIGKILL sent to it is
harmless. Forking from a warm process keeps a life's start-up cost to the data loading.

``SDNET_TEST_PAUSE=PHASE:N`` stops the process inside its N-th checkpoint write of this life, at
``PHASE``, prints ``PAUSED`` and sleeps until it is killed:

* ``partial``        half of the file's bytes written to the temporary file (and fsynced);
* ``before-fsync``   every byte written and flushed, not yet fsynced;
* ``before-rename``  the temporary file complete and fsynced, not yet renamed over the target;
* ``after-rename``   renamed, the directory not yet fsynced.

``SDNET_TEST_RSS=FILE`` appends ``step rss_bytes`` to FILE at every metrics step line (the
memory test).
"""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import sdnet
import sdnet._io as io_mod
import sdnet.checkpoint as ckpt_mod

output_mod = importlib.import_module("sdnet.training.output")


def _pause(tag: str = "") -> None:
    print(f"PAUSED{tag}", flush=True)
    while True:
        time.sleep(60)


def _install_pause(spec: str, tag: str = "") -> None:
    phase, nth = spec.split(":")
    real = ckpt_mod.atomic_write_bytes
    calls = {"n": 0}

    def paused_write(path: Any, write: Any, **kw: Any) -> Path:
        calls["n"] += 1
        if calls["n"] != int(nth):
            return real(path, write, **kw)
        if phase == "partial":

            def half(fh: Any) -> None:
                buf = io.BytesIO()
                write(buf)
                data = buf.getvalue()
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.fsync(fh.fileno())
                _pause(tag)

            return real(path, half, **kw)
        if phase == "before-fsync":
            os.fsync = lambda fd: _pause(tag)  # type: ignore[assignment]
        elif phase == "before-rename":
            os.replace = lambda a, b: _pause(tag)  # type: ignore[assignment]
        elif phase == "after-rename":
            io_mod.fsync_dir = lambda d: _pause(tag)  # type: ignore[assignment]
        else:
            raise SystemExit(f"unknown phase {phase!r}")
        return real(path, write, **kw)

    ckpt_mod.atomic_write_bytes = paused_write  # type: ignore[assignment]


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _install_rss(out: str) -> None:
    real = output_mod.RunOutput.record

    def record(self: Any, record: dict[str, Any]) -> None:
        real(self, record)
        if record.get("type") == "step":
            with open(out, "a") as fh:
                fh.write(f"{record['step']} {_rss()}\n")

    output_mod.RunOutput.record = record


def _life(run_dir: Path, options: dict[str, Any]) -> None:
    if (run_dir / "config.json").exists():
        sdnet.train(resume=run_dir, progress=False)
    else:
        sdnet.train(**options, run_dir=str(run_dir))


def serve() -> None:
    """Fork one training process per command line; report how each ended."""
    for line in sys.stdin:
        cmd = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the training process
            code = 0
            try:
                if cmd.get("pause"):
                    _install_pause(cmd["pause"], tag=f" {os.getpid()}")
                _life(Path(cmd["run"]), cmd["options"])
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                print(f"DONE {os.getpid()}", flush=True)
                sys.stderr.flush()
                os._exit(code)
        print(f"FORKED {pid}", flush=True)
        sys.stdin.readline()  # "reap"
        _, status = os.waitpid(pid, 0)
        print(f"EXIT {pid} {os.waitstatus_to_exitcode(status)}", flush=True)


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        serve()
        return
    run_dir, options = Path(sys.argv[1]), json.loads(sys.argv[2])
    if os.environ.get("SDNET_TEST_PAUSE"):
        _install_pause(os.environ["SDNET_TEST_PAUSE"])
    if os.environ.get("SDNET_TEST_RSS"):
        _install_rss(os.environ["SDNET_TEST_RSS"])
    print("START", flush=True)
    _life(run_dir, options)
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main()
