"""Loss building blocks: ClassMeans (per-class sums over an epoch) and similar_pair_ratio."""

from __future__ import annotations

import torch

from fgbench import ClassMeans, similar_pair_ratio


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


def test_similar_pair_ratio_makes_the_similarity_matrix_sum_to_zero() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 5])  # uneven, class 4 empty
    ratio = similar_pair_ratio(labels, 6)
    same = labels[:, None] == labels[None, :]
    assert ratio == (9 + 4 + 16 + 1 + 1) / (121 - 31)
    s = torch.where(same, 1.0, torch.tensor(-ratio, dtype=torch.float64))
    assert abs(float(s.sum())) < 1e-9
    assert similar_pair_ratio(torch.zeros(5, dtype=torch.long), 1) == 1.0  # no dissimilar pair at all
