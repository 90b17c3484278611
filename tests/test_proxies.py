"""FISH proxy codes (fgbench.blocks.proxies): the properties CNET and Multi-FusNet rely on."""

from __future__ import annotations

import itertools

import pytest
import torch

import fgbench
from fgbench.blocks.proxies import _balanced_sign, _make_distinct, _subsets_by_cost, solve_fish_proxies


@pytest.mark.parametrize("num_classes, bits", [(200, 12), (12, 12), (12, 48), (100, 24), (555, 32), (5, 4)])
def test_codes_binary_balanced_distinct(num_classes: int, bits: int) -> None:
    res = solve_fish_proxies(num_classes, bits, seed=3)
    codes = res.codes
    assert codes.shape == (num_classes, bits) and codes.dtype == torch.float32
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    # balanced B step: each bit +1 for half the classes; the distinct step moves few classes
    assert res.bit_balance().abs().max() <= 1 / num_classes + 4 * res.repaired / num_classes + 1e-6
    assert res.bit_balance().abs().max() <= 0.2
    assert len({tuple(r) for r in codes.tolist()}) == num_classes
    assert res.min_hamming_distance() >= 1
    assert res.proxies.shape == (num_classes, bits)


def test_plain_scheme_collides_at_200_classes_12_bits() -> None:
    """Why the balanced/distinct steps exist: the papers' plain scheme is not enough."""
    plain = solve_fish_proxies(200, 12, seed=0, balanced=False, distinct=False)
    assert len({tuple(r) for r in plain.codes.tolist()}) < 200
    fixed = solve_fish_proxies(200, 12, seed=0)
    assert len({tuple(r) for r in fixed.codes.tolist()}) == 200
    assert fixed.repaired > 0


@pytest.mark.parametrize("balanced", [True, False])
def test_objective_never_increases_and_decreases_overall(balanced: bool) -> None:
    res = solve_fish_proxies(200, 24, iterations=15, seed=1, balanced=balanced)
    obj = res.objective
    assert len(obj) == 15
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(obj))
    assert obj[-1] < obj[0]


def test_deterministic_given_seed_and_seed_matters() -> None:
    a = fgbench.fish_proxy_codes(50, 12, seed=7)
    b = fgbench.fish_proxy_codes(50, 12, seed=7)
    c = fgbench.fish_proxy_codes(50, 12, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_balanced_sign_is_the_constrained_minimiser() -> None:
    z = torch.tensor([[0.3, -0.1, 0.2, 0.5, 0.4], [-1.0, -2.0, -3.0, -0.5, -0.1]], dtype=torch.float64)
    b = _balanced_sign(z)
    assert b.tolist() == [[1.0, -1.0, -1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, 1.0, 1.0]]
    # brute force over all sign vectors with |sum| <= 1
    for row in range(2):
        best = min((sum((s - float(v)) ** 2 for s, v in zip(signs, z[row])), signs)
                   for signs in itertools.product([-1.0, 1.0], repeat=5) if abs(sum(signs)) <= 1)
        assert list(best[1]) == b[row].tolist()


def test_distinct_step_flips_least_confident_bit() -> None:
    B = torch.tensor([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    Z = torch.tensor([[0.9, 0.8], [0.5, 0.1], [-0.7, -0.9]])
    out, moved = _make_distinct(B, Z)
    assert moved == 1
    assert out[:, 0].tolist() == [1.0, 1.0, -1.0]  # the more confident class keeps its code
    assert out[:, 1].tolist() == [1.0, -1.0, -1.0]  # bit 1 has the smallest |z| for class 1


def test_subsets_enumerated_in_cost_order() -> None:
    costs = [0.1, 0.2, 0.25, 1.0]
    subsets = list(_subsets_by_cost(costs))
    assert len(subsets) == 2 ** 4 - 1 and len(set(subsets)) == 15
    totals = [sum(costs[i] for i in s) for s in subsets]
    assert totals == sorted(totals)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        solve_fish_proxies(0, 12)
