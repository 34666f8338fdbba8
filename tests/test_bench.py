"""`famegui bench`: the reference loop written from the paper's equations agrees with famegui's loop, and
the flags a user can get wrong give one clear line."""
from __future__ import annotations

import pytest

from famegui.bench import bench_cells_against_reference, bench_pairs_against_reference
from famegui.cli import main


@pytest.mark.parametrize("argv,exit_code,words", [
    (["bench", "--methods", "nosuch"], 2, "unknown method 'nosuch'"),
    (["bench", "--batch", "0"], 2, "--batch: must be a whole number from 1"),
    (["bench", "--iterations", "0"], 2, "--iterations: must be a whole number from 1"),
    (["bench", "--model", "resnet18", "--weights", "random", "--layer", "fc"], 1, "not a (C,H,W) feature map"),
    (["bench", "--model", "resnet18", "--weights", "random", "--layer", "nosuch"], 1, "has no layer 'nosuch'"),
])
def test_bench_flags_fail_with_one_line(argv, exit_code, words, capsys):
    assert main(argv) == exit_code
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


def test_reference_loop_agrees_with_famegui_on_cells(dlib):
    """The reference (full network, batch 1, own loss and post-processing) and the batched, cropped sheet
    give the same maps: the crop and the batch change nothing."""
    row = bench_cells_against_reference(dlib, "stage1", iterations=3, ref_cells=2)
    assert row["crop"] is not None and row["batch"] >= 2
    assert min(row["corr_with_reference"]) >= 0.999, row


def test_reference_loop_agrees_with_famegui_on_pairs(dlib):
    rows = bench_pairs_against_reference(dlib, iterations=3, fast={})  # no convergence stop: same maps
    assert {(r["pair"], r["map"]) for r in rows} >= {("genuine", "e+"), ("genuine", "e-"), ("impostor", "e-")}
    for r in rows:
        corr = r["corr_with_reference"]
        assert min(corr if isinstance(corr, list) else [corr]) >= 0.999, r


def test_the_reference_runs_on_the_plain_layout(dlib):
    """The reference loop stands for a plain PyTorch script: PyTorch's default weight layout, not the
    channels-last one famegui keeps (a copy; famegui's own model is left as it is)."""
    import torch

    from famegui.bench import plain_model

    def conv(m):
        return next(c for c in m.module.modules() if isinstance(c, torch.nn.Conv2d)).weight

    plain = plain_model(dlib)
    assert conv(plain).is_contiguous() and not conv(plain).is_contiguous(memory_format=torch.channels_last)
    assert conv(dlib).is_contiguous(memory_format=torch.channels_last)
