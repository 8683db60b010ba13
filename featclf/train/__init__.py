"""End-to-end softmax training: :class:`SoftmaxClassifier`, featclf's baseline, and its loop."""

from featclf.train.classifier import LR_SCHEDULES, OPTIMIZERS, SoftmaxClassifier
from featclf.train.loop import HISTORY_COLUMNS, IN_MEMORY_LIMIT_BYTES, lr_factor

__all__ = [
    "HISTORY_COLUMNS",
    "IN_MEMORY_LIMIT_BYTES",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "SoftmaxClassifier",
    "lr_factor",
]
