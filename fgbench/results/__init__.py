"""From run records to what people read: leaderboards (:mod:`.leaderboard`), their significance tests
(:mod:`.stats`) and figures (:mod:`.figures`).

The record schema itself (:mod:`fgbench.records`) sits below this layer, so the
engine that writes records never imports ``results``.
"""
