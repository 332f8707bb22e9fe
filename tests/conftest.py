"""Fixtures: a throw-away project (config.json, sourcedata/, testdata/) under tmp_path.

Helpers the tests share (the Project class, base_config, batch, ...) are in helpers.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import Project, copy_project, make_project, scrub_environment, shared_dataset


def pytest_addoption(parser):
    parser.addoption("--kills", type=int, default=50,
                     help="how many times tests/test_faults.py SIGKILLs the pipeline (default 50)")


@pytest.fixture(scope="session", autouse=True)
def _scrubbed_session():
    """No variable the product reads comes from the user's shell (helpers.is_scrubbed), from the first
    session-wide fixture on (an autouse fixture is set up before the other fixtures of its scope)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        scrub_environment(monkeypatch)
        yield


@pytest.fixture(autouse=True)
def _scrubbed_offline_and_clean_logging(monkeypatch):
    scrub_environment(monkeypatch)  # again: a test before may have set one without monkeypatch
    yield
    import logging

    from churnlib.logsetup import close_logging

    close_logging()
    # A test that builds gunicorn's logger in this process gives "gunicorn.error" handlers; an app made
    # after it (app._log_to_gunicorn) then sends "churnlib" there and stops it propagating, so a later
    # tick's lines from churnlib.* would never reach that tick's log file.
    for name in ("app", "churnlib", "gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate, logger.level = True, logging.NOTSET


@pytest.fixture
def udacity_course() -> Path:
    """The classic course's data in ../shared (not shipped): skipped without it, failed without it under CI.

    A fixture, so that a skip names the test that needed the data (pytest -rs)."""
    return shared_dataset("udacity-course")


@pytest.fixture
def project(tmp_path) -> Project:
    """A project with the two shipped sample files in sourcedata/ and the shipped test data."""
    return make_project(tmp_path / "project")


@pytest.fixture
def empty_project(tmp_path) -> Project:
    """A project with nothing in sourcedata/ yet."""
    return make_project(tmp_path / "project", sources=())


@pytest.fixture(scope="session")
def deployed_template(tmp_path_factory) -> Path:
    """A project after its cold-start tick, built once; copy it with ``copy_project``."""
    root = tmp_path_factory.mktemp("template") / "project"
    project = make_project(root)
    assert project.tick() == 0
    import logging

    from churnlib.logsetup import close_logging

    close_logging()
    # A test that builds gunicorn's logger in this process gives "gunicorn.error" handlers; an app made
    # after it (app._log_to_gunicorn) then sends "churnlib" there and stops it propagating, so a later
    # tick's lines from churnlib.* would never reach that tick's log file.
    for name in ("app", "churnlib", "gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate, logger.level = True, logging.NOTSET
    return root


@pytest.fixture
def deployed(deployed_template, tmp_path) -> Project:
    """A project whose first model is deployed (a copy of a session-wide template)."""
    return copy_project(deployed_template, tmp_path / "project")
