"""featclf's model zoo: the seed tutorials' networks and the torchvision ones they name.

Grey 28x28 digits and RGB photos work with every model: preprocessing repeats grey to RGB for
3-channel models (and converts RGB to grey for 1-channel ones) and resizes to the model's input
size: 28x28 for ``lenet5``/``seed_cnn``, the ImageNet recipe (shorter side 256, centre crop 224)
for torchvision models. Any other torchvision classification model works by its torchvision name.
"""

from __future__ import annotations

import torchvision
from torch import nn

from featclf.data.transforms import IMAGENET_MEAN, IMAGENET_STD, MNIST_MEAN, MNIST_STD
from featclf.data.transforms import ImagePreprocess as _Pre
from featclf.models.registry import register_model
from featclf.models.seed import LeNet5, SeedCNN

_MNIST = _Pre(28, 1, MNIST_MEAN, MNIST_STD)
_IMAGENET = _Pre(224, 3, IMAGENET_MEAN, IMAGENET_STD, resize=256)


@register_model("lenet5", preprocess=_MNIST, head="output", feature_dim=84,
                description="LeNet-5 (seed 002): 28x28 grey padded to 32, F6 = 84 features")
def lenet5(num_classes: int = 10) -> nn.Module:
    """LeNet-5 for 28x28 grey digits."""
    return LeNet5(num_classes)


@register_model("seed_cnn", preprocess=_MNIST, head="output", feature_dim=128,
                description="the seed tutorial's Keras MNIST CNN (seed 000), dense 128 features")
def seed_cnn(num_classes: int = 10) -> nn.Module:
    """The seed 000 Keras network for 28x28 grey digits."""
    return SeedCNN(num_classes)


def _torchvision(name: str, head: str, dim: int, note: str) -> None:
    def build(num_classes: int = 1000) -> nn.Module:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)

    build.__name__ = name
    register_model(name, preprocess=_IMAGENET, head=head, feature_dim=dim, num_classes=1000,
                   source="torchvision", description=note)(build)


_torchvision("alexnet", "classifier.6", 4096, "AlexNet (seed 002), fc7 = 4096 features")
_torchvision("vgg16", "classifier.6", 4096,
             "VGG16 (seed 003), fc7 = 4096; layer='features' gives the 7x7x512 conv block")
_torchvision("resnet18", "fc", 512, "ResNet-18 (seed 004), 512 pooled features")
_torchvision("resnet50", "fc", 2048, "ResNet-50 (seed 004), 2048 pooled features")
