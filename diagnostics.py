"""Diagnostics: what a user checks when the model's numbers look off.

- predictions of the deployed model for a dataset (the test data by default);
- mean, median and standard deviation of each numeric column of the ingested data, and each
  category's rows and churn rate, from the figures kept at ingestion (``ingesteddata/column_stats.json``);
- the share of missing values in each column of the ingested data;
- how long the last ingestion and the deployed model's training took, in seconds;
- a dependency check: each package pinned in requirements.txt, the installed version, and the latest
  on PyPI. The PyPI look-ups share one deadline of a few seconds; without network the answer is
  "latest unknown", never a hang;
- the drift table of the latest ingest (written by fullprocess.py to logs/latest_drift.json).

Written to ``logs/diagnostics.json`` and printed readably.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
import urllib.request
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnlib.cli import run_script, script_parser
from churnlib.clock import utc_now
from churnlib.config import PROJECT_ROOT, Config
from churnlib.dataset import FrozenSchema, read_labelled_folder
from churnlib.display import number
from churnlib.fsutil import atomic_write_json, read_json_or_none
from churnlib.runlog import DIAGNOSTICS_FILE, LATEST_DRIFT_FILE
from churnlib.ingested import ingested_statistics, load_record
from churnlib.modelstore import load_deployed
from churnlib.errors import in_step
from churnlib.pipeline import churn_probabilities, model_threshold, predicted_classes

logger = logging.getLogger(Path(__file__).stem)

REQUIREMENTS_FILE = PROJECT_ROOT / "requirements.txt"
PYPI_URL_ENV = "CHURN_PYPI_URL"  # tests point this at a local address; default is PyPI's JSON API
DEFAULT_PYPI_URL = "https://pypi.org/pypi"
LATEST_UNKNOWN = "latest unknown"
MAX_CATEGORIES_SHOWN = 20


def model_predictions(pipeline: Any, frame: pd.DataFrame, schema: FrozenSchema, threshold: float = 0.5) -> list[int]:
    """Return the predicted class (1 = churn) of each row of ``frame``."""
    return predicted_classes(churn_probabilities(pipeline, frame, schema), threshold).tolist()


def step_timings(record: dict[str, Any], metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Return the last ingestion's and the deployed model's training time, in seconds."""
    last = record.get("last_ingest") or {}
    return {
        "ingestion_seconds": last.get("seconds"),
        "ingestion_at": last.get("at"),
        "training_seconds": (metadata or {}).get("training_seconds"),
        "trained_at": (metadata or {}).get("trained_at"),
    }


def pinned_requirements(path: Path = REQUIREMENTS_FILE) -> list[tuple[str, str | None]]:
    """Return (package, pinned version or None) for each line of a requirements file."""
    pins = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[.*\])?\s*(?:==\s*([^\s;,]+))?", line)
        if match:
            pins.append((match.group(1), match.group(2)))
    return pins


def installed_versions(path: Path = REQUIREMENTS_FILE) -> list[dict[str, Any]]:
    """Return each package pinned in requirements.txt with its required and installed version (no network)."""
    rows = []
    try:
        pins = pinned_requirements(path)
    except FileNotFoundError:
        logger.warning("%s: not found; no dependency check", path)
        return rows
    for name, pin in pins:
        try:
            installed = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            installed = None
        rows.append({"package": name, "required": pin, "installed": installed})
    return rows


def with_latest(installed: list[dict[str, Any]], latest: dict[str, str]) -> list[dict[str, Any]]:
    """Return the installed versions with the latest known one of each, and whether it is outdated."""
    rows = []
    for row in installed:
        newest = latest.get(row["package"]) or LATEST_UNKNOWN
        outdated = None if newest == LATEST_UNKNOWN or row["installed"] is None else newest != row["installed"]
        rows.append({**row, "latest": newest, "outdated": outdated})
    return rows


def _latest_on_pypi(package: str, base_url: str, timeout: float) -> str:
    with urllib.request.urlopen(f"{base_url}/{package}/json", timeout=timeout) as reply:
        return json.load(reply)["info"]["version"]


