"""Small inputs never cost unbounded memory: sweep plans, device slots, image files, models.

A sweep's trials are counted before any is expanded (at most ``MAX_TRIALS``), ``max_concurrent``
is capped by the trials, trial ids are bounded in length; ``predict`` resizes before it pads,
reads only the raster formats it lists and at most ``MAX_PIXELS`` pixels; a model whose
weights and activations cannot fit is refused before anything is allocated, with the estimate
in the message. The cases that would exhaust memory run in a child process whose address space
is limited, so that a regression fails quickly instead of taking the machine's memory.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import sdnet
from sdnet.cli import main
from sdnet.config import ConfigError, TrainConfig
from sdnet.data import DATASETS
from sdnet.functional import softmax_cross_entropy, softmax_cross_entropy_backward
from sdnet.sweep.plan import MAX_ID, MAX_TRIALS, SweepPlan, check_or_write_plan
from sdnet.sweep.status import Board
from sdnet.training.setup import build_model, build_optimizer, memory_needed

Image = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").is_file(), reason="reads the address space from /proc"
)

# run in a child: ``resource`` limits the address space to what the imports took plus LIMIT
PRELUDE = """
import json, resource, sys
import numpy as np
import sdnet, sdnet.cli, sdnet.predict, sdnet.sweep, sdnet.sweep.devices, sdnet.training.setup
from PIL import Image
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + {limit} * 2**20, resource.RLIM_INFINITY))
"""


def _bounded(code: str, limit_mib: int = 512, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ``code`` after :data:`PRELUDE` (its address space limited) in a child process."""
    src = PRELUDE.format(limit=limit_mib) + textwrap.dedent(code)
    env = {"OPENBLAS_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"}
    env |= {k: os.environ[k] for k in ("PYTHONPATH", "SDNET_DATA") if k in os.environ}
    return subprocess.run([sys.executable, "-c", src], capture_output=True, text=True,
                          timeout=300, env=env, **kw)  # fmt: skip


# -- sweeps -------------------------------------------------------------------------------------
NINE_KEYS = ("lr", "momentum", "weight_decay", "gamma", "p_last", "warmup_epochs",
             "eval_batch_size", "log_every", "crop_pad")  # fmt: skip
HUGE = [
    pytest.param(
        "SweepPlan(grid={k: list(range(1, 11)) for k in KEYS})",
        "1,000,000,000 trials",
        id="grid-1e9",
    ),
    pytest.param(
        "SweepPlan(random={'lr': {'low': 0.01, 'high': 0.1}}, samples=10**12)",
        "1,000,000,000,000 trials",
        id="samples-1e12",
    ),
]


