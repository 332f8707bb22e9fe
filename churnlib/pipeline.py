"""The model: one scikit-learn Pipeline, how it is built, and how it predicts, fast and checked.

The pipeline (``build_pipeline``) is preprocessing followed by the classifier, with step names
that live here and nowhere else:

- numeric features: median imputation, then standard scaling (logistic regression only, unless
  ``model.scale_numeric`` is false; trees do not need it);
- categorical features: missing values become a category of their own, then one-hot encoding that
  ignores categories it never saw (a new plan name in production must not break predictions);
- the classifier: ``LogisticRegression`` or ``XGBClassifier``, seeded from config.json.

Predictions (``churn_probabilities``, ``predicted_classes``): a customer is predicted to churn when
its probability is above ``THRESHOLD``, the same rule for scoring, diagnostics and the API.

The fast path (``FastPredictor``): the fitted preprocessing and, for logistic regression, the
linear model replayed in numpy on validated records (``records_to_batch``), without building a
pandas DataFrame. It replays a library's computation, so it is checked against the library each
time a release is loaded (``checked_predictor``): on the release's reference sample (plus rows
with every value missing and every category unseen) its probabilities must equal
``predict_proba`` to 1e-9, or the release is served through ``predict_proba`` instead, with a
warning that names the release and the largest difference. A pipeline whose shape the fast path
does not know (an extra step, another encoder) is never replayed at all.

scikit-learn and xgboost are imported only when a pipeline is built or checked.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from churnlib.columns import normalise_column_name, shown
from churnlib.config import LOGISTIC_DEFAULTS, XGBOOST_DEFAULTS, ModelSettings
from churnlib.dataset import MISSING_CATEGORY, MISSING_TOKENS, FrozenSchema
from churnlib.errors import ChurnError, ConfigError

logger = logging.getLogger(__name__)

# Step names: the pipeline is built with them and the fast path finds the fitted steps by them.
PREPROCESS = "preprocess"
CLASSIFIER = "classifier"
NUMERIC = "numeric"
CATEGORICAL = "categorical"
IMPUTE = "impute"
SCALE = "scale"
ONEHOT = "onehot"

THRESHOLD = 0.5
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


def predicted_classes(probabilities: np.ndarray) -> np.ndarray:
    """Return 1 where the churn probability is above the threshold, else 0."""
    return (np.asarray(probabilities) > THRESHOLD).astype(np.int64)


# --- records: validated feature values, ready for a predictor ----------------------------------


@dataclass
class Batch:
    """Validated rows: numeric features as floats (NaN = missing), categories as text (None = missing).

    ``categorical`` holds one sequence per categorical column, in the schema's order.
    """

    numeric: np.ndarray
    categorical: list[Sequence[str | None]]
    ids: list[dict[str, Any]] = field(default_factory=list)

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


def records_to_batch(records: list[Any], schema: FrozenSchema) -> Batch:
    """Return the records' feature values, or raise RecordError naming the first bad record and column.

    Keys are normalised like data headers; keys that are not features are ignored. A feature key
    that is missing is an error; a null value is a missing value.
    """
    numeric_columns, categorical_columns, id_columns = schema.numeric_columns, schema.categorical_columns, schema.id_columns
    numeric_rows: list[list[float]] = []
    categorical: list[list[str | None]] = [[] for _ in categorical_columns]
    ids: list[dict[str, Any]] = []
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
            ids.append({c: record[plan[c]] for c in id_columns
                        if c in plan and not isinstance(record[plan[c]], (dict, list))})
    numeric = np.array(numeric_rows, dtype=float).reshape(len(records), len(numeric_columns))
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
    numeric_at = {c: j for j, c in enumerate(schema.numeric_columns)}
    categorical_at = {c: j for j, c in enumerate(schema.categorical_columns)}
    for column in schema.feature_columns:
        if column in numeric_at:
            columns[column] = batch.numeric[:, numeric_at[column]]
        else:
            values = np.asarray(batch.categorical[categorical_at[column]], dtype=object)
            columns[column] = np.where(pd.isna(values), np.nan, values) if len(values) else values
    return pd.DataFrame(columns, index=range(len(batch)))


# --- predictors: the fast path, and the pipeline itself ----------------------------------------


class Predictor(Protocol):
    """What serves probabilities for a release: the fast path, or the pipeline when it cannot."""

    fast: bool

    def probabilities(self, batch: Batch) -> np.ndarray: ...


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
        self.linear = hasattr(self.classifier, "coef_")
        if self.linear:
            from sklearn.linear_model import LogisticRegression

            _expect(type(self.classifier) is LogisticRegression and self.classifier.coef_.shape == (1, width),
                    "the linear classifier is not a binary LogisticRegression on the encoded columns")
            # One more coefficient, 0, at index -1: where an unseen category points.
            self.coef = np.append(self.classifier.coef_[0].astype(float), 0.0)
            self.intercept = float(self.classifier.intercept_[0])

    def _codes(self, values: Sequence[str | None], lookup: dict[str | None, int]) -> np.ndarray:
        """Return each value's column in the encoded matrix, -1 for a category never seen."""
        if len(values) < 1000:  # a request: a dict look-up per value beats building an index
            get = lookup.get
            return np.fromiter((get(v, -1) for v in values), dtype=np.int64, count=len(values))
        import pandas as pd

        known = [category for category in lookup if category is not None]
        codes = pd.Index(known, dtype=object).get_indexer(np.asarray(values, dtype=object))
        codes = np.where(codes >= 0, np.asarray([lookup[c] for c in known], dtype=np.int64)[codes], -1)
        if None in lookup:  # a missing value is the imputer's fill category
            codes[pd.isna(np.asarray(values, dtype=object))] = lookup[None]
        return codes

    def probabilities(self, batch: Batch) -> np.ndarray:
        """Return P(churn) for the batch's rows.

        Raises RecordError naming the record and column when a finite value overflows float64 once
        scaled, or (logistic regression) once multiplied by its coefficient. scikit-learn's own
        pipeline refuses the first (its input check rejects infinity); for the second it answers NaN
        or a certain 0 or 1 depending on whether the BLAS kernel fuses multiply and add.
        """
        numeric = batch.numeric
        rows = numeric.shape[0]
        # Overflow is checked and named below, never warned about (a warning per request floods the
        # server log, and under -W error it would be a 500).
        with np.errstate(over="ignore", invalid="ignore"):
            values = np.where(np.isnan(numeric), self.medians, numeric)
            if self.scaled:
                values = (values - self.mean) / self.scale
            self._refuse_overflow(values)
            codes = [self._codes(column, lookup) for column, lookup in zip(batch.categorical, self.category_index)]
            if self.linear:
                coef = self.coef[: len(self.numeric_columns)]
                terms = values * coef
                self._refuse_overflow(terms)
                z = values @ coef if self.numeric_columns else np.zeros(rows)
                for column_codes in codes:
                    z = z + self.coef[column_codes]
                z = z + self.intercept
                undefined = np.flatnonzero(np.isnan(z))
                if len(undefined):  # finite terms whose partial sums overflowed both ways
                    row = undefined[0]
                    raise self._too_large(row, np.argmax(np.abs(terms[row])))
                # exp(-z) overflows to inf for z < -709: the probability is then 0.0, which is right.
                return 1.0 / (1.0 + np.exp(-z))
        return self.classifier.predict_proba(self.encoded(values, codes))[:, 1]

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
    """Churn probabilities from the pipeline's own ``predict_proba`` (slower: it builds a DataFrame)."""

    fast = False

    def __init__(self, pipeline: Any, schema: FrozenSchema):
        self.pipeline = pipeline
        self.schema = schema

    def probabilities(self, batch: Batch) -> np.ndarray:
        frame = batch_to_frame(batch, self.schema)
        try:
            return self.pipeline.predict_proba(frame)[:, 1]
        except ValueError as exc:  # scikit-learn's input check: a value that overflows once scaled
            raise RecordError(f"the records cannot be scored by this model: {str(exc).splitlines()[0]}") from None


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


