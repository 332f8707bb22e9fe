"""Training: ingesteddata/finaldata.csv -> models/trainedmodel.pkl, its metadata and a drift reference.

The model is one scikit-learn Pipeline, so the exact preprocessing that was fitted travels with it:

- numeric features: median imputation, then standard scaling (logistic regression only; trees do
  not need it);
- categorical features: missing values become a category of their own, then one-hot encoding that
  ignores categories it never saw (a new plan name in production must not break predictions);
- the classifier: ``LogisticRegression`` or ``XGBClassifier``, seeded from config.json.

XGBoost runs with ``model.n_threads`` threads (default 1): the API serves with several workers on
few cores, and threads fighting workers for cores cost far more than they bring.

Written to the model folder: ``trainedmodel.pkl``, ``trainedmodel.json`` (release id, time,
algorithm, parameters, feature schema, training-data fingerprint, SHA-256 of the model file) and
``reference_sample.csv``, a bounded random sample of the training rows that later ticks test new
data against for drift.
"""

from __future__ import annotations

import hashlib
import io
import logging
import platform
import sys
import time
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churnlib.cli import script_parser, start_script, wait_for_lock
from churnlib.clock import utc_now
from churnlib.config import ConfigError
from churnlib.dataset import FrozenSchema, canonical_lines, header_line, read_canonical_csv
from churnlib.fsutil import atomic_write_text
from churnlib.modelstore import REFERENCE_FILE, save_model, sha256_bytes
from ingestion import DATA_FILE, IngestedDataError, load_record

logger = logging.getLogger(Path(__file__).stem)

MISSING_CATEGORY = "(missing)"
LOGISTIC_DEFAULTS = {"max_iter": 1000}
XGBOOST_DEFAULTS = {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.1, "tree_method": "hist"}


class TrainingError(RuntimeError):
    """Training cannot run on this data; the message says why."""


def effective_params(model_settings) -> dict[str, Any]:
    """Return the classifier parameters used: this module's defaults overridden by config.json."""
    defaults = LOGISTIC_DEFAULTS if model_settings.algorithm == "logistic_regression" else XGBOOST_DEFAULTS
    return {**defaults, **model_settings.params}


def _classifier(model_settings) -> Any:
    params = dict(model_settings.params)
    if model_settings.algorithm == "logistic_regression":
        allowed = set(LogisticRegression().get_params())
        _check_param_names(params, allowed, "LogisticRegression")
        return LogisticRegression(**{**LOGISTIC_DEFAULTS, **params, "random_state": model_settings.random_seed})
    from xgboost import XGBClassifier  # imported only when configured: it costs seconds

    allowed = set(XGBClassifier().get_params())
    _check_param_names(params, allowed, "XGBClassifier")
    for fixed in ("random_state", "n_jobs", "nthread"):
        params.pop(fixed, None)
    return XGBClassifier(
        **{**XGBOOST_DEFAULTS, **params},
        random_state=model_settings.random_seed,
        n_jobs=model_settings.n_threads,
        eval_metric="logloss",
    )


def _check_param_names(params: dict, allowed: set[str], estimator: str) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"config.json: model.params: {', '.join(map(repr, unknown))} not a parameter of {estimator}")


def build_pipeline(schema: FrozenSchema, model_settings) -> Pipeline:
    """Return an unfitted Pipeline: preprocessing for the schema's columns, then the configured classifier."""
    numeric_steps: list = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
    if model_settings.algorithm == "logistic_regression":
        numeric_steps.append(("scale", StandardScaler()))
    transformers = []
    if schema.numeric_columns:
        transformers.append(("numeric", Pipeline(numeric_steps), list(schema.numeric_columns)))
    if schema.categorical_columns:
        categorical = Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY, keep_empty_features=True)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ])
        transformers.append(("categorical", categorical, list(schema.categorical_columns)))
    preprocess = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("preprocess", preprocess), ("classifier", _classifier(model_settings))])


def train_model(frame: pd.DataFrame, schema: FrozenSchema, model_settings) -> Pipeline:
    """Return the pipeline fitted on ``frame``'s features and target."""
    classes = np.unique(frame[schema.target])
    if len(frame) == 0:
        raise TrainingError("no ingested rows to train on")
    if len(classes) < 2:
        raise TrainingError(f"the ingested data holds only class {int(classes[0])}; training needs both classes")
    pipeline = build_pipeline(schema, model_settings)
    try:
        pipeline.fit(frame[list(schema.feature_columns)], frame[schema.target].to_numpy())
    except ValueError as exc:
        if "parameter" in str(exc):
            raise ConfigError(f"config.json: model.params: {exc}") from None
        raise
    return pipeline


