"""Logging handlers, set once by a script's ``main()``.

Every script logs to ``logs/<script>.log``. When ``fullprocess.py`` runs the steps, each step's
records also go to that step's own file (``logs/ingestion.log``, ``logs/training.log``, ...), so a
reader can follow either the whole run or one step. On a terminal the same lines are shown on
stderr; under cron only warnings and errors are, so ``logs/cron.log`` holds just what needs a look.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from churnlib.columns import shown_lines

STEP_MODULES = ("ingestion", "training", "scoring", "deployment", "diagnostics", "reporting", "apicalls")
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


# Continuation lines of a record (a traceback) start with this: no text in a record can start a line
# that reads as a record of its own.
CONTINUATION = "    "


class SafeFormatter(logging.Formatter):
    """A formatter whose lines cannot fail a UTF-8 writer or be forged by the text they carry.

    Undecodable bytes of a file name (lone surrogates) and control characters are escaped as
    ``churnlib.columns.shown_name`` does; a line feed inside a record starts an indented line.
    """

    def format(self, record: logging.LogRecord) -> str:
        return shown_lines(super().format(record), indent=CONTINUATION)


class _UtcFormatter(SafeFormatter):
    converter = time.gmtime

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's name)
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", self.converter(record.created))


class _OnlyLogger(logging.Filter):
    def __init__(self, name: str):
        super().__init__()
        self.prefix = name

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == self.prefix or record.name.startswith(self.prefix + ".")


def setup_logging(log_folder: Path, script: str, *, verbose: bool = False) -> None:
    """Send log records to ``logs/<script>.log``, the steps' own files, and stderr."""
    log_folder.mkdir(parents=True, exist_ok=True)
    close_logging()
    formatter = _UtcFormatter(FORMAT)
    main_file = logging.FileHandler(log_folder / f"{script}.log", encoding="utf-8")
    main_file.setFormatter(formatter)
    handlers: list[logging.Handler] = [main_file]
    for step in STEP_MODULES:
        if step == script:
            continue
        step_file = logging.FileHandler(log_folder / f"{step}.log", encoding="utf-8", delay=True)
        step_file.setFormatter(formatter)
        step_file.addFilter(_OnlyLogger(step))
        handlers.append(step_file)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    if verbose:
        console.setLevel(logging.DEBUG)
    else:
        console.setLevel(logging.INFO if sys.stderr.isatty() else logging.WARNING)
    handlers.append(console)

    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in handlers:
        handler._churn_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # Third-party chatter (matplotlib's font cache, werkzeug) stays out of the trail.
    for noisy in ("matplotlib", "PIL", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def close_logging() -> None:
    """Remove and close the handlers ``setup_logging`` added (others, such as pytest's, stay)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_churn_handler", False):
            root.removeHandler(handler)
            handler.close()
