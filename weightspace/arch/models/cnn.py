"""Convolutional networks: the Small CNN Zoo shape, a 1-d CNN and a compact
depthwise/grouped CNN that exercises flatten, concatenation and GroupNorm."""

from __future__ import annotations

import torch
from torch import nn

from weightspace.arch.models._common import image_input_shape, layer_stack
from weightspace.arch.registry import register_model


@register_model(
    "cnn_small",
    input_shape=image_input_shape,
    input_kwargs={"image_size": 8},  # the network is size-agnostic
    description="Small CNN Zoo shape: 3 conv x16 (3x3, stride 2) + global avg pool + linear",
    tags=("cnn",),
)
class SmallCNN(nn.Module):
    """The Small CNN Zoo architecture (Unterthiner et al. 2020).

    ``depth`` conv layers (3x3, stride 2, ``width`` filters) with an
    activation (and optional dropout) after each, global average pooling, and
    one linear classifier. With the defaults (1 input channel, 16 filters, 3
    layers, 10 classes) it has exactly 4970 parameters, like the published zoo.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 16,
        depth: int = 3,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers, prev = layer_stack(
            lambda a, b: nn.Conv2d(a, b, 3, stride=2, padding=1), in_channels, [width] * depth, activation, dropout
        )
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model(
    "cnn1d",
    input_shape=lambda kw: (2, kw["in_channels"], kw["length"]),
    input_kwargs={"length": 40},
    description="1-d CNN for MNIST-1D style sequences",
    tags=("cnn",),
)
class CNN1d(nn.Module):
    """1-d CNN for sequences such as MNIST-1D (40 samples, 1 channel)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 32,
        depth: int = 3,
        kernel_size: int = 5,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        layers, prev = layer_stack(
            lambda a, b: nn.Conv1d(a, b, kernel_size, stride=2, padding=kernel_size // 2),
            in_channels,
            [width] * depth,
            activation,
        )
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x):
        """``x``: (B, in_channels, L)."""
        return self.classifier(self.features(x).mean(dim=-1))


@register_model(
    "mobilenet_tiny",
    input_shape=image_input_shape,
    input_kwargs={"image_size": 8},
    description="depthwise/grouped CNN with GroupNorm, concat and flatten (C x 2 x 2)",
    tags=("cnn",),
)
class TinyMobileNet(nn.Module):
    """Depthwise-separable CNN with grouped convs, GroupNorm, a two-branch
    concatenation and a flatten of C x 2 x 2 into the classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(w)
        self.dw = nn.Conv2d(w, w, 3, padding=1, groups=w, bias=False)  # depthwise
        self.dw_bn = nn.BatchNorm2d(w)
        self.pw = nn.Conv2d(w, 2 * w, 1)  # pointwise
        self.grouped = nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1, groups=4)
        self.gn = nn.GroupNorm(4, 2 * w)
        self.branch_a = nn.Conv2d(2 * w, w, 1)
        self.branch_b = nn.Conv2d(2 * w, w, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Linear(2 * w * 4, num_classes)

    def forward(self, x):
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = torch.relu(self.dw_bn(self.dw(x)))
        x = torch.relu(self.pw(x))
        x = torch.relu(self.gn(self.grouped(x)))
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        x = self.pool(torch.relu(x))
        return self.classifier(torch.flatten(x, 1))
