"""gunicorn's access log, written at a fraction of its cost (``logger_class`` in gunicorn.conf.py).

gunicorn's own logger builds a dictionary of some fifty atoms per request (every header and environ
variable), formats the line through ``logging`` and writes it under the handler's lock: a quarter
of what a worker spends on a small request, and with a hundred threads a worker's requests queue
on that lock while its holder waits for the interpreter lock. This logger writes the same line
(gunicorn's default format, Apache's combined log format: address, user, time, request line with
method and path, status, bytes, referer, user agent; control characters escaped, which gunicorn's
own lines keep) with one ``os.write`` on a file descriptor
opened in append mode, which needs no lock: each line is appended whole.

Anything else (another ``access_log_format``, syslog, a logging config file) goes through
gunicorn's logger as before. ``kill -USR1`` reopens the file, as gunicorn's own does (log rotation).
"""

from __future__ import annotations

import os
import time
import traceback

from gunicorn import glogging
from gunicorn.config import AccessLogFormat

from churnlib.columns import shown_name

__all__ = ["AccessLogger"]


class AccessLogger(glogging.Logger):
    """gunicorn's logger whose access lines, in the default format, are written directly."""

    _fd: int | None = None
    _retired: int | None = None  # the descriptor before the last reopen, closed at the next one
    _stamp: tuple[int, str] = (-1, "")

    def setup(self, cfg) -> None:
        super().setup(cfg)
        self._open()

    def reopen_files(self) -> None:
        super().reopen_files()
        self._open()

    def _open(self) -> None:
        cfg = self.cfg
        target = cfg.accesslog
        direct = (target is not None and cfg.access_log_format == AccessLogFormat.default and not cfg.syslog
                  and not cfg.logconfig_dict and not cfg.logconfig_json and not cfg.logconfig)
        fd = None
        if direct:
            fd = 1 if target == "-" else os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        # A thread may have read the old descriptor and not written yet: it is closed only at the
        # next reopen (a day later under logrotate), never while it could be reused for another file.
        if self._retired not in (None, 1):
            os.close(self._retired)
        self._retired, self._fd = self._fd, fd

    def _now(self) -> str:
        second = int(time.time())
        stamp = self._stamp
        if stamp[0] != second:  # the same text for every request within a second
            stamp = self._stamp = (second, time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second)))
        return stamp[1]

    def access(self, resp, req, environ, request_time) -> None:
        fd = self._fd
        if fd is None:
            super().access(resp, req, environ, request_time)
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        user = self._get_user(environ) if "HTTP_AUTHORIZATION" in environ else None
        request_line = f'{environ["REQUEST_METHOD"]} {environ["RAW_URI"]} {environ["SERVER_PROTOCOL"]}'
        # gunicorn's default format, each text escaped as its SafeAtoms does ('"' -> '\"'), so no
        # field can end early.
        line = (f'{_safe(environ.get("REMOTE_ADDR", "-"))} - {_safe(user or "-")} {self._now()} "{_safe(request_line)}" '
                f'{_safe(status)} {"-" if sent is None else sent} "{_safe(environ.get("HTTP_REFERER", "-"))}" '
                f'"{_safe(environ.get("HTTP_USER_AGENT", "-"))}"\n')
        try:
            data = line.encode("utf-8", "backslashreplace")
            while data:  # a file takes it whole; a pipe (stdout) may take a long line in parts
                data = data[os.write(fd, data):]
        except OSError:
            self.error(traceback.format_exc())


def _safe(value) -> str:
    # Control and line-breaking characters escaped too (gunicorn's own lines keep them): a Basic user
    # name is base64 in its header, so gunicorn's header checks never see a line feed in it, and one
    # would forge a whole access line.
    return shown_name(value).replace('"', '\\"') if isinstance(value, str) else str(value)
