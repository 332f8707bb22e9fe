"""The one config loader: reads config.json, fills defaults, validates every key.

Every error is one line that names the file and the key, for example
``config.json: drift.alpha: must be a number in (0, 1), got 1.5``.
Relative paths in the config resolve from the folder that holds the config file, never from
the current directory, so a practice set-up can live next to production.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

from churnlib.columns import normalise_column_name
from churnlib.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.json"
CONFIG_ENV_VAR = "CHURN_CONFIG"

ALGORITHMS = ("logistic_regression", "xgboost")
METRICS = ("f1", "precision", "recall", "accuracy", "roc_auc")
CORRECTIONS = ("holm", "bonferroni", "benjamini_hochberg", "none")
POLICIES = ("always", "not_worse", "better")
WINDOWS = ("auto", "all", "recent")
SCORE_METHODS = ("expected", "deploy_time")
EVALUATIONS = ("held_out", "testdata")
UNKNOWN_CATEGORY_ACTIONS = ("warn", "reject")
ALERT_EVENTS = ("drift", "deployed", "refused", "tick_failed", "file_rejected", "api_down")
EMAIL_SECURITY = ("starttls", "tls", "none")
ENGINES = ("local", "dask")


class _Required:
    """The default of a key that must be given whenever its (optional) section is."""

    def __repr__(self) -> str:
        return "required"


REQUIRED = _Required()


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


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _choice(options: tuple[str, ...]) -> Callable:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {value!r}")
        return value

    return check


def _money(value: Any) -> float:
    """An amount of money: a finite number, zero or more."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"must be a number, got {value!r}")
    if value < 0:
        raise ValueError(f"must be zero or more, got {value!r}")
    return float(value)