def dependency_check(path: Path = REQUIREMENTS_FILE, *, deadline_seconds: float = 3.0,
                     base_url: str | None = None) -> list[dict[str, Any]]:
    """Return, for each pinned package: required, installed and latest version, and whether it is outdated.

    All PyPI look-ups run at once and share ``deadline_seconds``; any not answered by then is
    reported as "latest unknown".
    """
    base_url = (base_url or os.environ.get(PYPI_URL_ENV) or DEFAULT_PYPI_URL).rstrip("/")
    installed = installed_versions(path)
    latest: dict[str, str] = {}

    def look_up(name: str) -> None:
        try:
            latest[name] = _latest_on_pypi(name, base_url, deadline_seconds)
        except Exception as exc:  # any network or parse failure means "unknown", never an error
            logger.debug("latest version of %s unknown: %s", name, exc)

    if deadline_seconds > 0:
        # Daemon threads: one that is still waiting on the network at the deadline is abandoned,
        # and cannot hold up the process's exit either.
        threads = [threading.Thread(target=look_up, args=(row["package"],), daemon=True) for row in installed]
        for thread in threads:
            thread.start()
        end = time.monotonic() + deadline_seconds
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        latest = dict(latest)
    return with_latest(installed, latest)


def latest_drift(log_folder: Path) -> dict[str, Any] | None:
    """Return the drift table of the latest check, or None before the first drift test."""
    return read_json_or_none(log_folder / LATEST_DRIFT_FILE)


