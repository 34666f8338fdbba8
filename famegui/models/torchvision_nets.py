"""What rule-based methods need to know about torchvision's ResNets (their loader is in :mod:`.zoo`).

The types are named as strings so that declaring them does not import torchvision (a second of start-up);
a torchvision model exists only once torchvision is imported, and the lookup matches the names then."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..core.structure import Network, NonNegative, ResidualBlock, children, register_block, register_network

if TYPE_CHECKING:
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

_RESNET = "torchvision.models.resnet"


@register_block(f"{_RESNET}:BasicBlock")
def _basic_structure(m: BasicBlock) -> ResidualBlock:
    branch = children(m, ("conv1", "bn1", "relu", "conv2", "bn2"))
    return ResidualBlock(branch, [] if m.downsample is None else [("", m.downsample)], post=[("", m.relu)])


@register_block(f"{_RESNET}:Bottleneck")
def _bottleneck_structure(m: Bottleneck) -> ResidualBlock:
    branch = children(m, ("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"))
    return ResidualBlock(branch, [] if m.downsample is None else [("", m.downsample)], post=[("", m.relu)])


@register_network(f"{_RESNET}:ResNet")
def _resnet_structure(m: ResNet) -> Network:
    parts = children(m, ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"))
    return Network(parts + [("", NonNegative(lambda t: torch.flatten(t, 1))), ("fc", m.fc)])
