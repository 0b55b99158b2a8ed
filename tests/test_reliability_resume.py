"""Resume continues the run it was asked to, or refuses in one line naming the file.

A training checkpoint holds the run's configuration and run id, covered by its checksums.
Resuming compares that configuration with ``config.json`` (only ``RESUME_OVERRIDES`` may
differ) and the run id with ``run.json``; a checkpoint lacking a part, or whose arrays do not
fit the model, is a ``CheckpointError`` naming the file, never a ``KeyError``.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

import sdnet
from sdnet.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from sdnet.cli import main
from sdnet.rundir import LOCK, MARKER, RunDirError
from sdnet.training import RESUME_OVERRIDES

TINY = dict(model="resnet8", epochs=1, batch_size=16, limit_train=64, limit_test=32,
            eval_batch_size=32, device="cpu", progress=False, download=False)  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A finished tiny run (its checkpoint at the end of its one epoch)."""
    run = tmp_path_factory.mktemp("resume") / "run"
    sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(run))
    return run


def _copy(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    return where


def _edit(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(dict(data, **changes)))


# (config.json key, value written over the run's)
EDITS = [
    pytest.param("dataset", "fashion-mnist", id="dataset"),
    pytest.param("batch_size", 32, id="batch_size"),
    pytest.param("seed", 7, id="seed"),
    pytest.param("dtype", "float64", id="dtype"),
    pytest.param("lr", 0.05, id="lr"),
    pytest.param("limit_train", 48, id="limit_train"),
    pytest.param("model", "resnet14", id="model"),
]


@pytest.mark.parametrize("key, value", EDITS)
def test_resume_refuses_an_edited_configuration(key, value, finished, tmp_path, capsys):
    """Editing config.json and resuming went on silently under the new settings (a new model
    gave a KeyError traceback)."""
    run = _copy(finished, tmp_path / "run")
    _edit(run / "config.json", **{key: value})
    before = (run / "checkpoint.npz").read_bytes()
    assert main(["train", "--resume", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert f"{run / 'config.json'} differs from the configuration" in err[0]
    assert f"{key}: " in err[0] and repr(value) in err[0] and "start a new run" in err[0]
    assert (run / "checkpoint.npz").read_bytes() == before and not (run / LOCK).exists()


def test_resume_accepts_the_documented_overrides(finished, tmp_path, mnist_dir):
    run = _copy(finished, tmp_path / "run")
    changed = {"device": "auto", "progress": True, "log_every": 7, "download": True,
               "data_dir": str(mnist_dir)}  # fmt: skip
    assert set(changed) == set(RESUME_OVERRIDES)
    _edit(run / "config.json", **changed)
    result = sdnet.train(resume=run, device="cpu", progress=False)  # finished: nothing to do
    assert result.history[-1]["epoch"] == 1


def test_a_checkpoint_from_another_run_is_refused(finished, tmp_path, mnist_dir):
    """Two runs of the same configuration: one's checkpoint copied into the other."""
    other = tmp_path / "other"
    sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(other))
    shutil.copy(finished / "checkpoint.npz", other / "checkpoint.npz")
    mine = json.loads((finished / MARKER).read_text())["run_id"]
    theirs = json.loads((other / MARKER).read_text())["run_id"]
    assert mine != theirs and read_checkpoint(other / "checkpoint.npz")[1]["run_id"] == mine
    with pytest.raises(RunDirError, match=f"belongs to run {mine}, but {other} is run {theirs}"):
        sdnet.train(resume=other)
    assert not (other / LOCK).exists()


def _drop(key: str) -> Any:
    def change(arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        meta.pop(key)

    return change


def _rng_list(arrays: dict[str, Any], meta: dict[str, Any]) -> None:
    meta["rng"] = ["not", "a", "table"]


def _partial_keys(arrays: dict[str, Any], meta: dict[str, Any]) -> None:
    meta["partial"] = {}


def _arrays_of_another_model(arrays: dict[str, Any], meta: dict[str, Any]) -> None:
    del arrays["model/conv1.weight"]
    meta["sha256"].pop("model/conv1.weight")


DAMAGE = [
    pytest.param(_drop("partial"), "'partial'", id="no-partial"),
    pytest.param(_drop("rng"), "'rng'", id="no-rng"),
    pytest.param(_rng_list, "'rng'", id="rng-not-a-table"),
    pytest.param(_partial_keys, "'partial.loss'", id="partial-empty"),
    pytest.param(_arrays_of_another_model, "does not fit this run's model", id="arrays-missing"),
]


@pytest.mark.parametrize("damage, says", DAMAGE)
def test_a_damaged_training_checkpoint_is_refused_naming_it(
    damage, says, finished, tmp_path, capsys
):
    """A training checkpoint missing its ``partial`` or ``rng`` entries gave a KeyError."""
    run = _copy(finished, tmp_path / "run")
    arrays, meta = read_checkpoint(run / "checkpoint.npz")
    damage(arrays, meta)
    write_checkpoint(run / "checkpoint.npz", arrays, meta)
    with pytest.raises(CheckpointError) as info:
        sdnet.train(resume=run)
    assert str(run / "checkpoint.npz") in str(info.value) and says in str(info.value)
    assert main(["train", "--resume", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and not (run / LOCK).exists()


def test_the_stored_configuration_is_covered_by_the_checksums(finished, tmp_path):
    """The configuration inside the checkpoint edited (the zip rewritten with valid CRCs, as a
    tool would): caught by the metadata's own digest, so resume compares a trusted copy."""
    run = _copy(finished, tmp_path / "run")
    path = run / "checkpoint.npz"
    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    needle = b'"batch_size": 16'
    assert entries["__meta__.npy"].count(needle) == 1
    entries["__meta__.npy"] = entries["__meta__.npy"].replace(needle, b'"batch_size": 17')
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match="checksum mismatch in its metadata"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=str(path)):
        sdnet.train(resume=run)
