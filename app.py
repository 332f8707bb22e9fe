"""The API: predictions, the deployed score, summary statistics and diagnostics over HTTP.

    gunicorn --config gunicorn.conf.py wsgi:app        # what `make serve` runs

Routes (every reply to GET and POST is JSON, errors ``{"error": "..."}`` with a 4xx status; an
OPTIONS request gets Flask's own empty reply with an ``Allow`` header):

- ``POST /prediction``: churn predictions of the deployed model. Records as JSON (one object,
  ``{"records": [...]}``, or MLflow's ``{"dataframe_split": ...}`` / ``{"dataframe_records": [...]}``),
  as CSV (``Content-Type: text/csv``), or ``{"path": "testdata/testdata.csv"}`` for a dataset inside
  the project's data folders.
- ``GET /scoring``: the deployed release's scores on the test data (F1 first).
- ``GET /summarystats``: mean, median and standard deviation of each numeric ingested column.
- ``GET /diagnostics``: missing data, step timings, the dependency check, the latest drift table.
- ``GET /health``: 200 and the release id when a model is loaded, 503 and the reason otherwise.

Hot reload: each worker looks at ``production_deployment/current.json`` at most every
``api.reload_interval_seconds``. When it names a new release, the worker loads it (the model's
SHA-256 checked) and swaps it in only once it loaded; a release that fails is never served, the old
one stays and the failure is logged. Requests in flight keep the release they started with.

Speed: a prediction does not build a pandas DataFrame. The fitted pipeline's preprocessing
(median imputation, scaling, one-hot encoding) and, for logistic regression, the linear model are
replayed with numpy on the request's values (``FastPredictor``); its probabilities equal the
pipeline's ``predict_proba`` to within 1e-9 (tests/test_api.py checks the whole test set).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from churnlib.clock import utc_now
from churnlib.columns import normalise_column_name
from churnlib.config import Config, load_config
from churnlib.dataset import MISSING_TOKENS, FrozenSchema
from churnlib.fsutil import read_json
from churnlib.modelstore import SCORE_DETAILS_FILE, LoadedModel, ModelLoadError, load_model, read_pointer, release_folder
from scoring import THRESHOLD

logger = logging.getLogger("app")

SCORE_KEYS = ("f1", "precision", "recall", "accuracy", "roc_auc")


class InputError(ValueError):
    """A request whose content cannot be predicted on; the message names the record and column."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --- the fast path: the fitted pipeline's arithmetic in numpy, no DataFrame ---------------------


