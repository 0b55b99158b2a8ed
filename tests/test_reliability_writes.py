"""Writes never destroy what they should not: inputs, device nodes, FIFOs, links, folders,
existing files a user named, a user's folder taken for a run directory.

Every file sdnet writes goes through ``sdnet._io`` (docs/reliability.md): only a regular file
is ever replaced, a symbolic link is refused (not followed), an input of the same command is
refused (same inode), ``sdnet export`` / ``sdnet.save`` / ``sdnet plot --out`` refuse an
existing file unless asked, and files get the mode the umask gives. A new run goes only into an
absent or empty folder, never ``/`` or the home folder. Several tests run as root here, where
permissions would not stop anything.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sdnet
from sdnet._io import WriteRefused, atomic_write_bytes
from sdnet.checkpoint import read_checkpoint
from sdnet.cli import main
from sdnet.rundir import LOCK, RunDirError, RunWriteError, claim_new_run_dir

train_mod = importlib.import_module("sdnet.training.run")
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
TINY = dict(
    model="resnet8",
    epochs=1,
    batch_size=16,
    limit_train=64,
    limit_test=32,
    eval_batch_size=32,
    device="cpu",
    progress=False,
    download=False,
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights file (resnet8, MNIST-shaped, dataset recorded)."""
    model = sdnet.build_model("resnet8", in_channels=1, device="cpu", seed=1)
    extra = {"dataset": "mnist", "mean": [0.1307], "std": [0.3081], "normalize": "dataset"}
    return sdnet.save(model, tmp_path_factory.mktemp("w") / "model.npz", extra=extra)


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_export_never_writes_over_its_input_or_an_existing_file(weights, tmp_path, capsys):
    """``sdnet export model.npz model.npz`` printed "wrote" and destroyed the weights."""
    model = tmp_path / "model.npz"
    model.write_bytes(weights.read_bytes())
    before = model.read_bytes()
    os.link(model, tmp_path / "hard.npz")
    (tmp_path / "soft.npz").symlink_to(model)
    for out, force in [(model, False), (model, True), (tmp_path / "hard.npz", True)]:
        assert main(["export", str(model), str(out)] + (["--force"] if force else [])) == 1
        line = _one_line(capsys)
        assert str(out) in line and ("input" in line or "exists" in line), line
    assert main(["export", str(model), str(tmp_path / "soft.npz"), "--force"]) == 1
    assert "symbolic link" in _one_line(capsys)
    assert model.read_bytes() == before and read_checkpoint(model)
    onnx = tmp_path / "model.onnx"
    assert main(["export", str(model), str(onnx)]) == 0
    first = onnx.read_bytes()
    assert main(["export", str(model), str(onnx)]) == 1  # exists: refused, kept
    assert "--force" in _one_line(capsys) and onnx.read_bytes() == first
    assert main(["export", str(model), str(onnx), "--force"]) == 0  # asked: replaced


def _fifo(path: Path) -> Callable[[], None]:
    os.mkfifo(path)
    return lambda: None


def _char_device(path: Path) -> Callable[[], None]:
    """A node like /dev/null (major 1, minor 3) in the test's folder: only root may make one."""
    if not ROOT:
        pytest.skip("making a device node needs root")
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return lambda: None


def _directory(path: Path) -> Callable[[], None]:
    path.mkdir()
    (path / "inside").write_text("kept")
    return lambda: None


def _socket(path: Path) -> Callable[[], None]:
    import socket

    if len(str(path)) > 100:
        pytest.skip("the path is too long for a UNIX socket")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock.close


def _symlink(path: Path) -> Callable[[], None]:
    target = path.with_name("target.bin")
    target.write_bytes(b"the link's target")
    path.symlink_to(target)
    return lambda: None


NODES = [
    pytest.param(_fifo, id="fifo"),
    pytest.param(_char_device, id="char-device"),
    pytest.param(_directory, id="directory"),
    pytest.param(_socket, id="socket"),
    pytest.param(_symlink, id="symlink"),
]