def fast_path_difference(fast: FastPredictor, pipeline: Any, reference: Any, schema: FrozenSchema) -> float:
    """Return the largest |fast path - predict_proba| over the reference rows and the probe rows."""
    rows = _probe_rows(reference, schema)
    expected = churn_probabilities(pipeline, rows, schema)
    actual = fast.probabilities(batch_from_frame(rows, schema))
    return float(np.max(np.abs(actual - expected))) if len(rows) else 0.0


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
        return PipelinePredictor(model.pipeline, schema)
    try:
        if reference is None:
            from churnlib.dataset import read_canonical_csv
            from churnlib.modelstore import checked_reference_sample

            reference = read_canonical_csv(checked_reference_sample(model.folder, model.metadata), schema)
        difference = fast_path_difference(fast, model.pipeline, reference, schema)
    except Exception as exc:  # whatever stops the check, the fast path is not trusted without it
        logger.warning("release %s: the fast path could not be checked (%s); serving it through predict_proba",
                       release, exc)
        return PipelinePredictor(model.pipeline, schema)
    if not difference <= FAST_PATH_TOLERANCE:
        logger.warning("release %s: the fast path differs from predict_proba by up to %.3g on its reference "
                       "sample (allowed %g); serving it through predict_proba", release, difference,
                       FAST_PATH_TOLERANCE)
        return PipelinePredictor(model.pipeline, schema)
    return fast


def frame_probabilities(predictor: Predictor, frame: Any, schema: FrozenSchema) -> np.ndarray:
    """Return the predictor's churn probabilities for the rows of a typed DataFrame."""
    return predictor.probabilities(batch_from_frame(frame, schema))