class FastPredictor:
    """Churn probabilities from a fitted Pipeline, computed without pandas.

    Replays the pipeline's fitted steps: median imputation and (for logistic regression) standard
    scaling of numeric features, the missing-category fill and one-hot encoding (unknown categories
    give all zeros) of categorical features, then the classifier. Logistic regression is evaluated
    here directly; XGBoost gets the same dense matrix the pipeline would hand it.
    """

    def __init__(self, pipeline: Any, schema: FrozenSchema):
        preprocess = pipeline.named_steps["preprocess"]
        self.classifier = pipeline.named_steps["classifier"]
        self.numeric_columns = schema.numeric_columns
        self.categorical_columns = schema.categorical_columns
        transformers = preprocess.named_transformers_
        self.medians = np.zeros(len(self.numeric_columns))
        self.mean = np.zeros(len(self.numeric_columns))
        self.scale = np.ones(len(self.numeric_columns))
        self.scaled = False
        if self.numeric_columns:
            numeric = transformers["numeric"]
            self.medians = np.nan_to_num(numeric.named_steps["impute"].statistics_.astype(float))
            if "scale" in numeric.named_steps:
                self.scaled = True
                self.mean = numeric.named_steps["scale"].mean_.astype(float)
                self.scale = numeric.named_steps["scale"].scale_.astype(float)
        # For each categorical column: category -> its column in the encoded matrix.
        self.category_index: list[dict[str | None, int]] = []
        width = len(self.numeric_columns)
        if self.categorical_columns:
            encoder = transformers["categorical"].named_steps["onehot"]
            # A missing value (None) becomes the imputer's fill category, as in the pipeline.
            fill = transformers["categorical"].named_steps["impute"].fill_value
            for categories in encoder.categories_:
                lookup: dict[str | None, int] = {str(c): width + i for i, c in enumerate(categories)}
                if fill in lookup:
                    lookup[None] = lookup[fill]
                self.category_index.append(lookup)
                width += len(categories)
        self.width = width
        self.linear = hasattr(self.classifier, "coef_")
        if self.linear:
            self.coef = self.classifier.coef_[0].astype(float)
            self.intercept = float(self.classifier.intercept_[0])

    def probabilities(self, numeric: np.ndarray, categorical: list[list[str | None]]) -> np.ndarray:
        """Return P(churn) for rows given as a float matrix (NaN = missing) and categories (None = missing).

        Raises InputError naming the record and column when a finite value overflows float64 once
        scaled, or (logistic regression) once multiplied by its coefficient. scikit-learn's own
        pipeline refuses the first (its input check rejects infinity); for the second it answers NaN
        or a certain 0 or 1 depending on whether the BLAS kernel fuses multiply and add.
        """
        rows = numeric.shape[0]
        # Overflow is checked and named below, never warned about (a warning per request floods the
        # server log, and under -W error it would be a 500).
        with np.errstate(over="ignore", invalid="ignore"):
            values = np.where(np.isnan(numeric), self.medians, numeric)
            if self.scaled:
                values = (values - self.mean) / self.scale
            self._refuse_overflow(values)
            if self.linear:
                coef = self.coef[: len(self.numeric_columns)]
                terms = values * coef
                self._refuse_overflow(terms)
                z = values @ coef if self.numeric_columns else np.zeros(rows)
                for j, lookup in enumerate(self.category_index):
                    z = z + np.array([self.coef[lookup[v]] if v in lookup else 0.0 for v in
                                      (row[j] for row in categorical)])
                z = z + self.intercept
                undefined = np.flatnonzero(np.isnan(z))
                if len(undefined):  # finite terms whose partial sums overflowed both ways
                    row = undefined[0]
                    raise self._too_large(row, np.argmax(np.abs(terms[row])))
                # exp(-z) overflows to inf for z < -709: the probability is then 0.0, which is right.
                return 1.0 / (1.0 + np.exp(-z))
        matrix = np.zeros((rows, self.width))
        matrix[:, : len(self.numeric_columns)] = values
        for j, lookup in enumerate(self.category_index):
            for i, row in enumerate(categorical):
                column = lookup.get(row[j])
                if column is not None:
                    matrix[i, column] = 1.0
        return self.classifier.predict_proba(matrix)[:, 1]

    def _refuse_overflow(self, numbers: np.ndarray) -> None:
        finite = np.isfinite(numbers)
        if not finite.all():
            raise self._too_large(*np.argwhere(~finite)[0])

    def _too_large(self, row: int, column: int) -> "InputError":
        return InputError(f"record {int(row)}: column {self.numeric_columns[int(column)]!r}: number too large for the model")


# --- turning request bodies into validated rows ------------------------------------------------

_NAME_CACHE: dict[str, str] = {}
_ABSENT = object()
_CACHED_NAME_CHARS = 256
# Numbers as the data validation reads them (pandas.to_numeric): ASCII decimal notation only.
# Python's float() also reads "1_000", "١٢٣" (Arabic-Indic digits) and "-nan", which a data file
# is refused for; the API must not predict on values the model could never have been trained on.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?inf(?:inity)?",
                     re.IGNORECASE | re.ASCII)  # ASCII: under Unicode rules "ınf" would match "inf"


def _normal(name: Any) -> str:
    if not isinstance(name, str):
        name = str(name)
    normal = _NAME_CACHE.get(name)
    if normal is None:
        normal = normalise_column_name(name)
        # Bounded in count and in size: hostile clients may send endless new names, or megabyte
        # long ones (4096 of those would hold gigabytes in every worker for its whole life).
        if len(_NAME_CACHE) < 4096 and len(name) <= _CACHED_NAME_CHARS:
            _NAME_CACHE[name] = normal
    return normal


