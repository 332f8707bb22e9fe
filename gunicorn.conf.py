"""gunicorn settings for the API (`make serve`); check them with `gunicorn --check-config -c gunicorn.conf.py wsgi:app`.

Plain assignments; each can be overridden from the environment without editing this file.
"""

import os
from pathlib import Path

from churnlib.config import load_config

_logs = load_config().paths.logs  # the log folder named by config.json ($CHURN_CONFIG if set)
_logs.mkdir(parents=True, exist_ok=True)

# Loopback only by default: put a reverse proxy in front to expose it.
bind = os.environ.get("CHURN_API_BIND", "127.0.0.1:8000")
# One worker per core; each worker is single-threaded, so xgboost and numpy never fight over cores.
workers = int(os.environ.get("CHURN_API_WORKERS", "2"))
worker_class = "sync"
timeout = 30
graceful_timeout = 10
# Hostile or broken clients: bounded request lines and headers.
limit_request_line = 8190
limit_request_fields = 100
accesslog = os.environ.get("CHURN_API_ACCESS_LOG", str(Path(_logs) / "api_access.log"))
errorlog = os.environ.get("CHURN_API_ERROR_LOG", str(Path(_logs) / "api_error.log"))
loglevel = "info"
capture_output = True
proc_name = "churn-api"
# gunicorn's control socket (gunicornc) is not used; off, so several instances never share one.
control_socket_disable = True


def post_worker_init(worker):
    """Load the deployed release before the first request instead of during it."""
    state = getattr(worker.wsgi, "extensions", {}).get("churn")
    if state is not None:  # the churn API (bench/ also serves a plain Flask app with these settings)
        state.watcher.current()
