"""Is a finished training run diverged?  One rule, applied to the per-epoch mean losses.

A run is *diverged* when

1. any epoch's mean of any logged loss part is not finite (NaN or inf), or
2. its total loss (the ``loss`` entry) exceeds ``ABSOLUTE_LIMIT`` (1e12) in
   absolute value at any epoch, or
3. its total loss at some epoch exceeds ``GROWTH_LIMIT`` (1e6) times the
   first epoch's in absolute value *and* is above ``GROWTH_FLOOR`` (1e3), so a
   loss that starts near zero and wanders to 0.01 is not flagged.

Only the total is tested for size: a loss part may legitimately start at
zero.  The limits are far from normal runs: the bundled methods' committed
records (``records/``) lose at most about 20% of their first epoch's loss
and none exceeds 100, while an exploded run (``--set dpsh.eta=1e30``,
``--lr 1e6``) reaches 1e20 and beyond.  The runner stores the reason in the
record's ``divergence`` field (the leaderboard flags such rows) and prints
it as a warning; a non-finite loss stops training earlier (the job fails).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

ABSOLUTE_LIMIT = 1e12
GROWTH_LIMIT = 1e6
GROWTH_FLOOR = 1e3


def divergence_reason(epoch_losses: Sequence[Mapping[str, float]]) -> str | None:
    """One line saying why the run with these per-epoch mean losses diverged, or None when it did not."""
    for epoch, losses in enumerate(epoch_losses):
        for name, value in losses.items():
            if not _finite(value):
                return f"non-finite {name} ({value}) at epoch {epoch}"
    totals = [(epoch, float(losses["loss"])) for epoch, losses in enumerate(epoch_losses) if "loss" in losses]
    if not totals:
        return None
    first = abs(totals[0][1])
    for epoch, value in totals:
        if abs(value) > ABSOLUTE_LIMIT:
            return f"loss {value:.3g} at epoch {epoch} exceeds {ABSOLUTE_LIMIT:.0e} (exploded)"
        if abs(value) > GROWTH_FLOOR and abs(value) > GROWTH_LIMIT * first:
            return (f"loss {value:.3g} at epoch {epoch} is over {GROWTH_LIMIT:.0e} times epoch 0's {totals[0][1]:.3g} "
                    f"(exploded)")
    return None


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