def _params(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError("must be an object of parameter names and values")
    for name, item in value.items():
        if isinstance(item, (dict, list)):
            raise ValueError(f"parameter {name!r} must be a plain value, got {item!r}")
    return dict(value)


def _optional_string(value: Any) -> str | None:
    return None if value is None else _string(value)


def _env_name(value: Any) -> str | None:
    if value is None:
        return None
    text = _string(value)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise ValueError(f"must name an environment variable (letters, digits, _), got {value!r}")
    return text


def _address(value: Any) -> str:
    text = _string(value).strip()
    if not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+", text):
        raise ValueError(f"must be an e-mail address, got {value!r}")
    return text


def _addresses(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of e-mail addresses")
    return tuple(_address(item) for item in value)


def _events(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of events ({', '.join(ALERT_EVENTS)})")
    for item in value:
        if item not in ALERT_EVENTS:
            raise ValueError(f"unknown event {item!r}; events are {', '.join(ALERT_EVENTS)}")
    return tuple(dict.fromkeys(value))


def _without_credentials(text: str, instead: str) -> str:
    """Refuse a URL with a user name or password before '@': URLs are shown in logs, cron.log and the
    outbox, so a password in one would be shown everywhere (and urllib would not send it). Not echoed here."""
    from urllib.parse import urlsplit

    netloc = urlsplit(text).netloc
    if "@" in netloc:
        raise ValueError(f"holds a user name or password before '@' ({urlsplit(text).scheme}://...@"
                         f"{netloc.rpartition('@')[2]}); credentials are not taken in the URL: {instead}")
    return text


def _webhook_url(value: Any) -> str:
    text = _string(value).strip()
    if not text.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    # Kept as given: a receiver may need its trailing slash.
    return _without_credentials(text, "use the receiver's token in the path (as Slack does) or put a proxy in front")


def _folder(value: Any) -> str:
    """A folder, relative to the config file's folder (the loader resolves it)."""
    return _string(value)


def _scheduler(value: Any) -> str | None:
    """A Dask scheduler's address, tcp://host:port or tls://host:port, or null (a local cluster per tick)."""
    if value is None:
        return None
    text = _string(value).strip()
    match = re.fullmatch(r"(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})", text)
    if not match or not 1 <= int(match.group(3)) <= 65535:
        raise ValueError(f"must be a scheduler address like tcp://host:8786 (or tls://), got {value!r}")
    return text


def _url(value: Any) -> str:
    text = _string(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {value!r}")
    return _without_credentials(text, "the API takes a token from the variable api.token_env names").rstrip("/")


# --- the settings: each key is one line, its default and its check, in the section it belongs to ---




@dataclass(frozen=True)
class Subsection:
    """The check of a key that holds an optional sub-section: null (off) or an object of its own keys."""

    cls: type

    def __call__(self, value: Any) -> Any:
        # Never called: the loader sees a Subsection and reads the value as a section of its own
        # (``_section``). Here only so that a Subsection stands where every other key has its check.
        raise NotImplementedError("a Subsection is read by _section, not called")


def setting(default: Any, check: Callable[[Any], Any], *, key: str | None = None) -> Any:
    """Declare one config key: its default (as config.json would hold it) and its check.

    ``key`` is its name in config.json when that differs from the attribute's (``paths``). The
    table of keys in docs/configuration.md lists the same keys and defaults (a test keeps the two equal).
    """
    return field(metadata={"default": default, "check": check, "key": key})


@dataclass(frozen=True)
class Paths:
    """Folders, resolved from the config file's folder."""

    source: Path = setting("sourcedata", _folder, key="source_folder")
    ingested: Path = setting("ingesteddata", _folder, key="ingested_folder")
    testdata: Path = setting("testdata", _folder, key="test_data_folder")
    models: Path = setting("models", _folder, key="model_folder")
    deployment: Path = setting("production_deployment", _folder, key="deployment_folder")
    logs: Path = setting("logs", _folder, key="log_folder")
    scoring: Path = setting("scoringdata", _folder, key="scoring_folder")
    predictions: Path = setting("predictions", _folder, key="predictions_folder")


@dataclass(frozen=True)
class SchemaSettings:
    target: str = setting("exited", _column)
    positive_labels: tuple[str, ...] = setting(["1", "yes", "true"], _labels)
    negative_labels: tuple[str, ...] = setting(["0", "no", "false"], _labels)
    id_columns: tuple[str, ...] = setting([], _columns)
    feature_columns: tuple[str, ...] | None = setting(None, _optional_columns)
    categorical_columns: tuple[str, ...] | None = setting(None, _optional_columns)


LOGISTIC_DEFAULTS = {"max_iter": 1000}
XGBOOST_DEFAULTS = {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.1, "tree_method": "hist"}


SEARCH_METRICS = ("f1", "accuracy", "roc_auc", "log_loss")


def _algorithms(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of algorithms ({', '.join(ALGORITHMS)})")
    for item in value:
        if item not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {item!r}; algorithms are {', '.join(ALGORITHMS)}")
    return tuple(dict.fromkeys(value))


def _optional_trials(value: Any) -> int | None:
    return None if value is None else _integer(1, 10_000)(value)


@dataclass(frozen=True)
class SearchSettings:
    """Optional (``model.search``): every retrain searches the algorithm, its settings and the decision
    threshold (churnlib/search.py, docs/search.md) instead of training the configured model as it is."""

    budget_s: float = setting(120, _number(1.0, 86400.0))
    algorithms: tuple[str, ...] = setting(list(ALGORITHMS), _algorithms)
    metric: str = setting("f1", _choice(SEARCH_METRICS))
    trials: int | None = setting(None, _optional_trials)
    validation_share: float = setting(0.25, _number(0.1, 0.5))


@dataclass(frozen=True)
class ModelSettings:
    algorithm: str = setting("logistic_regression", _choice(ALGORITHMS))
    params: dict = setting({}, _params)
    random_seed: int = setting(42, _integer(0, 2**32 - 1))
    n_threads: int = setting(1, _integer(1, 256))
    threshold: float = setting(0.5, _number(0.0, 1.0, low_open=True, high_open=True))
    scale_numeric: bool = setting(True, _boolean)
    training_window: str = setting("auto", _choice(WINDOWS))
    recent_rows: int = setting(10_000, _integer(10))
    search: SearchSettings | None = setting(None, Subsection(SearchSettings))

    def effective_params(self) -> dict[str, Any]:
        """Return the classifier parameters used: the built-in defaults overridden by config.json."""
        defaults = LOGISTIC_DEFAULTS if self.algorithm == "logistic_regression" else XGBOOST_DEFAULTS
        return {**defaults, **self.params}

    def fingerprint(self) -> str:
        """Return a short hash of what makes the model what it is (algorithm, parameters, seed,
        preprocessing, decision threshold): a deployed model whose fingerprint differs from
        config.json's is retrained."""
        search = None if self.search is None else {f.name: getattr(self.search, f.name) for f in fields(self.search)}
        return model_fingerprint(self.algorithm, self.effective_params(), self.random_seed, self.scale_numeric,
                                 self.threshold, search=search)


def model_fingerprint(algorithm: str, params: dict, random_seed: int, scale_numeric: bool,
                      threshold: float = 0.5, *, search: dict | None = None) -> str:
    """Return the hash ``ModelSettings.fingerprint`` gives, from the figures a model's metadata keeps."""
    import hashlib

    settings = {"algorithm": algorithm, "params": params, "random_seed": random_seed, "scale_numeric": scale_numeric}
    if threshold != 0.5:  # releases from before the threshold was a setting hash as they did
        settings["threshold"] = threshold
    if search is not None:  # turning the search on (or changing it) is a change of model settings
        settings["search"] = search
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ScoreDriftSettings:
    method: str = setting("expected", _choice(SCORE_METHODS))
    metric: str = setting("f1", _choice(METRICS))
    max_drop: float = setting(0.05, _number(0.0, 1.0))
    alpha: float = setting(0.025, _number(0.0, 1.0, low_open=True, high_open=True))
    min_rows: int = setting(30, _integer(1))


@dataclass(frozen=True)
class DriftSettings:
    alpha: float = setting(0.025, _number(0.0, 1.0, low_open=True, high_open=True))
    correction: str = setting("holm", _choice(CORRECTIONS))
    ks_min_statistic: float = setting(0.1, _number(0.0, 1.0))
    chi2_min_cramers_v: float = setting(0.1, _number(0.0, 1.0))
    min_rows: int = setting(30, _integer(2))
    min_drifted_features: int = setting(1, _integer(1))
    reference_sample_size: int = setting(5000, _integer(10))


@dataclass(frozen=True)
class DeploymentSettings:
    policy: str = setting("not_worse", _choice(POLICIES))
    metric: str = setting("f1", _choice(METRICS))
    tolerance: float = setting(0.0, _number(0.0, 1.0))
    keep_releases: int = setting(5, _integer(2))
    evaluate_on: str = setting("held_out", _choice(EVALUATIONS))
    holdout_share: float = setting(0.3, _number(0.05, 0.5))
    holdout_min_rows: int = setting(100, _integer(10))


@dataclass(frozen=True)
class ScheduleSettings:
    every_rows: int = setting(0, _integer(0))
    every_days: float = setting(0, _number(0.0, 3650.0))


@dataclass(frozen=True)
class ApiSettings:
    url: str = setting("http://127.0.0.1:8000", _url)
    max_request_bytes: int = setting(10 * 1024 * 1024, _integer(1024))
    max_records: int = setting(10_000, _integer(1))
    reload_interval_seconds: float = setting(1.0, _number(0.05, 60.0))
    token_env: str | None = setting(None, _env_name)
    unknown_categories: str = setting("warn", _choice(UNKNOWN_CATEGORY_ACTIONS))


@dataclass(frozen=True)
class RiskListSettings:
    reasons: int = setting(3, _integer(0, 100))


@dataclass(frozen=True)
class ComputeSettings:
    """Where the heavy work runs: ``local`` (this process, the default) or ``dask`` (a cluster at
    ``scheduler``, or without one a ``distributed.LocalCluster`` the tick starts and stops)."""

    engine: str = setting("local", _choice(ENGINES))
    scheduler: str | None = setting(None, _scheduler)
    workers: int = setting(2, _integer(1, 256))
    threads_per_worker: int = setting(1, _integer(1, 256))
    memory_per_worker_gb: float = setting(2.0, _number(0.25, 4096.0))
    connect_timeout_seconds: float = setting(10.0, _number(1.0, 600.0))
    cluster_min_rows: int = setting(200_000, _integer(0))
    max_sample_rows: int = setting(2_000_000, _integer(1000))


@dataclass(frozen=True)
class OutreachSettings:
    """Optional: without it, the lists mark for contact who the model predicts to churn."""

    customer_value: float = setting(REQUIRED, _money)
    contact_cost: float = setting(REQUIRED, _money)
    success_rate: float = setting(1.0, _number(0.0, 1.0, low_open=True))


@dataclass(frozen=True)
class EmailSettings:
    """SMTP delivery of alerts; the password is read from the environment variable named, never from the file."""

    host: str = setting(REQUIRED, _string)
    port: int = setting(587, _integer(1, 65535))
    security: str = setting("starttls", _choice(EMAIL_SECURITY))
    user: str | None = setting(None, _optional_string)
    password_env: str | None = setting(None, _env_name)
    sender: str = setting(REQUIRED, _address)
    recipients: tuple[str, ...] = setting(REQUIRED, _addresses)


@dataclass(frozen=True)
class WebhookSettings:
    """A URL that receives each alert as a JSON POST (Slack-style ``text`` plus structured fields)."""

    url: str = setting(REQUIRED, _webhook_url)


@dataclass(frozen=True)
class AlertSettings:
    events: tuple[str, ...] = setting(list(ALERT_EVENTS), _events)
    timeout_seconds: float = setting(10.0, _number(0.5, 120.0))
    email: EmailSettings | None = setting(None, Subsection(EmailSettings))
    webhook: WebhookSettings | None = setting(None, Subsection(WebhookSettings))

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels configured: "email", "webhook", both or none."""
        return tuple(name for name in ("email", "webhook") if getattr(self, name) is not None)


@dataclass(frozen=True)
class Config:
    """A validated config: where it came from, and one typed object per section of config.json.

    ``ignored_errors`` holds the errors of sections the caller said it does not need (see
    ``load_config``); such a section is an ``UnusableSection`` that raises its error when used.
    """

    file: Path
    root: Path
    label: str  # how messages name the file: "config.json" for the project's own, else its full path
    paths: Paths
    schema: SchemaSettings
    model: ModelSettings
    score_drift: ScoreDriftSettings
    drift: DriftSettings
    deployment: DeploymentSettings
    schedule: ScheduleSettings
    api: ApiSettings
    risk_lists: RiskListSettings
    alerts: AlertSettings
    compute: ComputeSettings
    outreach: OutreachSettings | None  # optional: None when config.json has no such section
    ignored_errors: tuple[ConfigError, ...] = ()


class UnusableSection:
    """Stands for a section whose error was ignored: any use of it raises that error."""

    def __init__(self, name: str, error: ConfigError):
        self._name = name
        self._error = error

    def __getattr__(self, attribute: str) -> Any:
        raise self._error


def _optional_class(hint: Any) -> type | None:
    """Return C for a hint ``C | None`` whose C is a settings class, else None."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    classes = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return classes[0] if len(classes) == 1 and is_dataclass(classes[0]) else None


def _sections() -> dict[str, type]:
    """Return config.json's sections (name -> settings class), in the order of ``Config``'s fields."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] if is_dataclass(hints[f.name]) else _optional_class(hints[f.name])
            for f in fields(Config) if is_dataclass(hints[f.name]) or _optional_class(hints[f.name])}


def _optional_sections() -> frozenset[str]:
    """Return the sections that may be left out of config.json altogether (their value is then None)."""
    hints = typing.get_type_hints(Config)
    return frozenset(f.name for f in fields(Config) if _optional_class(hints[f.name]))


def _keys(section: type) -> dict[str, Any]:
    """Return a section's keys as config.json names them (key -> dataclass field)."""
    return {f.metadata.get("key") or f.name: f for f in fields(section)}


SECTIONS = _sections()
OPTIONAL_SECTIONS = _optional_sections()


def resolve_config_path(path: str | os.PathLike | None = None) -> Path:
    """Return the config file to use: the argument, else $CHURN_CONFIG, else the project's config.json."""
    if path is None:
        path = os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH
    return Path(path).expanduser().resolve()


def config_label(file: Path) -> str:
    """Return how messages name a config file: its bare name in the project folder, else its full path."""
    return file.name if file.parent == PROJECT_ROOT else str(file)


def load_config(path: str | os.PathLike | None = None, *, needs: tuple[str, ...] | None = None) -> Config:
    """Return the validated config read from ``path`` (see resolve_config_path).

    With ``needs`` (section names), an error in any other section is not raised but kept in
    ``Config.ignored_errors``: a script that reads only some sections (the incident tools) still
    runs while the rest of config.json is broken, and says what it ignored.
    """
    file = resolve_config_path(path)
    label = config_label(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", file_label=label) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file_label=label) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                          file_label=label) from None
    return config_from_dict(raw, file=file, label=label, needs=needs)


def _section(name: str, cls: type, given: Any, label: str, root: Path) -> Any:
    if not isinstance(given, dict):
        raise ConfigError(f"{name}: must be an object", file_label=label)
    keys = _keys(cls)
    for key in given:
        if key not in keys:
            raise ConfigError(f"unknown key '{name}.{key}' (known: {', '.join(keys)})", file_label=label)
    values = {}
    for key, spec in keys.items():
        value = given.get(key, spec.metadata["default"])
        check = spec.metadata["check"]
        if value is REQUIRED:
            raise ConfigError(f"{name}.{key}: required when the {name} section is present", file_label=label)
        if isinstance(check, Subsection):
            values[spec.name] = None if value is None else _section(f"{name}.{key}", check.cls, value, label, root)
            continue
        try:
            value = check(value)
        except ValueError as exc:
            raise ConfigError(f"{name}.{key}: {exc}", file_label=label) from None
        values[spec.name] = (root / value).resolve() if check is _folder else value
    section = cls(**values)
    if isinstance(section, EmailSettings) and section.user is not None and section.password_env is None:
        raise ConfigError(f"{name}.password_env: required when {name}.user is set (the name of the environment "
                          "variable that holds the password)", file_label=label)
    return section


def section_settings(cls: type, root: Path | None = None, **values: Any) -> Any:
    """Return one section's settings from its defaults and ``values`` (as config.json names them),
    validated like a config file (for code and tests that need a section without a file)."""
    name = next(section for section, klass in SECTIONS.items() if klass is cls)
    return _section(name, cls, values, name, root or Path.cwd())


def config_from_dict(raw: Any, *, file: Path, label: str | None = None,
                     needs: tuple[str, ...] | None = None) -> Config:
    """Return the validated config built from an already-parsed JSON object (``needs``: see load_config)."""
    label = label or str(file)
    if not isinstance(raw, dict):
        raise ConfigError("must hold a JSON object at the top level", file_label=label)
    ignored: list[ConfigError] = []

    def tolerate(name: str, error: ConfigError) -> None:
        if needs is None or name in needs:
            raise error
        ignored.append(error)

    for section in raw:
        if section not in SECTIONS:
            tolerate(section, ConfigError(f"unknown key {section!r} (known: {', '.join(SECTIONS)})", file_label=label))
    root = file.parent
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        if name in OPTIONAL_SECTIONS and raw.get(name) is None:
            sections[name] = None
            continue
        try:
            sections[name] = _section(name, cls, raw.get(name, {}), label, root)
            _check_section(name, sections[name], label)
        except ConfigError as error:
            tolerate(name, error)
            sections[name] = UnusableSection(name, error)
    return Config(file=file, root=root, label=label, ignored_errors=tuple(ignored), **sections)


def _check_section(name: str, section: Any, label: str) -> None:
    """Raise ConfigError for a section whose keys are valid one by one but not together."""
    if name == "schema":
        _check_schema_consistency(section, label)
    elif name == "paths":
        seen: dict[Path, str] = {}
        for key, spec in _keys(Paths).items():
            folder = getattr(section, spec.name)
            if folder in seen:
                raise ConfigError(f"paths.{key}: must differ from paths.{seen[folder]} ({folder})", file_label=label)
            seen[folder] = key
    elif name == "compute":
        _check_compute(section, label)


def _check_compute(compute: ComputeSettings, label: str) -> None:
    """Refuse a compute section that cannot work: a scheduler for the local engine, or the dask
    engine where Dask is not installed (found without importing it: the idle tick stays light)."""
    import importlib.util

    if compute.engine == "local" and compute.scheduler is not None:
        raise ConfigError(f"compute.scheduler: set to {compute.scheduler}, but compute.engine is local; set "
                          "compute.engine to dask to use the cluster, or remove compute.scheduler", file_label=label)
    if compute.engine == "dask":
        missing = [name for name in ("dask", "distributed") if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(f"compute.engine: dask needs the package(s) {', '.join(missing)}, not installed in "
                              "this environment: `pip install -r requirements-dask.txt`, or set compute.engine to "
                              "local", file_label=label)


def _check_schema_consistency(schema: SchemaSettings, label: str) -> None:
    def refuse(message: str) -> None:
        raise ConfigError(message, file_label=label)

    target = schema.target
    if target in schema.id_columns:
        refuse(f"schema.id_columns: must not hold the target {target!r}")
    overlap = set(schema.positive_labels) & set(schema.negative_labels)
    if overlap:
        refuse(f"schema.negative_labels: {sorted(overlap)} also in schema.positive_labels")
    features = schema.feature_columns
    if features is not None:
        for name in features:
            if name == target or name in schema.id_columns:
                refuse(f"schema.feature_columns: {name!r} is the target or an id column")
        if not features:
            refuse("schema.feature_columns: must name at least one column, or be null")
    categorical = schema.categorical_columns
    if categorical is not None:
        for name in categorical:
            if name == target or name in schema.id_columns:
                refuse(f"schema.categorical_columns: {name!r} is the target or an id column")
            if features is not None and name not in features:
                refuse(f"schema.categorical_columns: {name!r} is not in schema.feature_columns")


def defaults_as_dict() -> dict[str, dict[str, Any]]:
    """Return the config that an empty config.json means: every key of every section that is not
    optional, with its default value, as config.json would hold it."""
    return {name: keys for name, keys in every_key_with_default().items() if name not in OPTIONAL_SECTIONS}


def every_key_with_default() -> dict[str, dict[str, Any]]:
    """Return every key of every section, optional ones included, with its default (or REQUIRED)."""
    return {name: {key: spec.metadata["default"] for key, spec in _keys(cls).items()} for name, cls in SECTIONS.items()}


def api_token(config: Config) -> str | None:
    """Return the API token (the value of the environment variable ``api.token_env`` names), or None.

    A named variable that is not set, or empty, is a ConfigError: an API meant to need a token
    never starts without one.
    """
    name = config.api.token_env
    if name is None:
        return None
    token = os.environ.get(name, "")
    if not token.strip():
        raise ConfigError(f"api.token_env: the environment variable {name} is not set (or empty); set it to the "
                          "API token, or remove api.token_env to run the API without one", file_label=config.label)
    problem = token_problem(token)
    if problem:  # the value itself is never shown: it is a secret
        raise ConfigError(f"api.token_env: the value of the environment variable {name} {problem}; a token is "
                          "visible ASCII characters only (no spaces, line breaks or accents): it travels in an HTTP "
                          "header, and every client would get 401", file_label=config.label)
    return token


def token_problem(token: str) -> str | None:
    """Return what makes ``token`` unfit for an ``Authorization`` header (a CR from a Windows editor, say), or None."""
    for char in token:
        if char in "\r\n":
            return "holds a line break (CR or LF)"
        if char.isspace():
            return "holds a space or another blank"
        if not char.isascii():
            return "holds a character that is not ASCII"
        if not char.isprintable():
            return "holds a control character"
    return None


# --- the API server's config: loaded by the gunicorn master, inherited by the workers it forks ---

_server_config: Config | None = None


def load_server_config(path: str | os.PathLike | None = None, *,
                       check: Callable[[Config], Any] | None = None) -> tuple[Config, ConfigError | None]:
    """Return the API server's config, read anew, and the error that kept it from being read anew.

    The gunicorn master calls this when it starts (an invalid config raises: the server does not
    start) and on each reload (SIGHUP): an invalid config then is refused and the config loaded
    before is returned with the error, for the caller to log. Workers take the result from
    ``server_config`` instead of reading config.json, so a worker restarted while config.json is
    broken mid-edit starts from the config the server runs with. ``check(config)`` may refuse a
    config that loads (a token variable that is not set) with a ConfigError, treated the same way.
    """
    global _server_config
    try:
        config = load_config(path)
        if check is not None:
            check(config)
    except ConfigError as exc:
        if _server_config is None:
            raise
        return _server_config, exc
    _server_config = config
    return config, None


def server_config(path: str | os.PathLike | None = None) -> Config:
    """Return the config the gunicorn master loaded (see load_server_config), else config.json read now."""
    return _server_config if _server_config is not None else load_config(path)


def documented_keys() -> dict[str, Any]:
    """Return every key, sub-sections' keys included, as a dotted name with its default (``"required"`` for some)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, cls: type) -> None:
        for key, spec in _keys(cls).items():
            flat[f"{prefix}.{key}"] = spec.metadata["default"]
            if isinstance(spec.metadata["check"], Subsection):
                walk(f"{prefix}.{key}", spec.metadata["check"].cls)

    for name, cls in SECTIONS.items():
        walk(name, cls)
    return flat


def add_config_argument(parser) -> None:
    """Add the --config option every script takes."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=f"config file to use (default: ${CONFIG_ENV_VAR}, else {DEFAULT_CONFIG_PATH.name} in the project folder)",
    )
