"""fgbench.ClassMeans: per-class sums, counts and means of vectors over an epoch."""

from __future__ import annotations

import torch

from fgbench import ClassMeans


def test_means_match_a_direct_computation_and_unseen_classes_are_flagged() -> None:
    torch.manual_seed(0)
    stats = ClassMeans(4, (2, 3))
    values, labels = torch.randn(10, 2, 3), torch.tensor([0, 0, 1, 1, 1, 3, 3, 3, 3, 0])
    stats.add(labels[:6], values[:6])
    stats.add(labels[6:], values[6:])
    assert stats.seen().tolist() == [True, True, False, True]
    means = stats.means()
    for c in (0, 1, 3):
        torch.testing.assert_close(means[c], values[labels == c].mean(0))
    assert torch.equal(means[2], torch.zeros(2, 3))
    assert stats.counts.tolist() == [3.0, 3.0, 0.0, 4.0]


def test_reset_and_state_dict() -> None:
    stats = ClassMeans(3, 5)
    stats.add(torch.tensor([2]), torch.ones(1, 5))
    assert set(stats.state_dict()) == {"sums", "counts"}  # checkpoints carry them
    stats.reset()
    assert not stats.seen().any() and stats.sums.abs().sum() == 0
