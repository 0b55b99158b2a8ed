"""Recipes: named option sets, their overrides, the CLI, and the paper's protocols as published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import sdnet
from sdnet.cli import main
from sdnet.config import ConfigError, TrainConfig
from sdnet.recipes import RECIPES, configure, listing, recipe_options
from sdnet.training.data import augmentation
from sdnet.training.setup import build_schedule

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_resolves_to_valid_options(name: str) -> None:
    cfg = configure(None, {"recipe": name}).validate()
    assert cfg.recipe == name
    for key, value in RECIPES[name].options.items():
        assert getattr(cfg, key) == value, key


def test_the_list_names_every_recipe_with_its_description_and_source(capsys) -> None:
    assert main(["train", "--recipe", "list"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == listing()
    for r in RECIPES.values():
        assert f"{r.name}  " in out and r.description in out and f"source: {r.source}" in out


def _typed_options(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The options ``sdnet train ARGV`` passes to sdnet.train (which is not run)."""
    seen: dict[str, Any] = {}

    def fake_train(**options: Any) -> Any:
        seen.update(options)
        raise KeyboardInterrupt("stop here")

    monkeypatch.setattr(sdnet, "train", fake_train)
    assert main(["train", *argv]) == 130
    return seen


def test_overrides_are_applied_over_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--recipe", "cifar10-resnet110-sd", "--epochs", "1", "--limit-train", "256",
            "--no-nesterov", "--momentum", "0"]  # fmt: skip
    options = _typed_options(argv, monkeypatch)
    assert options == {"recipe": "cifar10-resnet110-sd", "epochs": 1, "limit_train": 256,
                       "nesterov": False, "momentum": 0.0}  # fmt: skip
    cfg = configure(None, options).validate()
    assert (cfg.epochs, cfg.limit_train, cfg.nesterov, cfg.momentum) == (1, 256, False, 0.0)
    assert (cfg.model, cfg.weight_decay, cfg.val_split, cfg.p_last) == (
        "resnet110",
        1e-4,
        5000,
        0.5,
    )


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--recipe", "cifar11-resnet110-sd"], "recipe='cifar11-resnet110-sd' is not valid: use"),
        (["--recipe", "cifar10-resnet110-sd", "--lr", "-1"], "lr=-1.0 is not valid"),
        (["--recipe", "svhn-resnet152-sd", "--epochs", "5"], "milestones=[30, 35] is not valid"),
        (["--recipe", "seednet-blog", "--width", "2"], "width applies to ResNets only"),
    ],
)
def test_an_unknown_recipe_or_a_bad_override_is_one_line_exit_2(argv, needle, capsys) -> None:
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_the_python_api_checks_overrides_like_any_option() -> None:
    with pytest.raises(TypeError, match="did you mean p_last"):
        sdnet.train(recipe="mnist-resnet20-sd", plast=0.5)
    with pytest.raises(ConfigError, match="recipe='nope'"):
        sdnet.train(recipe="nope")
    with pytest.raises(ConfigError, match="recipe and config both given"):
        sdnet.train(TrainConfig(), recipe="default")
    assert (
        recipe_options("seednet-blog")["lr_mult"] is not RECIPES["seednet-blog"].options["lr_mult"]
    )


