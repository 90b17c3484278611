"""fgbench's errors: one base, :class:`FgbenchError`, for everything the *user* must fix.

The command line turns a :class:`FgbenchError` (and an ``OSError`` that names
a file) into a one-line ``Error: ...`` and exit status 1; every other exception
is a bug, in fgbench or in a plugin, and is reported as such (a plugin's
exception names the plugin; ``FGBENCH_DEBUG=1`` shows the traceback).

Each subclass's message is one line naming the file, option or name at fault
and what to do.  Some also derive from the built-in exception that code
catching them before this base existed expects (``ValueError``, ``KeyError``).
This module imports nothing, so every layer can raise these (and use :func:`first_line` /
:func:`described` to put another exception into one line).
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def described(exc: BaseException) -> str:
    """``"<type>: <first line>"``, or the type name alone when the message is empty."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class FgbenchError(Exception):
    """Something the user must fix; the message is one line saying what and how."""


class PluginError(FgbenchError):
    """A plugin or registry problem (one-line message)."""


class DuplicateNameError(PluginError):
    """Two plugins registered the same name."""


class UnknownNameError(PluginError, KeyError):
    """A name that no plugin registered; the message lists close and valid names."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else ""


class InvalidNameError(FgbenchError, ValueError):
    """A method, dataset or protocol name that cannot be a folder or file name (the message shows it)."""


class ConfigError(FgbenchError, ValueError):
    """A method option (``--set METHOD.KEY=VALUE``) with a value the method cannot use (message names it)."""


class ProtocolError(FgbenchError, ValueError):
    """An invalid protocol setting (message names the option)."""


class BackboneError(FgbenchError):
    """The backbone or its weights cannot be loaded (message says what to do)."""


class DatasetError(FgbenchError):
    """A dataset cannot be used; the message names the file and what to do."""


class MetricInputError(FgbenchError, ValueError):
    """Codes or labels that the evaluation cannot score as given (message says which input and why)."""


class RecordError(FgbenchError, ValueError):
    """An unreadable results directory or record file (message names it)."""


class LeaderboardError(FgbenchError, ValueError):
    """A leaderboard that cannot be written (the message names the file or the name and what to do)."""


class EngineError(FgbenchError, ValueError):
    """An engine option that cannot be honoured on this machine (message names the option)."""


class TrainingError(FgbenchError, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names the job and the likely option."""


class GridError(FgbenchError):
    """The job grid stopped (a full disk, a failure under several processes) or ended with failed jobs."""


class SubmitError(FgbenchError, ValueError):
    """The grid cannot be submitted (message says why)."""


class ScaffoldError(FgbenchError, ValueError):
    """A bad plugin name or target folder (one-line message)."""
