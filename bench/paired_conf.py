"""gunicorn settings for bench_api.py's paired reasons cost: a checkout's gunicorn.conf.py as it is
(named by $BENCH_GUNICORN_CONF), plus hooks that time each request a worker handles.

Each request whose query string holds ``paired`` is timed in the thread that handles it
(``time.thread_time``: CPU time, not the time it waited for a core or the GIL), from its parsed
headers (``pre_request``) to its access line (``post_request``): building the WSGI environ, the
app, writing the reply and the access log. A timing is kept only for a 200 reply, under its query
string and the query string of the request the worker timed before it (what a request leaves in
the caches is paid by the next). When a worker stops, it writes its timings to
``$BENCH_CPU_DIR/<pid>.json``: {"<query> after <previous query>": [seconds, ...]}.
"""

import json
import os
import runpy
import time
from pathlib import Path

_product = {name: value for name, value in runpy.run_path(os.environ["BENCH_GUNICORN_CONF"]).items()
            if not name.startswith("__")}
globals().update(_product)
_timings: dict[str, list[float]] = {}
_previous = [""]  # the query string of the last request this worker timed


def _also(hook, *args):
    """Run the checkout's own hook of that name, if it has one."""
    if hook in _product:
        _product[hook](*args)


def pre_request(worker, req):
    _also("pre_request", worker, req)
    if "paired" in req.query:
        req.bench_started = time.thread_time()


def post_request(worker, req, environ, resp):
    started = getattr(req, "bench_started", None)
    if started is not None and getattr(resp, "status_code", None) == 200:
        _timings.setdefault(f"{req.query} after {_previous[0]}", []).append(time.thread_time() - started)
        _previous[0] = req.query
    _also("post_request", worker, req, environ, resp)


def worker_exit(server, worker):
    try:
        _also("worker_exit", server, worker)
    finally:
        if _timings:  # (the master calls this hook too, for a worker already gone: it has none)
            (Path(os.environ["BENCH_CPU_DIR"]) / f"{os.getpid()}.json").write_text(json.dumps(_timings))
