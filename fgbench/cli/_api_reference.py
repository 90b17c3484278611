"""Render the API reference (docs/api-reference.md) from the public names' signatures and docstrings.

Regenerate after changing anything public (a name in ``fgbench.__all__`` or a
helper of ``fgbench.testing``, a signature, a dataclass field, a docstring)::

    python -m fgbench.cli._api_reference > docs/api-reference.md

``tests/test_docs.py`` fails when the committed file differs.  Everything
comes from :mod:`inspect` and :mod:`dataclasses`: dataclasses with their
fields (type, default), functions with their signatures, classes with the
public methods and properties fgbench defines on them (``torch.nn.Module``'s
own methods are left out).  Nothing in the page is written by hand but the
header: a gap in the reference is a gap in a docstring.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from typing import Any, Callable

#: the public helpers of ``fgbench.testing`` (docs/api.md, item 2)
TESTING_NAMES = ("build_context", "random_batch", "train_steps", "train_context", "autocast_loss",
                 "train_on_tiny_embedded", "registered_plugin", "spec_plugin", "tiny_embedded")

HEADER = """\
# API reference

<!-- Generated from the docstrings by `python -m fgbench.cli._api_reference > docs/api-reference.md`. Do not edit by hand. -->

Every public name of fgbench — `fgbench.__all__` and the test helpers of
`fgbench.testing` — with its signature, its fields (dataclasses: type and
default) or public methods (classes), and its docstring. What is public and
how it may change: [api.md](api.md); how the pieces fit into a method
plugin: [plugins.md](plugins.md).
"""

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# the default object repr, <package.private.module.Class object>: the private module path changes between
# versions of the dependency (pluggy moved HookimplMarker from _hooks to _decorators), so keep the class only
_DEFAULT_REPR = re.compile(r"<(?:[A-Za-z_][\w]*\.)+([A-Za-z_]\w*) object>")


def _text(value: Any) -> str:
    """``repr`` without memory addresses or private module paths (the page must not change between processes
    or dependency versions)."""
    return _DEFAULT_REPR.sub(r"<\1 object>", _ADDRESS.sub("", repr(value)))


def _annotation(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        text = annotation.strip()
        while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]  # a forward reference written as a string
        return text
    return inspect.formatannotation(annotation)


def _signature(obj: Callable[..., Any], skip_self: bool = False) -> str:
    """``(a: int, b: str = 'x') -> T`` with annotations as written in the source."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    parts: list[str] = []
    star_done = False
    for i, p in enumerate(sig.parameters.values()):
        if skip_self and i == 0 and p.name in ("self", "cls"):
            continue
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        if p.kind is p.VAR_POSITIONAL:
            star_done = True
        text = prefix + p.name
        ann = _annotation(p.annotation)
        if ann:
            text += f": {ann}"
        if p.default is not inspect.Parameter.empty:
            text += f" = {_text(p.default)}" if ann else f"={_text(p.default)}"
        parts.append(text)
    out = "(" + ", ".join(parts) + ")"
    ret = _annotation(sig.return_annotation)
    return out + (f" -> {ret}" if ret else "")


def _doc(obj: Any) -> str:
    doc = inspect.getdoc(obj)
    return (doc or "*(no docstring)*").strip()


_SECTION = re.compile(r"^(Attributes|Fields):\s*$")
_ENTRY = re.compile(r"^    ([A-Za-z_][\w, ]*):\s?(.*)$")


def _split_attributes(doc: str) -> tuple[str, dict[str, str]]:
    """The docstring without its ``Attributes:`` section, and that section as ``{field: description}``.

    Entries are Google style (``    name: text``, continuation lines indented
    deeper); ``a, b: text`` describes both fields.
    """
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if _SECTION.match(line)), None)
    if start is None:
        return doc, {}
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith("    ")):
        end += 1
    entries: dict[str, str] = {}
    current: list[str] = []
    for line in lines[start + 1:end]:
        match = _ENTRY.match(line)
        if match:
            current = [match.group(2).strip()]
            for name in match.group(1).split(","):
                entries[name.strip()] = current  # type: ignore[assignment]
        elif line.strip() and current is not None:
            current.append(line.strip())
    rest = "\n".join(lines[:start] + lines[end:]).strip()
    return rest, {k: " ".join(v) for k, v in entries.items()}  # type: ignore[arg-type]


