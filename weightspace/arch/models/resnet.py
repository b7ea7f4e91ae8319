"""Residual networks: CIFAR-style ResNet-20 (with width multiplier) and the
ImageNet ResNet-18 / ResNet-50 (torchvision layout, written here so the
registry does not depend on torchvision)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from weightspace.arch.models._common import image_input_shape
from weightspace.arch.registry import register_model


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """The 1x1 conv + BN projection of a residual block whose shape changes, else ``None``."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


def _add_shortcut(block: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``relu(out + shortcut(x))`` of a residual block with a ``downsample`` attribute."""
    identity = x if block.downsample is None else block.downsample(x)
    return torch.relu(out + identity)


def _stages(
    block: type[nn.Module], in_planes: int, plan: Sequence[tuple[int, int]]
) -> tuple[list[nn.Sequential], int]:
    """One ``nn.Sequential`` of residual blocks per ``(planes, blocks)`` of
    ``plan``; every stage after the first starts with a stride-2 block.
    Returns the stages and the channels of the last one."""
    stages = []
    for i, (planes, n) in enumerate(plan):
        blocks = []
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            blocks.append(block(in_planes, planes, stride))
            in_planes = planes * block.expansion
        stages.append(nn.Sequential(*blocks))
    return stages, in_planes


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(in_planes, planes, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return _add_shortcut(self, x, self.bn2(self.conv2(out)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.downsample = _shortcut(in_planes, out_planes, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return _add_shortcut(self, x, self.bn3(self.conv3(out)))


class CifarResNet(nn.Module):
    """ResNet-6n+2 for small images (He et al. 2016, CIFAR variant) with
    BatchNorm and a width multiplier (Git Re-Basin's ResNet20xW). Downsampling
    shortcuts are 1x1 conv + BN (option B)."""

    def __init__(
        self,
        depth: int = 20,
        width: int = 1,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, ...), got {depth}")
        n = (depth - 2) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, in_planes = _stages(BasicBlock, widths[0], [(planes, n) for planes in widths])
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


# The ResNets keep small factories: each fixes a constructor argument (depth,
# block, layers) that its registry name stands for.
@register_model(
    "resnet20",
    input_shape=image_input_shape,
    input_kwargs={"image_size": 32},
    description="CIFAR ResNet-20 with BatchNorm and width multiplier",
    tags=("cnn", "resnet"),
)
def resnet20(width: int = 1, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return CifarResNet(20, width, num_classes, in_channels)


class ImageNetResNet(nn.Module):
    """torchvision's ResNet layout (7x7 stem, max-pool, four stages)."""

    def __init__(
        self,
        block: type[nn.Module],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, in_planes = _stages(block, width, [(width * 2**i, n) for i, n in enumerate(layers)])
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model(
    "resnet18",
    input_shape=image_input_shape,
    input_kwargs={"image_size": 64},  # 64 keeps tracing fast; the graph does not depend on it
    description="ResNet-18 (torchvision layout, BasicBlock x [2,2,2,2])",
    tags=("cnn", "resnet", "imagenet"),
)
def resnet18(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


@register_model(
    "resnet50",
    input_shape=image_input_shape,
    input_kwargs={"image_size": 64},
    description="ResNet-50 (torchvision layout, Bottleneck x [3,4,6,3])",
    tags=("cnn", "resnet", "imagenet"),
)
def resnet50(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels)