def reference_sample(frame: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """Return at most ``size`` training rows, drawn with ``seed``, in their original order."""
    if len(frame) <= size:
        return frame
    chosen = np.sort(np.random.default_rng(seed).choice(len(frame), size=size, replace=False))
    return frame.iloc[chosen].reset_index(drop=True)


def read_training_data(ingested_folder: Path, record: dict[str, Any] | None = None
                       ) -> tuple[pd.DataFrame, FrozenSchema, dict[str, Any]]:
    """Return the committed ingested rows, their schema, and the data's fingerprint.

    ``record`` is the ingestion record when the caller has it already (read once, so the rows and
    the data version it reports belong together).
    """
    record = load_record(ingested_folder) if record is None else record
    if record["schema"] is None or record["rows"] == 0:
        raise TrainingError(f"{ingested_folder / DATA_FILE}: no ingested data yet")
    schema = FrozenSchema.from_dict(record["schema"])
    with open(ingested_folder / DATA_FILE, "rb") as handle:
        data = handle.read(record["bytes"])
    frame = read_canonical_csv(io.BytesIO(data), schema)
    fingerprint = {
        "file": DATA_FILE,
        "rows": int(len(frame)),
        "bytes": len(data),
        "sha256": sha256_bytes(data),
        "data_version": record["data_version"],
        "class_counts": {str(k): int(v) for k, v in frame[schema.target].value_counts().sort_index().items()},
    }
    return frame, schema, fingerprint


def library_versions(names: tuple[str, ...] = ("scikit-learn", "numpy", "pandas", "scipy", "xgboost-cpu")) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            continue
    return versions


def train_and_save(
    frame: pd.DataFrame,
    schema: FrozenSchema,
    fingerprint: dict[str, Any],
    *,
    model_settings,
    reference_size: int,
    model_folder: Path,
) -> dict[str, Any]:
    """Fit the model, write it with its metadata and drift reference to ``model_folder``; return the metadata."""
    started = time.perf_counter()
    pipeline = train_model(frame, schema, model_settings)
    seconds = time.perf_counter() - started
    sample = reference_sample(frame, reference_size, model_settings.random_seed)
    sample_text = header_line(schema) + "\n" + "".join(f"{line}\n" for line in canonical_lines(sample, schema))
    atomic_write_text(model_folder / REFERENCE_FILE, sample_text)
    metadata = {
        "trained_at": utc_now(),
        "algorithm": model_settings.algorithm,
        "params": effective_params(model_settings),
        "random_seed": model_settings.random_seed,
        "n_threads": model_settings.n_threads,
        "schema": schema.to_dict(),
        "training_data": fingerprint,
        "training_seconds": round(seconds, 4),
        "reference_sample": {
            "file": REFERENCE_FILE,
            "rows": int(len(sample)),
            "sha256": hashlib.sha256(sample_text.encode("utf-8")).hexdigest(),
        },
        "versions": library_versions(),
    }
    metadata = save_model(pipeline, metadata, model_folder)
    logger.info(
        "trained %s on %d rows in %.2f s: release %s (model sha256 %s)",
        model_settings.algorithm, len(frame), seconds, metadata["release_id"], metadata["model_sha256"][:12],
    )
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        "Train the configured model on ingesteddata/finaldata.csv and write it, with its "
        "metadata and drift reference sample, to the model folder.",
    )
    args = parser.parse_args(argv)
    config = start_script(args, "training")
    if config is None:
        return 2
    lock = wait_for_lock(config, logger)
    if lock is None:
        return 1
    try:
        frame, schema, fingerprint = read_training_data(config.paths.ingested)
        metadata = train_and_save(
            frame, schema, fingerprint,
            model_settings=config.model,
            reference_size=config.drift.reference_sample_size,
            model_folder=config.paths.models,
        )
    except (ConfigError, TrainingError, IngestedDataError, OSError) as exc:
        logger.critical("%s", exc)
        return 1
    finally:
        lock.release()
    print(f"trained release {metadata['release_id']} -> {config.paths.models}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
