"""featclf's two small digit networks, registered as ``lenet5`` and ``seed_cnn``.

Both take 28x28 grey images, normalised with the MNIST statistics: that is their recipe with
random weights (a checkpoint saved by ``SoftmaxClassifier`` stores its own). Their blocks carry
the layer names of their descriptions, so ``layer="c5"`` or ``layer="f6"`` picks a layer by the
name a reader of LeCun et al. (1998) knows it by.
"""

from __future__ import annotations

import torch
from torch import nn

from featclf.data.transforms import MNIST_MEAN, MNIST_STD, ImagePreprocess
from featclf.models.registry import register_model

_MNIST = ImagePreprocess(28, 1, MNIST_MEAN, MNIST_STD)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998), for 28x28 digits padded to 32x32.

    C1 6@5x5 → S2 2x2 average pool → C3 16@5x5 → S4 → C5 120@5x5 → F6 84 → output. Tanh
    activations, as in the paper. The penultimate features (the input of ``output``) are F6's
    84 values.

    Parameters
    ----------
    num_classes : int, default=10
        Size of the output layer.
    in_channels : int, default=1
        Image channels.

    Examples
    --------
    >>> LeNet5()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d(2)  # 28x28 MNIST → the 32x32 input of the original network
        self.c1 = nn.Sequential(nn.Conv2d(in_channels, 6, 5), nn.Tanh())
        self.s2 = nn.AvgPool2d(2)
        self.c3 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.Tanh())
        self.s4 = nn.AvgPool2d(2)
        self.c5 = nn.Sequential(nn.Conv2d(16, 120, 5), nn.Tanh())
        self.flatten = nn.Flatten()
        self.f6 = nn.Sequential(nn.Linear(120, 84), nn.Tanh())
        self.output = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.s4(self.c3(self.s2(self.c1(self.pad(x)))))
        return self.output(self.f6(self.flatten(self.c5(x))))


class SeedCNN(nn.Module):
    """A small Keras-style MNIST network, for 28x28 grey images.

    Conv 4@5x5 tanh → Conv 8@3x3 tanh → max-pool 2 → Conv 16@3x3 relu → max-pool 2 →
    Dense 128 tanh → Dense ``num_classes`` (softmax is applied by the loss). Valid padding, as
    Keras' ``border_mode='valid'``: 28 → 24 → 22 → 11 → 9 → 4, so the dense layer sees 16x4x4.

    Parameters
    ----------
    num_classes : int, default=10
        Size of the output layer.
    in_channels : int, default=1
        Image channels.

    Examples
    --------
    >>> SeedCNN()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 4, 5), nn.Tanh())
        self.conv2 = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Tanh())
        self.pool1 = nn.MaxPool2d(2)
        self.conv3 = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU())
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.dense = nn.Sequential(nn.Linear(16 * 4 * 4, 128), nn.Tanh())
        self.output = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv2(self.conv1(x)))
        x = self.pool2(self.conv3(x))
        return self.output(self.dense(self.flatten(x)))


@register_model("lenet5", preprocess=_MNIST, head="output", feature_dim=84,
                description="LeNet-5: 28x28 grey padded to 32, F6 = 84 features")
def lenet5(num_classes: int = 10) -> nn.Module:
    """LeNet-5 for 28x28 grey digits."""
    return LeNet5(num_classes)


@register_model("seed_cnn", preprocess=_MNIST, head="output", feature_dim=128,
                description="small Keras-style MNIST CNN (3 convolutions), dense 128 features")
def seed_cnn(num_classes: int = 10) -> nn.Module:
    """A small Keras-style CNN for 28x28 grey digits."""
    return SeedCNN(num_classes)
