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
import math
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
from churnlib.decisions import candidate_windows
from churnlib.engine import active_engine, fit_record
from churnlib.errors import ChurnError, in_step
from churnlib.fsutil import atomic_write_text
from churnlib.ingested import read_ingested_data
from churnlib.modelstore import REFERENCE_FILE, save_model
from churnlib.pipeline import build_pipeline, recalibrated
from churnlib.stats import CALIBRATION_MIN_ROWS, Calibration, calibration_check, log_odds, pool_sources, score_source

logger = logging.getLogger(Path(__file__).stem)

OUT_OF_FOLD_ROWS = 20_000  # out-of-fold predictions are made on at most this many rows
OUT_OF_FOLD_FOLDS = 5


class TrainingError(ChurnError):
    """Training cannot run on this data; the message says why."""


def train_model(frame: pd.DataFrame, schema: FrozenSchema, model_settings: ModelSettings) -> Any:
    """Return the pipeline fitted on ``frame``'s features and target (a pandas frame, or on the dask
    engine rows of the history that its workers hold: ``churnlib.engine.ClusterRows``)."""
    if len(frame) == 0:
        raise TrainingError("no ingested rows to train on")
    on_workers = not isinstance(frame, pd.DataFrame)
    classes = (np.array(sorted(int(k) for k in frame.class_counts())) if on_workers
               else np.unique(frame[schema.target]))
    if len(classes) < 2:
        raise TrainingError(f"the ingested data holds only class {int(classes[0])}; training needs both classes")
    engine = active_engine()
    if engine is not None and engine.handles(len(frame)):  # compute.engine dask: churnlib.engine
        from churnlib.engine import train_on_cluster

        return train_on_cluster(engine, frame, schema, model_settings,
                                lambda rows: _fit_here(rows, schema, model_settings))
    if on_workers:  # fewer than compute.cluster_min_rows rows: fitted here, as small work is
        frame = frame.to_pandas()
    return _fit_here(frame, schema, model_settings)


def _fit_here(frame: pd.DataFrame, schema: FrozenSchema, model_settings: ModelSettings) -> Any:
    pipeline = build_pipeline(schema, model_settings)
    try:
        pipeline.fit(frame[list(schema.feature_columns)], frame[schema.target].to_numpy())
    except ValueError as exc:
        if "parameter" in str(exc):
            raise ConfigError(f"model.params: {exc}") from None
        raise
    return pipeline


