"""Training recipes per model family: what ``SoftmaxClassifier``'s ``None``/"auto" parameters mean.

Two families:

* **seed** (``lenet5``, ``seed_cnn``, other featclf-registered networks and custom modules): the
  seed tutorial's Keras recipe, SGD with learning rate 0.05, Keras time-based decay 1e-6 per
  batch, Nesterov momentum 0.9, batches of 100. It trains small digit networks from scratch.
* **fine-tune** (torchvision architectures, timm backbones ``"timm/<name>"`` and timm modules):
  AdamW with a small learning rate (1e-4 for the
  backbone, 1e-3 for the fresh head), weight decay 0.05, a linear warm-up over the first 10% of
  the steps and a cosine decay, batches of 32. The seed recipe's SGD at 0.05 made a ResNet-18
  diverge on a few dozen photos (validation loss in the 1e5 range); this one converges.

``validation_fraction=0`` and the number of epochs are what :func:`featclf.compare.compare`
trains with; ``SoftmaxClassifier`` takes from a recipe only the parameters left to it.

Examples
--------
>>> recipe_for("seed_cnn")["lr"], recipe_for("seed_cnn")["optimizer"]
(0.05, 'sgd')
>>> recipe = recipe_for("resnet18")
>>> recipe["optimizer"], recipe["lr"], recipe["head_lr"], recipe["warmup"], recipe["lr_schedule"]
('adamw', 0.0001, 0.001, 0.1, 'cosine')
"""

from __future__ import annotations

from typing import Any

from torch import nn

from featclf.models import Network, get_model_spec
from featclf.models.timm_backbones import _is_timm_module

__all__ = ["FINE_TUNE_RECIPE", "RECIPE_PARAMETERS", "SEED_RECIPE", "TRAINING_RECIPES",
           "recipe_family", "recipe_for"]

# The seed tutorial's optimiser (seed 000). validation_fraction=0: compare's softmax network
# learns from exactly the training images the SVMs are fitted on (the seed's Keras run held 20%
# out only to print validation scores). Values moved unchanged from featclf.compare.
SEED_RECIPE: dict[str, Any] = {
    "optimizer": "sgd", "lr": 0.05, "head_lr": None, "momentum": 0.9, "nesterov": True,
    "lr_decay": 1e-6, "lr_schedule": None, "weight_decay": 0.0, "warmup": 0.0,
    "batch_size": 100, "epochs": 10, "validation_fraction": 0.0,
}  # fmt: skip

#: The seed recipes per zoo model. LeNet-5 reaches ~0.96 on MNIST-5k's 1,000 test digits after
#: 15 epochs; seed_cnn runs the seed's 10 epochs.
TRAINING_RECIPES: dict[str, dict[str, Any]] = {
    "lenet5": {**SEED_RECIPE, "epochs": 15},
    "seed_cnn": {**SEED_RECIPE, "epochs": 10},
}

# A fresh head on a pre-trained backbone learns ten times faster than the backbone moves, so
# the features it was given are not destroyed in the first steps; warm-up keeps Adam's first,
# badly estimated steps small.
FINE_TUNE_RECIPE: dict[str, Any] = {
    "optimizer": "adamw", "lr": 1e-4, "head_lr": 1e-3, "momentum": 0.9, "nesterov": True,
    "lr_decay": 0.0, "lr_schedule": "cosine", "weight_decay": 0.05, "warmup": 0.1,
    "batch_size": 32, "epochs": 10, "validation_fraction": 0.0,
}  # fmt: skip

#: The SoftmaxClassifier parameters a recipe sets.
RECIPE_PARAMETERS: tuple[str, ...] = tuple(SEED_RECIPE)


def recipe_family(model: str | Network | nn.Module) -> str:
    """``"seed"`` or ``"fine-tune"``: which recipe ``model`` trains with.

    Examples
    --------
    >>> recipe_family("lenet5"), recipe_family("mobilenet_v3_small")
    ('seed', 'fine-tune')
    >>> recipe_family("timm/convnext_atto")
    'fine-tune'
    """
    if isinstance(model, Network):
        arch = model.arch
        if arch is None and model.module is not None and _is_timm_module(model.module):
            return "fine-tune"
    elif isinstance(model, nn.Module):
        if _is_timm_module(model):  # a timm backbone trains like a torchvision one
            return "fine-tune"
        arch = None
    elif isinstance(model, str):
        arch = model
    else:
        raise TypeError(f"recipe_for: model={model!r} is not a model name, Network or "
                        "torch.nn.Module")
    if arch is None:  # a custom module: trained from scratch, as the seed networks are
        return "seed"
    return "fine-tune" if get_model_spec(arch).source in ("torchvision", "timm") else "seed"


def recipe_for(model: str | Network | nn.Module) -> dict[str, Any]:
    """The :class:`~featclf.train.SoftmaxClassifier` parameters ``model``'s family trains with.

    Parameters
    ----------
    model : str, Network or torch.nn.Module
        A zoo name (``"lenet5"``, ``"resnet18"``...), a :class:`~featclf.models.Network` (its
        architecture decides) or a custom module (the seed recipe).

    Returns
    -------
    dict
        A fresh dict with the keys :data:`RECIPE_PARAMETERS`: the seed recipe (lenet5: 15
        epochs, seed_cnn: 10) or, for torchvision architectures, the fine-tuning recipe.

    Raises
    ------
    ValueError
        An unknown model name (the message suggests close names).

    Examples
    --------
    >>> recipe_for("lenet5")["epochs"], recipe_for("resnet18")["weight_decay"]
    (15, 0.05)
    """
    if recipe_family(model) == "fine-tune":
        return dict(FINE_TUNE_RECIPE)
    arch = model.arch if isinstance(model, Network) else model if isinstance(model, str) else None
    return dict(TRAINING_RECIPES.get(arch, SEED_RECIPE))