def test_a_short_real_run_of_a_recipe_stores_its_options_and_resumes(
    tmp_path: Path, mnist_dir: Path, capsys
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--recipe", "mnist-resnet20-sd", "--epochs", "1", "--limit-train", "192",
            "--limit-test", "100", "--batch-size", "64", "--val-split", "64", "--device", "cpu",
            "--no-progress", "--no-download", "--data-dir", str(mnist_dir),
            "--run-dir", str(run)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "test error at the best validation epoch (1, validation error" in out
    saved = json.loads((run / "config.json").read_text())
    expected = dict(RECIPES["mnist-resnet20-sd"].options, recipe="mnist-resnet20-sd", epochs=1,
                    limit_train=192, limit_test=100, batch_size=64, val_split=64)  # fmt: skip
    for key, value in expected.items():
        assert saved[key] == value, key
    result = sdnet.train(resume=run, device="cpu", progress=False)  # finished: nothing to do
    assert result.config.recipe == "mnist-resnet20-sd" and result.test_error_at_best is not None
    assert result.test_error_at_best == pytest.approx(1 - result.best["test_accuracy"])


# -- the paper's protocols, as published ------------------------------------------------------

# Huang et al. 2016, sec. 4: the settings every paper recipe shares
SHARED = dict(batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
              decay_bn_and_bias=True, drop_rule="linear", drop_mode="batch", scaling="paper",
              shortcut="A", stem_stride=1, dropped_params="update")  # fmt: skip
CIFAR = dict(SHARED, epochs=500, augment=True, crop_pad=4, val_split=5000)
SVHN = dict(SHARED, dataset="svhn", model="resnet152", epochs=50, augment=False,
            train_splits=["train", "extra"], val_per_class=[400, 200])  # fmt: skip


def _lr_by_epoch(name: str, steps_per_epoch: int = 7) -> list[float]:
    """The learning rate of the first step of every epoch of recipe ``name``."""
    cfg = configure(None, {"recipe": name}).validate()
    sched = build_schedule(cfg, steps_per_epoch)
    return [sched(e * steps_per_epoch) for e in range(cfg.epochs)]


def _drops(lrs: list[float]) -> list[tuple[int, float]]:
    """(first epoch, rate) of every change of rate (epochs count from 0)."""
    return [(e, lr) for e, lr in enumerate(lrs) if e == 0 or lr != pytest.approx(lrs[e - 1])]


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("tag, p_last", [("sd", 0.5), ("const", 1.0)])
def test_cifar_resnet110_is_the_papers_protocol(dataset: str, tag: str, p_last: float) -> None:
    name = f"{dataset}-resnet110-{tag}"
    cfg = configure(None, {"recipe": name}).validate()
    for key, value in dict(CIFAR, dataset=dataset, model="resnet110", p_last=p_last).items():
        assert getattr(cfg, key) == value, key
    # "divided by a factor of 10 after epochs 250 and 375": epochs 250.. (0-based) use 0.01
    assert _drops(_lr_by_epoch(name)) == [(0, 0.1), (250, pytest.approx(0.01)),
                                          (375, pytest.approx(0.001))]  # fmt: skip
    assert len(sdnet.build_model("resnet110").blocks) == 54


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_resnet1202_warms_up_at_001_for_10_epochs_then_drops_at_150_and_225(dataset: str) -> None:
    name = f"{dataset}-resnet1202-sd"
    cfg = configure(None, {"recipe": name}).validate()
    for key, value in dict(CIFAR, epochs=300, model="resnet1202", p_last=0.5).items():
        assert getattr(cfg, key) == value, key
    assert _drops(_lr_by_epoch(name)) == [(0, 0.01), (10, 0.1), (150, pytest.approx(0.01)),
                                          (225, pytest.approx(0.001))]  # fmt: skip


@pytest.mark.parametrize("tag, p_last", [("sd", 0.5), ("const", 1.0)])
def test_svhn_resnet152_is_the_papers_protocol(tag: str, p_last: float) -> None:
    name = f"svhn-resnet152-{tag}"
    cfg = configure(None, {"recipe": name}).validate()
    for key, value in dict(SVHN, p_last=p_last).items():
        assert getattr(cfg, key) == value, key
    assert _drops(_lr_by_epoch(name)) == [(0, 0.1), (30, pytest.approx(0.01)),
                                          (35, pytest.approx(0.001))]  # fmt: skip
    assert 6 * 25 + 2 == 152  # n = 25 blocks per stage, the README's -N 25


def test_sdnets_own_recipes_are_the_benchmark_protocol() -> None:
    digits = dict(model="resnet20", stem_stride=1, lr=0.1, momentum=0.9, nesterov=True,
                  weight_decay=5e-4, schedule="cosine", batch_size=128, epochs=15,
                  augment=True)  # fmt: skip
    fashion = dict(digits, dataset="fashion-mnist", epochs=30)
    assert RECIPES["mnist-resnet20-sd"].options == dict(digits, p_last=0.8)
    assert RECIPES["mnist-resnet20-const"].options == dict(digits, p_last=1.0)
    assert RECIPES["fashion-resnet20-sd"].options == dict(fashion, p_last=0.8)
    assert RECIPES["fashion-resnet20-const"].options == dict(fashion, p_last=1.0)
    # augmentation resolves per dataset: 2-pixel black-padded crops; flips for clothes only
    for name, hflip in (("mnist-resnet20-sd", False), ("fashion-resnet20-sd", True)):
        cfg = configure(None, {"recipe": name}).validate()
        assert augmentation(cfg) == {"crop_pad": 2, "hflip": hflip}
    blog = configure(None, {"recipe": "seednet-blog"}).validate()
    assert (blog.batch_size, blog.lr, blog.lr_mult, blog.momentum, blog.weight_decay) == (
        1, 1e-3, {"*.wh.weight": 0.01}, 0.0, 0.0)  # fmt: skip
    assert (blog.schedule, blog.init, blog.normalize, blog.epochs) == (
        "constant",
        "blog",
        "unit",
        1,
    )
    assert RECIPES["default"].options == {}


def test_the_recipes_page_lists_every_recipe_and_is_in_the_nav() -> None:
    page = (ROOT / "docs" / "recipes.md").read_text()
    for name in RECIPES:
        assert f"`{name}`" in page, name
    assert "recipes.md" in (ROOT / "mkdocs.yml").read_text()
