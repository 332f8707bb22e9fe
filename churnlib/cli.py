"""What every script's ``main()`` shares: its options, the config, logging, the run lock, and how an
error ends the run (one line naming the problem, exit 1; exit 2 for a bad config)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from churnlib.config import Config, ConfigError, add_config_argument, load_config
from churnlib.errors import ChurnError, describe_error
from churnlib.fsutil import RunLock, lock_path

LOCK_WAIT_SECONDS = 60.0


def script_parser(description: str) -> argparse.ArgumentParser:
    """Return an argument parser with the options every script takes: --config and -v."""
    parser = argparse.ArgumentParser(description=description)
    add_config_argument(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail, and show it on stderr")
    return parser


def start_script(args: argparse.Namespace, script: str, needs: tuple[str, ...] | None = None) -> Config | None:
    """Return the config named by --config with logging set up for ``script``.

    A bad config is printed to stderr as one line and None is returned (the caller exits 2). With
    ``needs``, errors in the other sections are ignored, each said in a warning (stderr and log).
    """
    try:
        config = load_config(args.config, needs=needs)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    from churnlib.logsetup import setup_logging

    setup_logging(config.paths.logs, script, verbose=args.verbose)
    for error in config.ignored_errors:
        # Logged once: the log's console handler shows a warning on stderr (a print as well said it twice).
        logging.getLogger(script).warning("%s (ignored: %s does not use that part of the config; fix it before the "
                                          "next tick)", error, script)
    return config


def wait_for_lock(config: Config, logger: logging.Logger, timeout: float = LOCK_WAIT_SECONDS) -> RunLock | None:
    """Return the run lock once taken (waiting up to ``timeout`` s), or None after logging who holds it."""
    lock = RunLock(lock_path(config))
    if lock.acquire(timeout=timeout):
        return lock
    logger.error("another run holds the lock %s (PID %s); try again later", lock.path, lock.holder_pid())
    return None


Body = Callable[[Config, argparse.Namespace], int]


def run_script(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    script: str,
    body: Body,
    *,
    lock: bool | Callable[[argparse.Namespace], bool] = False,
    on_lock_held: Callable[[Config, int | None], int] | None = None,
    needs: tuple[str, ...] | Callable[[argparse.Namespace], tuple[str, ...] | None] | None = None,
) -> int:
    """Run a script's ``body(config, args)`` the way every script runs; return the exit status.

    Parses ``argv``; loads the config (a bad one: one line on stderr, exit 2); sets up logging to
    ``logs/<script>.log``; takes the run lock when ``lock`` says so (for ``lock(args)`` when it is a
    function), waiting up to a minute, or, with ``on_lock_held``, not at all: that function then
    answers for the run. An error of the product's own (or an OSError) raised by the body is logged
    as one critical line (on stderr too) and ends the run with its exit status: 1, or 2 for a
    setting the run could not use, named with the config file in use. ``needs`` (or ``needs(args)``)
    names the config sections the run uses: an error elsewhere in config.json is then a warning,
    so a tool for incidents works while config.json is being fixed; None means every section.
    """
    args = parser.parse_args(argv)
    config = start_script(args, script, needs(args) if callable(needs) else needs)
    if config is None:
        return 2
    logger = logging.getLogger(script)
    held = None
    if lock(args) if callable(lock) else lock:
        if on_lock_held is not None:
            held = RunLock(lock_path(config))
            if not held.acquire():
                return on_lock_held(config, held.holder_pid())
        else:
            held = wait_for_lock(config, logger)
            if held is None:
                return 1
    try:
        return body(config, args)
    except (ChurnError, OSError) as exc:
        logger.critical("%s", describe_error(exc, config_label=config.label))
        return getattr(exc, "exit_status", 1)
    finally:
        if held is not None:
            held.release()
