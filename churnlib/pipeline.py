"""The model: one scikit-learn Pipeline, how it is built, and how it predicts, fast and checked.

The pipeline (``build_pipeline``) is preprocessing followed by the classifier, with step names
that live here and nowhere else:

- numeric features: median imputation, then standard scaling (logistic regression only, unless
  ``model.scale_numeric`` is false; trees do not need it);
- categorical features: missing values become a category of their own, then one-hot encoding that
  ignores categories it never saw (a new plan name in production must not break predictions);
- the classifier: ``LogisticRegression`` or ``XGBClassifier``, seeded from config.json.

Predictions (``churn_probabilities``, ``predicted_classes``): a customer is predicted to churn when
its probability is above the release's threshold (``model.threshold`` in config.json when it was
trained, 0.5 by default; ``model_threshold``), the same rule for scoring, diagnostics, the API and
the risk lists.

Reasons (``Predictor.explain``): each original feature's additive contribution to the log-odds of
churn, for the API and the risk lists alike. Logistic regression: the coefficient times the
preprocessed value of each encoded column, the one-hot columns of a categorical feature summed
back into their feature, the intercept as the base value: exact. XGBoost: its own tree SHAP values
(``pred_contribs``) on the same encoded matrix, grouped the same way. Contributions plus the base
value equal the log-odds (``Contributions.log_odds``); ``reason_texts`` phrases them for people:
``lastmonth_activity = 2 (raises risk, +0.84)``.

Calibration (``recalibrated``; the check is ``churnlib.stats.calibration_check``): whether the probabilities mean what they say
on held-out labelled rows (Cox's test: the logistic fit of the labels on the log-odds has slope 1 and
intercept 0), and, when they do not, the release recalibrated by that fit (Platt scaling of the
log-odds, ``Recalibrated``); and how precisely those rows pin the calibration down (``covariance``,
which the label-free estimate's intervals include). A linear map of the log-odds keeps the reasons additive and exact:
each contribution is multiplied by the slope, the base value becomes slope * base + intercept.

The fast path (``FastPredictor``): the fitted preprocessing and, for logistic regression, the
linear model replayed in numpy on validated records (``records_to_batch``), without building a
pandas DataFrame. It replays a library's computation, so it is checked against the library each
time a release is loaded (``checked_predictor``): on the release's reference sample (plus rows
with every value missing and every category unseen) its probabilities must equal
``predict_proba`` to 1e-9, or the release is served through ``predict_proba`` instead, with a
warning that names the release and the largest difference. A pipeline whose shape the fast path
does not know (an extra step, another encoder) is never replayed at all.

scikit-learn's models and xgboost are imported only when a pipeline is built or checked (its base
classes with this module: ``Recalibrated`` is one of its estimators).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from churnlib.columns import MISSING_CATEGORY, normalise_column_name, shown
from churnlib.config import LOGISTIC_DEFAULTS, XGBOOST_DEFAULTS, ModelSettings
from churnlib.dataset import MISSING_TOKENS, FrozenSchema
from churnlib.errors import ChurnError, ConfigError
from churnlib.stats import sigmoid

logger = logging.getLogger(__name__)

# Step names: the pipeline is built with them and the fast path finds the fitted steps by them.
PREPROCESS = "preprocess"
CLASSIFIER = "classifier"
NUMERIC = "numeric"
CATEGORICAL = "categorical"
IMPUTE = "impute"
SCALE = "scale"
ONEHOT = "onehot"

THRESHOLD = 0.5  # the default of model.threshold, for releases trained before it was a setting
# The fast path must equal predict_proba to within this on the release's reference sample.
FAST_PATH_TOLERANCE = 1e-9



class RecordError(ChurnError, ValueError):
    """Records that cannot be predicted on; the message names the record and the column."""


# --- building the pipeline ---------------------------------------------------------------------


def _check_param_names(params: dict, allowed: set[str], estimator: str) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"model.params: {', '.join(map(repr, unknown))} not a parameter of {estimator}")


def build_classifier(model_settings: ModelSettings) -> Any:
    """Return the configured, unfitted classifier (xgboost runs with ``model.n_threads`` threads)."""
    params = dict(model_settings.params)
    if model_settings.algorithm == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        _check_param_names(params, set(LogisticRegression().get_params()), "LogisticRegression")
        return LogisticRegression(**{**LOGISTIC_DEFAULTS, **params, "random_state": model_settings.random_seed})
    from xgboost import XGBClassifier  # imported only when configured: it costs seconds

    _check_param_names(params, set(XGBClassifier().get_params()), "XGBClassifier")
    for fixed in ("random_state", "n_jobs", "nthread"):
        params.pop(fixed, None)
    return XGBClassifier(
        **{**XGBOOST_DEFAULTS, **params},
        random_state=model_settings.random_seed,
        n_jobs=model_settings.n_threads,
        eval_metric="logloss",
    )


def build_pipeline(schema: FrozenSchema, model_settings: ModelSettings) -> Any:
    """Return an unfitted Pipeline: preprocessing for the schema's columns, then the configured classifier."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric_steps: list = [(IMPUTE, SimpleImputer(strategy="median", keep_empty_features=True))]
    if model_settings.algorithm == "logistic_regression" and model_settings.scale_numeric:
        numeric_steps.append((SCALE, StandardScaler()))
    transformers = []
    if schema.numeric_columns:
        transformers.append((NUMERIC, Pipeline(numeric_steps), list(schema.numeric_columns)))
    if schema.categorical_columns:
        categorical = Pipeline([
            (IMPUTE, SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY, keep_empty_features=True)),
            (ONEHOT, OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ])
        transformers.append((CATEGORICAL, categorical, list(schema.categorical_columns)))
    preprocess = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([(PREPROCESS, preprocess), (CLASSIFIER, build_classifier(model_settings))])


# --- predictions -------------------------------------------------------------------------------


def churn_probabilities(pipeline: Any, frame: Any, schema: FrozenSchema) -> np.ndarray:
    """Return each row's probability of churn (class 1), computed by the pipeline itself."""
    return pipeline.predict_proba(frame[list(schema.feature_columns)])[:, 1]


