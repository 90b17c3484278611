"""fgbench.adsh_update_database_codes / outer_iteration_epochs: ADSH's V step (AAAI 2018, Sec. 3.2.2, Alg. 1)."""

from __future__ import annotations

import pytest
import torch

from fgbench import Protocol, adsh_update_database_codes, outer_iteration_epochs


def _explicit(u: torch.Tensor, v: torch.Tensor, s: torch.Tensor, gamma: float) -> torch.Tensor:
    """The same bit-wise step with the explicit n x n similarity matrix (ADSH Eq. 6-9, Q = k S^T U + gamma U)."""
    bits = u.shape[1]
    q = bits * s.T @ u + gamma * u
    v = v.clone()
    for k in range(bits):
        rest = [j for j in range(bits) if j != k]
        column = q[:, k] - v[:, rest] @ (u[:, rest].T @ u[:, k])
        v[:, k] = torch.where(column >= 0, 1.0, -1.0)  # sign, with 0 -> +1
    return v


@pytest.mark.parametrize("dissimilar, gamma", [(-1.0, 200.0), (-0.25, 0.0)])
def test_update_equals_the_explicit_similarity_matrix_form(dissimilar: float, gamma: float) -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(20) % 4
    u = torch.tanh(2.0 * torch.randn(20, 12, generator=g))
    u[::3] = 0.0  # rows outside Omega count as zero
    v = torch.where(torch.randn(20, 12, generator=g) >= 0, 1.0, -1.0)
    before = v.clone()
    s = torch.where(labels[:, None] == labels[None, :], 1.0, dissimilar)
    new = adsh_update_database_codes(u, v, labels, 4, dissimilar, gamma)
    torch.testing.assert_close(new, _explicit(u, v, s, gamma))
    assert torch.equal(v, before) and not torch.equal(new, before)  # a new V; the given one is left alone


def test_outer_iteration_epochs_follow_the_sampling_fields() -> None:
    assert outer_iteration_epochs(Protocol()) == 1
    assert outer_iteration_epochs(Protocol(epoch_sample=2000, resample_every=30)) == 30
    assert outer_iteration_epochs(Protocol(resample_every=30)) == 1  # no sampling: every epoch ends one
