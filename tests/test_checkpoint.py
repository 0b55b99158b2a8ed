"""Checkpoint files: round trips, cross-device loading, atomic writes, corrupt and foreign files.

``sdnet.save`` / ``sdnet.load`` (weights files), ``write_checkpoint`` / ``read_checkpoint`` (the
format underneath) and the training checkpoint written by ``sdnet.train``.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sdnet
from sdnet.checkpoint import FORMAT, VERSION, CheckpointError, read_checkpoint, write_checkpoint
from sdnet.functional import softmax_cross_entropy, softmax_cross_entropy_backward

ckpt_mod = importlib.import_module("sdnet.checkpoint")  # the module (sdnet.save is a function)

ROUND_TRIP = {
    "resnet8": dict(name="resnet8", in_channels=1, stem_stride=2, seed=3),
    "seednet": dict(name="seednet", seed=3),
    "resnet8-B-wide": dict(
        name="resnet8",
        in_channels=1,
        num_classes=5,
        width=2,
        shortcut="B",
        stem_stride=1,
        p_last=0.8,
        rule="uniform",
        mode="row",
        scaling="inverted",
        dtype="float64",
        seed=7,
    ),
}


# -- helpers ------------------------------------------------------------------------------------
def _build(spec: dict[str, Any], device: Any = "cpu") -> sdnet.Model:
    spec = dict(spec)
    return sdnet.build_model(spec.pop("name"), device=device, **spec)


def _batch(model: sdnet.Model, n: int = 8, seed: int = 0) -> tuple[Any, Any]:
    """A random MNIST-shaped batch on the model's device."""
    rng = np.random.default_rng(seed)
    side = 28 if model.config["name"] == "seednet" else 12
    x = rng.standard_normal((n, 1, side, side)).astype(model.dtype)
    y = rng.integers(0, model.config["num_classes"], size=n)
    return model.backend.asarray(x, model.dtype), model.backend.asarray(y)


