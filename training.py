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
from churnlib.pipeline import build_pipeline, effective_params

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


@in_step("training")
def train_and_save(
    frame: pd.DataFrame,
    schema: FrozenSchema,
    fingerprint: dict[str, Any],
    *,
    model_settings: ModelSettings,
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
