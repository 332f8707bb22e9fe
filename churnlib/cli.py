"""What every step script's ``main()`` does first: its options, the config, logging, the run lock."""

from __future__ import annotations

import argparse
import logging
import sys

from churnlib.config import Config, ConfigError, add_config_argument, load_config
from churnlib.fsutil import RunLock, lock_path

LOCK_WAIT_SECONDS = 60.0


def script_parser(description: str) -> argparse.ArgumentParser:
    """Return an argument parser with the options every script takes: --config and -v."""
    parser = argparse.ArgumentParser(description=description)
    add_config_argument(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail, and show it on stderr")
    return parser


def start_script(args: argparse.Namespace, script: str) -> Config | None:
    """Return the config named by --config with logging set up for ``script``.

    A bad config is printed to stderr as one line and None is returned (the caller exits 2).
    """
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    from churnlib.logsetup import setup_logging

    setup_logging(config.paths.logs, script, verbose=args.verbose)
    return config


def wait_for_lock(config: Config, logger: logging.Logger, timeout: float = LOCK_WAIT_SECONDS) -> RunLock | None:
    """Return the run lock once taken (waiting up to ``timeout`` s), or None after logging who holds it."""
    lock = RunLock(lock_path(config))
    if lock.acquire(timeout=timeout):
        return lock
    logger.error("another run holds the lock %s (PID %s); try again later", lock.path, lock.holder_pid())
    return None
