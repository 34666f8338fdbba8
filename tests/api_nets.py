"""Small networks of our own, not in any zoo: what a user has in a script. Built with fixed seeds so that
the command line (as an entry point, ``api_nets:make_classifier``) and ``famegui.wrap`` get the same weights."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class TinyNet(nn.Module):
    """Three convolution blocks and a linear head: class scores (10) or an embedding (32)."""

    def __init__(self, outputs: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("stem", nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())),
            ("block1", nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())),
            ("block2", nn.Sequential(nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU())),
        ]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def _seeded(outputs: int) -> TinyNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        net = TinyNet(outputs)
        net.features.stem[1].running_mean.uniform_(-0.1, 0.1)  # a BatchNorm that is not the identity
        net.features.stem[1].running_var.uniform_(0.5, 1.5)
    return net.eval()


def make_classifier() -> TinyNet:
    return _seeded(10)


def make_embedder() -> TinyNet:
    return _seeded(32)
