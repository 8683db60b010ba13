"""Networks by name: featclf's seed models and every torchvision classifier.

Examples
--------
>>> from featclf.models import get_model, list_models
>>> m = get_model("seed_cnn", num_classes=2)
>>> sum(p.numel() for p in m.parameters()) > 0
True
"""

from featclf.models import zoo as _zoo  # noqa: F401  (registers the zoo)
from featclf.models.head import feature_model, find_head, layer_names
from featclf.models.registry import (
    ModelSpec,
    get_model,
    get_model_spec,
    list_models,
    register_model,
)
from featclf.models.seed import LeNet5, SeedCNN
from featclf.models.weights import WeightsError, read_checkpoint, save_checkpoint

__all__ = [
    "LeNet5",
    "ModelSpec",
    "SeedCNN",
    "WeightsError",
    "feature_model",
    "find_head",
    "get_model",
    "get_model_spec",
    "layer_names",
    "list_models",
    "read_checkpoint",
    "register_model",
    "save_checkpoint",
]