def _shown(text: str, limit: int = 40) -> str:
    """Return ``text`` cut to ``limit`` characters for an error message (a hostile value may be megabytes)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _RepeatedKeys(dict):
    """A JSON object or CSV row that named some keys more than once; ``repeated`` lists them."""

    __slots__ = ("repeated",)


def _repeated(names: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    return [name for name in names if name in seen or seen.add(name)]


def _record(names: list[str], values: list[Any], repeated: list[str]) -> dict[str, Any]:
    # dict() keeps the last of two equal keys without a word; {"plan": "a", "plan": "b"} is as
    # ambiguous as {"plan": "a", "Plan": "b"}, which is refused, so the repetition is remembered
    # for records_to_batch to refuse when it names a feature or id column.
    if not repeated:
        return dict(zip(names, values))
    record = _RepeatedKeys(zip(names, values))
    record.repeated = repeated
    return record


def _object_from_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) == len(pairs):
        return record
    names = [name for name, _ in pairs]
    return _record(names, [value for _, value in pairs], _repeated(names))


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON; send null for a missing value")


def _numeric_value(value: Any, *, record: int, column: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        kind = "true/false" if isinstance(value, bool) else ("an object" if isinstance(value, dict) else "a list")
        raise InputError(f"record {record}: column {column!r}: expected a number, got {kind}")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise InputError(f"record {record}: column {column!r}: number too large") from None
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in MISSING_TOKENS:
            return math.nan
        if not _NUMBER.fullmatch(text):
            raise InputError(f"record {record}: column {column!r}: {_shown(text)!r} is not a number")
        number = float(text)
    else:
        raise InputError(f"record {record}: column {column!r}: expected a number")
    if math.isinf(number):
        raise InputError(f"record {record}: column {column!r}: not a finite number")
    return number


def _category_value(value: Any, *, record: int, column: str) -> str | None:
    """Return a category as text, or None for a missing value."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise InputError(f"record {record}: column {column!r}: expected a category, got {kind}")
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value).strip()
    if isinstance(value, float) and math.isnan(value) or not text:
        return None
    return text


@dataclass
class Batch:
    """Validated rows, ready for FastPredictor."""

    numeric: np.ndarray
    categorical: list[list[str | None]]
    ids: list[dict[str, Any]] = field(default_factory=list)


def _key_plan(keys: tuple, wanted: set[str], index: int) -> dict[str, Any]:
    """Return which key of a record holds each wanted column, or raise InputError for two keys naming one."""
    plan: dict[str, Any] = {}
    for key in keys:
        name = _normal(key)
        if name not in wanted:
            continue
        if name in plan:
            raise InputError(f"record {index}: two keys name column {name!r}")
        plan[name] = key
    return plan


def records_to_batch(records: list[Any], schema: FrozenSchema) -> Batch:
    """Return the records' feature values, or raise InputError naming the first bad record and column.

    Keys are normalised like data headers; keys that are not features are ignored. A feature key
    that is missing is an error; a null value is a missing value.
    """
    numeric_columns, categorical_columns, id_columns = schema.numeric_columns, schema.categorical_columns, schema.id_columns
    numeric_rows: list[list[float]] = []
    categorical: list[list[str]] = []
    ids: list[dict[str, Any]] = []
    wanted = set(schema.feature_columns) | set(id_columns)
    # Records of one request nearly always share their keys: they are matched to columns once.
    last_keys: tuple | None = None
    plan: dict[str, Any] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(f"record {index}: expected an object of column names and values, got {type(record).__name__}")
        if isinstance(record, _RepeatedKeys):
            for key in record.repeated:
                if _normal(key) in wanted:
                    raise InputError(f"record {index}: two keys name column {_normal(key)!r}")
        keys = tuple(record)
        if keys != last_keys:
            plan, last_keys = _key_plan(keys, wanted, index), keys
        numbers = []
        for column in numeric_columns:
            key = plan.get(column, _ABSENT)
            if key is _ABSENT:
                raise InputError(f"record {index}: feature {column!r} missing")
            value = record[key]
            if type(value) is float and -1e308 < value < 1e308:  # the common case, checked inline
                numbers.append(value)
            else:
                numbers.append(_numeric_value(value, record=index, column=column))
        numeric_rows.append(numbers)
        row = []
        for column in categorical_columns:
            key = plan.get(column, _ABSENT)
            if key is _ABSENT:
                raise InputError(f"record {index}: feature {column!r} missing")
            row.append(_category_value(record[key], record=index, column=column))
        categorical.append(row)
        if id_columns:
            ids.append({c: record[plan[c]] for c in id_columns
                        if c in plan and not isinstance(record[plan[c]], (dict, list))})
    numeric = np.array(numeric_rows, dtype=float).reshape(len(records), len(numeric_columns))
    return Batch(numeric=numeric, categorical=categorical, ids=ids)


