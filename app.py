"""The API: predictions, the deployed score, summary statistics and diagnostics over HTTP.

    gunicorn --config gunicorn.conf.py wsgi:app        # what `make serve` runs

Routes (every reply to GET and POST is JSON but /metrics' Prometheus text, errors ``{"error": "..."}`` with a 4xx status; an
OPTIONS request gets Flask's own empty reply with an ``Allow`` header):

- ``POST /prediction``: churn predictions of the deployed model. Records as JSON (one object,
  ``{"records": [...]}``, or MLflow's ``dataframe_split``, ``dataframe_records``, ``instances`` and
  ``inputs`` forms), as CSV (``Content-Type: text/csv``), or ``{"path": "testdata/testdata.csv"}``
  for a dataset inside the project's data folders. ``?reasons=3`` (or ``"reasons": 3`` in the body,
  ``"params": {"reasons": 3}`` with an MLflow form) adds each record's three largest reasons;
  ``?format=mlflow`` answers in MLflow's shape, ``{"predictions": [...]}``. A category the model
  never saw in training is a warning on its record (or, with ``api.unknown_categories`` "reject",
  a 400).
- ``GET /scoring``: the deployed release's scores on the test data (F1 first).
- ``GET /summarystats``: mean, median and standard deviation of each numeric ingested column, and
  each category's rows and churn rate, from the figures kept at ingestion (no data is read).
- ``GET /diagnostics``: missing data, step timings, the dependency check, the latest drift table.
- ``GET /health``: 200 and the release id when a model is loaded, 503 and the reason otherwise;
  both name the deployment served (``churnlib.identity``), which the pipeline checks before it uses
  the API's replies.
- ``GET /metrics``: Prometheus metrics in the text exposition format (``churnlib.metrics``): requests
  and latency by route and status, predictions, the release served, the pipeline's last tick.

With ``api.token_env`` set, every route but ``/health`` needs ``Authorization: Bearer <token>``
(401 otherwise). No reply names a path on the server: paths are shown relative to the project.

This module is HTTP only: it turns request bodies into records, maps errors to status codes, and
holds the views. The model's arithmetic (validating records, the fast path checked against the
pipeline) is ``churnlib.pipeline``; hot reload of the deployed release is ``churnlib.serving``.
"""

from __future__ import annotations

import codecs
import csv
import hmac
import io
import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import orjson
from flask import Flask, Response, current_app, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from churnlib.columns import shown
from churnlib.config import METRICS, Config, api_token, load_config
from churnlib.errors import ChurnError
from churnlib.fsutil import read_json_or_none
from churnlib.identity import IDENTITY_FILE, read_deployment_id
from churnlib.ingested import RECORD_FILE, ingested_statistics, load_record
from churnlib.metrics import CONTENT_TYPE_LATEST, ApiMetrics
from churnlib.pipeline import (
    NO_ID,
    SMALL_BATCH,
    ReasonsUnavailable,
    RecordError,
    RepeatedKeys,
    known_categories,
    make_record,
    near_category,
    predicted_classes,
    reason_texts,
    records_to_batch,
    repeated_names,
    row_reasons,
    shown_values,
    top_reasons,
)
from churnlib.serving import FileCache, ReleaseWatcher
from churnlib.runlog import DIAGNOSTICS_FILE, LATEST_DRIFT_FILE
from diagnostics import installed_versions, step_timings, with_latest

logger = logging.getLogger("app")

ROUTES = ("/prediction", "/scoring", "/summarystats", "/diagnostics", "/health", "/metrics")
MLFLOW_FORMS = ("dataframe_records", "dataframe_split", "instances", "inputs")
ENVELOPE_OPTIONS = ("reasons",)  # what a body may ask for beside its records
MAX_REASONS = 100
REPLY_FORMATS = ("native", "mlflow")


