"""Which registered real datasets are usable under a data root (``fgbench run --datasets all``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgbench.data.base import DatasetSpec


def _specs(host_registry: Any) -> list[DatasetSpec]:
    """Dataset specs of a :class:`~fgbench.plugins.PluginHost`, ``Registry`` or dataset ``NamedRegistry``."""
    reg = getattr(host_registry, "registry", host_registry)
    reg = getattr(reg, "datasets", reg)
    return list(reg.values())


def available_datasets(host_registry: Any, root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Split the registered ``kind == "real"`` datasets into available and missing.

    Args:
        host_registry: the plugin host, its ``Registry``, or its dataset registry.
        root: the data root.

    Returns:
        ``(available names, [(name, one-line reason), ...])``, both sorted by
        name.  A dataset is available when its cheap ``status`` says "found";
        a ``status`` that raises counts as missing with the error as reason.
        The synthetic dataset (always available) is not included.
    """
    available: list[str] = []
    missing: list[tuple[str, str]] = []
    for spec in sorted(_specs(host_registry), key=lambda s: s.name):
        if spec.kind != "real":
            continue
        try:
            status = spec.status(Path(root))
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the run
            missing.append((spec.name, f"status check failed: {type(exc).__name__}: {exc}"))
            continue
        if status.available:
            available.append(spec.name)
        else:
            missing.append((spec.name, f"{status.state}: {status.message}" if status.message else status.state))
    return available, missing
