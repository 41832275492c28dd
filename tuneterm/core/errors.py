"""One error hierarchy for everything tuneterm reports to a person.

Each error carries a short *title* (what failed), *facts* (the concrete values) and a
*hint* (the next step). The CLI prints them without a traceback and exits with the
class's ``exit_code``; the TUI shows them in a notification.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Documented exit codes (docs/troubleshooting.md, "Exit codes").
EXIT_OK = 0
EXIT_FAILURE = 1  # a command ran and found problems (e.g. validation errors)
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_INPUT = 3  # bad input data (dataset, spec, recipe)
EXIT_NOT_FOUND = 4  # a file, dataset, model or job does not exist
EXIT_RUNTIME = 5  # the environment failed: model load, network, API, disk
EXIT_INTERRUPTED = 130


@dataclass
class TunetermError(Exception):
    """Base class. ``facts`` are ``(label, value)`` pairs shown one per line."""

    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    hint: str = ""

    exit_code = EXIT_RUNTIME

    def __post_init__(self) -> None:
        super().__init__(self.title)

    def __str__(self) -> str:  # pragma: no cover - exercised through render()
        return self.render()

    def render(self) -> str:
        lines = [f"error: {self.title}"]
        lines += [f"  {label}: {value}" for label, value in self.facts]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "error": type(self).__name__,
            "title": self.title,
            "facts": {label: value for label, value in self.facts},
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


class UsageError(TunetermError):
    exit_code = EXIT_USAGE


class JobStateError(UsageError):
    """A command refused because of a job's state (cancel a finished job, remove a running one)."""


class ConfigError(UsageError):
    """A recipe, setting or override is invalid."""


class InputError(TunetermError):
    exit_code = EXIT_INPUT


class DatasetError(InputError):
    pass


class NotFoundError(TunetermError):
    exit_code = EXIT_NOT_FOUND


class ModelNotFoundError(NotFoundError):
    pass


class RuntimeFailure(TunetermError):
    exit_code = EXIT_RUNTIME


class ModelLoadError(RuntimeFailure):
    pass


class OfflineError(RuntimeFailure):
    """Something would have to be downloaded, and the network is not there."""


class JobError(RuntimeFailure):
    pass


class OpenAIError(RuntimeFailure):
    pass
