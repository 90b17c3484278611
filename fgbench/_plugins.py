"""The plugin manager: built-in plugins plus setuptools entry points (group ``fgbench``).

Built-in datasets and metrics are ordinary plugin modules listed in
:data:`DEFAULT_PLUGINS` and registered through the same hooks as external
plugins.  Methods come from installed distributions that declare::

    [project.entry-points.fgbench]
    mymethod = "my_package"

A plugin that fails to import, or whose hook raises or registers an invalid
spec, is recorded in :attr:`Registry.failures` (``fgbench list`` shows it)
and skipped; the others keep working.  Asking for a name such a plugin owns
(its entry point, distribution or a name it tried to register) is one line:
``method 'x' is installed (fgbench-x 0.1.0) but broken: <reason>``.  Two
plugins claiming one name make that name unusable (a conflict, listed by
``fgbench list`` with both sources; a lookup is a :class:`DuplicateNameError`
naming both and saying to uninstall one); neither is kept silently, and
their other names keep working.  Once every plugin is loaded, each method's
metadata is checked against the registered datasets
(:meth:`~fgbench.methods.MethodSpec.validate_datasets`); a plugin with an
unknown dataset name is listed broken and its registrations are removed.

Environment switches: ``FGBENCH_DISABLE_PLUGIN_AUTOLOAD=1`` loads only the
built-ins; ``FGBENCH_DISABLE_PLUGINS=a,b`` skips the named entry points.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import os
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Generic, Iterable, TypeVar

import pluggy

from fgbench import hookspecs
from fgbench.data.base import DatasetSpec
from fgbench.methods import MethodSpec
from fgbench.metrics.base import MetricSpec
from fgbench.errors import DuplicateNameError, PluginError, UnknownNameError, described, first_line

DEFAULT_PLUGINS: tuple[str, ...] = (
    "fgbench.builtins.datasets",
    "fgbench.builtins.metrics",
)
ENTRY_POINT_GROUP = "fgbench"

T = TypeVar("T")


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that was skipped: its name, where it came from, and why."""

    plugin: str
    source: str
    reason: str
    names: tuple[str, ...] = ()  # the names it registered or tried to register, when known

    def owns(self, name: str) -> bool:
        """Whether a lookup of ``name`` is probably after this plugin (its names, entry point or distribution)."""
        dist = self.source.split(" ")[0].lower().replace("_", "-")
        return name in self.names or name == self.plugin or dist in (name.lower(), f"fgbench-{name.lower()}")