def _train_a_little(model: sdnet.Model, steps: int = 3) -> None:
    """A few SGD steps: weights, batch-norm running statistics and step counters all move."""
    opt = sdnet.SGD(model.named_parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        x, y = _batch(model, seed=100 + step)
        model.zero_grad()
        logits, backprop = model(x, train=True)
        _, saved = softmax_cross_entropy(logits, y)
        backprop(softmax_cross_entropy_backward(saved))
        opt.step()


def _eval_logits(model: sdnet.Model, seed: int = 1) -> np.ndarray:
    x, _ = _batch(model, n=6, seed=seed)
    logits, _ = model(x, train=False)
    return model.backend.to_numpy(logits)


def _same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _meta_blob(meta: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


@contextlib.contextmanager
def _raises_naming(path: Path, match: str | None = None) -> Iterator[Any]:
    """``pytest.raises(CheckpointError)`` whose message must contain ``path`` (and ``match``)."""
    with pytest.raises(CheckpointError, match=match) as info:
        yield info
    assert str(path) in str(info.value), f"{path} not in {info.value}"


# -- round trips --------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_save_load_round_trip_is_exact(spec, tmp_path):
    model = _build(spec)
    before = model.state_dict()
    _train_a_little(model)
    after = model.state_dict()
    if spec["name"] != "seednet":  # batch norm: running statistics moved
        assert not np.array_equal(before["bn1.running_mean"], after["bn1.running_mean"])
        assert after["bn1.num_batches_tracked"] == 3

    path = sdnet.save(model, tmp_path / "model.npz", extra={"note": "round trip"})
    assert path == tmp_path / "model.npz" and path.is_file()
    loaded = sdnet.load(path)

    assert loaded.config == model.config  # name, p_last, stem_stride, shortcut, width, dtype ...
    assert type(loaded) is type(model)
    assert loaded.survival == model.survival
    _same_state(loaded.state_dict(), after)
    np.testing.assert_array_equal(_eval_logits(loaded), _eval_logits(model))

    arrays, meta = read_checkpoint(path)
    assert meta["kind"] == "weights" and meta["format"] == FORMAT and meta["version"] == VERSION
    assert meta["extra"] == {"note": "round trip"}
    assert meta["sdnet_version"] == sdnet.__version__
    assert set(arrays) == {f"model/{k}" for k in after}
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left


def test_saving_again_replaces_the_file(tmp_path):
    model = _build(ROUND_TRIP["resnet8"])
    path = tmp_path / "m.npz"
    sdnet.save(model, path)
    _train_a_little(model, steps=1)
    with pytest.raises(sdnet.WriteRefused, match="exists"):  # only when asked
        sdnet.save(model, path)
    sdnet.save(model, path, overwrite=True)
    _same_state(sdnet.load(path).state_dict(), model.state_dict())
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_checkpoints_hold_plain_npz_readable_without_pickle(tmp_path):
    model = _build(ROUND_TRIP["resnet8"])
    path = sdnet.save(model, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as z:
        assert "__meta__" in z.files
        meta = json.loads(z["__meta__"].tobytes().decode())
        assert set(meta["sha256"]) == set(z.files) - {"__meta__"}
        np.testing.assert_array_equal(z["model/conv1.weight"], model.state_dict()["conv1.weight"])


def test_write_checkpoint_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="plain numbers only"):
        write_checkpoint(tmp_path / "x.npz", {"a": np.array([{}], dtype=object)}, {})
    assert not os.listdir(tmp_path)


# -- across devices -----------------------------------------------------------------------------
def test_saved_on_a_device_loads_on_the_cpu_and_back(backend, tmp_path):
    """A checkpoint written on an accelerator loads on the CPU and the other way round
    (array_api_strict's second device stands in for the GPU on CPU-only machines)."""
    spec = ROUND_TRIP["resnet8"]
    on_dev = _build(spec, device=backend)
    _train_a_little(on_dev, steps=2)
    path = sdnet.save(on_dev, tmp_path / "dev.npz")

    on_cpu = sdnet.load(path)  # default device: cpu
    assert on_cpu.backend.name == "numpy"
    _same_state(on_cpu.state_dict(), on_dev.state_dict())
    np.testing.assert_allclose(_eval_logits(on_cpu), _eval_logits(on_dev), rtol=1e-5, atol=1e-6)

    sdnet.save(on_cpu, tmp_path / "cpu.npz")
    back = sdnet.load(tmp_path / "cpu.npz", device=backend)
    assert back.backend.xp is backend.xp and back.backend.device == backend.device
    _same_state(back.state_dict(), on_dev.state_dict())
    np.testing.assert_allclose(_eval_logits(back), _eval_logits(on_cpu), rtol=1e-5, atol=1e-6)


# -- atomic writes ------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path) -> tuple[sdnet.Model, Path, bytes]:
    """A model, its weights file and that file's bytes."""
    model = _build(ROUND_TRIP["resnet8"])
    path = sdnet.save(model, tmp_path / "model.npz")
    return model, path, path.read_bytes()


def _failing_savez(exc: BaseException) -> Any:
    def savez(fh, *args, **kwds):
        fh.write(b"PK\x03\x04" + b"\0" * 4096)  # a partial zip, then the disk fills up
        raise exc

    return savez


@pytest.mark.parametrize(
    "exc",
    [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
    ids=["ENOSPC", "KeyboardInterrupt"],
)
def test_a_write_failing_midway_keeps_the_previous_checkpoint(saved, monkeypatch, exc):
    model, path, old = saved
    _train_a_little(model, steps=1)
    monkeypatch.setattr(ckpt_mod.np, "savez", _failing_savez(exc))
    with pytest.raises(type(exc)) as info:
        sdnet.save(model, path, overwrite=True)
    if isinstance(exc, OSError):
        assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(path.parent) == [path.name]  # the temporary file is gone
    assert not np.array_equal(  # the new weights were not written ...
        sdnet.load(path).state_dict()["conv1.weight"], model.state_dict()["conv1.weight"]
    )
    read_checkpoint(path)  # ... and the old file still verifies


def test_a_failing_fsync_keeps_the_previous_checkpoint(saved, monkeypatch):
    model, path, old = saved

    def fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(ckpt_mod.os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output"):
        sdnet.save(model, path, overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(path.parent) == [path.name]


def test_a_first_write_that_fails_leaves_nothing(tmp_path, monkeypatch):
    model = _build(ROUND_TRIP["resnet8"])
    monkeypatch.setattr(ckpt_mod.np, "savez", _failing_savez(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError):
        sdnet.save(model, tmp_path / "model.npz")
    assert not os.listdir(tmp_path)


# -- corrupt, truncated and foreign files -------------------------------------------------------
def test_truncated_files_are_refused(saved, tmp_path):
    _, path, data = saved
    bad = tmp_path / "cut.npz"
    for n in (
        0,
        1,
        4,
        30,
        100,
        1000,
        len(data) // 2,
        len(data) - 100,
        len(data) - 22,
        len(data) - 1,
    ):
        bad.write_bytes(data[:n])
        with _raises_naming(bad):
            read_checkpoint(bad)
        with _raises_naming(bad):
            sdnet.load(bad)


def _tiny_model_file(tmp_path: Path) -> tuple[Path, bytes, dict[str, np.ndarray]]:
    """A very small SeedNet whose weights are a known pattern; its file and its state."""
    model = sdnet.build_model("seednet", in_features=4, widths=[[4, 3, 2]], num_classes=2)
    state = model.state_dict()
    pattern = {  # distinct values in every array, so each one's bytes occur once in the file
        k: (np.arange(v.size) + 1 + 100 * i).reshape(v.shape) / 64
        for i, (k, v) in enumerate(state.items())
    }
    model.load_state_dict(pattern)
    path = sdnet.save(model, tmp_path / "tiny.npz")
    return path, path.read_bytes(), model.state_dict()


def test_a_bit_flip_in_any_array_payload_is_detected(tmp_path):
    path, data, state = _tiny_model_file(tmp_path)
    bad = tmp_path / "flipped.npz"
    flipped = 0
    for name, a in state.items():
        start = data.find(a.tobytes())  # the array's bytes, located by their known pattern
        assert start > 0 and data.find(a.tobytes(), start + 1) == -1, name
        for i in range(start, start + a.nbytes):
            b = bytearray(data)
            b[i] ^= 1 << (i % 8)
            bad.write_bytes(bytes(b))
            with _raises_naming(bad):
                read_checkpoint(bad)
            flipped += 1
    assert flipped == sum(a.nbytes for a in state.values())


@pytest.fixture(scope="module")
def every_flip(tmp_path_factory) -> dict[str, Any]:
    """Flip one bit of many bytes of a small weights file and classify what reading it does.

    Every byte of the zip's central directory and end records (the file's tail, after the last
    entry), every 3rd byte of the local headers, npy headers and arrays (every array byte is
    flipped in the test above) and every 16th byte of the metadata's JSON text.
    """
    tmp = tmp_path_factory.mktemp("flips")
    path, data, state = _tiny_model_file(tmp)
    _, meta = read_checkpoint(path)
    text = json.dumps(meta, sort_keys=True).encode()  # as written by write_checkpoint
    start, end = data.find(text), data.find(text) + len(text)
    assert start > 0
    positions = [*range(0, start, 3), *range(start, end, 16), *range(end, len(data))]
    bad = tmp / "flipped.npz"
    out: dict[str, Any] = {"detected": 0, "same": 0, "different": [], "other": {}}
    for i in positions:
        b = bytearray(data)
        b[i] ^= 1 << (i % 8)
        bad.write_bytes(bytes(b))
        try:
            arrays, _ = read_checkpoint(bad)
        except CheckpointError as exc:
            assert str(bad) in str(exc)
            out["detected"] += 1
        except Exception as exc:  # noqa: BLE001 - recorded, asserted on below
            out["other"].setdefault(f"{type(exc).__name__}: {exc}", []).append(i)
        else:
            loaded = {k[len("model/") :]: v for k, v in arrays.items()}
            if loaded.keys() == state.keys() and all(
                loaded[k].dtype == v.dtype and np.array_equal(loaded[k], v)
                for k, v in state.items()
            ):
                out["same"] += 1  # a byte zip and npy readers ignore (padding, local copies)
            else:
                out["different"].append(i)
    out["n"] = len(positions)
    return out


def test_no_bit_flip_anywhere_loads_different_weights(every_flip):
    assert every_flip["different"] == []
    assert every_flip["detected"] > every_flip["n"] // 2


def test_every_bit_flip_that_is_noticed_raises_checkpoint_error(every_flip):
    assert every_flip["other"] == {}


def _not_a_zip(f):
    f.write(b"this is not a checkpoint\n" * 10)


def _a_pickle(f):
    pickle.dump({"model": [1, 2, 3]}, f)


def _an_npy(f):
    np.save(f, np.zeros(3))


def _no_meta(f):
    np.savez(f, **{"model/conv1.weight": np.zeros((2, 2), np.float32)})


def _object_array(f):
    np.savez(f, a=np.array([{}], dtype=object))  # numpy pickles it on save


def _object_array_with_meta(f):
    meta = {"format": FORMAT, "version": VERSION, "sha256": {"a": "0"}, "kind": "weights"}
    np.savez(f, a=np.array([{}], dtype=object), __meta__=_meta_blob(meta))


def _meta(**meta: Any) -> Any:
    def write(f):
        np.savez(f, __meta__=_meta_blob(meta))

    return write


def _meta_not_json(f):
    np.savez(f, __meta__=np.frombuffer(b"\xff{not json", dtype=np.uint8))


def _meta_a_list(f):
    np.savez(f, __meta__=_meta_blob([FORMAT, VERSION]))


def _stale_checksum(f):
    a = np.arange(6, dtype=np.float32)
    meta = {"format": FORMAT, "version": VERSION, "sha256": {"model/w": ckpt_mod._sha256(a)}}
    np.savez(f, **{"model/w": a + 1, "__meta__": _meta_blob(meta)})  # re-zipped: CRCs are fine


def _unlisted_array(f):
    a = np.arange(6, dtype=np.float32)
    meta = {"format": FORMAT, "version": VERSION, "sha256": {}}
    np.savez(f, **{"model/w": a, "__meta__": _meta_blob(meta)})


def _string_array(f):
    a = np.array(["abc"])
    meta = {"format": FORMAT, "version": VERSION, "sha256": {"s": ckpt_mod._sha256(a)}}
    np.savez(f, s=a, __meta__=_meta_blob(meta))


def _sha_a_list(f):
    meta = {"format": FORMAT, "version": VERSION, "sha256": ["model/w"]}
    np.savez(f, **{"model/w": np.zeros(2, np.float32), "__meta__": _meta_blob(meta)})


FOREIGN = [
    pytest.param(_not_a_zip, None, id="text-file"),
    pytest.param(_a_pickle, "pickled", id="pickle"),
    pytest.param(_an_npy, None, id="npy-not-npz"),
    pytest.param(_no_meta, "no __meta__", id="no-metadata"),
    pytest.param(_object_array, "pickled", id="object-array"),
    pytest.param(_object_array_with_meta, "pickled", id="object-array-with-metadata"),
    pytest.param(_meta(format="something-else", version=VERSION), "format", id="wrong-format"),
    pytest.param(_meta(version=VERSION), "format None", id="no-format"),
    pytest.param(_meta(format=FORMAT, version=VERSION + 1), "version 2", id="newer-version"),
    pytest.param(_meta(format=FORMAT), "version None", id="no-version"),
    pytest.param(_meta_not_json, "corrupt metadata", id="metadata-not-json"),
    pytest.param(_meta_a_list, None, id="metadata-a-list"),
    pytest.param(_stale_checksum, "checksum mismatch in 'model/w'", id="stale-checksum"),
    pytest.param(_unlisted_array, "do not match", id="unlisted-array"),
    pytest.param(_string_array, "unsupported dtype", id="string-array"),
    pytest.param(_sha_a_list, None, id="checksums-a-list"),
]  # fmt: skip


@pytest.mark.parametrize("write, match", FOREIGN)
def test_foreign_or_corrupt_files_raise_checkpoint_error_naming_the_file(write, match, tmp_path):
    path = tmp_path / "x.npz"
    with open(path, "wb") as f:
        write(f)
    with _raises_naming(path, match):
        read_checkpoint(path)
    with _raises_naming(path, match):
        sdnet.load(path)


def test_missing_files_and_directories_raise_checkpoint_error(tmp_path):
    for path, says in ((tmp_path / "nothing.npz", "no such checkpoint"), (tmp_path, "not a file")):
        with _raises_naming(path, says):
            sdnet.load(path)
    assert issubclass(CheckpointError, ValueError)


def test_a_valid_zip_with_a_damaged_entry_is_refused(saved, tmp_path):
    """Rewrite one entry of a good file with other bytes (valid zip, valid CRC)."""
    _, path, _ = saved
    bad = tmp_path / "rezipped.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            raw = src.read(item.filename)
            if item.filename == "model/conv1.weight.npy":
                raw = raw[:-4] + b"\0\0\0\0"  # the last float becomes 0.0
            dst.writestr(item.filename, raw)
    with _raises_naming(bad, r"checksum mismatch in 'model/conv1\.weight'"):
        sdnet.load(bad)


# -- model configuration that does not fit its arrays -------------------------------------------
MISMATCH = [
    pytest.param(dict(width=2), r"do not fit resnet8 .*conv1\.weight: shape", id="width"),
    pytest.param(dict(name="resnet14"), r"do not fit resnet14 .*missing", id="depth"),
    pytest.param(dict(shortcut="B"), r"unexpected|missing", id="shortcut"),
    pytest.param(dict(in_channels=3), r"conv1\.weight: shape", id="in-channels"),
    pytest.param(dict(num_classes=7), r"fc\.weight: shape", id="classes"),
    pytest.param(dict(widthh=2), "not understood", id="unknown-key"),
    pytest.param(dict(name=None), "no model configuration", id="no-name"),
    pytest.param(dict(stem_stride=3), "stem_stride", id="bad-stride"),
    pytest.param(dict(name="vgg"), "vgg", id="unknown-model"),
]  # fmt: skip


@pytest.mark.parametrize("change, match", MISMATCH)
def test_a_model_config_that_does_not_fit_its_arrays_is_refused(change, match, tmp_path):
    model = _build(ROUND_TRIP["resnet8"])
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    config = {k: v for k, v in dict(model.config, **change).items() if v is not None}
    path = write_checkpoint(tmp_path / "m.npz", arrays, {"kind": "weights", "model": config})
    read_checkpoint(path)  # the file itself is sound
    with _raises_naming(path, match):
        sdnet.load(path)


def test_no_model_config_at_all_is_refused(tmp_path):
    path = write_checkpoint(tmp_path / "m.npz", {"model/w": np.zeros(2, np.float32)}, {})
    with _raises_naming(path, "no model configuration"):
        sdnet.load(path)


# -- what training writes -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_dir) -> sdnet.TrainResult:
    run = tmp_path_factory.mktemp("train") / "run"
    return sdnet.train(
        model="resnet8",
        epochs=1,
        batch_size=32,
        limit_train=128,
        limit_test=64,
        p_last=0.5,
        device="cpu",
        progress=False,
        download=False,
        data_dir=str(mnist_dir),
        run_dir=str(run),
    )


def _pcg64_state(state: dict[str, Any]) -> dict[str, Any]:
    assert state["bit_generator"] == "PCG64"
    gen = np.random.Generator(np.random.PCG64())
    gen.bit_generator.state = state  # a valid state dict
    return gen.bit_generator.state


def test_the_training_checkpoint_holds_everything_to_resume(tiny_run):
    r = tiny_run
    arrays, meta = read_checkpoint(r.run_dir / "checkpoint.npz")
    assert meta["kind"] == "training"
    state = r.model.state_dict()
    model_arrays = {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}
    _same_state(model_arrays, state)
    optim = {k[6:] for k in arrays if k.startswith("optim/")}
    params = {name for name, _ in r.model.named_parameters()}
    assert optim and optim <= params  # momentum buffers, keyed by parameter name
    assert set(arrays) == {f"model/{k}" for k in state} | {f"optim/{k}" for k in optim}

    assert (meta["epoch"], meta["step"], meta["step_in_epoch"]) == (1, 4, 0)  # 128 / 32
    assert set(meta["rng"]) == {"gates", "data"}
    assert _pcg64_state(meta["rng"]["gates"]) == r.model.gate_rng.bit_generator.state
    _pcg64_state(meta["rng"]["data"])
    opt = meta["optim"]
    cfg = r.config
    assert 0 < opt["lr"] <= cfg.lr  # the schedule's value at the last step
    assert (opt["momentum"], opt["nesterov"]) == (cfg.momentum, cfg.nesterov)
    assert opt["weight_decay"] == cfg.weight_decay and opt["skip_missing"] is False
    names = [n for n, _ in r.model.named_parameters()]
    assert [p for g in opt["groups"] for p in g["params"]] == names
    assert meta["history"] == json.loads(json.dumps(r.history))
    assert meta["config"] == r.config.to_dict()
    assert meta["model"] == r.model.config
    assert meta["extra"]["dataset"] == "mnist" and len(meta["extra"]["mean"]) == 1
    assert meta["partial"]["seen"] == 0  # the epoch is complete


def test_load_rebuilds_the_model_from_a_training_checkpoint_and_from_model_npz(tiny_run):
    r = tiny_run
    expected = r.model.state_dict()
    for name in ("checkpoint.npz", "model.npz"):
        model = sdnet.load(r.run_dir / name)
        assert model.config == r.model.config
        _same_state(model.state_dict(), expected)
        np.testing.assert_array_equal(_eval_logits(model), _eval_logits(r.model))
    _, meta = read_checkpoint(r.run_dir / "model.npz")
    assert meta["kind"] == "weights" and meta["extra"]["dataset"] == "mnist"
    assert not [p for p in os.listdir(r.run_dir) if p.endswith(".tmp")]
