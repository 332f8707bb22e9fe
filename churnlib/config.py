"""The one config loader: reads config.json, fills defaults, validates every key.

Every error is one line that names the file and the key, for example
``config.json: drift.alpha: must be a number in (0, 1), got 1.5``.
Relative paths in the config resolve from the folder that holds the config file, never from
the current directory, so a practice set-up can live next to production.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from churnlib.columns import normalise_column_name

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.json"
CONFIG_ENV_VAR = "CHURN_CONFIG"

ALGORITHMS = ("logistic_regression", "xgboost")
METRICS = ("f1", "precision", "recall", "accuracy", "roc_auc")
CORRECTIONS = ("holm", "bonferroni", "benjamini_hochberg", "none")
POLICIES = ("always", "not_worse", "better")


class ConfigError(ValueError):
    """A config file that cannot be used; the message is one line naming the key."""


# --- value checkers: each returns the cleaned value or raises ValueError(what is expected) ---


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _column(value: Any) -> str:
    name = normalise_column_name(_string(value))
    if not name:
        raise ValueError(f"must name a column, got {value!r}")
    return name


def _columns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of column names")
    names = tuple(_column(item) for item in value)
    if len(set(names)) != len(names):
        raise ValueError(f"names the same column twice: {value!r}")
    return names


def _optional_columns(value: Any) -> tuple[str, ...] | None:
    return None if value is None else _columns(value)


def _labels(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of strings")
    return tuple(_string(item).strip().lower() for item in value)


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable:
    def check(value: Any) -> float:
        # NaN passes every comparison below unnoticed (and would silently turn a check off).
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"must be a number, got {value!r}")
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            raise ValueError(f"must be a number in {left}{low:g}, {high:g}{right}, got {value!r}")
        return float(value)

    return check


def _integer(low: int, high: int | None = None) -> Callable:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise ValueError(f"must be {bound}, got {value!r}")
        return value

    return check


def _choice(options: tuple[str, ...]) -> Callable:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {value!r}")
        return value

    return check


def _params(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError("must be an object of parameter names and values")
    for name, item in value.items():
        if isinstance(item, (dict, list)):
            raise ValueError(f"parameter {name!r} must be a plain value, got {item!r}")
    return dict(value)


def _url(value: Any) -> str:
    text = _string(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {value!r}")
    return text.rstrip("/")


# section -> key -> (default, checker). The README's table of keys is written from this.
SPEC: dict[str, dict[str, tuple[Any, Callable]]] = {
    "paths": {
        "source_folder": ("sourcedata", _string),
        "ingested_folder": ("ingesteddata", _string),
        "test_data_folder": ("testdata", _string),
        "model_folder": ("models", _string),
        "deployment_folder": ("production_deployment", _string),
        "log_folder": ("logs", _string),
    },
    "schema": {
        "target": ("exited", _column),
        "positive_labels": (["1", "yes", "true"], _labels),
        "negative_labels": (["0", "no", "false"], _labels),
        "id_columns": ([], _columns),
        "feature_columns": (None, _optional_columns),
        "categorical_columns": (None, _optional_columns),
    },
    "model": {
        "algorithm": ("logistic_regression", _choice(ALGORITHMS)),
        "params": ({}, _params),
        "random_seed": (42, _integer(0, 2**32 - 1)),
        "n_threads": (1, _integer(1, 256)),
    },
    "score_drift": {
        "metric": ("f1", _choice(METRICS)),
        "max_drop": (0.05, _number(0.0, 1.0)),
        "min_rows": (20, _integer(1)),
    },
    "drift": {
        "alpha": (0.05, _number(0.0, 1.0, low_open=True, high_open=True)),
        "correction": ("holm", _choice(CORRECTIONS)),
        "ks_min_statistic": (0.1, _number(0.0, 1.0)),
        "chi2_min_cramers_v": (0.1, _number(0.0, 1.0)),
        "min_rows": (30, _integer(2)),
        "min_drifted_features": (1, _integer(1)),
        "reference_sample_size": (5000, _integer(10)),
    },
    "deployment": {
        "policy": ("not_worse", _choice(POLICIES)),
        "metric": ("f1", _choice(METRICS)),
        "tolerance": (0.0, _number(0.0, 1.0)),
        "keep_releases": (5, _integer(2)),
    },
    "api": {
        "url": ("http://127.0.0.1:8000", _url),
        "max_request_bytes": (10 * 1024 * 1024, _integer(1024)),
        "max_records": (10_000, _integer(1)),
        "reload_interval_seconds": (1.0, _number(0.05, 60.0)),
    },
}


@dataclass(frozen=True)
class Paths:
    source: Path
    ingested: Path
    testdata: Path
    models: Path
    deployment: Path
    logs: Path


@dataclass(frozen=True)
class SchemaSettings:
    target: str
    positive_labels: tuple[str, ...]
    negative_labels: tuple[str, ...]
    id_columns: tuple[str, ...]
    feature_columns: tuple[str, ...] | None
    categorical_columns: tuple[str, ...] | None


@dataclass(frozen=True)
class ModelSettings:
    algorithm: str
    params: dict
    random_seed: int
    n_threads: int


@dataclass(frozen=True)
class ScoreDriftSettings:
    metric: str
    max_drop: float
    min_rows: int


@dataclass(frozen=True)
class DriftSettings:
    alpha: float
    correction: str
    ks_min_statistic: float
    chi2_min_cramers_v: float
    min_rows: int
    min_drifted_features: int
    reference_sample_size: int


@dataclass(frozen=True)
class DeploymentSettings:
    policy: str
    metric: str
    tolerance: float
    keep_releases: int


@dataclass(frozen=True)
class ApiSettings:
    url: str
    max_request_bytes: int
    max_records: int
    reload_interval_seconds: float


@dataclass(frozen=True)
class Config:
    file: Path
    root: Path
    paths: Paths
    schema: SchemaSettings
    model: ModelSettings
    score_drift: ScoreDriftSettings
    drift: DriftSettings
    deployment: DeploymentSettings
    api: ApiSettings


def resolve_config_path(path: str | os.PathLike | None = None) -> Path:
    """Return the config file to use: the argument, else $CHURN_CONFIG, else the project's config.json."""
    if path is None:
        path = os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH
    return Path(path).expanduser().resolve()


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Return the validated config read from ``path`` (see resolve_config_path)."""
    file = resolve_config_path(path)
    label = file.name if file.parent == PROJECT_ROOT else str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{label}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return config_from_dict(raw, file=file, label=label)


def config_from_dict(raw: Any, *, file: Path, label: str | None = None) -> Config:
    """Return the validated config built from an already-parsed JSON object."""
    label = label or str(file)
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: must hold a JSON object at the top level")
    for section in raw:
        if section not in SPEC:
            raise ConfigError(f"{label}: unknown key {section!r} (known: {', '.join(SPEC)})")
    values: dict[str, dict[str, Any]] = {}
    for section, keys in SPEC.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{label}: {section}: must be an object")
        for key in given:
            if key not in keys:
                raise ConfigError(f"{label}: unknown key '{section}.{key}' (known: {', '.join(keys)})")
        values[section] = {}
        for key, (default, check) in keys.items():
            value = given.get(key, default)
            try:
                values[section][key] = check(value)
            except ValueError as exc:
                raise ConfigError(f"{label}: {section}.{key}: {exc}") from None

    schema = values["schema"]
    _check_schema_consistency(schema, label)
    root = file.parent
    paths = Paths(
        source=(root / values["paths"]["source_folder"]).resolve(),
        ingested=(root / values["paths"]["ingested_folder"]).resolve(),
        testdata=(root / values["paths"]["test_data_folder"]).resolve(),
        models=(root / values["paths"]["model_folder"]).resolve(),
        deployment=(root / values["paths"]["deployment_folder"]).resolve(),
        logs=(root / values["paths"]["log_folder"]).resolve(),
    )
    folders = {"source_folder": paths.source, "ingested_folder": paths.ingested, "test_data_folder": paths.testdata,
               "model_folder": paths.models, "deployment_folder": paths.deployment, "log_folder": paths.logs}
    seen: dict[Path, str] = {}
    for key, folder in folders.items():
        if folder in seen:
            raise ConfigError(f"{label}: paths.{key}: must differ from paths.{seen[folder]} ({folder})")
        seen[folder] = key
    return Config(
        file=file,
        root=root,
        paths=paths,
        schema=SchemaSettings(**schema),
        model=ModelSettings(**values["model"]),
        score_drift=ScoreDriftSettings(**values["score_drift"]),
        drift=DriftSettings(**values["drift"]),
        deployment=DeploymentSettings(**values["deployment"]),
        api=ApiSettings(**values["api"]),
    )


def _check_schema_consistency(schema: dict[str, Any], label: str) -> None:
    target = schema["target"]
    if target in schema["id_columns"]:
        raise ConfigError(f"{label}: schema.id_columns: must not hold the target {target!r}")
    overlap = set(schema["positive_labels"]) & set(schema["negative_labels"])
    if overlap:
        raise ConfigError(f"{label}: schema.negative_labels: {sorted(overlap)} also in schema.positive_labels")
    features = schema["feature_columns"]
    if features is not None:
        for name in features:
            if name == target or name in schema["id_columns"]:
                raise ConfigError(f"{label}: schema.feature_columns: {name!r} is the target or an id column")
        if not features:
            raise ConfigError(f"{label}: schema.feature_columns: must name at least one column, or be null")
    categorical = schema["categorical_columns"]
    if categorical is not None:
        for name in categorical:
            if name == target or name in schema["id_columns"]:
                raise ConfigError(f"{label}: schema.categorical_columns: {name!r} is the target or an id column")
            if features is not None and name not in features:
                raise ConfigError(f"{label}: schema.categorical_columns: {name!r} is not in schema.feature_columns")


def defaults_as_dict() -> dict[str, dict[str, Any]]:
    """Return every config key with its default value, as config.json would hold it."""
    return {section: {key: default for key, (default, _check) in keys.items()} for section, keys in SPEC.items()}


def add_config_argument(parser) -> None:
    """Add the --config option every script takes."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=f"config file to use (default: ${CONFIG_ENV_VAR}, else {DEFAULT_CONFIG_PATH.name} in the project folder)",
    )
