"""gunicorn settings for the API (`make serve`); check them with `gunicorn --check-config -c gunicorn.conf.py wsgi:app`.

Plain assignments; each can be overridden from the environment without editing this file.
"""

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from churnlib.config import ConfigError, load_config

try:
    _config = load_config()  # config.json, or $CHURN_CONFIG if set
except ConfigError as _error:
    sys.exit(f"error: {_error}")
_logs = _config.paths.logs
_logs.mkdir(parents=True, exist_ok=True)

# Where api.url in config.json says the API is (so apicalls.py and fullprocess.py find it), which
# is loopback by default: put a reverse proxy in front to expose it.
_url = urlsplit(_config.api.url)
bind = os.environ.get("CHURN_API_BIND", f"{_url.hostname}:{_url.port or 80}")
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