class InputError(ValueError):
    """A request whose content cannot be predicted on; the message names the record and column."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --- turning request bodies into records --------------------------------------------------------


def _object_from_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) == len(pairs):
        return record
    names = [name for name, _ in pairs]
    return make_record(names, [value for _, value in pairs], repeated_names(names))


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON; send null for a missing value")


def _parse_json(text: str) -> Any:
    """Return the parsed JSON text; an object that names a key twice becomes RepeatedKeys.

    NaN and Infinity are refused (json.loads reads them; other parsers refuse them, and a NaN echoed
    in an id column would make the reply itself invalid JSON). Telling repeated keys apart needs a
    Python call per object (``_object_from_pairs``), which costs more than the rest of a request;
    so the text is parsed without it first (by orjson, or by the standard library for what orjson
    refuses: NaN, integers past 64 bits, lone surrogates, deep nesting, errors to explain), and
    parsed again with it unless its ':' count proves
    that no object lost a key: every ':' outside a string separates one member, so when the text
    holds exactly as many ':' as the body and its records hold keys, no key was lost anywhere (and
    no string holds a ':', and no object is nested deeper).
    """
    try:
        body = orjson.loads(text)  # strict JSON in C; whatever it refuses, the standard library explains
    except orjson.JSONDecodeError:
        body = json.loads(text, parse_constant=_refuse_constant)
    if _members(body) == text.count(":"):
        return body
    return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_object_from_pairs)


def _members(body: Any) -> int:
    """Return how many keys the parsed body, its records and its envelope's values hold: never more
    than the text holds (objects nested deeper are not counted, and send the text to the careful parse)."""
    if type(body) is list:
        return _records_members(body)
    if type(body) is not dict:
        return 0
    count = len(body)
    for value in body.values():
        if type(value) is list:
            count += _records_members(value)
        elif type(value) is dict:  # {"dataframe_split": {"columns": ..., "data": ...}}, {"inputs": {...}}
            count += len(value) + sum(_records_members(item) for item in value.values() if type(item) is list)
    return count


def _records_members(items: list) -> int:
    return sum(map(len, items)) if items and set(map(type, items)) == {dict} else 0


@dataclass
class Found:
    """What a JSON body holds: its records (or the dataset path it names) and the options it asks for."""

    records: list[Any] | str
    options: dict[str, Any]


def records_from_json(body: Any, *, max_records: int) -> Found:
    """Return the records of a JSON body, or the dataset path it names (a str), with its options.

    More than ``max_records`` records, in whatever form, are a 413 before any record is built.
    """
    if isinstance(body, list):
        return Found(_counted(body, max_records), {})
    if not isinstance(body, dict):
        raise InputError("the JSON body must be an object: a record, {\"records\": [...]}, "
                         "{\"dataframe_split\": ...}, {\"dataframe_records\": [...]} or {\"path\": ...}")
    if isinstance(body, RepeatedKeys):  # {"path": "a", "path": "b"}: which one was meant?
        for key in body.repeated:
            if key in ("path", "records", *MLFLOW_FORMS, *ENVELOPE_OPTIONS, "params"):
                raise InputError(f"the JSON body names {key!r} twice")
    options = {key: body[key] for key in ENVELOPE_OPTIONS if key in body}
    envelope = len(body) - len(options) == 1
    if "path" in body and envelope:
        if not isinstance(body["path"], str):
            raise InputError("'path' must be a string")
        return Found(body["path"], options)
    if "records" in body and envelope:
        if not isinstance(body["records"], list):
            raise InputError("'records' must be a list of objects")
        return Found(_counted(body["records"], max_records), options)
    for form in MLFLOW_FORMS:
        if form in body:
            # MLflow's scoring protocol carries options in "params" beside the records.
            params = body.get("params")
            return Found(_mlflow_records(form, body[form], max_records),
                         dict(params) if isinstance(params, dict) else {})
    return Found([body], {})


def _counted(items: list[Any], max_records: int) -> list[Any]:
    """Return ``items``, or raise a 413 when they are more records than a request may hold."""
    if len(items) > max_records:
        raise InputError(f"{len(items)} records; at most {max_records} per request", 413)
    return items


def _mlflow_records(form: str, data: Any, max_records: int) -> list[Any]:
    """Return the records of one of MLflow's request forms, counted before any is built."""
    if form == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) or not isinstance(data.get("data"), list):
            raise InputError("'dataframe_split' must hold 'columns' (a list) and 'data' (a list of rows)")
        return _rows_as_records(_column_names(data["columns"]), _counted(data["data"], max_records),
                                "dataframe_split row")
    if form == "inputs" and isinstance(data, dict):
        # TF-serving's columnar form: {"column": [values...], ...}, all lists of one length.
        columns = list(data)
        lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
        if not columns or len(lengths) != 1 or -1 in lengths:
            raise InputError("'inputs' as an object must map each column to a list of values, all of one length")
        _counted(next(iter(data.values())), max_records)
        return _rows_as_records(columns, [list(row) for row in zip(*data.values())], "inputs row")
    if not isinstance(data, list):
        expected = "a list of objects" if form != "inputs" else "a list of objects or an object of columns"
        raise InputError(f"{form!r} must be {expected}")
    if form in ("instances", "inputs") and data and all(isinstance(row, list) for row in data):
        raise InputError(f"{form!r} holds rows without column names; send objects, or 'dataframe_split' with "
                         "its 'columns'")
    return _counted(data, max_records)


