"""gunicorn settings for the API (`make serve`); check them with `gunicorn --check-config -c gunicorn.conf.py wsgi:app`.

Plain assignments; each can be overridden from the environment without editing this file.

The master reads config.json once, here, when it starts: an invalid one stops it with the error.
Workers start from the config the master holds and never read config.json themselves, so a
worker restarted while config.json is broken mid-edit still starts. A changed config.json is
picked up only by an explicit reload (`kill -HUP <master pid>`), and an invalid one is then
refused: the error log says why and the API keeps running with the config it has.
"""

import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from churnlib.config import ConfigError, api_token, load_server_config

try:
    # config.json, or $CHURN_CONFIG if set; refused too when api.token_env names a variable that is not set
    _config, _refused = load_server_config(check=api_token)
except ConfigError as _error:
    sys.exit(f"error: {_error}")
if _refused is not None:
    logging.getLogger("gunicorn.error").error(
        "%s: not reloaded: %s; the API keeps running with the configuration it has", _config.label, _refused.message)
_logs = _config.paths.logs
_logs.mkdir(parents=True, exist_ok=True)

# Where api.url in config.json says the API is (so apicalls.py and fullprocess.py find it), which
# is loopback by default: put a reverse proxy in front to expose it.
_url = urlsplit(_config.api.url)
bind = os.environ.get("CHURN_API_BIND", f"{_url.hostname}:{_url.port or 80}")
# One worker per core. Each worker answers with a pool of threads: a client that sends its request
# slowly (or never finishes it) holds one thread, not the worker, and a worker's main loop keeps
# telling the master it is alive, so slow clients neither stop other requests nor get workers
# killed. A worker absorbs up to `threads` - 1 such clients at once, even if all land on it; more
# need a buffering reverse proxy in front (docs/api.md: "Slow clients"). Idle threads cost nothing:
# the pool starts them as requests need them.
workers = int(os.environ.get("CHURN_API_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("CHURN_API_THREADS", "100"))
keepalive = 2  # seconds an idle kept-alive connection stays open (it holds no thread meanwhile)
timeout = 30  # a worker whose main loop is silent this long is restarted (a slow client cannot cause it)
graceful_timeout = 10
# Hostile or broken clients: bounded request lines and headers.
limit_request_line = 8190
limit_request_fields = 100
accesslog = os.environ.get("CHURN_API_ACCESS_LOG", str(Path(_logs) / "api_access.log"))
# The same access lines as gunicorn's own logger (its default format), at a fraction of the cost
# and without a lock that a hundred threads queue on: churnlib/accesslog.py.
logger_class = "churnlib.accesslog.AccessLogger"
errorlog = os.environ.get("CHURN_API_ERROR_LOG", str(Path(_logs) / "api_error.log"))
loglevel = "info"
capture_output = True
proc_name = "churn-api"
# gunicorn's control socket (gunicornc) is not used; off, so several instances never share one.
control_socket_disable = True


def on_reload(server):
    """Say in the error log which config the new workers start from."""
    server.log.info("reload: workers start from %s as read at the reload, or as before if it was refused",
                    _config.label)


def post_worker_init(worker):
    """Load the deployed release before the first request instead of during it."""
    state = getattr(worker.wsgi, "extensions", {}).get("churn")
    if state is not None:  # the churn API (bench/ also serves a plain Flask app with these settings)
        state.watcher.current()


# --- Prometheus metrics (/metrics), summed across workers -----------------------------------------
# prometheus_client's multiprocess mode: every worker writes its counts to files in this folder
# and a scrape, whichever worker answers it, adds them up. Set before any worker imports the
# library; emptied when gunicorn starts (counts from a previous run would be added to this one's);
# a worker that exits has its live gauges dropped (its counts stay: they happened).
_metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(Path(_logs) / "prometheus_multiproc")))
_metrics_dir.mkdir(parents=True, exist_ok=True)  # --check-config loads the app without on_starting


# gunicorn sends the master's stdout to the error log once it starts (capture_output): a copy of the
# terminal's stdout, taken now, lets `make serve` say where it listens.
_terminal = os.dup(sys.stdout.fileno())


def when_ready(server):
    """Say on the terminal where the API listens, and where its logs are."""
    listening = ", ".join(str(listener) for listener in server.LISTENERS)  # http://127.0.0.1:8000
    text = (f"churn API listening on {listening} (config {_config.label}; logs: {errorlog}, {accesslog}); "
            "Ctrl-C stops it\n")
    try:
        os.write(_terminal, text.encode("utf-8", "backslashreplace"))
    except OSError:
        pass  # no terminal (stdout closed): the error log says "Listening at" anyway


def on_starting(server):
    """Empty the metrics folder of an earlier run."""
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in _metrics_dir.glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    """Drop an exited worker's live gauges (churn_api_workers_serving) from the metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(_metrics_dir))