class NamedRegistry(Generic[T]):
    """Name -> spec with duplicate detection and helpful lookup errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self.conflicts: dict[str, list[str]] = {}  # name -> every source that claimed it
        self.failures: list[PluginFailure] = []  # the registry's broken plugins (shared list), for lookups

    def add(self, spec: T, source: str) -> None:
        """Add ``spec``; a name taken twice becomes unusable and raises on lookup.

        Raises :class:`DuplicateNameError` (the caller records it as a failure).
        """
        name = spec.name  # type: ignore[attr-defined]
        if name in self._items:
            self.conflicts[name] = [getattr(self._items.pop(name), "source", "?")]
        if name in self.conflicts:
            self.conflicts[name].append(source)
            raise DuplicateNameError(self.conflict_message(name))
        self._items[name] = spec

    def conflict_message(self, name: str) -> str:
        sources = self.conflicts[name]
        return (f"{self.kind} {name!r} is registered by both {', '.join(sources[:-1])} and {sources[-1]}; "
                f"uninstall one of them")

    def get(self, name: str) -> T:
        if name in self.conflicts:
            raise DuplicateNameError(self.conflict_message(name))
        if name not in self._items:
            broken = [f for f in self.failures if f.owns(name)]
            if broken:
                raise PluginError(f"{self.kind} {name!r} is installed ({broken[-1].source}) but broken: "
                                  f"{broken[-1].reason}")
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(f"Unknown {self.kind} {name!r}.{hint} Available: {', '.join(sorted(self._items)) or '(none)'}")
        return self._items[name]

    def remove(self, name: str) -> None:
        """Forget ``name`` (a spec whose plugin turned out broken after loading)."""
        self._items.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._items)

    def values(self) -> list[T]:
        return [self._items[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Registry:
    """What the loaded plugins registered, plus the failures."""

    methods: NamedRegistry[MethodSpec] = field(default_factory=lambda: NamedRegistry("method"))
    datasets: NamedRegistry[DatasetSpec] = field(default_factory=lambda: NamedRegistry("dataset"))
    metrics: NamedRegistry[MetricSpec] = field(default_factory=lambda: NamedRegistry("metric"))
    failures: list[PluginFailure] = field(default_factory=list)

    def __post_init__(self) -> None:
        for table in self.tables():
            table.failures = self.failures

    def tables(self) -> tuple[NamedRegistry[Any], ...]:
        return (self.methods, self.datasets, self.metrics)

    def conflicts(self) -> list[tuple[str, str, list[str]]]:
        """``(kind, name, sources)`` of every name that two or more plugins registered (refused on lookup)."""
        return [(t.kind, name, list(sources)) for t in self.tables() for name, sources in sorted(t.conflicts.items())]


def _distribution_of(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else ep.value


def entry_point_packages() -> dict[str, str]:
    """Top-level package of every ``fgbench`` entry point -> its distribution, ``"<name> <version>"``."""
    return {ep.value.split(":")[0].split(".")[0]: _distribution_of(ep) for ep in md.entry_points(group=ENTRY_POINT_GROUP)}


def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def _check_api_version(plugin: Any, source: str) -> None:
    """Warn when ``plugin`` targets a newer API than this fgbench (the API only grows, so older targets work)."""
    target = getattr(plugin, "FGBENCH_API_VERSION", None)
    if target is not None and int(target) > hookspecs.API_VERSION:
        warnings.warn(
            f"plugin {source} targets fgbench API version {target}, this fgbench has {hookspecs.API_VERSION} "
            f"(the plugin is newer); it may not work as intended: upgrade fgbench",
            stacklevel=3,
        )


class PluginHost:
    """Loads plugins and collects their registrations into a :class:`Registry`."""

    def __init__(self) -> None:
        self.pm = make_plugin_manager()
        self.registry = Registry()
        self._sources: dict[int, str] = {}
        self._owners: dict[tuple[str, str], tuple[str, Any]] = {}  # (kind, name) -> (plugin name, plugin)

    # ------------------------------------------------------------------ loading
    def register_plugin(self, plugin: Any, name: str | None = None, source: str | None = None) -> None:
        """Register a plugin object/module and collect what it registers.

        A plugin whose hooks raise, or that registers an invalid spec, is
        recorded as a failure and unregistered.
        """
        pname = name or getattr(plugin, "__name__", None) or repr(plugin)
        src = source or pname
        if self.pm.is_registered(plugin) or self.pm.has_plugin(pname):
            return
        _check_api_version(plugin, src)
        try:
            self.pm.register(plugin, name=pname)
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - pluggy raises several types
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self.registry.failures.append(PluginFailure(pname, src, described(exc)))
            return
        self._collect(plugin, pname, src)

    def _collect(self, plugin: Any, pname: str, src: str) -> None:
        staged: list[tuple[NamedRegistry, Any]] = []
        tried: list[str] = []

        def stage(reg: NamedRegistry, spec_type: type) -> Callable[[Any], None]:
            def register(spec: Any) -> None:
                if not isinstance(spec, spec_type):
                    raise PluginError(f"register() expects a {spec_type.__name__}, got {type(spec).__name__}")
                if isinstance(getattr(spec, "name", None), str):
                    tried.append(spec.name)
                spec.validate()
                staged.append((reg, spec))

            return register

        hooks = (
            ("register_methods", self.registry.methods, MethodSpec),
            ("register_datasets", self.registry.datasets, DatasetSpec),
            ("register_metrics", self.registry.metrics, MetricSpec),
        )
        try:
            for hook_name, reg, spec_type in hooks:
                impls = [i for i in getattr(self.pm.hook, hook_name).get_hookimpls() if i.plugin is plugin]
                for impl in impls:
                    impl.function(**{a: stage(reg, spec_type) for a in impl.argnames})
        except Exception as exc:  # noqa: BLE001
            self.pm.unregister(plugin)
            self.registry.failures.append(PluginFailure(pname, src, described(exc), tuple(tried)))
            return
        for reg, spec in staged:
            try:
                reg.add(_with_source(spec, src), src)
                self._owners[(reg.kind, spec.name)] = (pname, plugin)
            except DuplicateNameError:
                pass  # the name is now a conflict: listed with every source, refused on lookup

    def validate_metadata(self) -> None:
        """After loading: every method's metadata against the registered datasets; a plugin that fails is broken.

        Its registrations are removed and it is listed in :attr:`Registry.failures`
        with the one-line reason of :meth:`MethodSpec.validate_datasets`.
        """
        reg = self.registry
        known = set(reg.datasets.names()) | set(reg.datasets.conflicts)
        broken: dict[str, tuple[str, Any, str]] = {}  # plugin name -> (source, plugin, reason)
        for spec in reg.methods.values():
            try:
                spec.validate_datasets(known)
            except ValueError as exc:
                pname, plugin = self._owners.get(("method", spec.name), (spec.source, None))
                broken.setdefault(pname, (spec.source, plugin, first_line(exc)))
        for pname, (source, plugin, reason) in broken.items():
            names = tuple(n for (kind, n), (owner, _p) in self._owners.items() if owner == pname)
            for table in reg.tables():
                for name in names:
                    if self._owners.get((table.kind, name), ("",))[0] == pname:
                        table.remove(name)
            if plugin is not None and self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            reg.failures.append(PluginFailure(pname, source, reason, names))

    def load_builtins(self) -> None:
        for modname in DEFAULT_PLUGINS:
            self.register_plugin(importlib.import_module(modname), name=modname, source="fgbench (built-in)")

    def load_entry_points(self, disabled: Iterable[str] = ()) -> None:
        disabled = set(disabled)
        try:
            eps = md.entry_points(group=ENTRY_POINT_GROUP)
        except TypeError:  # pragma: no cover - very old importlib.metadata
            eps = md.entry_points().get(ENTRY_POINT_GROUP, [])
        seen: set[tuple[str, str]] = set()
        for ep in sorted(eps, key=lambda e: (e.name, e.value)):
            if ep.name in disabled or (ep.name, ep.value) in seen:
                continue
            seen.add((ep.name, ep.value))
            source = _distribution_of(ep)
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import error
                self.registry.failures.append(PluginFailure(ep.name, source, described(exc)))
                continue
            self.register_plugin(plugin, name=ep.name, source=source)


def _with_source(spec: Any, source: str) -> Any:
    if getattr(spec, "source", None):
        return spec
    import dataclasses

    return dataclasses.replace(spec, source=source)


_HOST: PluginHost | None = None


def load_plugins(autoload: bool | None = None, extra: Iterable[ModuleType | Any] = ()) -> PluginHost:
    """A new host with the built-ins, the entry points (unless disabled) and ``extra`` plugins."""
    host = PluginHost()
    host.load_builtins()
    if autoload is None:
        autoload = os.environ.get("FGBENCH_DISABLE_PLUGIN_AUTOLOAD", "") not in ("1", "true", "yes")
    if autoload:
        disabled = [p.strip() for p in os.environ.get("FGBENCH_DISABLE_PLUGINS", "").split(",") if p.strip()]
        host.load_entry_points(disabled)
    for plugin in extra:
        host.register_plugin(plugin)
    host.validate_metadata()
    return host


def get_host(reload: bool = False) -> PluginHost:
    """The process-wide host (loaded on first use)."""
    global _HOST
    if _HOST is None or reload:
        _HOST = load_plugins()
    return _HOST


def set_host(host: PluginHost | None) -> None:
    """Replace the process-wide host (used by :mod:`fgbench.testing`)."""
    global _HOST
    _HOST = host
