"""Recipes: named sets of training options, the single place each documented protocol lives.

``sdnet.train(recipe=NAME, **overrides)`` and ``sdnet train --recipe NAME [flags]`` start from
the recipe's options (every other option at its default), then apply the overrides, which are
checked like any option. The run stores the resolved options, and the recipe's name in the
``recipe`` field, in ``config.json``: a resumed run reads them back and never looks the recipe
up again. ``sdnet train --recipe list`` prints :func:`listing`.

The paper's protocols (Huang et al., *Deep Networks with Stochastic Depth*, ECCV 2016,
arXiv:1603.09382, section 4) and where each setting comes from are in ``docs/recipes.md``.
Where the paper's text and its reference code (github.com/yueatsprograms/Stochastic_Depth,
``main.lua``) differ, the recipes follow the text, and the page says how they differ:

* the learning-rate drops: the text says "after epochs 250 and 375" (CIFAR) and "after epochs
  30 and 35" (SVHN); ``main.lua`` compares the 1-based epoch with 0.5 x 500 etc., which drops
  one epoch earlier. The CIFAR recipes use sdnet's ``step`` schedule (divided by 10 at 50% and
  75% of the steps: after epochs 250 and 375 of 500, and it scales with an ``epochs``
  override); SVHN's 60% / 70% are ``multistep`` milestones 30 and 35;
* ResNet-1202: the text trains it for 300 epochs with a learning rate of 0.01 for the first 10
  ("warm-up"), then 0.1, divided by 10 at epochs 150 and 225; the reference code has no
  1202-layer setting (its README points to fb.resnet.torch). The paper reports ResNet-1202 on
  CIFAR-10 only; the CIFAR-100 ResNet-1202 recipes apply the same protocol.

sdnet's own recipes (MNIST, Fashion-MNIST, SeedNet) are one line each: their values are tuned
elsewhere and change by editing that line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Recipe", "RECIPES", "recipe_options", "configure", "listing"]

PAPER = "Huang et al. 2016 (arXiv:1603.09382), sec. 4"
REFERENCE = "github.com/yueatsprograms/Stochastic_Depth main.lua"


@dataclass(frozen=True)
class Recipe:
    """A named set of :class:`~sdnet.config.TrainConfig` options.

    Attributes
    ----------
    name : str
    description : str
        One line: what is trained, and the paper's result where there is one.
    source : str
        Where the settings come from (``docs/recipes.md`` has them setting by setting).
    options : dict
        The options that differ from :class:`~sdnet.config.TrainConfig`'s defaults.
    """

    name: str
    description: str
    source: str
    options: dict[str, Any] = field(default_factory=dict)


# the paper's optimisation (sec. 4, "CIFAR-10"): SGD, batch 128, lr 0.1, Nesterov momentum 0.9
# with dampening 0, weight decay 1e-4 on every parameter (main.lua: optim.sgd on the flat
# parameter vector, batch-norm weights and biases included); linear rule, paper scaling,
# option-A shortcuts, stride-1 stem (the paper's network)
_OPTIMIZER: dict[str, Any] = dict(
    batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
    decay_bn_and_bias=True, decoupled_weight_decay=False, dropped_params="update",
    drop_rule="linear", drop_mode="batch", scaling="paper", shortcut="A", stem_stride=1,
)  # fmt: skip
# CIFAR: 45k/5k train/validation split, crops (4-pixel zero padding) and flips, 500 epochs,
# lr / 10 after epochs 250 and 375
_CIFAR: dict[str, Any] = dict(
    _OPTIMIZER, epochs=500, schedule="step", augment=True, crop_pad=4, val_split=5000
)
# ResNet-1202 (sec. 4, "Training with a 1202-layer ResNet"): 300 epochs, lr 0.01 for the
# first 10 epochs, then 0.1, / 10 at epochs 150 and 225 (50% and 75%: the step schedule)
_CIFAR_1202: dict[str, Any] = dict(_CIFAR, epochs=300, warmup_epochs=10.0, warmup_lr=0.01)
# SVHN (sec. 4, "SVHN"): train + extra, 6,000 validation images (400 per class from train,
# 200 per class from extra), no augmentation, 50 epochs, lr / 10 after epochs 30 and 35
_SVHN: dict[str, Any] = dict(
    _OPTIMIZER, dataset="svhn", model="resnet152", epochs=50, schedule="multistep",
    milestones=[30, 35], augment=False, train_splits=["train", "extra"], val_per_class=[400, 200],
)  # fmt: skip
# sdnet's ResNet-20 protocol for 28x28 digits (benchmarks/accuracy.py, docs/results.md):
# random 28x28 crops of the image padded by 2 black pixels (and flips for Fashion-MNIST);
# p_L = 0.8 for stochastic depth, since a 9-block network trained for 15-30 epochs underfits
# at the paper's 0.5 (docs/recipes.md says why)
_DIGITS: dict[str, Any] = dict(
    model="resnet20", stem_stride=1, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
    schedule="cosine", batch_size=128, epochs=15, augment=True,
)  # fmt: skip
_FASHION: dict[str, Any] = dict(_DIGITS, dataset="fashion-mnist", epochs=30)
DIGITS_P_LAST = 0.8  # the digit recipes' stochastic-depth survival of the last block


def _paper(dataset: str, depth: int, base: dict[str, Any], result: dict[str, str]) -> list[Recipe]:
    """The stochastic-depth (p_L = 0.5) and constant-depth recipes of one paper protocol."""
    title = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}[dataset]
    out = []
    for tag, p_last, what in (("sd", 0.5, "stochastic depth p_L = 0.5"), ("const", 1.0,
                              "constant depth")):  # fmt: skip
        paper = result.get(tag)
        reported = f"; paper: {paper} test error" if paper else "; not in the paper"
        out.append(
            Recipe(
                f"{dataset}-resnet{depth}-{tag}",
                f"ResNet-{depth} on {title}, {what}, {base['epochs']} epochs{reported}",
                f"{PAPER}; {REFERENCE}",
                dict(base, dataset=dataset, model=f"resnet{depth}", p_last=p_last),
            )
        )
    return out


_LIST: list[Recipe] = [
    *_paper("cifar10", 110, _CIFAR, {"sd": "5.25%", "const": "6.41%"}),
    *_paper("cifar100", 110, _CIFAR, {"sd": "24.98%", "const": "27.22% (Table 1: 27.76%)"}),
    *_paper("cifar10", 1202, _CIFAR_1202, {"sd": "4.91%", "const": "6.67%"}),
    *_paper("cifar100", 1202, _CIFAR_1202, {}),
    *_paper("svhn", 152, _SVHN, {"sd": "1.75%", "const": "1.80%"}),
    Recipe("mnist-resnet20-sd", "ResNet-20 on MNIST, stochastic depth p_L = 0.8, crops, 15 "
           "epochs", "sdnet (docs/results.md)", dict(_DIGITS, p_last=DIGITS_P_LAST)),
    Recipe("mnist-resnet20-const", "ResNet-20 on MNIST, constant depth, crops, 15 epochs",
           "sdnet (docs/results.md)", dict(_DIGITS, p_last=1.0)),
    Recipe("fashion-resnet20-sd", "ResNet-20 on Fashion-MNIST, stochastic depth p_L = 0.8, "
           "crops and flips, 30 epochs", "sdnet (docs/results.md)",
           dict(_FASHION, p_last=DIGITS_P_LAST)),
    Recipe("fashion-resnet20-const", "ResNet-20 on Fashion-MNIST, constant depth, crops and "
           "flips, 30 epochs", "sdnet (docs/results.md)", dict(_FASHION, p_last=1.0)),
    Recipe("default", "sdnet.train() as it is: ResNet-8 on MNIST, 2 epochs",
           "sdnet (TrainConfig defaults)", {}),
    Recipe("seednet-blog", "SeedNet, the blog's recipe: batch 1, plain SGD, its init and [0, 1] "
           "inputs, 1 epoch", "the blog SeedNet comes from (docs/models.md)",
           dict(model="seednet", batch_size=1, lr=1e-3, lr_mult={"*.wh.weight": 0.01},
                momentum=0.0, nesterov=False, weight_decay=0.0, schedule="constant",
                p_last=1.0, epochs=1, init="blog", normalize="unit")),
    Recipe("seednet-sound", "SeedNet with a sound recipe: batch 128, Nesterov, weight decay, "
           "cosine, 10 epochs", "sdnet (docs/results.md)",
           dict(model="seednet", batch_size=128, lr=0.05, momentum=0.9, nesterov=True,
                weight_decay=5e-4, schedule="cosine", p_last=1.0, epochs=10)),
]  # fmt: skip
RECIPES: dict[str, Recipe] = {r.name: r for r in _LIST}


def recipe_options(name: Any) -> dict[str, Any]:
    """A copy of recipe ``name``'s options, with ``recipe=name``.

    Raises
    ------
    ConfigError
        No such recipe; the message lists those that exist.
    """
    from sdnet.config import ConfigError

    if not isinstance(name, str) or name not in RECIPES:
        raise ConfigError(
            f"recipe={name!r} is not valid: use one of {', '.join(RECIPES)} "
            "(sdnet train --recipe list describes them)"
        )
    copied = {k: (type(v)(v) if isinstance(v, (dict, list)) else v)
              for k, v in RECIPES[name].options.items()}  # fmt: skip
    return {**copied, "recipe": name}


def configure(config: Any, options: dict[str, Any]) -> Any:
    """The :class:`~sdnet.config.TrainConfig` of ``sdnet.train(config, **options)``, not yet
    validated: ``options`` over ``config``, or over the recipe ``options["recipe"]``."""
    from sdnet.config import ConfigError, TrainConfig

    name = options.get("recipe")
    if name is None:
        return (config or TrainConfig()).replace(**options)
    if config is not None:
        raise ConfigError("recipe and config both given: pass one of them (and overrides)")
    return TrainConfig(**recipe_options(name)).replace(**options)


def listing() -> str:
    """Every recipe, one line with its description and one with its source."""
    width = max(len(name) for name in RECIPES)
    lines = []
    for r in RECIPES.values():
        lines.append(f"{r.name:<{width}}  {r.description}")
        lines.append(f"{'':<{width}}  source: {r.source}")
    return "\n".join(lines)
