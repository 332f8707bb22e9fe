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
from churnlib.errors import ChurnError
from churnlib.fsutil import atomic_write_text
from churnlib.ingested import read_ingested_data
from churnlib.modelstore import REFERENCE_FILE, save_model
from churnlib.pipeline import build_pipeline, calibration_check, effective_params, pipeline_log_odds, recalibrated

logger = logging.getLogger(Path(__file__).stem)

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


def calibrate(pipeline: Any, held_out: pd.DataFrame, schema: FrozenSchema,
              threshold: float) -> tuple[Any, dict[str, Any], float]:
    """Return the pipeline, recalibrated when its probabilities fail the calibration check on the
    held-out labelled rows; the check; and the decision threshold on the returned pipeline's scale.

    The fix is Platt scaling of the log-odds (``churnlib.pipeline.recalibrated``): the probabilities
    then mean what they say, which the label-free estimate and the expected value of a call need.
    The check's ``covariance`` (of the calibration slope and intercept, for the probabilities the
    returned pipeline gives) is how precisely the held-out rows know that.
    Decisions do not change: the threshold moves with the probabilities (a customer above
    ``threshold`` before is above the returned threshold after), so the fit cannot flatter the
    model's scores on the rows it was fitted on, and the deployment policy judges the same decisions.
    """
    labels = held_out[schema.target].to_numpy()
    check = calibration_check(pipeline_log_odds(pipeline, held_out, schema), labels)
    check["recalibrated"] = False
    if not check["checked"] or check["passed"]:
        return pipeline, check, threshold
    if check["slope"] <= 0:
        check["reason"] += "; not recalibrated: the model ranks the held-out rows backwards"
        return pipeline, check, threshold
    pipeline = recalibrated(pipeline, check["slope"], check["intercept"])
    after = calibration_check(pipeline_log_odds(pipeline, held_out, schema), labels)
    moved = 1.0 / (1.0 + math.exp(-(check["slope"] * math.log(threshold / (1 - threshold)) + check["intercept"])))
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


def train_and_save(
    frame: pd.DataFrame,
    schema: FrozenSchema,
    fingerprint: dict[str, Any],
    *,
    model_settings: ModelSettings,
    reference_size: int,
    model_folder: Path,
    held_out: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Fit the model, write it with its metadata and drift reference to ``model_folder``; return the metadata.

    With ``held_out`` labelled rows (not trained on), the probabilities' calibration is checked on
    them, and the model recalibrated when it fails (``calibrate``); the check goes into the metadata.
    """
    started = time.perf_counter()
    pipeline = train_model(frame, schema, model_settings)
    seconds = time.perf_counter() - started
    calibration, decision_threshold = None, model_settings.threshold
    if held_out is not None:
        pipeline, calibration, decision_threshold = calibrate(pipeline, held_out, schema, model_settings.threshold)
    sample = reference_sample(frame, reference_size, model_settings.random_seed)
    sample_text = header_line(schema) + "\n" + "".join(f"{line}\n" for line in canonical_lines(sample, schema))
    atomic_write_text(model_folder / REFERENCE_FILE, sample_text)
    metadata = {
        "trained_at": utc_now(),
        "algorithm": model_settings.algorithm,
        "params": effective_params(model_settings),
        "random_seed": model_settings.random_seed,
        "n_threads": model_settings.n_threads,
        "threshold": model_settings.threshold,
        "decision_threshold": decision_threshold,  # model.threshold on the scale of the probabilities served
        "calibration": calibration,
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
    if calibration is not None:
        recalibrated_note = (f"; recalibrated (Platt scaling of the log-odds), decision threshold "
                             f"{model_settings.threshold:g} -> {decision_threshold:.4f}") if calibration["recalibrated"] else ""
        logger.info("calibration check on %d held-out rows: %s%s", calibration["rows"], calibration["reason"],
                    recalibrated_note)
    return metadata


def _main(config: Config, args) -> int:
    frame, schema, fingerprint = read_ingested_data(config.paths.ingested)
    metadata = train_and_save(
        frame, schema, fingerprint,
        model_settings=config.model,
        reference_size=config.drift.reference_sample_size,
        model_folder=config.paths.models,
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