def records_from_json(body: Any) -> list[Any] | str:
    """Return the records of a JSON body, or the dataset path it names (a str)."""
    if isinstance(body, list):
        return body
    if not isinstance(body, dict):
        raise InputError("the JSON body must be an object: a record, {\"records\": [...]}, "
                         "{\"dataframe_split\": ...}, {\"dataframe_records\": [...]} or {\"path\": ...}")
    if isinstance(body, _RepeatedKeys):  # {"path": "a", "path": "b"}: which one was meant?
        for key in body.repeated:
            if key in ("path", "records", "dataframe_records", "dataframe_split"):
                raise InputError(f"the JSON body names {key!r} twice")
    if "path" in body and len(body) == 1:
        if not isinstance(body["path"], str):
            raise InputError("'path' must be a string")
        return body["path"]
    if "records" in body and len(body) == 1:
        if not isinstance(body["records"], list):
            raise InputError("'records' must be a list of objects")
        return body["records"]
    if "dataframe_records" in body:
        if not isinstance(body["dataframe_records"], list):
            raise InputError("'dataframe_records' must be a list of objects")
        return body["dataframe_records"]
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("columns"), list) or not isinstance(split.get("data"), list):
            raise InputError("'dataframe_split' must hold 'columns' (a list) and 'data' (a list of rows)")
        columns = [str(c) for c in split["columns"]]
        repeated = _repeated(columns)
        records = []
        for index, row in enumerate(split["data"]):
            if not isinstance(row, list) or len(row) != len(columns):
                raise InputError(f"record {index}: dataframe_split row must be a list of {len(columns)} values")
            records.append(_record(columns, row, repeated))
        return records
    return [body]