@pytest.mark.parametrize("plan, says", HUGE)
def test_huge_sweep_plans_are_refused_by_their_count(plan, says):
    """A 10^9-trial grid or samples = 1e12 allocated until a MemoryError (about 0.9 KB per
    planned trial)."""
    proc = _bounded(f"""
        from sdnet.config import ConfigError
        from sdnet.sweep.plan import SweepPlan
        KEYS = {NINE_KEYS!r}
        try:
            {plan}.validate()
        except ConfigError as exc:
            print(exc)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert says in proc.stdout and f"at most {MAX_TRIALS:,}" in proc.stdout, proc.stdout


def test_max_concurrent_is_capped_by_the_trials(tmp_path):
    """``max_concurrent = 1000000000`` built a list of a billion device slots."""
    proc = _bounded("""
        from sdnet.sweep.devices import local_slots
        print(len(local_slots("cpu", max_concurrent=10**9, n_trials=3)),
              len(local_slots("cpu", max_concurrent=10**9)))
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["3", str(MAX_TRIALS)]
    with pytest.raises(ConfigError, match="max_concurrent"):
        sdnet.sweep(grid={"lr": [0.1]}, out_dir=tmp_path / "s", max_concurrent=True)
    assert not (tmp_path / "s").exists()


def test_sweep_trials_are_validated_and_named_before_anything_is_written(tmp_path):
    """Negative seeds passed validation and every trial then failed; a trial id over 255
    bytes failed with ENAMETOOLONG after sweep.json was written."""
    out = tmp_path / "s"
    with pytest.raises(ConfigError, match=r"seeds must be whole numbers >= 0, got \[0, -1\]"):
        sdnet.sweep(grid={"lr": [0.1]}, seeds=[0, -1], out_dir=out)
    with pytest.raises(ConfigError, match="seed=-1 is not valid"):
        TrainConfig(seed=-1).validate()
    assert not out.exists()
    long = {"*." + "x" * 300 + ".weight": 0.5}
    plan = SweepPlan(grid={"lr_mult": [long, {"*.y": 0.5}]}, seeds=[0, 1]).validate()
    trials = plan.trials()
    assert all(len(t.id.encode()) <= MAX_ID for t in trials)
    assert len({t.id for t in trials}) == len(trials) == 4
    out.mkdir()
    board = Board(out, check_or_write_plan(out, plan), stream=None)
    for t in trials:
        board.start(t, "cpu")  # status/<id>.json: a name the filesystem takes
        assert (out / "status" / f"{t.id}.json").is_file()


# -- predict ------------------------------------------------------------------------------------
def _save(model: sdnet.Model, path: Path, dataset: str, mean: Any, std: Any) -> Path:
    extra = {"dataset": dataset, "mean": mean, "std": std, "normalize": "dataset"}
    return sdnet.save(model, path, extra=extra)


@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = sdnet.build_model("resnet8", in_channels=1, device="cpu", seed=3)
    return _save(model, tmp_path_factory.mktemp("m") / "model.npz", "mnist", [0.13], [0.31])


def test_predict_memory_follows_the_image_not_its_padded_square(tmp_path):
    """A 99-byte 20000x1 PNG peaked at 449 MB; 60000x1 needed 3.6 GB (more for an RGB model)
    and died with a MemoryError."""
    for w in (1, 20000, 60000):
        Image.new("L", (w, 1), 255).save(tmp_path / f"w{w}.png", optimize=True)
    assert (tmp_path / "w60000.png").stat().st_size < 200
    proc = _bounded(
        """
        import resource
        from sdnet.predict import load_image
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        load_image("w1.png")
        base = peak()
        for w in (20000, 60000):
            for shape in ((1, 28, 28), (3, 32, 32)):
                image, _ = load_image(f"w{w}.png", shape)
                assert image.shape == shape, image.shape
        print(peak() - base)
        """,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout) < 32 * 2**20, f"peak grew by {int(proc.stdout) / 2**20:.0f} MiB"


def _png_declaring(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares ``width`` x ``height`` (the pixels are not there)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))  # fmt: skip


def _bomb(path: Path) -> str:
    _png_declaring(path, 30000, 30000)  # above Pillow's own limit: refused when opened
    return "declares more pixels than sdnet predict reads (50,000,000 pixels)"


def _large(path: Path) -> str:
    _png_declaring(path, 9000, 9000)  # under Pillow's limits, above sdnet's
    return "has 9000x9000 pixels, more pixels than sdnet predict reads (50,000,000 pixels)"


def _eps(path: Path) -> str:
    path.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
                    "newpath 0 0 moveto 10 10 lineto stroke showpage\n%%EOF\n")  # fmt: skip
    return "not an image in a format read"


def _lab_tiff(path: Path) -> str:
    Image.new("LAB", (8, 8), (50, 0, 0)).save(path)
    return "cannot use its colours (mode LAB"


UNREAD = [
    pytest.param(_bomb, "bomb.png", id="declares-30000x30000"),
    pytest.param(_large, "big.png", id="declares-9000x9000"),
    pytest.param(_eps, "drawing.eps", id="eps"),
    pytest.param(_lab_tiff, "lab.tif", id="lab-tiff"),
]