def _node(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_mode, st.st_ino, st.st_rdev


@pytest.mark.parametrize("make", NODES)
def test_a_write_never_replaces_what_is_not_a_regular_file(make, weights, tmp_path, capsys):
    """A rename replaced device nodes, FIFOs and links (as root, /dev/null and /dev/full);
    now sdnet.save, sdnet export and every run-directory write refuse them, even when told
    to overwrite."""
    target = tmp_path / "out.bin"
    close = make(target)
    try:
        before = _node(target)
        model = sdnet.load(weights)
        with pytest.raises(WriteRefused, match=str(target)):
            sdnet.save(model, target, overwrite=True)
        assert main(["export", str(weights), str(target), "--force"]) == 1
        assert str(target) in _one_line(capsys)
        with pytest.raises(WriteRefused):
            atomic_write_bytes(target, lambda fh: fh.write(b"x"))
        assert _node(target) == before  # the same node, untouched
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    finally:
        close()


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077], ids=["022", "027", "077"])
def test_written_files_get_the_mode_the_umask_gives(mask, umask, weights, tmp_path):
    """model.npz and exported files were 0600 (the temporary file's mode)."""
    umask(mask)
    model = sdnet.load(weights)
    saved = sdnet.save(model, tmp_path / "model.npz")
    assert main(["export", str(saved), str(tmp_path / "model.onnx")]) == 0
    atomic_write_bytes(tmp_path / "other.txt", lambda fh: fh.write(b"x"))
    for name in ("model.npz", "model.onnx", "other.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


def test_an_output_created_during_the_write_is_kept(tmp_path):
    """Without overwrite the new file is published by a hard link, which fails when the name
    appeared while the file was being written: the newcomer is kept, not replaced."""
    target = tmp_path / "model.onnx"

    def write(fh: Any) -> None:
        fh.write(b"ours")
        target.write_bytes(b"someone else's")  # another process, in between

    with pytest.raises(WriteRefused, match="exists"):
        atomic_write_bytes(target, write, overwrite=False)
    assert target.read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary left


def test_plot_refuses_its_input_and_an_existing_out_file(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    record = {"type": "epoch", "epoch": 1, "step": 4, "lr": 0.1, "train_loss": 1.0,
              "train_accuracy": 0.5, "test_loss": 1.1, "test_accuracy": 0.4}  # fmt: skip
    (run / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    before = (run / "metrics.jsonl").read_bytes()
    assert main(["plot", str(run), "--out", str(run / "metrics.jsonl"), "--force"]) == 1
    assert "input" in _one_line(capsys) and (run / "metrics.jsonl").read_bytes() == before
    mine = tmp_path / "figure.png"
    mine.write_bytes(b"my figure")
    assert main(["plot", str(run), "--out", str(mine)]) == 1
    assert "--force" in _one_line(capsys) and mine.read_bytes() == b"my figure"
    assert main(["plot", str(run)]) == 0 and main(["plot", str(run)]) == 0  # its own PNG
    assert main(["plot", str(run), "--out", str(mine), "--force"]) == 0
    assert mine.read_bytes()[:4] == b"\x89PNG"


@contextlib.contextmanager
def _as_nobody() -> Iterator[None]:
    """Run the block with the effective user ``nobody`` when running as root (whom
    permissions do not stop); everything it needs must be imported before."""
    if not ROOT:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder under the system's temporary folder that ``nobody`` can reach (pytest's own
    folders are private to their user)."""
    base = Path(tempfile.mkdtemp(prefix="sdnet-test-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for p in sorted(base.rglob("*"), reverse=True):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
                p.rmdir()
            else:
                p.unlink()
        base.rmdir()


def test_export_into_a_read_only_folder_names_the_file(weights, shared_dir, capsys):
    """The error named the hidden temporary file (``.model.onnx.x1y2.tmp``), not the output."""
    pytest.importorskip("onnx")
    ckpt = shared_dir / "model.npz"
    ckpt.write_bytes(weights.read_bytes())
    ckpt.chmod(0o644)
    assert main(["export", str(ckpt), str(shared_dir / "warm.onnx")]) == 0  # imports done
    ro = shared_dir / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    out = ro / "model.onnx"
    capsys.readouterr()
    with _as_nobody():
        code = main(["export", str(ckpt), str(out)])
    assert code == 1
    line = _one_line(capsys)
    assert f"{out}: cannot create a file in {ro} (Permission denied)" in line, line
    assert ".tmp" not in line and not list(ro.iterdir())


def test_a_new_run_never_takes_a_folder_holding_other_files(tmp_path, mnist_dir, capsys):
    """A folder with a user's own model.npz and metrics.jsonl: the run replaced the one and
    appended to the other."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.npz").write_bytes(b"my own weights")
    (mine / "metrics.jsonl").write_text('{"mine": true}\n')
    argv = ["train", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
            "--device", "cpu", "--no-progress", "--no-download",
            "--data-dir", str(mnist_dir), "--run-dir", str(mine)]  # fmt: skip
    assert main(argv) == 1
    line = _one_line(capsys)
    assert f"{mine} is not empty (metrics.jsonl, model.npz)" in line and "--run-dir" in line
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.jsonl", "model.npz"]
    assert (mine / "model.npz").read_bytes() == b"my own weights"
    assert (mine / "metrics.jsonl").read_text() == '{"mine": true}\n'
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / LOCK).write_text("{}")  # a stale lock of sdnet's own is no obstacle
    path, lock = claim_new_run_dir(empty, "mnist", "resnet8")
    lock.release()
    assert path == empty


def test_a_new_run_never_takes_the_root_or_the_home_folder(tmp_path, monkeypatch):
    """``--run-dir /`` was accepted. The root case runs as ``nobody`` when the tests run as
    root, so that a mistake could not write into /."""
    with _as_nobody(), pytest.raises(RunDirError) as info:
        claim_new_run_dir("/", "mnist", "resnet8")
    assert "/ is the root of the filesystem" in str(info.value)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(RunDirError, match="your home folder"):
        claim_new_run_dir(home, "mnist", "resnet8")
    with pytest.raises(RunDirError, match="your home folder"):
        sdnet.train(**TINY, run_dir=str(home / "."))
    assert list(home.iterdir()) == []


def test_a_folder_where_the_checkpoint_goes_stops_the_run_naming_it(
    tmp_path, monkeypatch, mnist_dir
):
    """A directory at checkpoint.npz: the message said the checkpoint "is intact" and to
    free disk space."""
    run = tmp_path / "run"
    real = train_mod.softmax_cross_entropy

    def loss(logits: Any, y: Any) -> Any:
        (run / "checkpoint.npz").mkdir(exist_ok=True)  # someone puts a folder there
        return real(logits, y)

    monkeypatch.setattr(train_mod, "softmax_cross_entropy", loss)
    with pytest.raises(RunWriteError) as info:
        sdnet.train(**TINY, checkpoint_every=2, data_dir=str(mnist_dir), run_dir=str(run))
    msg = str(info.value)
    assert f"cannot write {run / 'checkpoint.npz'} at step 2" in msg
    assert "is a directory, not a regular file" in msg and "Move" in msg
    assert "disk space" not in msg and "is intact" not in msg
    assert (run / "checkpoint.npz").is_dir() and not (run / LOCK).exists()
    assert np.all([p.name != ".checkpoint.npz" for p in run.iterdir()])
