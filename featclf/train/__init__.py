"""End-to-end softmax training: :class:`SoftmaxClassifier`, featclf's baseline, its loop and
the training recipes per model family (:func:`recipe_for`)."""

from featclf.train.classifier import LR_SCHEDULES, OPTIMIZERS, SoftmaxClassifier
from featclf.train.loop import (
    HISTORY_COLUMNS,
    IN_MEMORY_LIMIT_BYTES,
    TrainingDivergedError,
    lr_factor,
)
from featclf.train.recipes import (
    FINE_TUNE_RECIPE,
    TRAINING_RECIPES,
    recipe_family,
    recipe_for,
)

__all__ = [
    "FINE_TUNE_RECIPE",
    "HISTORY_COLUMNS",
    "IN_MEMORY_LIMIT_BYTES",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "TRAINING_RECIPES",
    "SoftmaxClassifier",
    "TrainingDivergedError",
    "lr_factor",
    "recipe_family",
    "recipe_for",
]
