"""What every command shares: one-line error handling, option parsers, name and ``--set`` checks, the
results folder default and the console leaderboard.  Commands import this module, never each other."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import click

from fgbench.errors import FgbenchError, PluginError, first_line
from fgbench._plugins import NamedRegistry, Registry, entry_point_packages, get_host

DEFAULT_RESULTS = Path("results")


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report what the user must fix as one ``Error: ...`` line (exit status 1); let bugs be bugs.

    * :class:`~fgbench.errors.FgbenchError`, and an ``OSError`` naming a file:
      the first line of the message.
    * An exception raised inside a plugin: one line naming the plugin's
      distribution and the exception, so it is never mistaken for a user error.
    * Anything else is a bug in fgbench: the traceback is shown.

    ``FGBENCH_DEBUG=1`` shows the traceback in every case.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; rerun the same command to resume (finished jobs are kept)") from None
        except Exception as exc:  # noqa: BLE001 - sorted into user errors, plugin errors and bugs below
            message = user_message(exc)
            if message is None or os.environ.get("FGBENCH_DEBUG"):
                raise
            raise click.ClickException(message) from None

    return wrapper


def user_message(exc: BaseException) -> str | None:
    """The one-line message for ``exc`` if it is the user's to fix or a plugin's fault; None for an fgbench bug."""
    if isinstance(exc, FgbenchError) or (isinstance(exc, OSError) and exc.filename is not None):
        return first_line(exc)
    plugin = plugin_in_traceback(exc)
    if plugin is None:
        return None
    text = str(exc).strip()
    detail = f": {text.splitlines()[0]}" if text else ""
    return (f"plugin {plugin} raised {type(exc).__name__}{detail} (a bug in that plugin; "
            f"FGBENCH_DEBUG=1 shows the traceback)")


def plugin_in_traceback(exc: BaseException) -> str | None:
    """The distribution (``name version``) of the innermost installed plugin module in ``exc``'s traceback."""
    owners = plugin_packages()
    found = None
    tb = exc.__traceback__
    while tb is not None:
        top = str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        if top in owners:
            found = owners[top]
        tb = tb.tb_next
    return found


def plugin_packages() -> dict[str, str]:
    """Top-level package of every plugin -> its source (``"distribution version"``).

    From the ``fgbench`` entry points, and from the registered specs (a
    method's ``build``, a dataset's ``load``, a metric's ``compute``) so that
    plugins registered in-process (tests, ``fgbench.testing``) count too.
    """
    owners = entry_point_packages()
    registry = get_host().registry
    for table, attr in ((registry.methods, "build"), (registry.datasets, "load"), (registry.metrics, "compute")):
        for spec in table.values():
            module = getattr(getattr(spec, attr, None), "__module__", None) or ""
            top = module.split(".")[0]
            if top and top != "fgbench" and spec.source:
                owners.setdefault(top, spec.source)
    return owners


def parse_int_list(option: str, value: str | None) -> list[int] | None:
    """``"12,48"`` -> ``[12, 48]``; None when the option was not given.

    An option given with no integer in it (``""``, ``","``) is a usage error,
    never "the default".
    """
    if value is None:
        return None
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=option) from None
    if not items:
        example = {"--seeds": "0,1,2"}.get(option, "12,48")
        raise click.BadParameter(f"{value!r}: give at least one integer, e.g. {option} {example} "
                                 f"(leave the option out for the default)", param_hint=option)
    return items


