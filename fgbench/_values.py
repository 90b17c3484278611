"""Reading option values given as strings (``--set KEY=VALUE``) as the type of the field they set.

Used for method configs (:meth:`fgbench.methods.MethodSpec.make_config`) and
protocol fields (:meth:`fgbench.protocol.Protocol.replace`).  A leaf: it
imports nothing of fgbench.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any


def type_hints(cls: type) -> dict[str, Any]:
    """The resolved field annotations of ``cls`` ({} when they cannot be resolved)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only loses the fallback
        return {}


def _target_type(default: Any, annotation: Any) -> tuple[Any, bool]:
    """``(type to convert to, None allowed)`` from the default value, else from the annotation.

    The type is ``bool``/``int``/``float``/``str``, ``(tuple, item type)`` or None (unknown: keep the string).
    """
    optional = default is None
    if isinstance(default, (bool, int, float, str)):
        return type(default), optional
    if isinstance(default, tuple) and default:
        return (tuple, type(default[0])), optional
    ann = annotation
    args = typing.get_args(ann)
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        optional = optional or type(None) in args
        rest = [a for a in args if a is not type(None)]
        ann = rest[0] if len(rest) == 1 else None
        args = typing.get_args(ann)
    if ann in (bool, int, float, str):
        return ann, optional
    if typing.get_origin(ann) is tuple:
        item = args[0] if args and args[0] in (bool, int, float, str) else str
        return (tuple, item), optional
    if isinstance(default, tuple):
        return (tuple, str), optional
    return None, optional


def _convert_one(kind: type, text: str) -> Any:
    if kind is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if kind is int:
        return int(text)
    if kind is float:
        number = float(text)
        if math.isnan(number):
            raise ValueError(text)
        return number
    return text.strip()


def coerce_value(default: Any, value: Any, what: str, annotation: Any = None) -> Any:
    """Convert a CLI string to the type of ``default`` (bool, int, float, str, tuple of those).

    When ``default`` says too little (``None``, an empty tuple) the field's
    ``annotation`` decides (``int | None``, ``tuple[int, ...]``); ``none`` or
    an empty string gives None for an optional field.  Values that are not
    strings are returned unchanged.  Raises ``ValueError`` naming ``what``.
    """
    if not isinstance(value, str):
        return value
    kind, optional = _target_type(default, annotation)
    if optional and value.strip().lower() in ("", "none", "null"):
        return None
    if kind is None:
        return value
    try:
        if isinstance(kind, tuple):
            item = kind[1]
            return tuple(_convert_one(item, v) for v in value.split(",") if v.strip())
        return _convert_one(kind, value)
    except ValueError:
        name = f"{kind[1].__name__}s (comma-separated)" if isinstance(kind, tuple) else kind.__name__
        raise ValueError(f"option {what}: cannot read {value!r} as {name}") from None
