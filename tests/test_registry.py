"""The model registry answers every question about a model name, and nothing else does."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from sdnet.backends import DTYPES

import sdnet
from sdnet import config as config_mod
from sdnet.config import ConfigError, TrainConfig
from sdnet.models import SeedNet, registry
from sdnet.models.family import ModelFamily
from sdnet.models.resnet import SHORTCUTS
from sdnet.models.seednet import FAMILY as SEEDNET
from sdnet.models.stochastic_depth import MODES, RULES, SCALINGS
from sdnet.optim.schedules import SCHEDULES
from sdnet.optim.sgd import DROPPED_PARAMS

BUILDS = [
    ("resnet8", dict(in_channels=1)),
    ("resnet14", dict(in_channels=3, shortcut="B")),
    ("resnet20", dict(in_channels=3, width=2, num_classes=7)),
    ("resnet-32", dict(in_channels=2, shortcut="B", num_classes=100)),
    ("seednet", {}),
    ("seednet", dict(widths=[[784, 12, 20], [20, 8, 10]])),
]


@pytest.mark.parametrize("name, options", BUILDS)
def test_state_size_counts_what_the_built_model_holds(name: str, options: dict) -> None:
    """The size a configuration implies (checked before a stored one is built) is exact."""
    model = sdnet.build_model(name, **options)
    family, _ = registry.resolve(name)
    held = sum(v.size for v in model.state_dict().values())
    assert family.state_size(model.config) == held


@pytest.mark.parametrize(
    "name, message",
    [
        ("resnet7", "6n+2"),
        ("resnet0", "6n+2"),
        ("vgg16", "unknown model 'vgg16': use resnet<6n+2>"),
        (20, "must be a string"),
    ],
)
def test_unknown_names_say_what_names_are(name: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        registry.resolve(name)
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(model=name).validate()  # type: ignore[arg-type]


def test_every_listed_name_resolves_and_is_small_by_one_rule() -> None:
    small = {n for n in sdnet.model_names() if registry.is_small(n)}
    assert small == {"resnet8", "resnet14", "seednet"}
    assert all(TrainConfig(model=n).is_small() == (n in small) for n in sdnet.model_names())


def test_option_vocabularies_have_one_owner() -> None:
    """The configuration checks against the owning modules' tuples, not copies of them."""
    owners = {
        "drop_mode": MODES,
        "drop_rule": RULES,
        "scaling": SCALINGS,
        "dropped_params": DROPPED_PARAMS,
        "schedule": SCHEDULES,
        "dtype": DTYPES,
        "shortcut": SHORTCUTS,
    }
    for name, owner in owners.items():
        assert config_mod._CHOICES[name] is owner, name


class TinyNet(SeedNet):
    """A model of a new family, defined in a test only: two small dense blocks."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(widths=[[784, 16, 32], [32, 8, 10]], **kwargs)  # type: ignore[arg-type]
        self.config = dict(self.config, name="tinynet")
        self.config.pop("widths")


def test_a_new_family_needs_nothing_but_its_entry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mnist_dir: Path
) -> None:
    """Registering a family is enough for build_model, the configuration, training, saving
    and loading (checkpoint size checks included): no other module knows model names."""
    tiny = dataclasses.replace(
        SEEDNET,
        name="tinynet",
        title="TinyNet",
        pattern="tinynet",
        usage="tinynet",
        listed=("tinynet",),
        build=lambda **kw: TinyNet(**{k: v for k, v in kw.items() if k != "in_channels"}),
        state_size=lambda config: 784 * 16 + 16 * 32 + 784 * 32 + 32 * 8 + 8 * 10 + 32 * 10,
        small=lambda options: False,  # so that p_L defaults to 0.5, as for deep networks
    )
    assert isinstance(tiny, ModelFamily)
    monkeypatch.setattr(registry, "FAMILIES", (*registry.FAMILIES, tiny))
    assert "tinynet" in sdnet.model_names()
    assert TrainConfig(model="tinynet").validate().survival_last() == 0.5
    result = sdnet.train(
        model="tinynet", epochs=1, limit_train=256, limit_test=100, batch_size=64,
        device="cpu", progress=False, download=False, data_dir=str(mnist_dir),
        run_dir=str(tmp_path / "run"),
    )  # fmt: skip
    assert result.model.config["name"] == "tinynet" and result.model.survival == [0.75, 0.5]
    loaded = sdnet.load(result.run_dir / "model.npz")
    assert isinstance(loaded, TinyNet)
    for (k, a), (_, b) in zip(
        loaded.named_parameters(), result.model.named_parameters(), strict=True
    ):
        np.testing.assert_array_equal(a.value, b.value, err_msg=k)