def parse_sets(values: tuple[str, ...]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """``--set method.key=value`` (method option) or ``--set key=value`` (protocol field).

    Only the syntax is checked here (``KEY=VALUE``, no empty name, no key set
    twice to different values); :func:`check_method_sets` and the protocol
    resolution check the names and values.
    """
    methods: dict[str, dict[str, str]] = {}
    protocol: dict[str, str] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: use KEY=VALUE or METHOD.KEY=VALUE", param_hint="--set")
        key, value = item.split("=", 1)
        key = key.strip()
        if "." in key:
            method, field = (part.strip() for part in key.split(".", 1))
            target = methods.setdefault(method, {})
        else:
            method, field, target = "", key, protocol
        if not field or "." in key and not method:
            raise click.BadParameter(f"{item!r}: use KEY=VALUE or METHOD.KEY=VALUE (a name is missing)",
                                     param_hint="--set")
        if field in target and target[field] != value:
            raise click.BadParameter(f"{key} is set twice ({target[field]!r} and {value!r}); give it once",
                                     param_hint="--set")
        target[field] = value
    return methods, protocol


def split_names(option: str, given: str | None, kind: str, known: list[str]) -> list[str] | None:
    """The names in a comma-separated option; None when it was not given.

    Given but empty (``""``, ``","``) or with a name twice is a usage error
    naming the option and the ``known`` names.
    """
    if given is None:
        return None
    names = [n.strip() for n in given.split(",") if n.strip()]
    if not names:
        example = known[0] if known else "NAME"
        raise click.BadParameter(f"give at least one {kind} name, e.g. {option} {example} "
                                 f"(available: {', '.join(known) or '(none)'}, or all)", param_hint=option)
    for i, name in enumerate(names):
        if name in names[:i]:
            raise click.BadParameter(f"{given!r}: {name} is given twice", param_hint=option)
    return names


def resolve_names(option: str, given: str | None, table: NamedRegistry[Any],
                  default: list[str] | None = None) -> list[str]:
    """Registry names from a comma-separated option: ``all``, a checked list, or ``default`` (all) when not given.

    ``table`` is a registry table (``registry.methods``); an unknown name
    raises its one-line "Unknown method 'x'. Did you mean ...?" error.
    """
    names = split_names(option, given, table.kind, table.names())
    if names is None and default is None or names == ["all"]:
        for name in sorted(table.conflicts):  # never silently one of them, nor silently none
            click.echo(f"warning: {table.conflict_message(name)}; {table.kind} {name} is left out", err=True)
    if names is None:
        return list(table.names() if default is None else default)
    if names == ["all"]:
        return table.names()
    for name in names:
        table.get(name)
    return names


def check_method_sets(registry: Registry, method_sets: Mapping[str, Mapping[str, str]],
                      selected: Sequence[str]) -> list[str]:
    """Check every ``--set METHOD.KEY=VALUE`` against its method's config, selected or not.

    The method must exist, each key be a field of its config and each value
    convert (``MethodSpec.make_config``); otherwise a usage error on
    ``--set``.  Returns one warning line per method that is valid but not in
    ``selected`` (its settings have no effect).
    """
    notes = []
    for name, values in method_sets.items():
        shown = " ".join(f"{name}.{k}={v}" for k, v in values.items())
        try:
            spec = registry.methods.get(name)
        except PluginError as exc:
            raise click.BadParameter(f"{shown}: {exc}", param_hint="--set") from None
        try:
            spec.make_config(values)
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(str(exc).strip().splitlines()[0], param_hint="--set") from None
        if name not in selected:
            notes.append(f"warning: --set {shown} has no effect: method {name} is not selected "
                         f"(methods: {', '.join(selected)})")
    return notes


def print_leaderboard(results: Path, datasets: set[str] | None = None) -> None:
    """Print the measured (and paper-comparison) tables of every board in ``results``, then the boards' warnings.

    The warnings (mixed protocol settings, mixed code versions, diverged runs)
    are the ones the written pages carry, one ``warning:`` line each on stderr.
    """
    from fgbench.results.leaderboard import (board_warnings, build_boards, paper_numbers, records_frame,
                                             render_console)
    from fgbench.records import iter_records

    df = records_frame(iter_records(results))
    if datasets:
        df = df[df["dataset"].isin(datasets)]
    if df.empty:
        click.echo("no run records yet")
        return
    reg = get_host().registry
    boards = build_boards(df, paper_numbers(reg), set(reg.methods.names()))
    for board in boards:
        click.echo("\n" + render_console(board))
    click.echo(f"Significance tests and figures: {write_hint(results)}")
    for warning in board_warnings(boards):
        click.echo(f"warning: {warning}", err=True)


def write_hint(results: Path) -> str:
    """The ``fgbench leaderboard`` command that writes the pages of ``results``: beside those records
    (``<results>/leaderboards``), so a run's board never overwrites the committed ``leaderboards/`` and
    ``docs/leaderboards.md``; a bare ``--write`` (those committed pages) only for the ``records`` folder."""
    import shlex

    if Path(results).resolve() == Path("records").resolve():
        return "fgbench leaderboard --results records --write"
    where = shlex.quote(str(results))
    return f"fgbench leaderboard --results {where} --write {shlex.quote(str(Path(results) / 'leaderboards'))}"


def dataset_loader(reg: Any, data_root: Path) -> Any:
    """name -> loaded dataset, for the retrieval panels; raises when it is not on disk."""

    def load(name: str) -> Any:
        spec = reg.datasets.get(name)
        status = spec.status(data_root)
        if not status.available:
            raise LookupError(status.message or status.state)
        return spec.load(data_root)

    return load
