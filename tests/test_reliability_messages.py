"""Bad input gets one line naming the file or option and what to do; never a traceback, never
a silent NaN.

The command line's errors are one line on stderr (``sdnet: error: ...``) with status 1 or 2;
a checkpoint whose weights or normalization are not finite numbers is refused at load; every
float option refuses NaN and infinity, every whole-number option refuses booleans and
fractions; ``sdnet info | head -1`` stops quietly; ``sdnet train --help`` is grouped.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reliability_cases import option_cases

import sdnet
from sdnet.checkpoint import read_checkpoint, write_checkpoint
from sdnet.cli import main
from sdnet.config import GROUPS, ConfigError, TrainConfig

cli_mod = importlib.import_module("sdnet.cli")
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = sdnet.build_model("resnet8", in_channels=1, device="cpu", seed=2)
    extra = {"dataset": "mnist", "mean": [0.1307], "std": [0.3081], "normalize": "dataset"}
    return sdnet.save(model, tmp_path_factory.mktemp("msg") / "model.npz", extra=extra)


def _altered(weights: Path, path: Path, change: Callable[[dict, dict], None]) -> Path:
    arrays, meta = read_checkpoint(weights)
    change(arrays, meta)
    return write_checkpoint(path, arrays, meta)


def _binary_toml(weights: Path, tmp: Path) -> tuple[list[str], Path, str, int]:
    path = tmp / "sweep.toml"
    path.write_bytes(b"seeds = [0]\n\xff\xfe\x00binary")
    return ["sweep", str(path)], path, "is not a TOML text file (it is not UTF-8 text)", 2


def _onnx_as_checkpoint(weights: Path, tmp: Path) -> tuple[list[str], Path, str, int]:
    pytest.importorskip("onnx")
    path = tmp / "model.onnx"
    assert main(["export", str(weights), str(path)]) == 0
    return ["eval", str(path)], path, "is not an sdnet checkpoint: not a NumPy .npz archive", 1


def _extra_a_list(weights: Path, tmp: Path) -> tuple[list[str], Path, str, int]:
    path = _altered(weights, tmp / "m.npz", lambda a, m: m.update(extra=[1, 2]))
    return ["eval", str(path)], path, "its 'extra' metadata is not a table", 1


def _name_a_number(weights: Path, tmp: Path) -> tuple[list[str], Path, str, int]:
    path = _altered(weights, tmp / "m.npz", lambda a, m: m["model"].update(name=8))
    return ["export", str(path), str(tmp / "m.onnx")], path, "stored model name 8 is not", 1


def _nan_weights_predict(weights: Path, tmp: Path) -> tuple[list[str], Path, str, int]:
    def poison(arrays: dict, meta: dict) -> None:
        arrays["model/conv1.weight"] = arrays["model/conv1.weight"].copy()
        arrays["model/conv1.weight"][0, 0, 0, 0] = np.nan

    path = _altered(weights, tmp / "m.npz", poison)
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp / "x.png")
    return ["predict", str(path), str(tmp / "x.png")], path, "NaN or infinite", 1


def _nan_weights_eval(weights: Path, tmp: Path) -> tuple[list[str], Path, str, int]:
    def poison(arrays: dict, meta: dict) -> None:
        arrays["model/fc.weight"] = np.full_like(arrays["model/fc.weight"], np.inf)

    path = _altered(weights, tmp / "m.npz", poison)
    return ["eval", str(path), "--limit", "10"], path, "'fc.weight' are NaN or infinite", 1


def _std_zero(weights: Path, tmp: Path) -> tuple[list[str], Path, str, int]:
    path = _altered(weights, tmp / "m.npz", lambda a, m: m["extra"].update(std=[0]))
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp / "x.png")
    return ["predict", str(path), str(tmp / "x.png")], path, "std [0] must be > 0", 1


def _folder_as_checkpoint(weights: Path, tmp: Path) -> tuple[list[str], Path, str, int]:
    path = tmp / "checkpoint.npz"
    path.mkdir()
    return ["eval", str(path)], path, "is not a file", 1


FILES = [
    pytest.param(_binary_toml, id="binary-toml"),
    pytest.param(_onnx_as_checkpoint, id="onnx-as-checkpoint"),
    pytest.param(_extra_a_list, id="extra-a-list"),
    pytest.param(_name_a_number, id="model-name-a-number"),
    pytest.param(_nan_weights_predict, id="nan-weights-predict"),
    pytest.param(_nan_weights_eval, id="inf-weights-eval"),
    pytest.param(_std_zero, id="std-zero"),
    pytest.param(_folder_as_checkpoint, id="folder-as-checkpoint"),
]


@pytest.mark.parametrize("make", FILES)
def test_a_bad_file_is_one_line_naming_it(make, weights, tmp_path, mnist_dir, capsys):
    """Each was a traceback (AttributeError), a message naming no file or the wrong cause
    ("holds pickled objects" for an ONNX file), or a silent ``nan%`` / ``loss nan``."""
    argv, path, says, status = make(weights, tmp_path)
    if argv[0] in ("eval", "predict"):
        argv += ["--device", "cpu"]
    if argv[0] == "eval":
        argv += ["--no-download", "--data-dir", str(mnist_dir)]
    capsys.readouterr()
    assert main(argv) == status
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("sdnet: error: ") and str(path) in lines[0], lines
    assert says in lines[0] and "pickled" not in lines[0], lines
    assert "nan" not in out.lower(), out


def test_every_option_refuses_nan_infinity_bools_and_fractions():
    """NaN or inf momentum, weight_decay, gamma, lr_mult, lr passed (the run died at step 2
    advising a lower learning rate); checkpoint_every=1.5, limit_train=True, milestones=[True]
    were accepted; lr="0.1" was a raw TypeError; warmup_epochs=nan gave "cannot convert
    float NaN to integer". Every case of every field, from TrainConfig's own types."""
    cases = option_cases()
    assert {name for name, _, _ in cases} >= {"lr", "momentum", "checkpoint_every", "milestones"}
    for name, value, says in cases:
        with pytest.raises(ConfigError) as info:
            TrainConfig(**{name: value}).validate()
        assert str(info.value).startswith(f"{name}") and says in str(info.value), (name, value)


def test_a_closed_pipe_stops_the_command_quietly():
    """``sdnet info | head -5`` ended with ``sdnet: error: [Errno 32] Broken pipe``."""
    proc = subprocess.Popen([sys.executable, "-m", "sdnet", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes anything
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141 and err == "", err


def test_train_help_groups_its_options(capsys):
    """``sdnet train --help`` listed about 40 options in one flat list."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    heads = [text.index(f"\n{g} options:\n") for g in GROUPS]
    assert heads == sorted(heads)
    ends = heads[1:] + [len(text)]
    for f in dataclasses.fields(TrainConfig):
        i = GROUPS.index(f.metadata["group"])
        flag = re.escape("--" + f.name.replace("_", "-"))
        assert re.search(rf"\n  {flag}(?![\w-])", text[heads[i] : ends[i]]), f.name


def test_an_unexpected_error_is_still_one_line(monkeypatch, capsys):
    """A bug reaches the user as one line with what it was, not as a traceback."""

    def broken(args: Any) -> int:
        raise IndexError("list index out of range")

    monkeypatch.setitem(cli_mod._HANDLERS, "info", broken)
    assert main(["info"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "sdnet: error: unexpected IndexError: list index out of range (please report this "
        "with the command)"
    ]