def records_from_csv(lines: str | Iterable[str], *, max_records: int | None = None) -> list[dict[str, str]]:
    """Return the rows of CSV text (with a header) as records.

    ``lines`` is the text or an open file; with ``max_records``, reading stops at the first row
    past it (413), so a large dataset is never held in memory whole.
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
                header, repeated = row, _repeated(row)
                continue
            index = len(records)
            if max_records is not None and index >= max_records:
                raise InputError(f"more than {max_records} records; at most {max_records} per request", 413)
            if len(row) != len(header):
                raise InputError(f"record {index}: {len(row)} fields, the header has {len(header)}")
            records.append(_record(header, row, repeated))
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
    shown = _shown(text, 200)
    try:
        # JSON can carry lone surrogates ("\ud800") that no file name can hold; os calls would
        # raise UnicodeEncodeError, which is not an OSError.
        os.fsencode(text)
    except UnicodeEncodeError:
        raise InputError(f"'path' {shown!r} is not a file name", status=400) from None
    candidate = Path(text)
    if not candidate.is_absolute():
        candidate = config.root / candidate
    allowed = [config.paths.source, config.paths.ingested, config.paths.testdata]
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError):  # a symlink loop, a name too long
        raise InputError(f"'path' {shown!r} cannot be used", status=400) from None
    # Containment is checked before existence, so a refused path tells nothing about what exists.
    if not any(real.is_relative_to(folder.resolve()) for folder in allowed):
        names = ", ".join(f"{folder.name}/" for folder in allowed)
        raise InputError(f"'path' {shown!r} is outside the data folders ({names})", status=403)
    # One stat, its errors mapped: Path.exists() lets ENAMETOOLONG (a component over NAME_MAX, a
    # path over PATH_MAX that resolve() passed through) and EACCES escape as a 500.
    try:
        st = real.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"no dataset at {shown!r}", status=404) from None
    except OSError:
        raise InputError(f"'path' {shown!r} cannot be used", status=400) from None
    if not stat.S_ISREG(st.st_mode) or real.suffix.lower() != ".csv":
        raise InputError(f"'path' {shown!r} is not a CSV file", status=400)
    return real


# --- the deployed release, reloaded when the pointer moves -------------------------------------


@dataclass
class Release:
    release_id: str
    model: LoadedModel
    schema: FrozenSchema
    predictor: FastPredictor
    scores: dict[str, Any]
    loaded_at: str


class ReleaseWatcher:
    """Holds the release a worker serves and swaps in a new one once it has loaded and verified."""

    def __init__(self, deployment_folder: Path, interval: float):
        self.deployment_folder = deployment_folder
        self.interval = interval
        self.release: Release | None = None
        self.problem: str | None = "no release deployed yet"
        self._checked_at = -math.inf
        self._pointer_signature: tuple | None = None
        self._lock = threading.Lock()

    def current(self) -> Release | None:
        """Return the release to serve, looking for a new one at most every ``interval`` seconds."""
        now = time.monotonic()
        if now - self._checked_at >= self.interval and self._lock.acquire(blocking=False):
            try:
                self._checked_at = now
                self._refresh()
            finally:
                self._lock.release()
        return self.release

    def _refresh(self) -> None:
        pointer_path = self.deployment_folder / "current.json"
        try:
            st = os.stat(pointer_path)
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            signature = None
        if signature == self._pointer_signature:
            return
        self._pointer_signature = signature
        try:
            pointer = read_pointer(self.deployment_folder)
        except ModelLoadError as exc:
            self._fail(str(exc))
            return
        if pointer is None:
            if self.release is None:
                self.problem = "no release deployed yet"
            return
        if self.release is not None and pointer["current"] == self.release.release_id:
            return
        # At start (nothing served yet) fall back to earlier releases if the current one is broken.
        candidates = [pointer["current"]] if self.release is not None else [pointer["current"], *pointer.get("previous", [])]
        for release_id in candidates:
            try:
                release = load_release(self.deployment_folder, release_id)
            except Exception as exc:  # whatever stops a release from loading, it is not served
                self._fail(f"release {release_id} not loaded: {exc}")
                continue
            previous = self.release.release_id if self.release else None
            self.release = release
            self.problem = None if release_id == pointer["current"] else f"serving {release_id}: {self.problem}"
            logger.info("now serving release %s%s", release_id, f" (was {previous})" if previous else "")
            return

    def _fail(self, message: str) -> None:
        serving = f"; still serving {self.release.release_id}" if self.release else ""
        logger.error("%s%s", message, serving)
        self.problem = message + serving


def load_release(deployment_folder: Path, release_id: str) -> Release:
    """Return a release loaded from disk: model (SHA-256 checked), fast predictor and scores."""
    folder = release_folder(deployment_folder, release_id)
    model = load_model(folder)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    scores = read_json(folder / SCORE_DETAILS_FILE) or {}
    return Release(
        release_id=release_id,
        model=model,
        schema=schema,
        predictor=FastPredictor(model.pipeline, schema),
        scores=scores,
        loaded_at=utc_now(),
    )


# --- caches per data version -------------------------------------------------------------------


class FileCache:
    """Recompute a value only when a file changes.

    A change is seen in the file's (inode, mtime, size); with ``version``, a function that reads a
    version from the file cheaply, only a new version means a recomputation (the ingestion record
    is rewritten for many reasons, but only a new data version changes the statistics).
    """

    _UNSET = object()

    def __init__(self, path: Path, compute, version=None):
        self.path = path
        self.compute = compute
        self.version = version
        self._signature: Any = self._UNSET
        self._version: Any = self._UNSET
        self._value: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        try:
            st = os.stat(self.path)
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            signature = None
        with self._lock:
            if signature != self._signature:
                self._signature = signature
                version = self.version() if self.version else signature
                if version != self._version:
                    self._value = self.compute()
                    self._version = version
            return self._value


def ingested_statistics(config: Config) -> dict[str, Any]:
    """Return summary statistics and missing-data shares of the ingested data (its committed rows)."""
    from diagnostics import missing_data, summary_statistics
    from ingestion import load_record
    from training import TrainingError, read_training_data

    record = load_record(config.paths.ingested)
    try:
        frame, schema, _fingerprint = read_training_data(config.paths.ingested, record)
    except TrainingError:
        return {"data_version": record["data_version"], "rows": 0, "summary_statistics": {}, "missing_data": {},
                "last_ingest": record.get("last_ingest")}
    return {
        "data_version": record["data_version"],
        "rows": int(len(frame)),
        "summary_statistics": summary_statistics(frame, schema.numeric_columns),
        "missing_data": missing_data(frame[list(schema.columns)]),
        "last_ingest": record.get("last_ingest"),
    }


def installed_versions() -> list[dict[str, Any]]:
    """Return the installed version of each package pinned in requirements.txt (no network)."""
    from diagnostics import pinned_requirements

    rows = []
    try:
        pins = pinned_requirements()
    except FileNotFoundError:
        return rows
    for name, pin in pins:
        try:
            installed = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            installed = None
        rows.append({"package": name, "required": pin, "installed": installed})
    return rows


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


def _error(message: str, status: int):
    response = jsonify(error=message)
    response.status_code = status
    return response


def create_app(config: Config | str | os.PathLike | None = None) -> Flask:
    """Return the API for ``config`` (a Config, a path to config.json, or None for the default)."""
    if not isinstance(config, Config):
        config = load_config(config)
    _log_to_gunicorn()
    # No static route: Flask adds /static/<path> (files next to app.py) unless told not to, and this
    # API reads no file outside the data folders.
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.api.max_request_bytes
    app.json.sort_keys = False  # F1 first, as documented
    app.json.compact = True
    from diagnostics import DIAGNOSTICS_FILE, LATEST_DRIFT_FILE
    from ingestion import RECORD_FILE, load_record

    app.extensions["churn"] = ApiState(
        config=config,
        watcher=ReleaseWatcher(config.paths.deployment, config.api.reload_interval_seconds),
        statistics=FileCache(config.paths.ingested / RECORD_FILE, lambda: ingested_statistics(config),
                             version=lambda: load_record(config.paths.ingested)["data_version"]),
        drift=FileCache(config.paths.logs / LATEST_DRIFT_FILE, lambda: _read_json_quietly(config.paths.logs / LATEST_DRIFT_FILE)),
        pipeline_diagnostics=FileCache(config.paths.logs / DIAGNOSTICS_FILE,
                                       lambda: _read_json_quietly(config.paths.logs / DIAGNOSTICS_FILE)),
        installed=installed_versions(),
    )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        messages = {
            404: f"no route {request.path}; routes: /prediction, /scoring, /summarystats, /diagnostics, /health",
            405: f"{request.method} is not allowed on {request.path}",
            413: f"request body larger than the limit of {config.api.max_request_bytes} bytes",
        }
        response = _error(messages.get(exc.code, exc.description or exc.name), exc.code or 400)
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return _error("internal error; the server log has the details", 500)

    @app.get("/health")
    def health():
        release = _state().watcher.current()
        if release is None:
            return _error(_state().watcher.problem or "no release loaded", 503)
        body = {"status": "ok", "release_id": release.release_id, "algorithm": release.model.metadata["algorithm"],
                "loaded_at": release.loaded_at}
        if _state().watcher.problem:
            body["warning"] = _state().watcher.problem
        return jsonify(body)

    @app.post("/prediction")
    def prediction():
        state = _state()
        release = state.watcher.current()
        if release is None:
            return _error(state.watcher.problem or "no release loaded", 503)
        try:
            records = _request_records(state.config)
            if len(records) == 0:
                raise InputError("no records to predict")
            if len(records) > state.config.api.max_records:
                raise InputError(f"{len(records)} records; at most {state.config.api.max_records} per request", 413)
            batch = records_to_batch(records, release.schema)
            probabilities = release.predictor.probabilities(batch.numeric, batch.categorical)
        except InputError as exc:
            return _error(str(exc), exc.status)
        predictions = []
        for index, probability in enumerate(probabilities.tolist()):
            item = {"churn": int(probability > THRESHOLD), "probability": probability}
            if batch.ids and batch.ids[index]:
                item.update(batch.ids[index])
            predictions.append(item)
        return jsonify(release_id=release.release_id, count=len(predictions), predictions=predictions)

    @app.get("/scoring")
    def scoring():
        release = _state().watcher.current()
        if release is None:
            return _error(_state().watcher.problem or "no release loaded", 503)
        scores = release.scores
        body: dict[str, Any] = {key: scores.get(key) for key in SCORE_KEYS}
        body.update(release_id=release.release_id, rows=scores.get("rows"),
                    confusion_matrix=scores.get("confusion_matrix"))
        return jsonify(body)

    @app.get("/summarystats")
    def summarystats():
        stats = _state().statistics.get()
        return jsonify(data_version=stats["data_version"], rows=stats["rows"], columns=stats["summary_statistics"])

    @app.get("/diagnostics")
    def diagnostics():
        state = _state()
        release = state.watcher.current()
        stats = state.statistics.get()
        latest = {row["package"]: row.get("latest") for row in (state.pipeline_diagnostics.get() or {}).get("dependencies", [])}
        dependencies = []
        for row in state.installed:
            newest = latest.get(row["package"]) or "latest unknown"
            outdated = None if newest == "latest unknown" or row["installed"] is None else newest != row["installed"]
            dependencies.append({**row, "latest": newest, "outdated": outdated})
        metadata = release.model.metadata if release else {}
        last_ingest = stats.get("last_ingest") or {}
        return jsonify(
            release_id=release.release_id if release else None,
            data_version=stats["data_version"],
            missing_data=stats["missing_data"],
            timings={"ingestion_seconds": last_ingest.get("seconds"), "ingestion_at": last_ingest.get("at"),
                     "training_seconds": metadata.get("training_seconds"), "trained_at": metadata.get("trained_at")},
            dependencies=dependencies,
            drift=state.drift.get(),
        )

    return app


def _log_to_gunicorn() -> None:
    """Under gunicorn, send this module's log lines (reloads, refusals) to gunicorn's error log."""
    gunicorn_error = logging.getLogger("gunicorn.error")
    if gunicorn_error.handlers and not logger.handlers:
        for handler in gunicorn_error.handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _read_json_quietly(path: Path) -> Any:
    try:
        return read_json(path)
    except ValueError:
        return None


def _request_records(config: Config) -> list[Any]:
    """Return the records of the current request, whatever form they came in."""
    content_type = (request.mimetype or "").lower()
    if content_type == "application/json":
        raw = _request_body(config)
        if not raw.strip():
            raise InputError("the request body is empty")
        try:
            # JSON is UTF-8 (RFC 8259; a charset parameter has no effect). json.loads on bytes
            # would also guess UTF-16 and UTF-32, which the CSV form refuses; one rule for both.
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(f"request body is not UTF-8 text (byte {exc.start}); JSON must be UTF-8") from None
        try:
            # NaN and Infinity are not JSON (json.loads reads them; other parsers refuse them, and a
            # NaN echoed in an id column would make the reply itself invalid JSON).
            body = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_object_from_pairs)
        except RecursionError:
            raise InputError("request body is nested too deeply") from None
        except ValueError as exc:
            raise InputError(f"request body is not valid JSON: {str(exc).splitlines()[0][:200]}") from None
        found = records_from_json(body)
        if isinstance(found, str):
            return _records_from_dataset(resolve_dataset_path(found, config), config)
        return found
    if content_type in ("text/csv", "application/csv"):
        try:
            text = _request_body(config).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError("the CSV body is not UTF-8 text") from None
        return records_from_csv(text)
    raise InputError(f"Content-Type {content_type or 'missing'}: send application/json or text/csv", 415)


def _request_body(config: Config) -> bytes:
    """Return the request body, or raise RequestEntityTooLarge (413) if it is over the limit.

    Werkzeug's own limit (MAX_CONTENT_LENGTH) refuses a Content-Length over it, but a chunked body
    (no Content-Length; gunicorn de-chunks it) is cut at the limit without a word: a CSV body
    megabytes over it would be predicted on, its rows past the limit dropped. So one byte more than
    the limit is read, to know.
    """
    limit = config.api.max_request_bytes
    if (request.content_length or 0) > limit:  # refused before a byte is read
        raise RequestEntityTooLarge()
    data = get_input_stream(request.environ, max_content_length=limit + 1).read()
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
