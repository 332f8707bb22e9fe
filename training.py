"""Training: ingesteddata/finaldata.csv -> models/trainedmodel.pkl, its metadata and a drift reference.

The model is one scikit-learn Pipeline (built by ``churnlib.pipeline.build_pipeline``), so the
exact preprocessing that was fitted travels with it. XGBoost runs with ``model.n_threads`` threads
(default 1): the API serves with several workers on few cores, and threads fighting workers for
cores cost far more than they bring.

Written to the model folder: ``trainedmodel.pkl``, ``trainedmodel.json`` (release id, time,
algorithm, parameters, feature schema, training-data fingerprint, SHA-256 of the model file) and
``reference_sample.csv``, a bounded random sample of the training rows that later ticks test new
data against for drift.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import sys
import time
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnlib.cli import run_script, script_parser
from churnlib.clock import utc_now
from churnlib.config import Config, ConfigError, ModelSettings
from churnlib.dataset import FrozenSchema, canonical_lines, header_line
from churnlib.errors import ChurnError, in_step
from churnlib.fsutil import atomic_write_text
from churnlib.ingested import read_ingested_data
from churnlib.modelstore import REFERENCE_FILE, save_model
from churnlib.pipeline import THRESHOLD, build_pipeline
from churnlib.stats import Calibration, pool_sources, score_source

logger = logging.getLogger(Path(__file__).stem)

OUT_OF_FOLD_ROWS = 20_000  # out-of-fold predictions are made on at most this many rows
OUT_OF_FOLD_FOLDS = 5


class TrainingError(ChurnError):
    """Training cannot run on this data; the message says why."""


def train_model(frame: pd.DataFrame, schema: FrozenSchema, model_settings: ModelSettings) -> Any:
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
            raise ConfigError(f"model.params: {exc}") from None
        raise
    return pipeline


def reference_sample(frame: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """Return at most ``size`` training rows, drawn with ``seed``, in their original order."""
    if len(frame) <= size:
        return frame
    chosen = np.sort(np.random.default_rng(seed).choice(len(frame), size=size, replace=False))
    return frame.iloc[chosen].reset_index(drop=True)


def library_versions(names: tuple[str, ...] = ("scikit-learn", "numpy", "pandas", "scipy", "xgboost-cpu")) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            continue
    return versions


def out_of_fold(frame: pd.DataFrame, schema: FrozenSchema, model_settings: ModelSettings, *,
                focus_from: int = 0, max_rows: int = OUT_OF_FOLD_ROWS,
                folds: int = OUT_OF_FOLD_FOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Return labels and out-of-fold churn probabilities of the rows ``frame.iloc[focus_from:]``.

    Each of those rows is predicted by a model fitted, with the same settings, on the other folds of
    a sample of ``frame`` (at most ``max_rows`` rows, half of them at most from the focus): what the
    training procedure scores on rows it did not see. Too few rows of a class for two folds: empty.
    """
    from sklearn.model_selection import StratifiedKFold

    from churnlib.pipeline import churn_probabilities

    rng = np.random.default_rng(model_settings.random_seed)
    focus = np.arange(focus_from, len(frame))
    if len(focus) > max_rows // 2:
        focus = np.sort(rng.choice(focus, max_rows // 2, replace=False))
    others = np.arange(0, focus_from)
    room = max_rows - len(focus)
    if len(others) > room:
        others = np.sort(rng.choice(others, room, replace=False))
    sample = frame.iloc[np.concatenate([others, focus])]
    in_focus = np.arange(len(sample)) >= len(others)
    labels = sample[schema.target].to_numpy()
    smaller_class = int(min(np.count_nonzero(labels == 0), np.count_nonzero(labels == 1)))
    folds = min(folds, smaller_class)
    if folds < 2 or not in_focus.any():
        return np.empty(0, dtype=np.int64), np.empty(0)
    probabilities = np.full(len(sample), np.nan)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=model_settings.random_seed)
    for train_rows, predict_rows in splitter.split(np.zeros(len(sample)), labels):
        predict_rows = predict_rows[in_focus[predict_rows]]
        if len(predict_rows):
            fitted = train_model(sample.iloc[train_rows], schema, model_settings)
            probabilities[predict_rows] = churn_probabilities(fitted, sample.iloc[predict_rows], schema)
    return labels[in_focus], probabilities[in_focus]


@in_step("training")
def save_trained(
    pipeline: Any,
    *,
    schema: FrozenSchema,
    fingerprint: dict[str, Any],
    model_settings: ModelSettings,
    reference: pd.DataFrame,
    reference_size: int,
    model_folder: Path,
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a fitted model with its metadata and drift reference (drawn from ``reference``); return the metadata.

    ``extra`` goes into the metadata as it is: the score the model is expected to keep
    (``expected``), its training window (``window``).
    """
    sample = reference_sample(reference, reference_size, model_settings.random_seed)
    sample_text = header_line(schema) + "\n" + "".join(f"{line}\n" for line in canonical_lines(sample, schema))
    atomic_write_text(model_folder / REFERENCE_FILE, sample_text)
    metadata = {
        "trained_at": utc_now(),
        "algorithm": model_settings.algorithm,
        "params": model_settings.effective_params(),
        "random_seed": model_settings.random_seed,
        "n_threads": model_settings.n_threads,
        "scale_numeric": model_settings.scale_numeric,
        "settings_fingerprint": model_settings.fingerprint(),
        "schema": schema.to_dict(),
        "training_data": fingerprint,
        "training_seconds": round(seconds, 4),
        "reference_sample": {
            "file": REFERENCE_FILE,
            "rows": int(len(sample)),
            "sha256": hashlib.sha256(sample_text.encode("utf-8")).hexdigest(),
        },
        **(extra or {}),
        "versions": library_versions(),
    }
    metadata = save_model(pipeline, metadata, model_folder)
    logger.info(
        "trained %s on %d rows in %.2f s: release %s (model sha256 %s)",
        model_settings.algorithm, fingerprint["rows"], seconds, metadata["release_id"], metadata["model_sha256"][:12],
    )
    return metadata


def expectation(final_frame: pd.DataFrame, schema: FrozenSchema, model_settings: ModelSettings, *, metric: str,
                focus_from: int = 0, held_out: tuple | None = None,
                test: tuple | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the calibration of the model about to be deployed, and the scores it is expected to keep.

    Both are learnt from out-of-sample predictions on rows like the newest it knows: the
    challenger's on the held-out rows, and out-of-fold predictions on the rows of its window from
    ``focus_from`` on (the world it was retrained for). The test data (labels, the model's
    probabilities) checks the calibration: a test set from another time or place that disagrees
    is reported, not learnt from.
    """
    from churnlib.pipeline import predicted_classes
    from churnlib.stats import drop_test, fit_calibration

    parts = []
    if held_out is not None:
        parts.append(("held_out", *held_out))
    labels, probabilities = out_of_fold(final_frame, schema, model_settings, focus_from=focus_from)
    if len(labels):
        parts.append(("out_of_fold", labels, probabilities))
    if not parts and test is not None:  # too few rows of a class for folds: the test data is all there is
        parts.append(("testdata", *test))
    if not parts:
        return {**Calibration().to_dict(), "sources": [], "check": None}, pool_sources([])
    all_labels = np.concatenate([part[1] for part in parts])
    all_probabilities = np.concatenate([part[2] for part in parts])
    calibration = fit_calibration(all_labels, all_probabilities)
    expected = pool_sources([score_source(name, y, p, THRESHOLD) for name, y, p in parts])
    body = {**calibration.to_dict(), "sources": [{"source": name, "rows": int(len(y))} for name, y, _ in parts],
            "check": calibration.check()}
    test_labels, test_probabilities = test if test is not None else ((), ())
    if len(test_labels) and metric != "roc_auc" and parts[0][0] != "testdata":
        agree = drop_test(test_labels, test_probabilities, predicted_classes(test_probabilities), metric, calibration,
                          alpha=0.05, max_drop=0.0)
        body["testdata_check"] = {"rows": int(len(test_labels)), "score": agree.new.value,
                                  "expected": agree.expected.value, "p_value": agree.p_value,
                                  "agrees": bool(0.025 <= agree.p_value <= 0.975)}
    return body, expected


@in_step("training")
def train_and_save(
    frame: pd.DataFrame,
    schema: FrozenSchema,
    fingerprint: dict[str, Any],
    *,
    model_settings: ModelSettings,
    reference_size: int,
    model_folder: Path,
    metric: str = "f1",
) -> dict[str, Any]:
    """Fit the model on all of ``frame``, write it with its metadata and drift reference; return the metadata.

    Its calibration and expected scores come from out-of-fold predictions on the same rows.
    """
    started = time.perf_counter()
    pipeline = train_model(frame, schema, model_settings)
    seconds = time.perf_counter() - started
    calibration, expected = expectation(frame, schema, model_settings, metric=metric)
    extra = {"calibration": calibration, "expected": expected,
             "window": {"kind": "all", "first_row": 0, "last_row": int(len(frame))}}
    return save_trained(pipeline, schema=schema, fingerprint=fingerprint, model_settings=model_settings,
                        reference=frame, reference_size=reference_size, model_folder=model_folder,
                        seconds=seconds, extra=extra)


def _main(config: Config, args) -> int:
    frame, schema, fingerprint = read_ingested_data(config.paths.ingested)
    metadata = train_and_save(
        frame, schema, fingerprint,
        model_settings=config.model,
        reference_size=config.drift.reference_sample_size,
        model_folder=config.paths.models,
        metric=config.score_drift.metric,
    )
    print(f"trained release {metadata['release_id']} -> {config.paths.models}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        "Train the configured model on ingesteddata/finaldata.csv and write it, with its "
        "metadata and drift reference sample, to the model folder.",
    )
    return run_script(parser, argv, "training", _main, lock=True)


if __name__ == "__main__":
    sys.exit(main())
