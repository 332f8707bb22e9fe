"""The product's own errors: one base class, so one place can tell them from bugs.

An error of ours carries a message written for the person at the terminal (it names the file, the
column, the key) and is shown as it is; anything else is a bug and is shown with its type.
"""

from __future__ import annotations

import functools
from typing import Any, Callable


class ChurnError(Exception):
    """An error of the product's own, with a message meant for the user. Exit status 1."""

    exit_status = 1


class ConfigError(ChurnError, ValueError):
    """A config file that cannot be used; the message is one line naming the key.

    Raised while loading, the message starts with the config file's name. Raised later, by a step
    that finds a setting it cannot use (an unknown model parameter, a schema that contradicts the
    ingested data), it names the key only; ``in_file`` adds the name of the config file in use.
    """

    exit_status = 2

    def __init__(self, message: str, *, file_label: str | None = None):
        super().__init__(message)
        self.message = message
        self.file_label = file_label

    def in_file(self, label: str) -> "ConfigError":
        """Return this error naming ``label`` as the config file, unless it names one already."""
        if self.file_label is None:
            self.file_label = label
        return self

    def __str__(self) -> str:
        return f"{self.file_label}: {self.message}" if self.file_label else self.message


class SourceReadError(ChurnError):
    """Reading a source file failed part way (an I/O error): not a problem of its content, tried again later."""


class StorageError(ChurnError, OSError):
    """A file the product could not write (a full disk, no permission); the message names the file.

    An OSError too, so code that handles failed writes as OSErrors still does.
    """

    def __init__(self, message: str, *, errno: int | None = None, path: str | None = None):
        OSError.__init__(self, errno, message, path)
        self.message = message

    def __str__(self) -> str:
        return self.message


class StateFileError(ChurnError, ValueError):
    """A state file that cannot be read (damaged JSON, wrong content); the message names it and what to do."""


def in_step(step: str) -> Callable:
    """Decorate a step's function so that an error raised through it names the step ("ingestion: ...").

    The innermost step wins: a deploy's error raised while fullprocess.py runs it says "deployment".
    """

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except (ChurnError, OSError) as exc:
                if getattr(exc, "step", None) is None:
                    exc.step = step  # type: ignore[attr-defined]
                raise

        return wrapper

    return decorate


def describe_error(exc: BaseException, *, config_label: str | None = None) -> str:
    """Return one line for the user: our errors as they are, anything else with its type.

    An error raised inside a step (``in_step``) starts with the step's name.
    """
    if isinstance(exc, ConfigError) and config_label:
        exc.in_file(config_label)
    if isinstance(exc, (ChurnError, FileNotFoundError)):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    step = getattr(exc, "step", None)
    return f"{step}: {text}" if step and not text.startswith(f"{step}: ") else text
