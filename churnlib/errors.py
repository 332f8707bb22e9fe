"""The product's own errors: one base class, so one place can tell them from bugs.

An error of ours carries a message written for the person at the terminal (it names the file, the
column, the key) and is shown as it is; anything else is a bug and is shown with its type.
"""

from __future__ import annotations


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


def describe_error(exc: BaseException, *, config_label: str | None = None) -> str:
    """Return one line for the user: our errors as they are, anything else with its type."""
    if isinstance(exc, ConfigError) and config_label:
        exc.in_file(config_label)
    if isinstance(exc, (ChurnError, FileNotFoundError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
