"""Memories shared by several methods (public API): buffers that hold per-training-image or per-class state.

* :class:`CodeMemory` — a memory of the whole training set's relaxed or
  binary codes, indexed by training-set position (DPSH's U, CMBH's previous
  epoch codes B and class-mean codes, ADSH/ExchNet's database codes V).
* :class:`ClassMeans` — per-class running sums and counts of vectors over
  an epoch (ExchNet's categorical anchors).

Under ``--nproc N`` the engine makes their updates collective (:mod:`fgbench.engine.distributed`).
"""

from __future__ import annotations

import torch
from torch import nn


class CodeMemory(nn.Module):
    """Codes of every training image, ``(num_train, bits)``, kept as a buffer.

    Stored in the model's state dict (so checkpoints carry it).  ``update``
    writes a batch of rows; ``binary()`` returns ``sign`` with 0 mapped to +1;
    ``class_means(labels, num_classes)`` averages rows per class.
    """

    def __init__(self, num_train: int, bits: int, init: str = "zeros", generator: torch.Generator | None = None) -> None:
        """``init``: ``"zeros"`` or ``"sign-random"`` (random +-1, drawn from ``generator``)."""
        super().__init__()
        if init == "zeros":
            codes = torch.zeros(num_train, bits)
        elif init == "sign-random":
            codes = torch.where(torch.rand(num_train, bits, generator=generator) > 0.5, 1.0, -1.0)
        else:
            raise ValueError(f"unknown init {init!r}")
        self.register_buffer("codes", codes)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Overwrite rows ``indices`` (``Batch.indices``) with ``values`` ``(len(indices), bits)``, detached.

        Under ``--nproc N`` the harness all-gathers every update, so each rank's
        memory holds the rows of the global batch.
        """
        self.codes[indices.to(self.codes.device)] = values.detach().to(self.codes.dtype)

    @torch.no_grad()
    def replace(self, values: torch.Tensor) -> None:
        """Overwrite the whole memory with ``values`` ``(num_train, bits)``, e.g. ``ctx.encode_train()`` at epoch end."""
        self.codes.copy_(values.detach().to(self.codes.dtype))

    def binary(self) -> torch.Tensor:
        """``sign`` of the codes as +-1 (0 maps to +1), ``(num_train, bits)``, in the memory's dtype."""
        return torch.where(self.codes >= 0, 1.0, -1.0).to(self.codes.dtype)

    @torch.no_grad()
    def class_means(self, labels: torch.Tensor, num_classes: int, binary: bool = True) -> torch.Tensor:
        """Per-class mean of the (binary) codes: ``(num_classes, bits)``."""
        codes = self.binary() if binary else self.codes
        labels = labels.to(codes.device).long()
        sums = torch.zeros(num_classes, codes.shape[1], device=codes.device, dtype=codes.dtype)
        sums.index_add_(0, labels, codes)
        counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).to(codes.dtype)
        return sums / counts[:, None]


class ClassMeans(nn.Module):
    """Per-class sums and counts of vectors, ``(num_classes, *shape)``, accumulated by ``add``.

    For statistics gathered from the training batches of an epoch, such as
    ExchNet's anchors (class means of each part's local feature).  Kept as
    buffers (checkpoints carry them).  Under ``--nproc N`` the harness
    all-gathers every ``add`` (as it does for ``CodeMemory.update``), so the
    sums are those of the global batches and identical on every rank.
    """

    def __init__(self, num_classes: int, shape: int | tuple[int, ...]) -> None:
        """Zero sums ``(num_classes, *shape)`` and counts ``(num_classes,)``; ``shape`` is one vector's shape."""
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.register_buffer("sums", torch.zeros(num_classes, *shape))
        self.register_buffer("counts", torch.zeros(num_classes))

    @torch.no_grad()
    def add(self, labels: torch.Tensor, values: torch.Tensor) -> None:
        """Add ``values`` (``(batch, *shape)``) to the sums of their ``labels``."""
        labels = labels.to(self.sums.device).long()
        self.sums.index_add_(0, labels, values.detach().to(self.sums.dtype))
        self.counts.index_add_(0, labels, torch.ones_like(labels, dtype=self.counts.dtype))

    def seen(self) -> torch.Tensor:
        """Bool ``(num_classes,)``: classes with at least one value since the last ``reset``."""
        return self.counts > 0

    def means(self) -> torch.Tensor:
        """``sums / counts``; rows of unseen classes are zero (check :meth:`seen`)."""
        shape = (-1,) + (1,) * (self.sums.dim() - 1)
        return self.sums / self.counts.clamp_min(1).view(shape)

    @torch.no_grad()
    def reset(self) -> None:
        """Zero the sums and counts (e.g. at the start of each epoch)."""
        self.sums.zero_()
        self.counts.zero_()