def _column_names(columns: list[Any]) -> list[str]:
    """Return dataframe_split's column names as text; each must be a string or a number."""
    for index, name in enumerate(columns):
        # A list or object is refused unread: str() of one nested a thousand deep is a RecursionError.
        if isinstance(name, bool) or not isinstance(name, (str, int, float)):
            kind = "null" if name is None else "true/false" if isinstance(name, bool) else type(name).__name__
            kind = {"list": "a list", "dict": "an object"}.get(kind, kind)
            raise InputError(f"'dataframe_split' column {index}: a column name must be a string or a number, "
                             f"got {kind}")
    return [name if isinstance(name, str) else str(name) for name in columns]


def _rows_as_records(columns: list[str], rows: list[Any], what: str) -> list[Any]:
    repeated = repeated_names(columns)
    records = []
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InputError(f"record {index}: {what} must be a list of {len(columns)} values")
        records.append(make_record(columns, row, repeated))
    return records


def records_from_csv(lines: str | Iterable[str], *, max_records: int | None = None) -> list[dict[str, str]]:
    """Return the rows of CSV text (with a header) as records.

    ``lines`` is the text or an open file; with ``max_records``, no record past it is built (413):
    a body's remaining rows are counted, for the message, a file is not read further, so a large
    dataset is never held in memory whole.
    """
    reader = csv.reader(io.StringIO(lines) if isinstance(lines, str) else lines)
    header: list[str] | None = None
    repeated: list[str] = []
    records = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header, repeated = row, repeated_names(row)
                continue
            index = len(records)
            if max_records is not None and index >= max_records:
                if not isinstance(lines, str):
                    raise InputError(f"more than {max_records} records; at most {max_records} per request", 413)
                count = index + 1 + sum(1 for row in reader if any(cell.strip() for cell in row))
                raise InputError(f"{count} records; at most {max_records} per request", 413)
            if len(row) != len(header):
                raise InputError(f"record {index}: {len(row)} fields, the header has {len(header)}")
            records.append(make_record(header, row, repeated))
    except csv.Error as exc:
        raise InputError(f"not a well-formed CSV {'body' if isinstance(lines, str) else 'file'}: {exc}") from None
    if header is None:
        raise InputError("the CSV body is empty")
    return records