def predicted_classes(probabilities: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Return 1 where the churn probability is above ``threshold`` (the release's), else 0."""
    return (np.asarray(probabilities) > threshold).astype(np.int64)


def model_threshold(metadata: dict[str, Any]) -> float:
    """Return the probability above which a release predicts churn: model.threshold when it was
    trained, moved with its probabilities when it was recalibrated (0.5 before it was a setting)."""
    return float(metadata.get("decision_threshold", metadata.get("threshold", THRESHOLD)))


def classifier_log_odds(classifier: Any, encoded: np.ndarray) -> np.ndarray:
    """Return a fitted classifier's log-odds of churn for the encoded matrix it sees."""
    if isinstance(classifier, Recalibrated):
        return classifier.log_odds(encoded)
    if hasattr(classifier, "decision_function"):
        return np.asarray(classifier.decision_function(encoded), dtype=float)
    return np.asarray(classifier.predict(encoded, output_margin=True), dtype=float)


class Recalibrated(ClassifierMixin, BaseEstimator):
    """The classifier step of a release recalibrated at deploy time: P(churn) = sigmoid(slope * z +
    intercept), where z is the fitted classifier's log-odds (Platt scaling, fitted on held-out rows).

    Kept inside the pickled pipeline, so every ``predict_proba`` (scoring, diagnostics, the API, the
    lists) gives the calibrated probability; the fast path replays it.
    """

    def __init__(self, classifier: Any, slope: float, intercept: float):
        self.classifier = classifier
        self.slope = float(slope)
        self.intercept = float(intercept)

    @property
    def classes_(self) -> np.ndarray:
        return self.classifier.classes_

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, encoded: Any, labels: Any) -> "Recalibrated":
        """Refuse: a recalibrated classifier is fitted once; train a new model instead."""
        raise TypeError("a recalibrated classifier is not refitted: train a new model (training.py)")

    def log_odds(self, encoded: np.ndarray) -> np.ndarray:
        return self.slope * classifier_log_odds(self.classifier, encoded) + self.intercept

    def predict_proba(self, encoded: np.ndarray) -> np.ndarray:
        churn = sigmoid(self.log_odds(encoded))
        return np.column_stack([1.0 - churn, churn])

    def predict(self, encoded: np.ndarray) -> np.ndarray:
        """The classifier's own decisions: recalibration moves the probabilities, never the classes."""
        return self.classifier.predict(encoded)


def recalibrated(pipeline: Any, slope: float, intercept: float) -> Any:
    """Return the fitted pipeline with its log-odds z turned into slope * z + intercept (its steps shared)."""
    from sklearn.pipeline import Pipeline

    name, classifier = pipeline.steps[-1]
    if isinstance(classifier, Recalibrated):  # compose: a2 (a1 z + b1) + b2
        slope, intercept = slope * classifier.slope, slope * classifier.intercept + intercept
        classifier = classifier.classifier
    return Pipeline([*pipeline.steps[:-1], (name, Recalibrated(classifier, slope, intercept))])


def pipeline_log_odds(pipeline: Any, frame: Any, schema: FrozenSchema) -> np.ndarray:
    """Return each row's log-odds of churn, computed by the pipeline's own steps."""
    encoded = pipeline[:-1].transform(frame[list(schema.feature_columns)])
    return classifier_log_odds(pipeline.steps[-1][1], encoded)


# --- reasons in words ------------------------------------------------------------------------------

SMALL_BATCH = 16  # rows up to which per-value Python beats whole-column numpy (a request of a few records)


def _number_text(value: float) -> str:
    if math.isnan(value):
        return MISSING_CATEGORY
    if value == math.floor(value) and abs(value) < 2.0**53:
        return str(int(value))
    return format(value, ".6g")


def _texts_of(values: np.ndarray, form) -> np.ndarray:
    """Return ``form(value)`` for each value, computing it once per distinct value."""
    if len(values) <= SMALL_BATCH:  # a request's few rows: a call per value costs less than finding the distinct ones
        return np.array([form(value) for value in values.tolist()], dtype=object)
    distinct, inverse = np.unique(values, return_inverse=True)
    return np.array([form(value) for value in distinct.tolist()], dtype=object)[inverse.reshape(-1)]


SHOWN_NUMBER_CHARS = 24  # a number's own text longer than this is shown as the number, in 6 digits


def shown_values(batch: Batch, schema: FrozenSchema, texts: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Return the batch's feature values as people read them (rows x features, text), as they came in.

    ``texts``: for numeric columns, each value's text in its file (a CSV file's "117.30" is shown
    as 117.30, not 117.3), unless it is longer than SHOWN_NUMBER_CHARS; a missing value is (missing).
    """
    shown = np.empty((len(batch), len(schema.feature_columns)), dtype=object)
    for position, column in enumerate(schema.feature_columns):
        numeric, at = schema.feature_places[column]
        if numeric:
            numbers = batch.numeric[:, at]
            shown[:, position] = _texts_of(numbers, _number_text)
            if texts is not None and column in texts:
                own = np.asarray(texts[column], dtype=object)
                fits = ~np.isnan(numbers) & (np.fromiter(map(len, own.tolist()), dtype=np.int64, count=len(own))
                                             <= SHOWN_NUMBER_CHARS)
                shown[fits, position] = own[fits]
        else:
            shown[:, position] = [MISSING_CATEGORY if value is None else value for value in batch.categorical[at]]
    return shown


def known_categories(predictor: Any, schema: FrozenSchema) -> dict[str, set[str]]:
    """Return the categories the predictor's model saw in training, per column (empty when it cannot tell)."""
    index = getattr(predictor, "category_index", None)  # the fast path: category -> encoded column
    if index is not None:
        return {column: {c for c in lookup if c is not None} for column, lookup in zip(schema.categorical_columns, index)}
    known = getattr(predictor, "known_categories", None) or {}
    return {column: {c for c in categories if c is not None} for column, categories in known.items()}


def near_category(value: str, known: Iterable[str]) -> str | None:
    """Return the known category that equals ``value`` but for case and spacing ('basic' for 'Basic '), or None.

    Categories are compared exactly, as the model learnt them; this only names a likely typo.
    """
    folded = " ".join(value.casefold().split())
    return next((category for category in sorted(known) if " ".join(category.casefold().split()) == folded
                 and category != value), None)


def _signed(value: float) -> str:
    """Return a contribution with its sign and two decimals, in at most 10 characters (+1.23e+300 from a million on)."""
    return f"{value:+.2f}" if abs(value) < 1e6 else f"{value:+.2e}"


def _signed_cents(value: float) -> str:
    """Return ``_signed(np.round(value, 2))`` for one Python float, to the character, from its whole
    number of cents (rounded half to even, as np.round) rather than rounding with numpy and
    formatting a float: with the rows read as Python lists, it took a third off row_reasons'
    instructions for one record (counted with callgrind; bench/README.md, issue 19)."""
    scaled = value * 100.0
    cents = round(scaled) if abs(scaled) < 1e8 else None  # (NaN and infinity fail the test too)
    if cents is None or abs(cents) >= 100_000_000:  # a million or more: _signed's other form
        with np.errstate(over="ignore", invalid="ignore"):
            return _signed(float(np.round(value, 2)))
    sign = "-" if cents < 0 or (cents == 0 and math.copysign(1.0, value) < 0) else "+"  # np.round(-0.004, 2) is -0.0
    whole, cents = divmod(abs(cents), 100)
    return f"{sign}{whole}.{_TWO_DIGITS[cents]}"


_TWO_DIGITS = [f"{cents:02d}" for cents in range(100)]  # "00" to "99": a look-up, not a format, per reason


def top_reasons(contributions: Contributions, count: int) -> np.ndarray:
    """Return, for each row, the positions of its ``count`` largest contributions (by size), largest first."""
    count = min(count, len(contributions.features))
    order = np.argsort(-np.abs(contributions.values), axis=1, kind="stable")
    return order[:, :count]


def reason_texts(contributions: Contributions, shown: np.ndarray, top: np.ndarray, *,
                 quoted: bool = False) -> list[list[str]]:
    """Return the reasons at positions ``top`` (see top_reasons) in words, one list per reason
    (first, second, ...) of one text per row: ``lastmonth_activity = 2 (raises risk, +0.84)``.

    ``quoted``: as CSV fields (every reason holds a comma), quotes inside doubled. Built a reason at
    a time from whole columns, for lists of millions of rows.
    """
    rows = np.arange(top.shape[0])
    opening, closing = ('"', ')"') if quoted else ("", ")")
    prefixes = np.array([f"{opening}{name} = " for name in contributions.features], dtype=object)
    if quoted and any('"' in "".join(map(str, shown[:, j].tolist())) for j in range(shown.shape[1])):
        shown = np.vectorize(lambda text: text.replace('"', '""'), otypes=[object])(shown)
    words = {1: " (raises risk, ", -1: " (lowers risk, ", 0: " (no effect, "}
    texts = []
    for slot in range(top.shape[1]):
        features = top[:, slot]
        amounts = contributions.values[rows, features]
        direction = np.sign(amounts).astype(np.int64).tolist()
        texts.append(list(map("".join, zip(prefixes[features].tolist(), shown[rows, features].tolist(),
                                           map(words.__getitem__, direction),
                                           _texts_of(np.round(amounts, 2), _signed).tolist(),
                                           [closing] * len(rows)))))
    return texts


# --- records: validated feature values, ready for a predictor ----------------------------------


@dataclass
class Batch:
    """Validated rows: numeric features as floats (NaN = missing), categories as text (None = missing).

    ``categorical`` holds one sequence per categorical column, in the schema's order; ``ids`` the
    id columns the records hold, under the names the caller used, each a list of one value per
    record (``NO_ID`` where the record's value is an object or a list, which is not echoed).
    """

    numeric: np.ndarray
    categorical: list[Sequence[str | None]]
    ids: dict[str, list[Any]] = field(default_factory=dict)
    # Per predictor, the encoded column of each category (computed once for probabilities and warnings),
    # and the preprocessed numeric values (computed once for probabilities and reasons).
    codes: dict[int, list[np.ndarray]] = field(default_factory=dict, repr=False)
    prepared: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    terms: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # a linear model's value times coefficient
    row_terms: dict[int, list[tuple[list[float], list[float]]]] = field(default_factory=dict, repr=False)  # the same, row by row

    def __len__(self) -> int:
        return self.numeric.shape[0]


class RepeatedKeys(dict):
    """A record (JSON object or CSV row) that named some keys more than once; ``repeated`` lists them."""

    __slots__ = ("repeated",)


def repeated_names(names: list[Any]) -> list[Any]:
    """Return the names that occur more than once (each repetition once more)."""
    seen: set[Any] = set()
    return [name for name in names if name in seen or seen.add(name)]


def make_record(names: list[str], values: list[Any], repeated: list[str]) -> dict[str, Any]:
    """Return one record; a record whose names repeat remembers which, for records_to_batch to refuse.

    dict() keeps the last of two equal keys without a word; {"plan": "a", "plan": "b"} is as
    ambiguous as {"plan": "a", "Plan": "b"}, which is refused.
    """
    if not repeated:
        return dict(zip(names, values))
    record = RepeatedKeys(zip(names, values))
    record.repeated = repeated
    return record


_NAME_CACHE: dict[str, str] = {}
_ABSENT = object()
NO_ID = object()  # in Batch.ids: a record whose id value is an object or a list
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


def _numeric_value(value: Any, *, record: int, column: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        kind = "true/false" if isinstance(value, bool) else ("an object" if isinstance(value, dict) else "a list")
        raise RecordError(f"record {record}: column {column!r}: expected a number, got {kind}")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise RecordError(f"record {record}: column {column!r}: number too large") from None
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in MISSING_TOKENS:
            return math.nan
        if not _NUMBER.fullmatch(text):
            raise RecordError(f"record {record}: column {column!r}: {shown(text)!r} is not a number")
        number = float(text)
    else:
        raise RecordError(f"record {record}: column {column!r}: expected a number")
    if math.isinf(number):
        raise RecordError(f"record {record}: column {column!r}: not a finite number")
    return number


def _category_value(value: Any, *, record: int, column: str) -> str | None:
    """Return a category as text, or None for a missing value."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise RecordError(f"record {record}: column {column!r}: expected a category, got {kind}")
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value).strip()
    if isinstance(value, float) and math.isnan(value) or not text:
        return None
    return text


def _key_plan(keys: tuple, wanted: set[str], index: int) -> dict[str, Any]:
    """Return which key of a record holds each wanted column, or raise RecordError for two keys naming one."""
    plan: dict[str, Any] = {}
    for key in keys:
        name = _normal(key)
        if name not in wanted:
            continue
        if name in plan:
            raise RecordError(f"record {index}: two keys name column {name!r}")
        plan[name] = key
    return plan


# Records up to which reading them one by one costs less than a column at a time (one record: about
# 7 against 18 us; they are even at about 9).
FEW_RECORDS = 8


def records_to_batch(records: list[Any], schema: FrozenSchema) -> Batch:
    """Return the records' feature values, or raise RecordError naming the first bad record and column.

    Keys are normalised like data headers; keys that are not features are ignored. A feature key
    that is missing is an error; a null value is a missing value. Records that share their keys and
    hold plain values are read a column at a time (``_columns_at_once``); a request's few records
    (``FEW_RECORDS``), anything else, and every error, go record by record, so that the error names
    the first bad record and column.
    """
    if len(records) <= FEW_RECORDS:
        return _record_by_record(records, schema)
    batch = _columns_at_once(records, schema)
    return batch if batch is not None else _record_by_record(records, schema)


def _record_by_record(records: list[Any], schema: FrozenSchema) -> Batch:
    numeric_columns, categorical_columns, id_columns = schema.numeric_columns, schema.categorical_columns, schema.id_columns
    numeric_rows: list[list[float]] = []
    categorical: list[list[str | None]] = [[] for _ in categorical_columns]
    id_rows: list[dict[str, Any]] = []
    wanted = set(schema.feature_columns) | set(id_columns)
    # Records of one request nearly always share their keys: they are matched to columns once.
    last_keys: tuple | None = None
    plan: dict[str, Any] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise RecordError(f"record {index}: expected an object of column names and values, got {type(record).__name__}")
        if isinstance(record, RepeatedKeys):
            for key in record.repeated:
                if _normal(key) in wanted:
                    raise RecordError(f"record {index}: two keys name column {_normal(key)!r}")
        keys = tuple(record)
        if keys != last_keys:
            plan, last_keys = _key_plan(keys, wanted, index), keys
        numbers = []
        for column in numeric_columns:
            key = plan.get(column, _ABSENT)
            if key is _ABSENT:
                raise RecordError(f"record {index}: feature {column!r} missing")
            value = record[key]
            if type(value) is float and -1e308 < value < 1e308:  # the common case, checked inline
                numbers.append(value)
            else:
                numbers.append(_numeric_value(value, record=index, column=column))
        numeric_rows.append(numbers)
        for position, column in enumerate(categorical_columns):
            key = plan.get(column, _ABSENT)
            if key is _ABSENT:
                raise RecordError(f"record {index}: feature {column!r} missing")
            categorical[position].append(_category_value(record[key], record=index, column=column))
        if id_columns:
            id_rows.append({plan[c]: record[plan[c]] for c in id_columns if c in plan})
    numeric = np.array(numeric_rows, dtype=float).reshape(len(records), len(numeric_columns))
    # Records may name an id column differently (or not at all): one column per name used.
    ids: dict[str, list[Any]] = {}
    for row, found in enumerate(id_rows):
        for key, value in found.items():
            ids.setdefault(key, [NO_ID] * len(records))[row] = NO_ID if isinstance(value, (dict, list)) else value
    return Batch(numeric=numeric, categorical=categorical, ids=ids)


_PLAIN_NUMBERS = frozenset({float, int, type(None)})
_TEXTS = frozenset({str, type(None)})
_SCALARS = frozenset({str, float, int, bool, type(None)})


def _numbers_at_once(values: list[Any]) -> np.ndarray | None:
    """Return a numeric column's values as floats, or None when any value needs a closer look."""
    kinds = set(map(type, values))
    if kinds <= _PLAIN_NUMBERS:
        try:
            numbers = np.array(values, dtype=float)  # None -> NaN, a missing value
        except OverflowError:  # an integer past float64: record by record names it
            return None
    elif kinds <= _TEXTS:
        # Each distinct text is read once: columns repeat their values, and a CSV body is all text.
        read: dict[Any, float] = {}
        for text in set(values):
            stripped = "" if text is None else text.strip()
            if stripped.lower() in MISSING_TOKENS:
                read[text] = math.nan
            elif _NUMBER.fullmatch(stripped):
                read[text] = float(stripped)
            else:
                return None
        numbers = np.fromiter(map(read.__getitem__, values), dtype=float, count=len(values))
    else:
        return None
    return None if np.isinf(numbers).any() else numbers


def _categories_at_once(values: list[Any]) -> list[str | None] | None:
    """Return a categorical column's values as text (None = missing), or None for objects and lists."""
    kinds = set(map(type, values))
    if not kinds <= _SCALARS:
        return None
    if not kinds <= _TEXTS:  # not through a set: 1, 1.0 and True are one key there, three categories here
        return [_category_value(value, record=0, column="") for value in values]
    read = {value: _category_value(value, record=0, column="") for value in set(values)}
    return list(map(read.__getitem__, values))


def _columns_at_once(records: list[Any], schema: FrozenSchema) -> Batch | None:
    """Return the records' Batch read a column at a time, or None when they must be read one by one.

    They must: records that are not plain objects, that do not all have the same keys, that lack a
    feature, or that hold any value the column-at-a-time reading does not accept (an object where a
    number belongs, a word, an infinite number): the record-by-record reading then finds the first
    problem and names it.
    """
    if not records or set(map(type, records)) != {dict}:
        return None
    keys = records[0].keys()
    if not all(map(keys.__eq__, map(dict.keys, records))):
        return None
    try:
        plan = _key_plan(tuple(keys), set(schema.feature_columns) | set(schema.id_columns), 0)
    except RecordError:
        return None
    if any(column not in plan for column in schema.feature_columns):
        return None
    numeric = np.empty((len(records), len(schema.numeric_columns)))
    for position, column in enumerate(schema.numeric_columns):
        numbers = _numbers_at_once(list(map(itemgetter(plan[column]), records)))
        if numbers is None:
            return None
        numeric[:, position] = numbers
    categorical = []
    for column in schema.categorical_columns:
        categories = _categories_at_once(list(map(itemgetter(plan[column]), records)))
        if categories is None:
            return None
        categorical.append(categories)
    ids: dict[str, list[Any]] = {}
    for key in (plan[c] for c in schema.id_columns if c in plan):
        values = list(map(itemgetter(key), records))
        if set(map(type, values)) & {dict, list}:
            values = [NO_ID if isinstance(value, (dict, list)) else value for value in values]
        ids[key] = values
    return Batch(numeric=numeric, categorical=categorical, ids=ids)


def batch_from_frame(frame: Any, schema: FrozenSchema) -> Batch:
    """Return the feature values of a typed DataFrame (as read by churnlib.dataset) as a Batch."""
    import pandas as pd

    numeric = frame[list(schema.numeric_columns)].to_numpy(dtype=float) if schema.numeric_columns else \
        np.zeros((len(frame), 0))
    categorical = []
    for column in schema.categorical_columns:
        values = frame[column].to_numpy(dtype=object)
        categorical.append(np.where(pd.isna(values), None, values))
    return Batch(numeric=numeric, categorical=categorical)


def batch_to_frame(batch: Batch, schema: FrozenSchema) -> Any:
    """Return a Batch as the DataFrame the pipeline expects (missing categories as NaN)."""
    import pandas as pd

    columns: dict[str, Any] = {}
    for column in schema.feature_columns:
        numeric, at = schema.feature_places[column]
        if numeric:
            columns[column] = batch.numeric[:, at]
        else:
            values = np.asarray(batch.categorical[at], dtype=object)
            columns[column] = np.where(pd.isna(values), np.nan, values) if len(values) else values
    return pd.DataFrame(columns, index=range(len(batch)))


# --- predictors: the fast path, and the pipeline itself ----------------------------------------


class Predictor(Protocol):
    """What serves probabilities for a release: the fast path, or the pipeline when it cannot."""

    fast: bool

    def probabilities(self, batch: Batch) -> np.ndarray: ...

    def explain(self, batch: Batch) -> "Contributions": ...

    def unseen_categories(self, batch: Batch) -> list[tuple[int, str, str | None]]: ...


class ReasonsUnavailable(ChurnError):
    """A release whose pipeline the fast path does not replay: its predictions have no reasons."""


class Contributions:
    """Each original feature's additive contribution to the log-odds of churn, row by row.

    ``values[i, j]`` is feature ``features[j]``'s contribution for row i; ``base`` plus a row's
    contributions is its log-odds (``log_odds``), whose sigmoid is its churn probability. Built from
    an array (``values``) or, for a request's few rows computed one at a time, from Python lists
    (``rows``): the array is then made only when something asks for it.
    """

    def __init__(self, features: tuple[str, ...], base: float, values: np.ndarray | None = None,
                 rows: list[list[float]] | None = None):
        if values is None and rows is None:
            raise ValueError("Contributions needs values or rows")
        self.features = features
        self.base = base
        self.rows = rows  # ``values`` as Python rows, when they were computed that way
        self._values = values

    @property
    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = np.array(self.rows, dtype=float).reshape(len(self.rows), len(self.features))
        return self._values

    @property
    def log_odds(self) -> np.ndarray:
        return self.base + np.add.reduce(self.values, axis=1)  # values.sum(axis=1) without its Python wrapper

    def log_odds_list(self) -> list[float]:
        """Return ``log_odds`` as Python floats, the same to the bit; from ``rows`` without numpy when
        there are rows (a request's few: three numpy calls on a one-row array cost more than the sums)."""
        if self.rows is None:
            return self.log_odds.tolist()
        base = self.base
        return [base + (0.0 + _pairwise_sum(row)) for row in self.rows]  # 0.0: add.reduce starts from it


def _pairwise_sum(values: list[float]) -> float:
    """Return the sum of ``values`` in numpy's own order, so that ``0.0 + _pairwise_sum(row)`` is
    ``np.add.reduce`` of that row of a C-ordered array to the bit (``pairwise_sum`` in
    numpy/_core/src/umath/loops_utils.h.src; a Fortran-ordered one is summed column by column):
    one by one from 0.0 under 8 values; up to 128, eight running sums over each 8 values, combined
    as a fixed tree, then the rest one by one; beyond, the two halves (the first a multiple of 8)
    summed apart. tests/test_api.py checks it against numpy, signed zeros and cancellation included."""
    count = len(values)
    if count < 8:
        total = 0.0
        for value in values:
            total += value
        return total
    if count > 128:
        half = count // 2
        half -= half % 8
        return _pairwise_sum(values[:half]) + _pairwise_sum(values[half:])
    r0, r1, r2, r3, r4, r5, r6, r7 = values[:8]
    end = count - count % 8
    for i in range(8, end, 8):
        r0 += values[i]
        r1 += values[i + 1]
        r2 += values[i + 2]
        r3 += values[i + 3]
        r4 += values[i + 4]
        r5 += values[i + 5]
        r6 += values[i + 6]
        r7 += values[i + 7]
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for value in values[end:]:
        total += value
    return total


def row_reasons(contributions: Contributions, batch: Batch, schema: FrozenSchema, count: int) -> list[list[dict[str, Any]]]:
    """Return each row's ``count`` largest reasons, largest first, as the API's reply gives them: the
    features top_reasons picks, each with its value as the record gave it (a number, None when
    missing, or a category), its contribution and its text as reason_texts writes it.

    A row at a time in plain Python: for a request's few rows (SMALL_BATCH), where calls on whole
    columns cost more than they save. tests/test_api.py checks it against top_reasons and reason_texts.
    """
    features = contributions.features
    count = min(count, len(features))
    places = [schema.feature_places[feature] for feature in features]
    numbers = batch.numeric.tolist()
    categorical = batch.categorical
    positions = range(len(features))
    rows = []
    for row, amounts in enumerate(contributions.rows or contributions.values.tolist()):
        # Largest size first; sorted() is stable, reversed too, as top_reasons' argsort: equal sizes
        # keep the features' order.
        sizes = list(map(abs, amounts))
        reasons = []
        for position in sorted(positions, key=sizes.__getitem__, reverse=True)[:count]:
            amount = amounts[position]
            numeric, column = places[position]
            if numeric:
                value = numbers[row][column]
                text = _number_text(value)
                value = None if value != value else value
            else:
                value = categorical[column][row]
                text = MISSING_CATEGORY if value is None else value
            effect = (" (raises risk, " if amount > 0 else " (lowers risk, ") if amount else " (no effect, "
            feature = features[position]
            reasons.append({"feature": feature, "value": value, "contribution": amount,
                            "text": f"{feature} = {text}{effect}{_signed_cents(amount)})"})
        rows.append(reasons)
    return rows


class UnsupportedPipeline(ChurnError):
    """A fitted pipeline whose shape the fast path does not replay; the message says what differs."""


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise UnsupportedPipeline(what)


class FastPredictor:
    """Churn probabilities from a fitted Pipeline, computed without pandas.

    Replays the pipeline's fitted steps: median imputation and (for logistic regression) standard
    scaling of numeric features, the missing-category fill and one-hot encoding (unknown categories
    give all zeros) of categorical features, then the classifier. Logistic regression is evaluated
    here directly; XGBoost gets the same dense matrix the pipeline would hand it. Raises
    UnsupportedPipeline for a pipeline that is not exactly what ``build_pipeline`` builds.
    """

    fast = True
    reasons_problem: str | None = None  # set when the load-time check found the reasons do not add up

    def __init__(self, pipeline: Any, schema: FrozenSchema):
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        _expect(isinstance(pipeline, Pipeline) and [name for name, _ in pipeline.steps] == [PREPROCESS, CLASSIFIER],
                f"steps are not exactly {PREPROCESS!r}, {CLASSIFIER!r}")
        preprocess = pipeline.named_steps[PREPROCESS]
        self.classifier = pipeline.named_steps[CLASSIFIER]
        _expect(isinstance(preprocess, ColumnTransformer), f"{PREPROCESS!r} is not a ColumnTransformer")
        self.numeric_columns = schema.numeric_columns
        self.categorical_columns = schema.categorical_columns
        fitted = {name: (transformer, list(columns)) for name, transformer, columns in preprocess.transformers_}
        expected = ({NUMERIC} if self.numeric_columns else set()) | ({CATEGORICAL} if self.categorical_columns else set())
        _expect(set(fitted) - {"remainder"} == expected, f"transformers are {sorted(fitted)}")
        _expect(fitted.get("remainder", ("drop",))[0] == "drop", "the remainder is not dropped")
        self.medians = np.zeros(len(self.numeric_columns))
        self.mean = np.zeros(len(self.numeric_columns))
        self.scale = np.ones(len(self.numeric_columns))
        self.scaled = False
        if self.numeric_columns:
            numeric, columns = fitted[NUMERIC]
            _expect(columns == list(self.numeric_columns), "numeric columns differ from the schema's")
            names = [name for name, _ in numeric.steps]
            _expect(isinstance(numeric, Pipeline) and names in ([IMPUTE], [IMPUTE, SCALE]),
                    f"numeric steps are {names}")
            imputer = numeric.named_steps[IMPUTE]
            _expect(type(imputer) is SimpleImputer and imputer.strategy == "median", "numeric imputation is not a median")
            self.medians = np.nan_to_num(imputer.statistics_.astype(float))
            if SCALE in numeric.named_steps:
                scaler = numeric.named_steps[SCALE]
                _expect(type(scaler) is StandardScaler, "the scaler is not a StandardScaler")
                self.scaled = True
                self.mean = scaler.mean_.astype(float) if scaler.with_mean else np.zeros(len(self.numeric_columns))
                self.scale = scaler.scale_.astype(float) if scaler.with_std else np.ones(len(self.numeric_columns))
        # For each categorical column: category -> its column in the encoded matrix.
        self.category_index: list[dict[str | None, int]] = []
        width = len(self.numeric_columns)
        if self.categorical_columns:
            categorical, columns = fitted[CATEGORICAL]
            _expect(columns == list(self.categorical_columns), "categorical columns differ from the schema's")
            names = [name for name, _ in categorical.steps]
            _expect(isinstance(categorical, Pipeline) and names == [IMPUTE, ONEHOT], f"categorical steps are {names}")
            imputer, encoder = categorical.named_steps[IMPUTE], categorical.named_steps[ONEHOT]
            _expect(type(imputer) is SimpleImputer and imputer.strategy == "constant", "categories are not filled")
            _expect(type(encoder) is OneHotEncoder and encoder.handle_unknown == "ignore" and encoder.drop is None,
                    "the encoder is not a plain one-hot encoding that ignores unknown categories")
            # A missing value (None) becomes the imputer's fill category, as in the pipeline.
            fill = imputer.fill_value
            for categories in encoder.categories_:
                lookup: dict[str | None, int] = {str(c): width + i for i, c in enumerate(categories)}
                if fill in lookup:
                    lookup[None] = lookup[fill]
                self.category_index.append(lookup)
                width += len(categories)
        self.width = width
        self.features = tuple(schema.feature_columns)
        # Where each feature's encoded columns are: feature j of the schema -> its columns.
        self.feature_columns_at: list[np.ndarray] = []
        numeric_at = {c: i for i, c in enumerate(self.numeric_columns)}
        categorical_at = {c: i for i, c in enumerate(self.categorical_columns)}
        for column in self.features:
            if column in numeric_at:
                self.feature_columns_at.append(np.array([numeric_at[column]]))
            else:
                codes = sorted(set(self.category_index[categorical_at[column]].values()))
                self.feature_columns_at.append(np.array(codes, dtype=np.int64))
        # Where each numeric and each categorical column is among the features (for reasons).
        self.numeric_feature_at = np.array([self.features.index(c) for c in self.numeric_columns], dtype=np.int64)
        self.numeric_feature_positions = self.numeric_feature_at.tolist()
        self.categorical_feature_at = [self.features.index(c) for c in self.categorical_columns]
        # A recalibrated release: log-odds z become slope * z + intercept (1 and 0 otherwise).
        self.inner = self.classifier
        self.slope, self.shift = 1.0, 0.0
        if isinstance(self.classifier, Recalibrated):
            self.inner, self.slope, self.shift = self.classifier.classifier, self.classifier.slope, self.classifier.intercept
        self.linear = hasattr(self.inner, "coef_")
        if self.linear:
            from sklearn.linear_model import LogisticRegression

            _expect(type(self.inner) is LogisticRegression and self.inner.coef_.shape == (1, width),
                    "the linear classifier is not a binary LogisticRegression on the encoded columns")
            # One more coefficient, 0, at index -1: where an unseen category points.
            self.coef = np.append(self.inner.coef_[0].astype(float), 0.0)
            self.numeric_coef = self.coef[: len(self.numeric_columns)]
            self.intercept = float(self.inner.intercept_[0])

    def _codes(self, values: Sequence[str | None], lookup: dict[str | None, int]) -> np.ndarray:
        """Return each value's column in the encoded matrix, -1 for a category never seen."""
        if len(values) < 1000:  # a request: a dict look-up per value beats building an index
            return np.fromiter(map(lookup.get, values, repeat(-1)), dtype=np.int64, count=len(values))
        import pandas as pd

        known = [category for category in lookup if category is not None]
        codes = pd.Index(known, dtype=object).get_indexer(np.asarray(values, dtype=object))
        codes = np.where(codes >= 0, np.asarray([lookup[c] for c in known], dtype=np.int64)[codes], -1)
        if None in lookup:  # a missing value is the imputer's fill category
            codes[pd.isna(np.asarray(values, dtype=object))] = lookup[None]
        return codes

    def codes(self, batch: Batch) -> list[np.ndarray]:
        """Return each categorical column's encoded column per row (-1: a category never seen), once per batch."""
        codes = batch.codes.get(id(self))
        if codes is None:
            codes = batch.codes[id(self)] = [self._codes(column, lookup)
                                              for column, lookup in zip(batch.categorical, self.category_index)]
        return codes

    def _prepared(self, batch: Batch) -> tuple[np.ndarray, list[np.ndarray]]:
        """Return the preprocessed numeric values and each categorical column's encoded column
        (-1: unseen), computed once per batch (probabilities and reasons both need them).

        Called under ``np.errstate(over="ignore", invalid="ignore")``: overflow is checked and named
        by the caller (``_terms``, or ``_refuse_overflow`` of the values), never warned about (a
        warning per request floods the server log, and under -W error it would be a 500). One
        errstate per call of probabilities or explain: entering one costs more than the arithmetic
        of a single-record request.
        """
        values = batch.prepared.get(id(self))
        if values is None:
            values = np.where(np.isnan(batch.numeric), self.medians, batch.numeric)
            if self.scaled:
                values = (values - self.mean) / self.scale
            batch.prepared[id(self)] = values
        return values, self.codes(batch)

    def _terms(self, batch: Batch, values: np.ndarray) -> np.ndarray:
        """Return each preprocessed number times its coefficient (once per batch), or raise
        RecordError naming the first value that overflowed once scaled, else the first term that
        did (under errstate, as ``_prepared``)."""
        terms = batch.terms.get(id(self))
        if terms is None:
            terms = values * self.numeric_coef
            # One check for both: a value that overflowed makes its term infinite or NaN.
            if not np.isfinite(terms).all():
                self._refuse_overflow(values)
                self._refuse_overflow(terms)
            batch.terms[id(self)] = terms
        return terms

    def _row_terms(self, batch: Batch) -> list[tuple[list[float], list[float]]] | None:
        """Return, for a few rows (up to FEW_RECORDS), each row's numeric terms (preprocessed value
        times coefficient) and categorical coefficients (0 for a category never seen) as Python
        floats, once per batch; None when a term is not finite (the numpy path then names it).

        The same IEEE operations, value by value, as ``_prepared`` and ``_terms`` (the median for a
        missing value, minus the mean, over the scale, times the coefficient), so the same numbers,
        without the dozen numpy calls on one-row arrays that cost more than the arithmetic.
        """
        rows = batch.row_terms.get(id(self))
        if rows is None:
            coef = self.coef.tolist()  # its last entry, 0, is where an unseen category points
            numeric = list(zip(self.medians.tolist(), self.mean.tolist(), self.scale.tolist(), coef))
            codes = [[lookup.get(value, -1) for value in values]
                     for values, lookup in zip(batch.categorical, self.category_index)]
            rows = []
            for row, numbers in enumerate(batch.numeric.tolist()):
                terms = []
                for number, (median, mean, scale, c) in zip(numbers, numeric):
                    value = median if number != number else number
                    if self.scaled:
                        value = (value - mean) / scale
                    terms.append(value * c)
                if not all(map(math.isfinite, terms)):
                    return None
                rows.append((terms, [coef[column[row]] for column in codes]))
            batch.row_terms[id(self)] = rows
        return rows

    def _row_probabilities(self, batch: Batch) -> np.ndarray | None:
        """Return P(churn) for a few rows computed row by row (see _row_terms), or None to take the numpy path."""
        rows = self._row_terms(batch)
        if rows is None:
            return None
        probabilities = []
        for terms, categories in rows:
            z = 0.0
            for amount in terms:  # in order, as a dot product; BLAS may round its sum differently in the last bit
                z += amount
            for amount in categories:
                z += amount
            z += self.intercept
            if z != z:  # finite terms whose partial sums overflowed both ways: the numpy path names the record
                return None
            if self.slope != 1.0 or self.shift != 0.0:
                z = self.slope * z + self.shift
            try:
                probabilities.append(1.0 / (1.0 + math.exp(-z)))  # stats.sigmoid
            except OverflowError:  # exp(-z) past float64: 1 / (1 + inf)
                probabilities.append(0.0)
        return np.array(probabilities, dtype=float)

    def probabilities(self, batch: Batch) -> np.ndarray:
        """Return P(churn) for the batch's rows.

        Raises RecordError naming the record and column when a finite value overflows float64 once
        scaled, or (logistic regression) once multiplied by its coefficient. scikit-learn's own
        pipeline refuses the first (its input check rejects infinity); for the second it answers NaN
        or a certain 0 or 1 depending on whether the BLAS kernel fuses multiply and add. A request's
        few rows are computed row by row in plain Python (``_row_terms``); the load-time check
        (``fast_path_difference``) covers that path too.
        """
        if self.linear and len(batch) <= FEW_RECORDS:
            probabilities = self._row_probabilities(batch)
            if probabilities is not None:
                return probabilities
        if not self.linear:
            with np.errstate(over="ignore", invalid="ignore"):
                values, codes = self._prepared(batch)
            self._refuse_overflow(values)
            return self.classifier.predict_proba(self.encoded(values, codes))[:, 1]
        with np.errstate(over="ignore", invalid="ignore"):
            values, codes = self._prepared(batch)
            terms = self._terms(batch, values)
            z = values @ self.numeric_coef if self.numeric_columns else np.zeros(values.shape[0])
            for column_codes in codes:
                z = z + self.coef[column_codes]
            z = z + self.intercept
            undefined = np.isnan(z)
            if undefined.any():  # finite terms whose partial sums overflowed both ways
                row = np.flatnonzero(undefined)[0]
                raise self._too_large(row, np.argmax(np.abs(terms[row])))
            if self.slope != 1.0 or self.shift != 0.0:
                z = self.slope * z + self.shift
            return 1.0 / (1.0 + np.exp(-z))  # stats.sigmoid, under this errstate rather than one more

    def explain(self, batch: Batch) -> Contributions:
        """Return each feature's contribution to each row's log-odds (see Contributions).

        Logistic regression: coefficient times preprocessed value for each encoded column (an
        unseen category contributes 0). XGBoost: its tree SHAP values (``pred_contribs``) for the
        matrix ``predict_proba`` sees. Either way one-hot columns are summed into their feature.
        """
        if self.reasons_problem:
            raise ReasonsUnavailable(f"reasons are not available for this release: {self.reasons_problem}")
        rows = self._row_terms(batch) if self.linear and len(batch) <= FEW_RECORDS else None
        if rows is not None:  # the same numbers as below, row by row
            grouped = []
            for terms, categories in rows:
                row = [0.0] * len(self.features)
                for position, amount in zip(self.numeric_feature_positions, terms):
                    row[position] = amount
                for position, amount in zip(self.categorical_feature_at, categories):
                    row[position] = amount
                grouped.append(row if self.slope == 1.0 else [self.slope * amount for amount in row])  # x * 1.0 is x
            return Contributions(features=self.features, base=self.slope * self.intercept + self.shift, rows=grouped)
        if self.linear:
            terms = batch.terms.get(id(self))
            if terms is None:  # not yet computed by probabilities (which the API and the lists call first)
                with np.errstate(over="ignore", invalid="ignore"):
                    terms = self._terms(batch, self._prepared(batch)[0])
            # Straight into each feature's column: a number's term is its coefficient times its
            # value, a category's the coefficient of its one-hot column (-1: unseen, 0).
            grouped = np.empty((len(batch), len(self.features)))
            grouped[:, self.numeric_feature_at] = terms
            for position, column_codes in zip(self.categorical_feature_at, self.codes(batch)):
                grouped[:, position] = self.coef[column_codes]
            return Contributions(features=self.features, base=self.slope * self.intercept + self.shift,
                                 values=self.slope * grouped)
        with np.errstate(over="ignore", invalid="ignore"):
            values, codes = self._prepared(batch)
        self._refuse_overflow(values)
        import xgboost

        matrix = self.encoded(values, codes)
        booster = self.inner.get_booster()
        raw = booster.predict(xgboost.DMatrix(matrix, missing=np.nan, nthread=booster_threads(booster)),
                              pred_contribs=True)
        per_column = raw.astype(float)
        base = float(per_column[0, -1]) if len(per_column) else 0.0
        grouped = np.column_stack([per_column[:, at].sum(axis=1) for at in self.feature_columns_at]) \
            if self.features else np.zeros((values.shape[0], 0))
        return Contributions(features=self.features, base=self.slope * base + self.shift, values=self.slope * grouped)

    def unseen_categories(self, batch: Batch) -> list[tuple[int, str, str | None]]:
        """Return (row, column, value) for every category (missing included) the model never saw in training."""
        unseen = []
        for column, values, codes in zip(self.categorical_columns, batch.categorical, self.codes(batch)):
            # The usual case, every category known, in one call (a few rows: a list look-up, cheaper still).
            if (-1 not in codes.tolist()) if len(codes) <= SMALL_BATCH else codes.min(initial=0) >= 0:
                continue
            unseen += [(int(row), column, values[row]) for row in np.flatnonzero(codes < 0)]
        return sorted(unseen, key=lambda item: item[0])

    def encoded(self, values: np.ndarray, codes: list[np.ndarray]) -> np.ndarray:
        """Return the dense matrix the classifier sees: preprocessed numbers, then the one-hot columns."""
        matrix = np.zeros((values.shape[0], self.width))
        matrix[:, : len(self.numeric_columns)] = values
        for column_codes in codes:
            known = np.flatnonzero(column_codes >= 0)
            matrix[known, column_codes[known]] = 1.0
        return matrix

    def _refuse_overflow(self, numbers: np.ndarray) -> None:
        finite = np.isfinite(numbers)
        if not finite.all():
            raise self._too_large(*np.argwhere(~finite)[0])

    def _too_large(self, row: int, column: int) -> RecordError:
        return RecordError(f"record {int(row)}: column {self.numeric_columns[int(column)]!r}: number too large for the model")


class PipelinePredictor:
    """Churn probabilities from the pipeline's own ``predict_proba`` (slower: it builds a DataFrame).

    It cannot tell reasons (``explain`` raises ReasonsUnavailable): a pipeline the fast path does not
    know may have steps that mix features, so contributions could not be given back to them.
    """

    fast = False

    def __init__(self, pipeline: Any, schema: FrozenSchema, why: str = "it is served through predict_proba"):
        self.pipeline = pipeline
        self.schema = schema
        self.why = why
        self.known_categories = _known_categories(pipeline, schema)

    def explain(self, batch: Batch) -> Contributions:
        raise ReasonsUnavailable(f"reasons are not available for this release: {self.why}")

    def unseen_categories(self, batch: Batch) -> list[tuple[int, str, str | None]]:
        if self.known_categories is None:
            return []
        unseen = []
        for column, values in zip(self.schema.categorical_columns, batch.categorical):
            known = self.known_categories.get(column, set())
            unseen += [(row, column, value) for row, value in enumerate(values) if value not in known]
        return sorted(unseen, key=lambda item: item[0])

    def probabilities(self, batch: Batch) -> np.ndarray:
        frame = batch_to_frame(batch, self.schema)
        try:
            return self.pipeline.predict_proba(frame)[:, 1]
        except ValueError as exc:  # scikit-learn's input check: a value that overflows once scaled
            raise RecordError(f"the records cannot be scored by this model: {str(exc).splitlines()[0]}") from None


def _known_categories(pipeline: Any, schema: FrozenSchema) -> dict[str, set[str | None]] | None:
    """Return the categories the one-hot encoder of a pipeline saw in training, or None if it cannot be found."""
    try:
        categorical = pipeline.named_steps[PREPROCESS].named_transformers_[CATEGORICAL]
        fill = categorical.named_steps[IMPUTE].fill_value
        known = {}
        for column, categories in zip(schema.categorical_columns, categorical.named_steps[ONEHOT].categories_):
            known[column] = {str(c) for c in categories}
            if fill in known[column]:
                known[column].add(None)
        return known
    except (AttributeError, KeyError, TypeError):
        return None


def booster_threads(booster: Any) -> int:
    """Return the number of threads an xgboost booster was configured with (1 when it does not say)."""
    import json

    try:
        return max(1, int(json.loads(booster.save_config())["learner"]["generic_param"]["nthread"]))
    except (KeyError, ValueError, TypeError):
        return 1


def with_threads(predictor: Predictor, threads: int) -> Predictor:
    """Return the predictor with its xgboost running ``threads`` threads (a copy; the same predictor
    otherwise): on a Dask worker, the worker's share of the cores. The predictions do not change."""
    if (not isinstance(predictor, FastPredictor) or predictor.linear
            or booster_threads(predictor.inner.get_booster()) == threads):
        return predictor
    import copy

    copied = copy.deepcopy(predictor)
    copied.inner.set_params(n_jobs=threads)
    copied.inner.get_booster().set_param({"nthread": threads})
    return copied


def _probe_rows(reference: Any, schema: FrozenSchema) -> Any:
    """Return the reference rows plus rows with every value missing and every category unseen."""
    import pandas as pd

    first = reference.iloc[[0]] if len(reference) else pd.DataFrame({c: [np.nan] for c in schema.feature_columns})
    missing = first.copy()
    unseen = first.copy()
    for column in schema.numeric_columns:
        missing[column] = np.nan
    for column in schema.categorical_columns:
        missing[column] = np.nan
        unseen[column] = "\x00never seen in training"
    return pd.concat([reference, missing, unseen], ignore_index=True)


# Contributions plus base value must equal the pipeline's log-odds to within this, relative to the
# size of the terms: float64 rounding for logistic regression (far below), float32 for xgboost, which
# computes both its log-odds and its tree SHAP values in float32.
REASONS_RELATIVE_TOLERANCE = 1e-6
REASONS_CHECK_ROWS = 200  # tree SHAP costs about a millisecond a row: a sample, at each load


def reasons_gap(contributions: Contributions, log_odds: np.ndarray) -> np.ndarray:
    """Return each row's |base + contributions - log_odds| as a share of the allowed rounding
    (REASONS_RELATIVE_TOLERANCE times 1 + |base| + the sum of |contributions|): at most 1 passes."""
    gap = np.abs(contributions.log_odds - log_odds)
    scale = REASONS_RELATIVE_TOLERANCE * (1.0 + abs(contributions.base) + np.abs(contributions.values).sum(axis=1))
    return gap / scale


def reasons_excess(fast: FastPredictor, pipeline: Any, reference: Any, schema: FrozenSchema) -> float:
    """Return the largest reasons_gap on a sample of the reference rows and the probe rows."""
    rows = _probe_rows(reference.head(REASONS_CHECK_ROWS), schema)
    if not len(rows):
        return 0.0
    gap = reasons_gap(fast.explain(batch_from_frame(rows, schema)), pipeline_log_odds(pipeline, rows, schema))
    return float(np.max(gap))


ROW_PATH_CHECK_ROWS = 50  # rows also checked one at a time at each load (about 0.1 ms each)


def fast_path_difference(fast: FastPredictor, pipeline: Any, reference: Any, schema: FrozenSchema) -> float:
    """Return the largest |fast path - predict_proba| over the reference rows and the probe rows."""
    rows = _probe_rows(reference, schema)
    expected = churn_probabilities(pipeline, rows, schema)
    actual = fast.probabilities(batch_from_frame(rows, schema))
    # A request's few rows take the row-by-row path (logistic regression): some of the rows one at a
    # time, the probes included.
    alone = [*range(min(len(rows), ROW_PATH_CHECK_ROWS)), *range(max(0, len(rows) - 2), len(rows))] if fast.linear else []
    one_by_one = np.array([fast.probabilities(batch_from_frame(rows.iloc[[i]], schema))[0] for i in alone])
    worst = max(np.max(np.abs(actual - expected), initial=0.0),
                np.max(np.abs(one_by_one - expected[alone]), initial=0.0))
    return float(worst)


def checked_predictor(model: Any, schema: FrozenSchema | None = None, reference: Any = None) -> Predictor:
    """Return the predictor to serve a loaded release (churnlib.modelstore.LoadedModel) with.

    The fast path, when it replays the pipeline exactly on the release's reference sample
    (``reference``, a typed DataFrame, or read from the release's folder); otherwise the pipeline
    itself, after a warning that names the release and why.
    """
    schema = schema or FrozenSchema.from_dict(model.metadata["schema"])
    release = model.release_id
    try:
        fast = FastPredictor(model.pipeline, schema)
    except UnsupportedPipeline as exc:
        logger.warning("release %s: the fast path does not replay this pipeline (%s); serving it through "
                       "predict_proba", release, exc)
        return PipelinePredictor(model.pipeline, schema, f"the fast path does not replay its pipeline ({exc})")
    try:
        if reference is None:
            from churnlib.dataset import read_canonical_csv
            from churnlib.modelstore import checked_reference_sample

            reference = read_canonical_csv(checked_reference_sample(model.folder, model.metadata), schema)
        difference = fast_path_difference(fast, model.pipeline, reference, schema)
    except Exception as exc:  # whatever stops the check, the fast path is not trusted without it
        logger.warning("release %s: the fast path could not be checked (%s); serving it through predict_proba",
                       release, exc)
        return PipelinePredictor(model.pipeline, schema, f"the fast path could not be checked ({exc})")
    if not difference <= FAST_PATH_TOLERANCE:
        logger.warning("release %s: the fast path differs from predict_proba by up to %.3g on its reference "
                       "sample (allowed %g); serving it through predict_proba", release, difference,
                       FAST_PATH_TOLERANCE)
        return PipelinePredictor(model.pipeline, schema, "its fast path differs from predict_proba")
    try:
        excess = reasons_excess(fast, model.pipeline, reference, schema)
    except Exception as exc:  # as above: reasons unchecked are reasons not given; the predictions still are
        logger.warning("release %s: its reasons could not be checked (%s); its predictions are served without "
                       "reasons", release, exc)
        fast.reasons_problem = f"its reasons could not be checked ({exc})"
        return fast
    if not excess <= 1.0:
        logger.warning("release %s: contributions plus base value differ from the log-odds by %.3g times the "
                       "allowed rounding on its reference sample; its predictions are served without reasons",
                       release, excess)
        fast.reasons_problem = "its contributions do not add up to its log-odds"
    return fast


def frame_probabilities(predictor: Predictor, frame: Any, schema: FrozenSchema) -> np.ndarray:
    """Return the predictor's churn probabilities for the rows of a typed DataFrame."""
    return predictor.probabilities(batch_from_frame(frame, schema))