def calibrate(pipeline: Any, log_odds: np.ndarray, labels: np.ndarray,
              threshold: float) -> tuple[Any, dict[str, Any], float]:
    """Return the pipeline, recalibrated when its probabilities fail the calibration check on
    out-of-sample labelled rows (their log-odds and labels); the check; and the decision threshold
    on the returned pipeline's scale.

    The fix is Platt scaling of the log-odds (``churnlib.pipeline.recalibrated``): the probabilities
    then mean what they say, which the score check, the label-free estimate and the expected value
    of a call need. The check's ``covariance`` (of the calibration slope and intercept, for the
    probabilities the returned pipeline gives) is how precisely the rows know that.
    Decisions do not change: the threshold moves with the probabilities (a customer above
    ``threshold`` before is above the returned threshold after), so the fit cannot flatter the
    model's scores on the rows it was fitted on, and the deployment policy judges the same decisions.
    """
    check = calibration_check(log_odds, labels)
    check["recalibrated"] = False
    if not check["checked"] or check["passed"]:
        return pipeline, check, threshold
    if check["slope"] <= 0:
        check["reason"] += "; not recalibrated: the model ranks the rows backwards"
        return pipeline, check, threshold
    slope, intercept = check["slope"], check["intercept"]
    pipeline = recalibrated(pipeline, slope, intercept)
    after = calibration_check(slope * np.asarray(log_odds) + intercept, labels)
    moved = 1.0 / (1.0 + math.exp(-(slope * math.log(threshold / (1 - threshold)) + intercept)))
    check.update(recalibrated=True, threshold_before=threshold, threshold_after=moved, covariance=after["covariance"],
                 after={k: after.get(k) for k in ("slope", "intercept", "p_value", "passed", "expected_positives")})
    return pipeline, check, moved


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
                max_rows: int = OUT_OF_FOLD_ROWS, folds: int = OUT_OF_FOLD_FOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Return labels and out-of-fold churn probabilities for (a sample of at most ``max_rows`` of) ``frame``.

    Each row is predicted by a model fitted, with the same settings, on the other folds: what the
    training procedure scores on rows it did not see. Too few rows of a class for two folds: empty.
    """
    from sklearn.model_selection import StratifiedKFold

    from churnlib.pipeline import churn_probabilities

    if not isinstance(frame, pd.DataFrame):  # rows on the dask engine's workers: the same rows, fetched
        frame = frame.sample(max_rows, model_settings.random_seed)
    elif len(frame) > max_rows:
        chosen = np.sort(np.random.default_rng(model_settings.random_seed).choice(len(frame), max_rows, replace=False))
        frame = frame.iloc[chosen]
    labels = frame[schema.target].to_numpy()
    folds = min(folds, int(min(np.count_nonzero(labels == 0), np.count_nonzero(labels == 1))))
    if folds < 2:
        return np.empty(0, dtype=np.int64), np.empty(0)
    probabilities = np.empty(len(frame))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=model_settings.random_seed)
    for train_rows, predict_rows in splitter.split(np.zeros(len(frame)), labels):
        fitted = train_model(frame.iloc[train_rows], schema, model_settings)
        probabilities[predict_rows] = churn_probabilities(fitted, frame.iloc[predict_rows], schema)
    return labels, probabilities


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

    ``extra`` goes into the metadata as it is: the calibration check and the decision threshold,
    the scores the model is expected to keep (``expected``), its training window (``window``).
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
        "threshold": model_settings.threshold,
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
    compute = fit_record(int(fingerprint["rows"]))
    if compute is not None:  # which engine fitted it, and on how many rows (a sample, for logistic regression)
        metadata["compute"] = compute
    metadata = save_model(pipeline, metadata, model_folder)
    logger.info(
        "trained %s on %d rows in %.2f s: release %s (model sha256 %s)",
        model_settings.algorithm, fingerprint["rows"], seconds, metadata["release_id"], metadata["model_sha256"][:12],
    )
    calibration = metadata.get("calibration")
    if calibration and calibration.get("reason"):
        recalibrated_note = (f"; recalibrated (Platt scaling of the log-odds), decision threshold "
                             f"{model_settings.threshold:g} -> {metadata['decision_threshold']:.4f}"
                             if calibration["recalibrated"] else "")
        sources = " and ".join(f"{s['rows']} {s['source'].replace('_', '-')}" for s in calibration.get("sources", []))
        logger.info("calibration check on %s rows: %s%s", sources or "no", calibration["reason"], recalibrated_note)
    return metadata


def _enough_to_check(labels: np.ndarray) -> bool:
    return len(labels) >= CALIBRATION_MIN_ROWS and 0 < int(np.sum(labels)) < len(labels)


def expectation(pipeline: Any, frame: pd.DataFrame, schema: FrozenSchema, model_settings: ModelSettings, *,
                metric: str, held_out: tuple | None = None,
                test: tuple | None = None) -> tuple[Any, dict[str, Any], dict[str, Any], float]:
    """Return what a model fitted on ``frame`` is to be deployed as and expected to keep.

    Learnt from the model's own predictions on labelled rows it was not trained on: the held-out
    newest rows (``held_out``: labels and probabilities) whenever there are any, with the test data
    (``test``) pooled in when it agrees with them; without held-out rows (a cold start, a retrain
    judged on the test data) the test data alone, when it has 30 rows of both classes; else
    out-of-fold predictions on ``frame`` (other models' predictions, a little worse than the
    model's own: a last resort). Returns the pipeline to deploy (recalibrated when its
    probabilities fail the check, see ``calibrate``), the calibration record (the check, its sources,
    how sure it is), the expected scores (pooled confusion counts) and the decision threshold on the
    deployed probabilities' scale. A test set that disagrees with the newest rows (from another time
    or place) is reported in ``testdata_check``, not learnt from.
    """
    from churnlib.pipeline import predicted_classes
    from churnlib.stats import confusion_counts, expected_score_of, metric_from_rates

    threshold = model_settings.threshold
    parts = []
    if held_out is not None and len(held_out[0]):
        parts.append(("held_out", *held_out))
    elif test is not None and _enough_to_check(test[0]):
        parts.append(("testdata", *test))
    else:
        labels, probabilities = out_of_fold(frame, schema, model_settings)
        if len(labels):
            parts.append(("out_of_fold", labels, probabilities))
    if not parts:
        check = calibration_check(np.empty(0), np.empty(0))
        return pipeline, {**check, "recalibrated": False, "sources": []}, pool_sources([]), threshold

    def fitted(parts: list) -> tuple[Any, dict[str, Any], float]:
        labels = np.concatenate([part[1] for part in parts])
        return calibrate(pipeline, log_odds(np.concatenate([part[2] for part in parts])), labels, threshold)

    deployed, check, decision_threshold = fitted(parts)
    testdata_check = None
    if test is not None and len(test[0]) and parts[0][0] != "testdata" and metric != "roc_auc":
        served = Calibration(slope=check["slope"], intercept=check["intercept"]) if check["recalibrated"] else Calibration()
        # Does the test data score what the calibrated probabilities say it should, within label noise
        # and the calibration's uncertainty? Two-sided: a test set from another world may score
        # better or worse than expected.
        probabilities = served.apply(test[1])
        predicted = predicted_classes(probabilities, decision_threshold)
        expected_test, p_fit = expected_score_of(probabilities, predicted, metric, Calibration.from_check(check),
                                                 labels=test[0])
        score = float(metric_from_rates(np.asarray(confusion_counts(test[0], predicted), dtype=float), metric))
        below = (np.count_nonzero(expected_test.predictive <= score) + 1) / (len(expected_test.predictive) + 1)
        above = (np.count_nonzero(expected_test.predictive >= score) + 1) / (len(expected_test.predictive) + 1)
        # the metric, either way; and the labels' fit to the probabilities (a test set from another
        # world fits them worse); Bonferroni over the two
        p_value = float(min(1.0, 2 * min(2 * min(below, above), p_fit)))
        testdata_check = {"rows": int(len(test[0])), "score": score, "expected": expected_test.value,
                          "p_value": p_value, "agrees": bool(p_value >= 0.05)}
        if testdata_check["agrees"] and _enough_to_check(test[0]):
            parts.append(("testdata", *test))
            deployed, check, decision_threshold = fitted(parts)
    served = Calibration(slope=check["slope"], intercept=check["intercept"]) if check["recalibrated"] else Calibration()
    expected = pool_sources([score_source(name, y, served.apply(p), decision_threshold) for name, y, p in parts])
    check["sources"] = [{"source": name, "rows": int(len(y))} for name, y, _ in parts]
    if testdata_check is not None:
        check["testdata_check"] = testdata_check
    return deployed, check, expected, decision_threshold


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
    test: pd.DataFrame | None = None,
    window: tuple[str, int] = ("all", 0),
) -> dict[str, Any]:
    """Fit the model on ``frame`` from the ``window``'s first row (name, first row: all of it by
    default), write it with its metadata and drift reference; return the metadata.

    Its calibration (checked, and fixed when it fails) and expected scores come from its
    predictions on ``test`` (labelled rows it was not trained on), else from out-of-fold predictions.
    """
    from churnlib.pipeline import churn_probabilities
    from churnlib.search import search_metadata, settings_for_retrain

    window_name, window_first = window
    rows = len(frame)
    if window_first:
        frame = frame.iloc[window_first:]
        fingerprint = {**fingerprint, "rows": int(len(frame)), "class_counts": {
            str(k): int(v) for k, v in frame[schema.target].value_counts().sort_index().items()}}
    configured = model_settings.fingerprint()
    model_settings, searched = settings_for_retrain(model_settings, frame, schema)  # model.search, when on
    started = time.perf_counter()
    pipeline = train_model(frame, schema, model_settings)
    seconds = time.perf_counter() - started
    if test is not None:
        test = (test[schema.target].to_numpy(), churn_probabilities(pipeline, test, schema))
    pipeline, calibration, expected, decision_threshold = expectation(pipeline, frame, schema, model_settings,
                                                                      metric=metric, test=test)
    extra = {"settings_fingerprint": configured, **search_metadata(searched), "calibration": calibration,
             "expected": expected, "decision_threshold": decision_threshold,
             "window": {"kind": window_name, "first_row": int(window_first), "last_row": int(rows)}}
    return save_trained(pipeline, schema=schema, fingerprint=fingerprint, model_settings=model_settings,
                        reference=frame, reference_size=reference_size, model_folder=model_folder,
                        seconds=seconds, extra=extra)


def _main(config: Config, args) -> int:
    from churnlib.dataset import DatasetError, read_labelled_folder

    frame, schema, fingerprint = read_ingested_data(config.paths.ingested)
    try:  # rows the model is not trained on, to check its calibration with
        test = read_labelled_folder(config.paths.testdata, settings=config.schema, schema=schema)
    except (DatasetError, OSError):
        test = None
    metadata = train_and_save(
        frame, schema, fingerprint,
        model_settings=config.model,
        reference_size=config.drift.reference_sample_size,
        model_folder=config.paths.models,
        metric=config.score_drift.metric,
        test=test,
        # model.training_window: `recent` trains on the newest rows; `auto` needs a deployed model to
        # judge windows against (fullprocess.py), so by hand it trains on all history, like `all`.
        window=candidate_windows(len(frame), 0, config.model)[0],
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