def _fields_table(cls: type, meanings: dict[str, str]) -> str:
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f"`{_text(f.default)}`"
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f"`{_text(f.default_factory())}` (a new one each time)"  # type: ignore[misc]
        else:
            default = "required"
        kind = _annotation(f.type).replace("|", "\\|")
        meaning = meanings.get(f.name, "").replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{kind}` | {default.replace('|', chr(92) + '|')} | {meaning} |")
    return "\n".join(rows) + "\n"


def _members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties defined by fgbench classes in ``cls``'s MRO (not torch's, not object's)."""
    seen: dict[str, Any] = {}
    for klass in cls.__mro__:
        if not klass.__module__.startswith("fgbench"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            if isinstance(value, (staticmethod, classmethod)):
                seen[name] = value.__func__
            elif isinstance(value, property) or inspect.isfunction(value):
                seen[name] = value
    return sorted(seen.items())


def _render_class(qualname: str, cls: type) -> list[str]:
    is_dc = dataclasses.is_dataclass(cls)
    kind = "dataclass" if is_dc else "class"
    bases = [b for b in cls.__bases__ if b is not object]
    base_text = f" ({', '.join(_base_name(b) for b in bases)})" if bases else ""
    signature = _signature(cls).removesuffix(" -> None")
    doc, meanings = _split_attributes(_doc(cls)) if is_dc else (_doc(cls), {})
    out = [f"### `{qualname}`\n", f"*{kind}*{base_text}\n",
           "```python\n" + f"{qualname}{signature}" + "\n```\n", doc + "\n"]
    if is_dc:
        out.append(_fields_table(cls, meanings))
    for name, member in _members(cls):
        if isinstance(member, property):
            head = f"`{name}` *(property)*"
            ret = _annotation(inspect.signature(member.fget).return_annotation) if member.fget else ""
            head += f" → `{ret}`" if ret else ""
            body = _doc(member)
        else:
            head = f"`{name}{_signature(member, skip_self=True)}`"
            body = _doc(member)
        out.append(f"- {head}\n\n" + _indent(body) + "\n")
    return out


def _base_name(base: type) -> str:
    module = base.__module__
    if module.startswith("torch"):
        return f"`torch.nn.{base.__name__}`" if base.__name__ == "Module" else f"`{module}.{base.__name__}`"
    return f"`{base.__name__}`"


def _indent(text: str) -> str:
    return "\n".join(("  " + line) if line else "" for line in text.splitlines())


def _render(qualname: str, obj: Any) -> list[str]:
    if inspect.isclass(obj):
        return _render_class(qualname, obj)
    if inspect.isfunction(obj):
        return [f"### `{qualname}`\n", "```python\n" + f"{qualname}{_signature(obj)}" + "\n```\n", _doc(obj) + "\n"]
    return _render_value(qualname, obj)


_VALUE_NOTES = {
    "API_VERSION": "The plugin API version this fgbench implements (an `int`); a plugin declares the one it was "
                   "written against as `FGBENCH_API_VERSION` ([api.md](api.md#versioning-of-the-plugin-api)).",
    "STANDARD_BITS": "The code lengths the fine-grained hashing papers report: the default `--bits` grid.",
    "__version__": "The installed fgbench version (a `str`, PEP 440), e.g. for a plugin's own checks.",
    "hookimpl": "pluggy's `HookimplMarker(\"fgbench\")`: decorate a plugin's hook implementations with "
                "`@hookimpl` ([plugins.md](plugins.md#the-hooks)).",
    "hookspec": "pluggy's `HookspecMarker(\"fgbench\")`: marks the hook specifications in `fgbench.hookspecs` "
                "(plugins do not need it).",
}


def _render_value(qualname: str, obj: Any) -> list[str]:
    name = qualname.rsplit(".", 1)[-1]
    value = "" if name == "__version__" else f" = {_text(obj)}"
    return [f"### `{qualname}`\n", "```python\n" + f"{qualname}: {type(obj).__name__}{value}" + "\n```\n",
            _VALUE_NOTES.get(name, "*(no description)*") + "\n"]


def render_api_reference() -> str:
    """Markdown: an index, then one section per public name of ``fgbench``, then ``fgbench.testing``."""
    import fgbench
    import fgbench.testing as testing

    sections = [("fgbench", sorted(fgbench.__all__, key=str.lower), fgbench),
                ("fgbench.testing", list(TESTING_NAMES), testing)]
    parts = [HEADER]
    for module_name, names, module in sections:
        index = ", ".join(f"[`{n}`](#{_anchor(module_name, n)})" for n in names)
        parts.append(f"## `{module_name}`\n")
        parts.append(index + ".\n")
        for name in names:
            parts += _render(f"{module_name}.{name}" if module_name != "fgbench" else name, getattr(module, name))
    return "\n".join(parts)


def _anchor(module_name: str, name: str) -> str:
    """GitHub's anchor of the ``### `name` `` heading (``fgbench.testing.x`` for the helpers)."""
    heading = name if module_name == "fgbench" else f"{module_name}.{name}"
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render_api_reference())
