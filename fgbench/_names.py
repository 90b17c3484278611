"""Registry names that become folder and file names: one rule for methods, datasets and protocols.

A record lives at ``<results>/<protocol>/<dataset>/<method>/bits<B>-seed<S>.json``
and a leaderboard at ``<out>/<dataset>[-<protocol>].md``, so these names are
path components.  :func:`validate_name` is applied when a plugin registers a
method or dataset (``MethodSpec.validate``, ``DatasetSpec.validate``) and when
a record is read (:func:`fgbench.records.read_record`): a name is 1 to
64 lower-case ASCII letters, digits, ``-`` or ``_``, starting with a letter —
so never a separator, ``..``, an absolute path, a control character (such as a
newline) or a name some file systems reject.
"""

from __future__ import annotations

import re

from fgbench.errors import InvalidNameError

NAME_PATTERN = r"[a-z][a-z0-9_-]{0,63}"
NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = "1-64 lower-case letters, digits, '-' or '_', starting with a letter"


def _shown(name: object) -> str:
    text = repr(name)  # repr: a newline or other control character shows as an escape, on one line
    return text if len(text) <= 80 else text[:77] + "..."


def is_valid_name(name: object) -> bool:
    """Whether ``name`` follows the rule of :func:`validate_name`."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def validate_name(kind: str, name: object) -> str:
    """``name`` itself when it is a valid ``kind`` name (``"method"``, ``"dataset"``, ``"protocol"``).

    Raises:
        InvalidNameError: one line naming the kind, the name (as ``repr``) and the rule.
    """
    if not is_valid_name(name):
        raise InvalidNameError(f"invalid {kind} name {_shown(name)}: use {NAME_RULE} (names become folder and "
                               f"file names)")
    return name  # type: ignore[return-value]