def resolve_dataset_path(text: str, config: Config) -> Path:
    """Return the CSV file ``text`` names inside the project's data folders, or raise InputError.

    Relative paths start at the project folder. The real path (symlinks followed) must lie inside
    the source, ingested or test data folder; anything else is refused without being read.
    """
    if "\x00" in text or not text.strip():
        raise InputError("'path' must name a CSV file")
    name = shown(text, 200)
    try:
        # JSON can carry lone surrogates ("\ud800") that no file name can hold; os calls would
        # raise UnicodeEncodeError, which is not an OSError.
        os.fsencode(text)
    except UnicodeEncodeError:
        raise InputError(f"'path' {name!r} is not a file name", status=400) from None
    candidate = Path(text)
    if not candidate.is_absolute():
        candidate = config.root / candidate
    allowed = [config.paths.source, config.paths.ingested, config.paths.testdata]
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError):  # a symlink loop, a name too long
        raise InputError(f"'path' {name!r} cannot be used", status=400) from None
    # Containment is checked before existence, so a refused path tells nothing about what exists.
    if not any(real.is_relative_to(folder.resolve()) for folder in allowed):
        names = ", ".join(f"{folder.name}/" for folder in allowed)
        raise InputError(f"'path' {name!r} is outside the data folders ({names})", status=403)
    # One stat, its errors mapped: Path.exists() lets ENAMETOOLONG (a component over NAME_MAX, a
    # path over PATH_MAX that resolve() passed through) and EACCES escape as a 500.
    try:
        st = real.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"no dataset at {name!r}", status=404) from None
    except OSError:
        raise InputError(f"'path' {name!r} cannot be used", status=400) from None
    if not stat.S_ISREG(st.st_mode) or real.suffix.lower() != ".csv":
        raise InputError(f"'path' {name!r} is not a CSV file", status=400)
    return real


# --- the application ---------------------------------------------------------------------------


def _state() -> "ApiState":
    return current_app.extensions["churn"]


@dataclass
class ApiState:
    config: Config
    watcher: ReleaseWatcher
    statistics: FileCache
    drift: FileCache
    pipeline_diagnostics: FileCache
    installed: list[dict[str, Any]]
    metrics: ApiMetrics
    deployment_id: FileCache  # read only: the pipeline makes it


def public_text(text: str, config: Config) -> str:
    """Return ``text`` with the server's absolute paths made relative to the project (a reply names no server path)."""
    folders = [getattr(config.paths, name) for name in ("source", "ingested", "testdata", "models", "deployment", "logs",
                                                        "scoring", "predictions")]
    for folder in sorted(folders, key=lambda f: len(str(f)), reverse=True):
        text = text.replace(str(folder), folder.name)
    return text.replace(str(config.root) + os.sep, "").replace(str(config.root), ".")