@pytest.mark.parametrize("make, name", UNREAD)
def test_predict_refuses_files_it_should_not_decode(make, name, mnist_model, tmp_path,
                                                    monkeypatch, capsys):  # fmt: skip
    """A PNG declaring 30000x30000 gave a DecompressionBombError traceback; an EPS file was
    handed to Pillow's EPS reader (and so to Ghostscript); a LAB TIFF's error named no file."""
    from PIL import EpsImagePlugin

    def never(self: Any) -> None:
        raise AssertionError("the EPS reader was tried")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", never)
    path = tmp_path / name
    says = make(path)
    assert main(["predict", str(mnist_model), str(path), "--device", "cpu"]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and out == "", err
    assert lines[0].startswith(f"sdnet: error: {path}: ") and says in lines[0], lines


def test_predict_goes_on_after_a_bad_image(mnist_model, tmp_path, capsys):
    """One bad image aborted the whole batch."""
    for name in ("a.png", "c.png"):
        Image.new("L", (28, 28), 0).save(tmp_path / name)
    (tmp_path / "b.png").write_text("not an image")
    paths = [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")]
    assert main(["predict", str(mnist_model), *paths, "--device", "cpu"]) == 1
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [paths[0], paths[2]]
    assert err.strip().splitlines() == [
        f"sdnet: error: {paths[1]}: cannot read the image (not an image in a format read; "
        "formats read: PNG, JPEG, BMP, GIF, TIFF, WEBP)"
    ]


def test_predict_refuses_a_dataset_with_other_classes(tmp_path, capsys):
    """A CIFAR-100 model with ``--dataset cifar10`` raised IndexError."""
    model = sdnet.build_model("resnet8", in_channels=3, num_classes=100, device="cpu")
    path = _save(model, tmp_path / "c100.npz", "cifar100", [0.5] * 3, [0.25] * 3)
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    argv = ["predict", str(path), str(tmp_path / "x.png"), "--dataset", "cifar10"]
    assert main(argv + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"sdnet: error: {path} predicts 100 classes but cifar10 has 10: pass --dataset with "
        "the dataset the model was trained on"
    ]


# -- models ---------------------------------------------------------------------------------
TOO_LARGE = [
    pytest.param(["--model", "resnet6000002"], "model='resnet6000002' with", id="resnet6000002"),
    pytest.param(["--width", "100000"], "model='resnet8' (width=100000) with", id="width-1e5"),
]


@pytest.mark.parametrize("flags, says", TOO_LARGE)
def test_models_too_large_for_the_machine_are_refused_before_allocating(flags, says, tmp_path):
    """``--model resnet6000002`` failed after 13 s naming the run directory; ``--width
    100000`` ended in a MemoryError traceback."""
    run = tmp_path / "run"
    argv = ["train", *flags, "--device", "cpu", "--no-download", "--run-dir", str(run)]
    proc = _bounded(f"sys.exit(sdnet.cli.main({argv!r}))", limit_mib=256)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-3000:]
    assert err[0].startswith(f"sdnet: error: {says} batch_size=128 needs at least "), err
    assert "of weights and momentum" in err[0] and "available: choose a smaller" in err[0]
    assert not run.exists()


ESTIMATED = [
    pytest.param("resnet8", "mnist", 8, id="resnet8-mnist"),
    pytest.param("resnet20", "cifar10", 4, id="resnet20-cifar10"),
    pytest.param("seednet", "mnist", 16, id="seednet"),
]


@pytest.mark.parametrize("model, dataset, batch", ESTIMATED)
def test_the_memory_estimate_is_a_lower_bound_of_a_real_step(model, dataset, batch):
    """What the refusal rests on, measured: the registry's estimate (weights, momentum,
    activations) is never above the memory one training step really takes (tracemalloc: the
    model, the optimizer and one step), and not far below it."""
    cfg = TrainConfig(model=model, dataset=dataset, batch_size=batch, p_last=1.0).validate()
    info, backend = DATASETS[dataset], sdnet.get_backend("cpu")
    tracemalloc.start()
    try:
        net = build_model(cfg, SimpleNamespace(shape=info.shape, num_classes=10), backend)
        opt = build_optimizer(cfg, net)
        x = backend.asarray(np.ones((batch, *info.shape)), "float32")  # (N, C, H, W)
        logits, backprop = net(x, train=True, need_dx=False)
        _, saved = softmax_cross_entropy(logits, backend.asarray(np.zeros(batch, np.int64)))
        backprop(softmax_cross_entropy_backward(saved, 1.0))
        opt.step(opt.flat_grads())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = sum(memory_needed(cfg))
    assert estimate <= peak <= 4 * estimate, (estimate, peak)


def test_evaluation_out_of_memory_is_one_line(mnist_model, mnist_dir):
    """``sdnet eval`` under a 1 GiB address-space limit ended in a MemoryError traceback."""
    argv = ["eval", str(mnist_model), "--batch-size", "10000", "--device", "cpu",
            "--no-download", "--data-dir", str(mnist_dir)]  # fmt: skip
    proc = _bounded(f"sys.exit(sdnet.cli.main({argv!r}))", limit_mib=160)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1, proc.stderr[-3000:]
    assert err[0].startswith("sdnet: error: out of memory") and "--batch-size" in err[0]


def test_the_sweep_count_matches_the_expansion():
    """The count that bounds a plan is the number of trials it expands to."""
    plan = SweepPlan(grid={"lr": [0.1, 0.2, 0.3], "p_last": [0.5, 1.0]},
                     random={"momentum": {"low": 0.5, "high": 0.9}}, samples=2,
                     seeds=[0, 1])  # fmt: skip
    assert plan.count() == len(plan.trials()) == 24
    assert json.loads(json.dumps(plan.to_dict()))["samples"] == 2
