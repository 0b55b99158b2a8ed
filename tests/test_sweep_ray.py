"""sdnet.sweep on a real local Ray instance (2 CPUs, no dashboard), shared by this module's
tests: 2 configurations x 2 seeds of a tiny model on MNIST, a trial whose Ray worker is
killed with SIGKILL, and the retry."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'sdnet[sweep]'")

import sdnet  # noqa: E402
from sdnet.sweep.trial import TESTING_KILL_ENV  # noqa: E402

TINY = dict(
    model="resnet8",
    epochs=1,
    limit_train=256,
    limit_test=100,
    batch_size=64,
    eval_batch_size=100,
    download=False,
    log_every=2,
)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One Ray instance for the module (starting one takes seconds on a small machine)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_sweep_with_a_killed_worker_then_retry(
    local_ray: None, tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sweep"
    killed = "002-p_last=0.5-seed=1"
    monkeypatch.setenv(TESTING_KILL_ENV, killed)  # the task's worker SIGKILLs itself
    kw = dict(
        base=dict(TINY, data_dir=str(mnist_dir)),
        grid={"p_last": [0.5, 1.0]},
        seeds=[0, 1],
        out_dir=out,
        executor="ray",
        devices="cpu",
        heartbeat=0,
    )
    log = io.StringIO()
    result = sdnet.sweep(**kw, stream=log)
    assert result.failed == [killed]
    assert len(result.done) == 3
    assert "WorkerCrashedError" in result.status[killed]["error"]
    assert "[3/4 done, 1 failed]" in log.getvalue()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["state"] for r in rows] == ["done", "done", "failed", "done"]
    for r in rows:
        if r["state"] == "done":
            assert r["device"].startswith("cpu@") and 0 <= float(r["final_accuracy"]) <= 1
            assert (out / "trials" / r["trial"] / "model.npz").is_file()
    assert ray.is_initialized()  # an instance it did not start is left running

    monkeypatch.delenv(TESTING_KILL_ENV)
    log = io.StringIO()
    retried = sdnet.sweep(**kw, retry_failed=True, stream=log)
    assert retried.failed == [] and len(retried.done) == 4
    assert log.getvalue().count("] start ") == 1
    summary = (out / "summary.md").read_text()
    assert "| 0.5 | 2 | 0 |" in summary and "| 1.0 | 2 | 0 |" in summary