class _OrjsonProvider(DefaultJSONProvider):
    """Replies written by orjson (in C; shortest round-trip floats, UTF-8); what orjson cannot write
    (an echoed id holding a lone surrogate) by the standard library, as before."""

    sort_keys = False  # F1 first, as documented
    compact = True

    def response(self, *args: Any, **kwargs: Any):
        obj = self._prepare_response_obj(args, kwargs)
        try:
            data = orjson.dumps(obj, default=self.default, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return super().response(*args, **kwargs)
        return self._app.response_class(data, mimetype=self.mimetype)


def _error(message: str, status: int, **extra: Any):
    response = jsonify(error=public_text(message, _state().config), **extra)
    response.status_code = status
    return response


UNAUTHORISED = "missing or wrong API token: send the header 'Authorization: Bearer <token>'"
STARTED = "churn.started"  # the WSGI environ key of the request's start (time.perf_counter)


def create_app(config: Config | str | os.PathLike | None = None) -> Flask:
    """Return the API for ``config`` (a Config, a path to config.json, or None for the default)."""
    if not isinstance(config, Config):
        config = load_config(config)
    token = api_token(config)  # a ConfigError when api.token_env names a variable that is not set
    _log_to_gunicorn()
    # No static route: Flask adds /static/<path> (files next to app.py) unless told not to, and this
    # API reads no file outside the data folders.
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.api.max_request_bytes
    app.json = _OrjsonProvider(app)
    app.extensions["churn"] = ApiState(
        config=config,
        watcher=ReleaseWatcher(config.paths.deployment, config.api.reload_interval_seconds),
        statistics=FileCache(config.paths.ingested / RECORD_FILE, lambda: ingested_statistics(config.paths.ingested),
                             version=lambda: load_record(config.paths.ingested)["data_version"]),
        drift=FileCache(config.paths.logs / LATEST_DRIFT_FILE, lambda: read_json_or_none(config.paths.logs / LATEST_DRIFT_FILE)),
        pipeline_diagnostics=FileCache(config.paths.logs / DIAGNOSTICS_FILE,
                                       lambda: read_json_or_none(config.paths.logs / DIAGNOSTICS_FILE)),
        installed=installed_versions(),
        metrics=ApiMetrics(config),
        deployment_id=FileCache(config.paths.deployment / IDENTITY_FILE,
                                lambda: read_deployment_id(config.paths.deployment)),
    )

    wsgi_app = app.wsgi_app

    def timed_app(environ, start_response):
        # The clock starts here rather than in a before_request hook: one hook less on every request.
        environ[STARTED] = time.perf_counter()
        return wsgi_app(environ, start_response)

    app.wsgi_app = timed_app
    state = app.extensions["churn"]

    @app.after_request
    def count_request(response):
        current = request._get_current_object()  # one proxy look-up, not five
        rule = current.url_rule.rule if current.url_rule is not None else None
        if rule is None and response.status_code == 405:  # a route that exists, asked with the wrong method
            rule = current.path if current.path in ROUTES else None
        started = current.environ.get(STARTED)
        state.metrics.observe(rule, current.method, response.status_code,
                              time.perf_counter() - started if started is not None else 0.0)
        release = state.watcher.release  # the attribute: counting never triggers a reload
        state.metrics.note_release(release.release_id if release else None)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        messages = {
            404: f"no route {request.path}; routes: {', '.join(ROUTES)}",
            405: f"{request.method} is not allowed on {request.path}",
            413: f"request body larger than the limit of {config.api.max_request_bytes} bytes",
        }
        response = _error(messages.get(exc.code, exc.description or exc.name), exc.code or 400)
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    if token is not None:
        expected = f"Bearer {token}".encode()

        @app.before_request
        def require_token():
            if request.path == "/health":
                return None
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if hmac.compare_digest(given, expected):  # constant time: the reply's timing tells nothing of the token
                return None
            response = _error(UNAUTHORISED, 401)
            response.headers["WWW-Authenticate"] = "Bearer"
            return response

    @app.errorhandler(ChurnError)
    def state_error(exc: ChurnError):
        # The server's files are not usable right now (a damaged record, a release that will not
        # load): the service is unavailable, and the reply says why.
        logger.error("%s %s: %s", request.method, request.path, exc)
        return _error(str(exc), 503)

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return _error("internal error; the server log has the details", 500)

    @app.get("/health")
    def health():
        release = _state().watcher.current()
        if release is None:
            return _error(_state().watcher.problem or "no release loaded", 503,
                          deployment=_state().deployment_id.get())
        body = {"status": "ok", "release_id": release.release_id, "algorithm": release.model.metadata["algorithm"],
                "loaded_at": release.loaded_at, "deployment": _state().deployment_id.get()}
        if _state().watcher.problem:
            body["warning"] = public_text(_state().watcher.problem, _state().config)
        return jsonify(body)

    @app.post("/prediction")
    def prediction():
        release = state.watcher.current()
        if release is None:
            return _error(state.watcher.problem or "no release loaded", 503)
        try:
            current = request._get_current_object()  # one proxy look-up, not one per use
            args = _query_args(current)
            reply_format = _reply_format(args)
            records, options = _request_records(current, state.config)
            reasons = _reasons_wanted(args, options)
            if len(records) == 0:
                raise InputError("no records to predict")
            batch = records_to_batch(records, release.schema)
            unseen = release.predictor.unseen_categories(batch)
            known = known_categories(release.predictor, release.schema) if unseen else {}
            if unseen and state.config.api.unknown_categories == "reject":
                row, column, value = unseen[0]
                raise InputError(f"record {row}: {_unseen_text(column, value, known, outcome='nothing was scored')} "
                                 "(api.unknown_categories is \"reject\")")
            probabilities = release.predictor.probabilities(batch)
        except InputError as exc:
            return _error(str(exc), exc.status)
        except RecordError as exc:
            return _error(str(exc), 400)
        predictions = [{"churn": churn, "probability": probability} for probability, churn
                       in zip(probabilities.tolist(), predicted_classes(probabilities, release.threshold).tolist())]
        for key, values in batch.ids.items():  # under the caller's spelling
            for item, value in zip(predictions, values):
                if value is not NO_ID:
                    item[key] = value
        for row, column, value in unseen:
            predictions[row].setdefault("warnings", []).append(_unseen_text(column, value, known))
        state.metrics.predicted(len(predictions), sum(item["churn"] for item in predictions))
        body: dict[str, Any] = {"release_id": release.release_id, "count": len(predictions)}
        if reasons:
            try:
                _add_reasons(predictions, release, batch, reasons)
            except ReasonsUnavailable as exc:
                body["warning"] = str(exc)
            except RecordError as exc:
                return _error(str(exc), 400)
        if reply_format == "mlflow":
            return jsonify(predictions=predictions)
        return jsonify(**body, predictions=predictions)

    @app.get("/scoring")
    def scoring():
        release = _state().watcher.current()
        if release is None:
            return _error(_state().watcher.problem or "no release loaded", 503)
        scores = release.scores
        body: dict[str, Any] = {key: scores.get(key) for key in METRICS}
        body.update(release_id=release.release_id, rows=scores.get("rows"),
                    confusion_matrix=scores.get("confusion_matrix"))
        return jsonify(body)

    @app.get("/summarystats")
    def summarystats():
        stats = _state().statistics.get()
        return jsonify(data_version=stats["data_version"], rows=stats["rows"], columns=stats["summary_statistics"],
                       categorical=stats["categorical"], target=stats["target"])

    @app.get("/diagnostics")
    def diagnostics():
        state = _state()
        release = state.watcher.current()
        stats = state.statistics.get()
        # The latest versions come from the pipeline's last dependency check: a request never waits on PyPI.
        latest = {row["package"]: row.get("latest") for row in (state.pipeline_diagnostics.get() or {}).get("dependencies", [])}
        return jsonify(
            release_id=release.release_id if release else None,
            data_version=stats["data_version"],
            missing_data=stats["missing_data"],
            timings=step_timings({"last_ingest": stats.get("last_ingest")}, release.model.metadata if release else None),
            dependencies=with_latest(state.installed, latest),
            drift=state.drift.get(),
        )

    @app.get("/metrics")
    def metrics():
        state = _state()
        release = state.watcher.current()
        state.metrics.note_release(release.release_id if release else None)
        return Response(state.metrics.render(), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    return app


def _unseen_text(column: str, value: str | None, known: dict[str, set[str]], *,
                 outcome: str = "scored as unknown") -> str:
    if value is None:
        return f"{column}: missing, and the model saw no missing {column} in training; {outcome}"
    near = near_category(value, known.get(column, ()))
    hint = f" (categories are compared exactly: did you mean {shown(near)!r}?)" if near is not None else ""
    return f"{column}: {shown(value)!r} never seen in training{hint}; {outcome}"


def _query_args(current: Any) -> Any:
    """Return the request's query arguments as ``request.args`` gives them (a repeated name: its first
    value), read here without werkzeug's MultiDict when the query string is plain (ASCII, nothing
    percent- or plus-encoded), as ``?reasons=3`` is: parsing it costs a tenth of such a request."""
    text = current.environ.get("QUERY_STRING", "")
    if not text.isascii() or "%" in text or "+" in text:
        return current.args
    args: dict[str, str] = {}
    for pair in text.split("&"):
        if pair:  # as urllib's parse_qsl: empty pairs skipped, a name without '=' has the value ''
            name, _, value = pair.partition("=")
            args.setdefault(name, value)
    return args


def _reply_format(args: Any) -> str:
    """Return the reply shape asked for by ``?format=``: native (the default) or mlflow."""
    value = args.get("format", "native").strip().lower()
    if value not in REPLY_FORMATS:
        raise InputError(f"format {shown(value)!r}: use format=native or format=mlflow")
    return value


def _reasons_wanted(args: Any, options: dict[str, Any]) -> int:
    """Return how many reasons each prediction should carry: ``?reasons=`` or the body's ``reasons``, else 0."""
    if "reasons" in args:
        text = args.get("reasons", "").strip()
        digits = text.lstrip("0") or "0"  # int() of more than 4,300 digits raises, leading zeros included
        if not text.isascii() or not text.isdigit() or len(digits) > 3 or int(digits) > MAX_REASONS:
            raise InputError(f"reasons={shown(text)!r}: must be a whole number from 0 to {MAX_REASONS}")
        return int(digits)
    value = options.get("reasons", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REASONS:
        raise InputError(f"'reasons' must be a whole number from 0 to {MAX_REASONS}")
    return value


def _add_reasons(predictions: list[dict[str, Any]], release: Any, batch: Any, count: int) -> None:
    """Give each prediction its ``count`` largest reasons, its log-odds and the release's base value."""
    contributions = release.predictor.explain(batch)
    base = contributions.base
    if len(batch) <= SMALL_BATCH:  # a request's few records: a row at a time (see row_reasons)
        for item, log_odds, reasons in zip(predictions, contributions.log_odds_list(),
                                           row_reasons(contributions, batch, release.schema, count)):
            item.update(reasons=reasons, log_odds=log_odds, base_value=base)
        return
    top = top_reasons(contributions, count)
    texts = reason_texts(contributions, shown_values(batch, release.schema), top)
    rows = np.arange(len(batch))
    # Each feature's values as the reply shows them: numbers (null when missing) or categories.
    places = [release.schema.feature_places[f] for f in contributions.features]
    values = [[None if v != v else v for v in batch.numeric[:, at].tolist()] if numeric else list(batch.categorical[at])
              for numeric, at in places]
    slots = []
    for slot in range(top.shape[1]):
        features = top[:, slot].tolist()
        amounts = contributions.values[rows, top[:, slot]].tolist()
        slots.append([{"feature": contributions.features[f], "value": values[f][row], "contribution": amount,
                       "text": text} for row, (f, amount, text) in enumerate(zip(features, amounts, texts[slot]))])
    for item, log_odds, reasons in zip(predictions, contributions.log_odds_list(), zip(*slots) if slots else
                                       ([] for _ in predictions)):
        item.update(reasons=list(reasons), log_odds=log_odds, base_value=base)


def _log_to_gunicorn() -> None:
    """Under gunicorn, send the API's log lines (reloads, refusals, fast-path checks) to gunicorn's error log."""
    gunicorn_error = logging.getLogger("gunicorn.error")
    for name in ("app", "churnlib"):
        target = logging.getLogger(name)
        if gunicorn_error.handlers and not target.handlers:
            for handler in gunicorn_error.handlers:
                target.addHandler(handler)
            target.setLevel(logging.INFO)
            target.propagate = False


_PLAIN_TYPES = frozenset({"application/json", "text/csv", "application/csv"})


def _request_records(current: Any, config: Config) -> tuple[list[Any], dict[str, Any]]:
    """Return the records of the request ``current``, whatever form they came in, and the body's options."""
    content_type = current.environ.get("CONTENT_TYPE", "")
    if content_type not in _PLAIN_TYPES:  # parameters (a charset), other spellings: parsed
        content_type = (current.mimetype or "").lower()
    if content_type == "application/json":
        raw = _request_body(current, config)
        if not raw.strip():
            raise InputError("the request body is empty")
        try:
            # JSON is UTF-8 (RFC 8259; a charset parameter has no effect). json.loads on bytes
            # would also guess UTF-16 and UTF-32, which the CSV form refuses; one rule for both.
            # (the utf-8-sig codec is Python code; plain utf-8 is not, and a BOM is rare)
            text = raw.decode("utf-8-sig" if raw.startswith(codecs.BOM_UTF8) else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"request body is not UTF-8 text (byte {exc.start}); JSON must be UTF-8") from None
        try:
            body = _parse_json(text)
        except RecursionError:
            raise InputError("request body is nested too deeply") from None
        except ValueError as exc:
            raise InputError(f"request body is not valid JSON: {str(exc).splitlines()[0][:200]}") from None
        found = records_from_json(body, max_records=config.api.max_records)
        if isinstance(found.records, str):
            return _records_from_dataset(resolve_dataset_path(found.records, config), config), found.options
        return found.records, found.options
    if content_type in ("text/csv", "application/csv"):
        try:
            text = _request_body(current, config).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError("the CSV body is not UTF-8 text") from None
        return records_from_csv(text, max_records=config.api.max_records), {}
    raise InputError(f"Content-Type {content_type or 'missing'}: send application/json or text/csv", 415)


def _request_body(current: Any, config: Config) -> bytes:
    """Return the request body, or raise RequestEntityTooLarge (413) if it is over the limit.

    Werkzeug's own limit (MAX_CONTENT_LENGTH) refuses a Content-Length over it, but a chunked body
    (no Content-Length; gunicorn de-chunks it) is cut at the limit without a word: a CSV body
    megabytes over it would be predicted on, its rows past the limit dropped. So one byte more than
    the limit is read, to know.
    """
    limit = config.api.max_request_bytes
    length = current.content_length
    if (length or 0) > limit:  # refused before a byte is read
        raise RequestEntityTooLarge()
    if length is not None:
        # Exactly the bytes announced, in one read (werkzeug's stream reads 64 KiB at a time through
        # a buffer of its own, a quarter of a small request's time in the app); fewer is a client gone.
        data = current.environ["wsgi.input"].read(length)
        if len(data) < length:
            raise ClientDisconnected()
        return data
    data = get_input_stream(current.environ, max_content_length=limit + 1).read()
    if len(data) > limit:
        raise RequestEntityTooLarge()
    return data


def _records_from_dataset(path: Path, config: Config) -> list[dict[str, str]]:
    """Return the records of a dataset file, read row by row and never past api.max_records."""
    # The file may be removed, or turn unreadable, between resolve_dataset_path's check and here.
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return records_from_csv(handle, max_records=config.api.max_records)
    except UnicodeDecodeError:
        raise InputError(f"dataset {path.name} is not UTF-8 text") from None
    except FileNotFoundError:
        raise InputError(f"no dataset at {path.name!r}", status=404) from None
    except OSError as exc:
        raise InputError(f"dataset {path.name} cannot be read: {exc.strerror or exc}", status=403) from None


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run the API on Flask's development server (use `make serve` for gunicorn).")
    parser.add_argument("--config", metavar="PATH", default=None, help="config file (default: $CHURN_CONFIG, else config.json)")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    create_app(arguments.config).run(host="127.0.0.1", port=arguments.port, debug=False)
