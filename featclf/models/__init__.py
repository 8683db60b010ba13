"""Networks by name, file or object: one :func:`load_network`, one :class:`Network`.

featclf's own digit networks (``lenet5``, ``seed_cnn``) are registered by name; every
torchvision classification model is available under its torchvision name, and every timm model
as ``"timm/<name>"`` (``"timm/convnext_tiny"``, ``"timm/vit_small_patch14_dinov2.lvd142m"``;
:mod:`featclf.models.timm_backbones`, needs ``pip install featclf[timm]``). Transformers' token
outputs pool by ``pooling="cls"``/``"mean"``; ``layer=last_blocks(4)`` reads the last four
blocks (:mod:`featclf.models.tokens`).

Examples
--------
>>> from featclf.models import list_models, load_network
>>> net = load_network("seed_cnn", num_classes=2)
>>> net.arch, net.feature_dim, net.weights.kind
('seed_cnn', 128, 'random')
"""

from featclf.models.head import feature_model, find_head, layer_names
from featclf.models.network import (
    Network,
    UntrainedWeightsWarning,
    WeightsSource,
    get_model,
    load_network,
)
from featclf.models.registry import ModelSpec, get_model_spec, list_models, register_model
from featclf.models.seed import LeNet5, SeedCNN  # importing seed registers lenet5, seed_cnn
from featclf.models.tokens import last_blocks
from featclf.models.weights import (
    Checkpoint,
    CheckpointError,
    MissingWeightsError,
    WeightsError,
    read_checkpoint,
    save_checkpoint,
)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "LeNet5",
    "MissingWeightsError",
    "ModelSpec",
    "Network",
    "SeedCNN",
    "UntrainedWeightsWarning",
    "WeightsError",
    "WeightsSource",
    "feature_model",
    "find_head",
    "get_model",
    "get_model_spec",
    "last_blocks",
    "layer_names",
    "list_models",
    "load_network",
    "read_checkpoint",
    "register_model",
    "save_checkpoint",
]