@in_step("diagnostics")
def run_diagnostics(
    *,
    pipeline: Any,
    metadata: dict[str, Any],
    schema: FrozenSchema,
    dataset: pd.DataFrame,
    dataset_name: str,
    ingested_folder: Path,
    record: dict[str, Any],
    log_folder: Path,
    dependency_deadline: float = 3.0,
    probabilities: np.ndarray | None = None,
) -> dict[str, Any]:
    """Return every diagnostic for the model and data given, as one JSON-ready dict.

    ``probabilities`` are the model's churn probabilities on ``dataset`` when the caller has them.
    The ingested data's statistics come from the figures kept at ingestion, never from reading it.
    """
    started = time.perf_counter()
    threshold = model_threshold(metadata)
    if probabilities is None:
        predictions = model_predictions(pipeline, dataset, schema, threshold)
    else:
        predictions = predicted_classes(probabilities, threshold).tolist()
    statistics = ingested_statistics(ingested_folder)
    result = {
        "generated_at": utc_now(),
        "release_id": metadata.get("release_id"),
        "predictions": {"dataset": dataset_name, "rows": len(predictions), "values": predictions},
        "summary_statistics": statistics["summary_statistics"],
        "categorical": statistics["categorical"],
        "target": statistics["target"],
        "missing_data": statistics["missing_data"],
        "ingested_rows": statistics["rows"],
        "data_version": statistics["data_version"],
        "timings": step_timings(record, metadata),
        "dependencies": dependency_check(deadline_seconds=dependency_deadline),
        "drift": latest_drift(log_folder),
    }
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def text_table(headers: list[str], rows: list[list[str]], *, right: frozenset[int] = frozenset(),
               indent: str = "  ") -> list[str]:
    """Return the lines of a plain-text table whose columns are as wide as their widest cell (a package
    or feature name longer than usual keeps the columns aligned); columns in ``right`` right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: list[str]) -> str:
        return indent + "  ".join(f"{str(c):>{w}}" if i in right else f"{str(c):<{w}}"
                                 for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def format_diagnostics(result: dict[str, Any]) -> str:
    """Return the diagnostics as readable text."""
    lines = [f"Diagnostics of release {result['release_id']} at {result['generated_at']}", ""]
    predictions = result["predictions"]
    churners = sum(predictions["values"])
    lines.append(f"Predictions on {predictions['dataset']}: {predictions['rows']} rows, {churners} predicted to churn")
    lines += ["", f"Summary statistics of the ingested data ({result['ingested_rows']} rows):"]
    rows = []
    for column, stats in result["summary_statistics"].items():
        cells = [number(stats[k], ".4f", missing="") for k in ("mean", "median", "std")]
        rows.append([column, *cells, "" if stats.get("median_exact", True) else " (median within 1%)"])
    lines += text_table(["column", "mean", "median", "std", ""], rows, right=frozenset({1, 2, 3}))
    for column, stats in (result.get("categorical") or {}).items():
        lines += ["", f"  {column} (categorical): {'category':<20} {'rows':>10} {'churn rate':>11}"]
        for category in stats["categories"][:MAX_CATEGORIES_SHOWN]:
            rate = "" if category["churn_rate"] is None else f"{category['churn_rate']:.1%}"
            lines.append(f"  {'':<{len(column) + 16}}{category['value'][:20]:<20} {category['count']:>10} {rate:>11}")
        if len(stats["categories"]) > MAX_CATEGORIES_SHOWN:
            lines.append(f"  {'':<{len(column) + 16}}... {len(stats['categories']) - MAX_CATEGORIES_SHOWN} more")
    lines += ["", "Missing data (share of rows):"]
    lines += text_table(["column", "missing"], [[column, f"{share:.2%}"] for column, share in result["missing_data"].items()],
                        right=frozenset({1}))
    timings = result["timings"]
    lines += ["", "Timings:",
              f"  last ingestion: {timings['ingestion_seconds']} s (at {timings['ingestion_at']})",
              f"  training of the deployed model: {timings['training_seconds']} s (at {timings['trained_at']})"]
    lines += ["", "Dependencies (requirements.txt):"]
    lines += text_table(["package", "required", "installed", "latest", ""],
                        [[dep["package"], dep["required"] or "-", dep["installed"] or "missing", dep["latest"],
                          " <- outdated" if dep["outdated"] else ""] for dep in result["dependencies"]])
    drift = result["drift"]
    lines += ["", "Drift of the latest ingest:"]
    if not drift:
        lines.append("  no drift test has run yet")
    elif not drift.get("tested"):
        lines.append(f"  not tested: {drift.get('reason')}")
    else:
        rows = [[row["feature"], row["test"], number(row["statistic"], ".4f", missing=""),
                 number(row["effect"], ".3f", missing=""), number(row["p_adjusted"], ".2e", missing=""),
                 "YES" if row["drifted"] else "no"] for row in drift["features"]]
        lines += text_table(["feature", "test", "statistic", "effect", "p (adj.)", "drifted"], rows,
                            right=frozenset({2, 3, 4}))
    return "\n".join(lines) + "\n"


def _main(config: Config, args) -> int:
    model = load_deployed(config.paths.deployment)
    if model is None:
        logger.critical("no release is deployed yet; run fullprocess.py first")
        return 1
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    folder = Path(args.data).resolve() if args.data else config.paths.testdata
    dataset = read_labelled_folder(folder, settings=config.schema, schema=schema)
    record = load_record(config.paths.ingested)
    result = run_diagnostics(
        pipeline=model.pipeline, metadata=model.metadata, schema=schema, dataset=dataset,
        dataset_name=str(folder), ingested_folder=config.paths.ingested, record=record, log_folder=config.paths.logs,
    )
    atomic_write_json(config.paths.logs / DIAGNOSTICS_FILE, result)
    logger.info("diagnostics of release %s written to %s", result["release_id"], config.paths.logs / DIAGNOSTICS_FILE)
    print(json.dumps(result, indent=2) if args.json else format_diagnostics(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        "Diagnose the deployed model and the ingested data; write logs/diagnostics.json and print it."
    )
    parser.add_argument("--data", metavar="FOLDER", help="labelled CSV folder to predict on (default: the test data folder)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    # An incident tool: it works while a section of config.json it does not read is broken.
    return run_script(parser, argv, "diagnostics", _main, needs=("paths", "schema"))


if __name__ == "__main__":
    sys.exit(main())
