"""The API's access log (churnlib.accesslog): gunicorn's own lines, written without its cost."""

from __future__ import annotations

import base64
import datetime
import logging
import os
import re
from pathlib import Path

import pytest
from gunicorn import glogging
from gunicorn.config import Config

from churnlib.accesslog import AccessLogger

STAMP = re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]")


class Reply:
    def __init__(self, status: str = "200 OK", sent: int | None = 81):
        self.status, self.sent = status, sent
        self.headers = [("Content-Type", "application/json"), ("Content-Length", str(sent))]


class Request:
    headers = [("HOST", "127.0.0.1:8000"), ("USER-AGENT", "curl/8.5")]


ENVIRONS = [
    {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "POST", "RAW_URI": "/prediction", "SERVER_PROTOCOL": "HTTP/1.1"},
    {"REMOTE_ADDR": "10.0.0.7", "REQUEST_METHOD": "GET", "RAW_URI": '/prediction?reasons=3&x="a b"',
     "SERVER_PROTOCOL": "HTTP/1.0", "HTTP_USER_AGENT": 'bot "quoted" \u00e9', "HTTP_REFERER": "http://x/\"y\"",
     "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b'ann"ie:secret').decode()},
    {"REMOTE_ADDR": "::1", "REQUEST_METHOD": "BREW", "RAW_URI": "/caf\u00e9/%2e%2e", "SERVER_PROTOCOL": "HTTP/1.1",
     "HTTP_AUTHORIZATION": "Bearer s3cret-token"},
]


def _close_handlers() -> None:
    # gunicorn's loggers are process-wide: a new Logger drops the last one's handlers without closing them.
    for logger in (logging.getLogger("gunicorn.access"), logging.getLogger("gunicorn.error")):
        for handler in [h for h in logger.handlers if getattr(h, "_gunicorn", False)]:
            logger.removeHandler(handler)
            handler.close()


@pytest.fixture
def loggers():
    """Make gunicorn loggers; their handlers and files are closed when the next is made, and at the end."""
    made = []

    def make(logger_class: type, path: Path, **settings: str):
        _close_handlers()
        config = Config()
        config.set("accesslog", str(path))
        for name, value in settings.items():
            config.set(name, value)
        made.append(logger_class(config))
        return made[-1]

    yield make
    _close_handlers()
    for log in made:
        for fd in {getattr(log, "_fd", None), getattr(log, "_retired", None)} - {None, 1}:
            os.close(fd)


def _lines(log, path: Path, replies: list[Reply]) -> list[str]:
    for environ, reply in zip(ENVIRONS, replies):
        log.access(reply, Request(), dict(environ), datetime.timedelta(microseconds=1500))
    for handler in log.access_log.handlers:
        handler.flush()
    return [STAMP.sub("[time]", line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("settings", [{}, {"access_log_format": '%(h)s "%(r)s" %(s)s %(D)s'}])
def test_access_lines_are_gunicorns_own(tmp_path, loggers, settings):
    replies = [Reply(), Reply("404 NOT FOUND", 0), Reply("405 METHOD NOT ALLOWED", None)]
    ours = _lines(loggers(AccessLogger, tmp_path / "ours.log", **settings), tmp_path / "ours.log", replies)
    theirs = _lines(loggers(glogging.Logger, tmp_path / "gunicorn.log", **settings), tmp_path / "gunicorn.log",
                    replies)
    assert ours == theirs and len(ours) == 3
    if not settings:  # the default format: method, path, status, time, as operators read it
        assert ours[0] == '127.0.0.1 - - [time] "POST /prediction HTTP/1.1" 200 81 "-" "-"'
        assert 'ann\\"ie' in ours[1] and "s3cret" not in "".join(ours)


def test_the_access_log_is_reopened_after_rotation(tmp_path, loggers):
    log = loggers(AccessLogger, tmp_path / "access.log")
    log.access(Reply(), Request(), dict(ENVIRONS[0]), datetime.timedelta(0))
    (tmp_path / "access.log").rename(tmp_path / "access.log.1")  # logrotate, then kill -USR1
    log.access(Reply(), Request(), dict(ENVIRONS[0]), datetime.timedelta(0))  # before the signal: the old file
    log.reopen_files()
    log.access(Reply("201 CREATED"), Request(), dict(ENVIRONS[0]), datetime.timedelta(0))
    assert len((tmp_path / "access.log.1").read_text().splitlines()) == 2
    assert '" 201 81 ' in (tmp_path / "access.log").read_text()


def test_a_user_name_with_a_line_break_or_an_escape_cannot_forge_an_access_line(tmp_path, loggers):
    # The Basic user name is base64 in the header: gunicorn's header checks never see its line feed.
    forged = b'x\n127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] "GET /forged HTTP/1.1" 200 2 "-" "-"\x1b[2J:pw'
    environ = {**ENVIRONS[0], "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(forged).decode(),
               "HTTP_USER_AGENT": "agent\x85\u2028end"}
    log = loggers(AccessLogger, tmp_path / "access.log")
    log.access(Reply(), Request(), environ, datetime.timedelta(0))
    text = (tmp_path / "access.log").read_text(encoding="utf-8")
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\x1b" not in text and "\x85" not in text and "\u2028" not in text
    assert ' - x\\n127.0.0.1 - - ' in text
