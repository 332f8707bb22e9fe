"""The cron job: find new data, check the deployed model against it, retrain and redeploy when needed.

One tick (DESIGN.md section 4), each part a function that returns what it found:

1. ``find_work``: take stock without importing pandas, scikit-learn or xgboost: new files in the
   source folder, the deployed release, rows ingested but not yet judged. Nothing to do: one log
   line, exit 0, in a fraction of a second.
2. ``ingest``: the new files (bad ones are rejected with a reason, good ones appended).
3. No model deployed yet (cold start): ``retrain`` trains, scores and deploys the first one.
4. ``judge``: the deployed model's score on the new rows against the score its calibrated
   probabilities expect on those rows (``score_drift`` in config.json), and each feature of the new
   rows against the release's drift reference (``drift``).
5. Neither drifted, and no other retrain due (changed model settings, the schedule): stop.
   Otherwise ``retrain``: ``challenge`` trains a challenger without the newest rows and compares it
   with the champion on them (paired), and the policy (``deployment.policy``) decides; a deploy
   carries diagnostics and a report, and the API is called if it is running. A shift the
   challenger could not beat becomes the release's new normal (``accept_new_normal``). The rules
   themselves (score check, training window, challenger, policy, new normal) are in
   ``churnlib.decisions``; this script orchestrates.
6. ``score_customers``: files of current customers in the scoring folder that are new or changed,
   or were scored by an older release, become ranked risk lists in the predictions folder
   (``scoring.py``). Found by ``find_work`` too (``churnlib.risklists``), without heavy imports, so a new customer file is
   scored on a tick that finds nothing else to do.

``run_tick`` returns the outcome as a value (``TickOutcome``, its decision one of
``churnlib.runlog.Decision``); ``main()`` turns it into the decision's log line and one JSON line
in ``logs/runs.jsonl`` with every figure behind the decision.

Crash safety: the rows a tick ingests stay "pending" (``ingesteddata/decision_state.json``) until
their decision is complete, so a tick killed after ingesting and before deciding is finished by the
next tick instead of being forgotten.

Exit status: 0 when the tick did its job (including "nothing new", "lock held", rejected files and a
retrained model refused by the policy); 1 on a real failure, with the reason on stderr; 2 for a bad
config.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnlib.cli import run_script, script_parser
from churnlib.clock import stamp_seconds, utc_now
from churnlib.config import Config, model_fingerprint
from churnlib.decisions import (HOLD_EXPECTATION, HOLD_MODEL, WINDOW_ALPHA, accept_new_normal, challenge,
                                check_score, confirmation, describe_window, drop_confirms, held_message, hold_change,
                                lowered_expectation, policy_allows, release_expectations, rise_back, rows_needed,
                                trained_until)
from churnlib.errors import ChurnError, StateFileError, describe_error, in_step
from churnlib.fsutil import atomic_write_json, read_json, remove_stale_temporaries
from churnlib.ingested import DECISION_STATE_FILE, check_ingested_data, load_record, save_record
from churnlib.modelstore import (
    NORMAL_FOLDER,
    RELEASES_FOLDER,
    SCORE_DETAILS_FILE,
    read_metadata,
    read_pointer,
    release_folder,
)
from churnlib.risklists import CustomerWork, find_customer_files, list_settings, load_scoring_record, save_scoring_record
from churnlib.runlog import (DASHBOARD_FILE, DRIFT_REASONS, LATEST_DRIFT_FILE, OUTBOX_FILE, Decision, RetrainReason,
                             append_run)
from ingestion import Scan, check_schema_matches_config, scan_source

logger = logging.getLogger(Path(__file__).stem)


class PipelineError(ChurnError):
    """A tick that cannot complete; the message says why."""


# --- the outcome of a tick ---------------------------------------------------------------------


@dataclass
class TickOutcome:
    """What a tick found and decided; ``to_json`` is its line in runs.jsonl.

    Fields left None were not reached by the tick and are not written.
    """

    decision: Decision
    reason: str
    deployed_release_before: str | None = None
    new_files: list[str] = field(default_factory=list)
    pending_rows: int | None = None
    rows_needed: int | None = None
    ingest: dict[str, Any] | None = None
    score_drift: dict[str, Any] | None = None
    data_drift: dict[str, Any] | None = None
    candidate: dict[str, Any] | None = None
    deployed_on_test: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    retrain_reason: list[str] | None = None
    challenge: dict[str, Any] | None = None
    search: dict[str, Any] | None = None  # model.search: trials, winner, gain over the configured defaults
    new_normal: dict[str, Any] | None = None
    held: dict[str, Any] | None = None
    deployed_release_after: str | None = None
    report: str | None = None
    report_error: str | None = None  # the deploy went on without its report
    api: dict[str, Any] | None = None
    scoring: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # Not written to the JSON line: for the log line, and the error that failed the tick.
    files_ingested: int = field(default=0, repr=False)
    error: BaseException | None = field(default=None, repr=False)

    ALWAYS_WRITTEN = ("decision", "reason", "deployed_release_before", "new_files", "timings")

    def to_json(self) -> dict[str, Any]:
        line = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name in ("files_ingested", "error") or (value is None and item.name not in self.ALWAYS_WRITTEN):
                continue
            line[item.name] = value
        return line

    def fail(self, exc: BaseException, config_label: str) -> "TickOutcome":
        """Turn this outcome into a failure, keeping the figures found before it."""
        logger.debug("%s", "".join(traceback.format_exception(exc)))
        self.decision = Decision.FAILED
        self.reason = describe_error(exc, config_label=config_label)
        self.error = exc
        return self

    @property
    def exit_status(self) -> int:
        """0 unless the tick failed: 1, or 2 for a setting the tick could not use."""
        if self.error is None:
            return 0
        return self.error.exit_status if isinstance(self.error, ChurnError) else 1

    def log_line(self, source_name: str) -> tuple[int, str]:
        """Return the level and text of the decision's line in the human log."""
        if self.decision is Decision.NOTHING_NEW:
            if self.deployed_release_before is None:
                return logging.INFO, f"nothing new in {source_name}/ and no data yet"
            waiting = (f"; {self.pending_rows} new row(s) wait for {self.rows_needed} to be checked"
                       if self.pending_rows else "")
            return logging.INFO, (f"nothing new in {source_name}/ ({self.files_ingested} file(s) ingested){waiting}; "
                                  f"release {self.deployed_release_before} stays")
        if self.decision is Decision.LOCK_HELD:
            return logging.INFO, f"{self.reason}; exiting"
        if self.decision is Decision.FAILED:
            return logging.CRITICAL, f"tick failed: {self.reason}"
        if self.decision is Decision.RETRAINED_REFUSED:
            return logging.WARNING, self.reason
        if self.deployed_release_after:
            report = self.report or f"not built ({self.report_error})"
            return logging.INFO, f"deployed release {self.deployed_release_after}: {self.reason}. Report: {report}"
        return logging.INFO, self.reason


# --- decision state: how far into the ingested data decisions are complete ---------------------


def read_decision_state(ingested_folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Return how far into the ingested data decisions are complete (rows and bytes), and the last retrain."""
    path = ingested_folder / DECISION_STATE_FILE
    advice = ("delete it: the next tick then checks every ingested row against the deployed model once "
              "(docs/operations.md: \"Damaged state files\")")
    state = read_json(path, if_damaged=f"it was damaged (a full disk, or an edit by hand?); {advice}") or {}
    try:
        rows, size = int(state.get("evaluated_rows", 0)), int(state.get("evaluated_bytes", 0))
    except (AttributeError, TypeError, ValueError):
        raise StateFileError(f"{path}: not a decision state (evaluated_rows and evaluated_bytes, whole numbers); "
                             + advice) from None
    if rows > record["rows"] or size > record["bytes"]:
        # The ingested data was reset under us (ingesteddata/ moved away): start over.
        return {"evaluated_rows": 0, "evaluated_bytes": 0, "last_retrain": None, "held": None}
    return {"evaluated_rows": rows, "evaluated_bytes": size, "last_retrain": state.get("last_retrain"),
            "held": state.get("held")}


@in_step("decision state")
def mark_evaluated(ingested_folder: Path, record: dict[str, Any], *, last_retrain: dict[str, Any] | None,
                   held: dict[str, Any] | None = None) -> None:
    """Record how far the ingested rows (``record``: rows and bytes) have been through a decision, when a
    retrain was last tried, and the change held back for the next batch to confirm (None: nothing held)."""
    state = {"evaluated_rows": record["rows"], "evaluated_bytes": record["bytes"], "at": utc_now(),
             "last_retrain": last_retrain}
    if held is not None:
        state["held"] = held
    atomic_write_json(ingested_folder / DECISION_STATE_FILE, state)


def sweep_temporaries(config: Config) -> None:
    """Remove temporary files left by killed writers in every folder the pipeline writes."""
    folders = [config.paths.ingested, config.paths.models, config.paths.deployment,
               config.paths.deployment / RELEASES_FOLDER, config.paths.deployment / NORMAL_FOLDER, config.paths.logs,
               config.paths.predictions]
    for folder in folders:
        for path in remove_stale_temporaries(folder):
            logger.info("removed %s, left by an interrupted run", path)


# --- 1. find work, without heavy imports -------------------------------------------------------


@dataclass
class Work:
    """What a tick finds before it imports anything heavy."""

    record: dict[str, Any]
    scan: Scan
    pointer: dict[str, Any] | None
    evaluated_rows: int
    evaluated_bytes: int
    rows_needed: int
    customers: CustomerWork
    last_retrain: dict[str, Any] | None = None
    deployed_metadata: dict[str, Any] | None = None
    retrain_due: list[str] = field(default_factory=list)

    @property
    def pending_rows(self) -> int:
        """Rows ingested (by this tick or a killed one) that no decision has judged yet."""
        return self.record["rows"] - self.evaluated_rows

    @property
    def idle(self) -> bool:
        """No new file and no retrain due, and either a model deployed with too few pending rows to
        check, or no data at all."""
        if self.scan.new_files or self.retrain_due:
            return False
        if self.pointer is None:
            return self.record["rows"] == 0
        return self.pending_rows < self.rows_needed


def _seconds_since(stamp: str | None) -> float:
    seconds = stamp_seconds(stamp)
    return 0.0 if seconds is None else time.time() - seconds


def due_retrains(config: Config, metadata: dict[str, Any] | None, record: dict[str, Any],
                 last_retrain: dict[str, Any] | None) -> list[str]:
    """Return the reasons other than drift for which a retrain is due: changed model settings, the schedule.

    Each is tried once: a retrain refused by the policy is not tried again for the same settings, nor
    before the schedule comes round again.
    """
    if metadata is None:
        return []
    tried = last_retrain or {}
    reasons = []
    deployed = metadata.get("settings_fingerprint") or model_fingerprint(
        metadata.get("algorithm"), metadata.get("params"), metadata.get("random_seed"), metadata.get("scale_numeric", True),
        metadata.get("threshold", 0.5))
    wanted = config.model.fingerprint()
    if deployed != wanted and tried.get("settings") != wanted:
        reasons.append(RetrainReason.CONFIG_CHANGED)
    schedule = config.schedule
    since_rows = max(trained_until(metadata), tried.get("rows", 0))
    since_seconds = min(_seconds_since(metadata.get("trained_at")), _seconds_since(tried.get("at")) if tried else math.inf)
    if (schedule.every_rows and record["rows"] - since_rows >= schedule.every_rows) or \
            (schedule.every_days and since_seconds >= schedule.every_days * 86400):
        reasons.append(RetrainReason.SCHEDULE)
    return reasons


def find_work(config: Config) -> Work:
    """Return the new files, the deployed release, the pending rows, any retrain due and the customer
    files to score; imports no pandas or scikit-learn."""
    sweep_temporaries(config)
    record = load_record(config.paths.ingested)
    # On every tick, not only when a file arrives: a config that contradicts the data, or data
    # changed by hand, stops the tick before anything is built on it (cheap: no history is read).
    check_schema_matches_config(record["schema"], config.schema)
    if check_ingested_data(config.paths.ingested, record):
        save_record(record, config.paths.ingested, config.paths.logs)
    scan = scan_source(config.paths.source, record, config.schema)
    state = read_decision_state(config.paths.ingested, record)
    pointer = read_pointer(config.paths.deployment)
    metadata = read_metadata(release_folder(config.paths.deployment, pointer["current"])) if pointer else None
    for folder in (config.paths.scoring, config.paths.predictions):
        folder.mkdir(parents=True, exist_ok=True)
    customers = find_customer_files(config.paths.scoring, load_scoring_record(config.paths.predictions),
                                    pointer["current"] if pointer else None, predictions_folder=config.paths.predictions,
                                    settings=list_settings(config.risk_lists, config.outreach))
    return Work(record=record, scan=scan, pointer=pointer,
                evaluated_rows=state["evaluated_rows"], evaluated_bytes=state["evaluated_bytes"],
                rows_needed=rows_needed(config), customers=customers, last_retrain=state["last_retrain"],
                deployed_metadata=metadata, retrain_due=due_retrains(config, metadata, record, state["last_retrain"]))


def idle_outcome(config: Config, work: Work, outcome: TickOutcome) -> TickOutcome:
    """Return the outcome of a tick with nothing to do (the scan's notes saved)."""
    if work.scan.record_changed:
        save_record(work.record, config.paths.ingested, config.paths.logs)
    if work.scan.rejected:  # refused unread by the scan (a symlink out, an unreadable file)
        outcome.ingest = {"rejected": [{"name": r["name"], "reason": r["reason"]} for r in work.scan.rejected]}
    outcome.reason = f"no new files in {config.paths.source.name}/"
    if work.pointer is not None and work.pending_rows:
        outcome.reason += f"; {work.pending_rows} new row(s) pending, waiting for {work.rows_needed} to be checked"
    outcome.files_ingested = len(work.record["files"])
    return outcome


# --- 2. ingest ----------------------------------------------------------------------------------


def ingest(config: Config, work: Work):
    """Ingest the new files the scan found; return the IngestResult and its summary for the run line."""
    from ingestion import ingest_scanned

    if work.scan.new_files:
        logger.info("found %d new file(s): %s", len(work.scan.new_files),
                    ", ".join(source.name for source in work.scan.new_files))
    result = ingest_scanned(config, work.record, work.scan)
    summary = {
        "accepted": [{k: f[k] for k in ("name", "rows_read", "rows_added", "duplicates_in_file",
                                         "duplicates_of_earlier_rows")} for f in result.accepted],
        "rejected": [{"name": r["name"], "reason": r["reason"]} for r in result.rejected],
        "deferred": result.deferred,
        "rows_added": result.rows_added,
        "total_rows": work.record["rows"],
    }
    return result, summary


# --- 3. judge the new rows ----------------------------------------------------------------------


@dataclass
class Judgement:
    """The checks of the deployed release against the new rows."""

    release_id: str
    new_rows: int
    score: dict[str, Any]
    drift: dict[str, Any]

    @property
    def reasons(self) -> list[str]:
        return ([RetrainReason.SCORE_DROP] if self.score["drift"] else []) + \
            ([RetrainReason.FEATURE_DRIFT] if self.drift["drift"] else [])

    def causes(self) -> list[str]:
        """Return why a retrain is due, in words ("score drop (...)", "feature drift (...)")."""
        causes = []
        if self.score["drift"]:
            causes.append(f"score drop ({self.score['reason']})")
        if self.drift["drift"]:
            causes.append(f"feature drift ({describe_drift(self.drift)})")
        return causes


def describe_drift(drift: dict[str, Any]) -> str:
    """Return the feature-drift verdict in one line, with the figures of each drifted feature."""
    if not drift.get("tested"):
        return f"drift not tested: {drift.get('reason')}"
    drifted = [row for row in drift["features"] if row["drifted"]]
    details = "; ".join(
        f"{row['feature']} {'D' if row['test'] == 'ks' else 'V'}={row['effect']:.3f} p_adj={row['p_adjusted']:.1e}"
        for row in drifted
    )
    return (f"{len(drifted)} of {len(drift['features'])} features drifted in {drift['new_rows']} new rows against "
            f"{drift['reference_rows']} reference rows{': ' + details if details else ''} "
            f"(needs {drift['min_drifted_features']})")


def judge(config: Config, deployed, new_rows, schema, *, files: list[str]) -> Judgement:
    """Check the deployed release against the new rows (score and features); write logs/latest_drift.json."""
    from churnlib.drift import drift_table
    from churnlib.pipeline import checked_predictor, frame_probabilities, model_threshold

    logger.info("checking release %s against %d new rows", deployed.release_id, len(new_rows))
    calibration, expected, reference, normal = release_expectations(config.paths.deployment, deployed, schema)
    predictor = checked_predictor(deployed, schema)
    labels = new_rows[schema.target].to_numpy()
    score = check_score(calibration, expected, labels, frame_probabilities(predictor, new_rows, schema),
                        config.score_drift, threshold=model_threshold(deployed.metadata),
                        deploy_time=read_json(deployed.folder / SCORE_DETAILS_FILE) or {})
    if normal:
        score["new_normal_since"] = normal.get("at")
    logger.info("score check: %s", score["reason"])
    if score.get("significant_rise") and lowered_expectation(normal) is not None:
        score = rise_back(config.paths.deployment, deployed, labels, frame_probabilities(predictor, new_rows, schema),
                          score, config.score_drift)
    drift = drift_table(reference, new_rows, schema, config.drift)
    drift.update(release_id=deployed.release_id, at=utc_now(), files=files,
                 reference="new normal" if normal and normal.get("reference") else "training window")
    atomic_write_json(config.paths.logs / LATEST_DRIFT_FILE, drift)
    logger.info("drift check: %s", describe_drift(drift))
    return Judgement(release_id=deployed.release_id, new_rows=len(new_rows), score=score, drift=drift)


def open_history(config: Config, record: dict[str, Any]):
    """Return the ingested rows a retrain works on (a FrameHistory or a ClusterHistory), their schema
    and their fingerprint. On the dask engine, once the history is past ``compute.cluster_min_rows``
    rows and its Parquet parts hold every row, the rows stay in the parts: the workers read the
    ranges a fit needs, and this process gets only small ones (held-out rows, samples)."""
    from churnlib.engine import active_engine
    from churnlib.ingested import FrameHistory, parts_cover, read_ingested_data

    engine = active_engine()
    if engine is None or not engine.handles(record["rows"]) or not parts_cover(record):
        frame, schema, fingerprint = read_ingested_data(config.paths.ingested, record)
        return FrameHistory(frame), schema, fingerprint
    from churnlib.engine import ClusterHistory
    from churnlib.ingested import frozen_schema, ingested_fingerprint

    schema = frozen_schema(record)
    history = ClusterHistory(engine, config.paths.ingested, record, schema)
    fingerprint = ingested_fingerprint(config.paths.ingested, record,
                                       history.class_counts(0, len(history), schema.target))
    logger.info("history: %d rows in %d Parquet part(s), read by the workers of %s; only held-out rows and "
                "samples come to this process", len(history), len(record["parts"]), engine.where)
    return history, schema, fingerprint


def retrain(config: Config, outcome: TickOutcome, *, decision: Decision, reasons: list[str], reason: str,
            deployed=None, judged_rows: int = 0, judged_from_byte: int = 0,
            held: dict[str, Any] | None = None) -> dict[str, Any]:
    """Retrain, judge the challenger against the champion, and deploy when the policy allows.

    A change that rests on this batch alone is held instead (``outcome.held``): a candidate that does
    significantly worse than the champion on the test data, or an expectation lowered by a score drop.
    ``held`` is the change an earlier batch left held: confirmed by this one (or approved), it goes
    ahead, judged on both batches' rows. Fills ``outcome``; returns the record of this retrain for the
    decision state.
    """
    from churnlib.dataset import FrozenSchema
    from churnlib.pipeline import checked_predictor, churn_probabilities, model_threshold
    from deployment import deploy_release
    from churnlib.runlog import DIAGNOSTICS_FILE
    from diagnostics import run_diagnostics
    from reporting import REPORT_FILE, build_report
    from scoring import metrics_from_predictions, read_test_data, write_scores
    from churnlib.decisions import candidate_windows
    from churnlib.stats import paired_comparison
    from churnlib.search import search_metadata, settings_for_retrain
    from training import expectation, save_trained, train_model

    started = time.perf_counter()
    record = load_record(config.paths.ingested)
    history, schema, fingerprint = open_history(config, record)
    total = len(history)
    test = read_test_data(config.paths.testdata, settings=config.schema, schema=schema)
    test_labels = test[schema.target].to_numpy()
    metric = config.deployment.metric
    outcome.retrain_reason = [str(r) for r in reasons]
    champion = None
    if deployed is not None and FrozenSchema.from_dict(deployed.metadata["schema"]) == schema:
        champion = checked_predictor(deployed, schema)
    drifted = any(r in DRIFT_REASONS for r in reasons)
    judged_rows = judged_rows if drifted else 0
    confirmed = confirmation(held, deployed.release_id if deployed is not None else None, reasons)
    if confirmed:
        logger.info("%s", confirmed)
        if drifted and held.get("first_row", total) < total - judged_rows:
            # The rows of both batches are the changed world's: judge and learn from them together.
            judged_rows = total - int(held["first_row"])
    judged_first_row = total - judged_rows

    trial = None
    if champion is not None and config.deployment.evaluate_on == "held_out":
        trial = challenge(config, history, schema, judged_rows=judged_rows, champion=champion,
                          champion_threshold=model_threshold(deployed.metadata),
                          champion_last_row=trained_until(deployed.metadata))
        if trial is None:
            unseen = total - trained_until(deployed.metadata)
            logger.info("too few rows to hold out: %d of the %d ingested row(s) are rows release %s was not "
                        "trained on, and at least %d (at most half of all rows) are needed: the challenger is "
                        "judged on the test data instead", unseen, total, deployed.release_id,
                        rows_needed(config))
    if trial is not None:
        outcome.challenge = trial.to_json()
        logger.info("challenger trained on %s: %s", describe_window(trial.window, trial.last_row, trial.held_out,
                                                                     trial.selection_rows), trial.comparison.text())
        window_name, window_first = trial.window
    else:
        window_name, window_first = candidate_windows(total, 0, config.model)[0]
    # The model deployed is the one judged: the challenger, trained without the held-out rows (and,
    # on a long history, without the few rows that chose its window: see decisions.REUSE_MAX_SHARE), so
    # that those rows (and the test data) are rows it never saw, to learn its calibration and expected
    # score from. Without a champion to judge against, one model on all of its window.
    last_row = trial.last_row if trial is not None else total
    final_frame = history.rows(window_first, last_row)
    if trial is not None:
        model, fit_seconds = trial.challenger, trial.challenger_seconds
        model_settings, searched = trial.model_settings, trial.search
    else:
        search_rows = (history.for_search(window_first, last_row, config.model.random_seed)
                       if config.model.search is not None else None)
        model_settings, searched = settings_for_retrain(config.model, search_rows, schema)
        fit_started = time.perf_counter()
        model = train_model(final_frame, schema, model_settings)
        fit_seconds = time.perf_counter() - fit_started
    regime_first = total - judged_rows if drifted and judged_rows >= config.drift.min_rows else window_first
    regime_first = max(regime_first, window_first)
    held_out = None
    if trial is not None:
        held_out = (history.pandas(total - trial.held_out, total)[schema.target].to_numpy(),
                    trial.challenger_probabilities)
    if searched is not None:
        outcome.search = searched.run_line()
    model, calibration, expected, decision_threshold = expectation(
        model, final_frame, schema, model_settings, metric=config.score_drift.metric, held_out=held_out,
        test=(test_labels, churn_probabilities(model, test, schema)))
    # Scored as deployed: recalibrated when the check said so, with the threshold moved with it.
    test_probabilities = churn_probabilities(model, test, schema)
    scores = metrics_from_predictions(test_labels, test_probabilities, threshold=decision_threshold)
    metadata = save_trained(
        model, schema=schema, fingerprint={**fingerprint, "rows": int(len(final_frame)),
                                           "class_counts": history.class_counts(window_first, last_row, schema.target)},
        model_settings=model_settings,
        reference=history.reference(regime_first, total, config.drift.reference_sample_size, model_settings.random_seed),
        reference_size=config.drift.reference_sample_size, model_folder=config.paths.models, seconds=fit_seconds,
        extra={"settings_fingerprint": config.model.fingerprint(), **search_metadata(searched),
               "calibration": calibration, "decision_threshold": decision_threshold, "expected": expected,
               "retrain_reason": [str(r) for r in reasons],
               "window": {"kind": window_name, "first_row": window_first, "last_row": int(last_row)}},
    )
    write_scores(scores, config.paths.models, release_id=metadata["release_id"])
    outcome.timings["training"] = round(time.perf_counter() - started, 3)
    outcome.candidate = {"release_id": metadata["release_id"], "training_rows": int(len(final_frame)),
                         "window": window_name, "scores": scores, "calibration": calibration}
    testdata_check = calibration.get("testdata_check")
    if testdata_check and not testdata_check["agrees"]:
        logger.info("the test data disagrees with what %s expects of it: %s %.3f against %.3f expected (p=%.2g); "
                    "is it from another time or place?", metadata["release_id"], config.score_drift.metric,
                    testdata_check["score"], testdata_check["expected"], testdata_check["p_value"])
    last_retrain = {"at": utc_now(), "rows": record["rows"], "settings": config.model.fingerprint(),
                    "reasons": [str(r) for r in reasons]}

    deployed_scores = on_test = None
    if champion is not None:
        deployed_probabilities = churn_probabilities(deployed.pipeline, test, schema)
        deployed_scores = metrics_from_predictions(test_labels, deployed_probabilities,
                                                   threshold=model_threshold(deployed.metadata))
        # The same paired comparison as on the held-out rows: a candidate far below the deployed model
        # on the fixed benchmark is never deployed silently.
        on_test = paired_comparison(test_labels, deployed_probabilities, test_probabilities, metric,
                                    model_threshold(deployed.metadata), decision_threshold)
        outcome.deployed_on_test = {"release_id": deployed.release_id, "scores": deployed_scores,
                                    "comparison": on_test.to_dict()}
        logger.log(logging.WARNING if on_test.significantly_worse else logging.INFO, "on the test data: %s",
                   on_test.text("test rows", f"candidate {metadata['release_id']}", f"release {deployed.release_id}"))
    if trial is not None:
        candidate_score, deployed_score = trial.comparison.challenger, trial.comparison.champion
    else:
        if scores[metric] is None:
            raise PipelineError(f"deployment.metric {metric} is undefined on the test data, which holds one class "
                                f"only; add rows of both classes to {config.paths.testdata.name}/ or choose another "
                                "metric")
        candidate_score = scores[metric]
        deployed_score = None if deployed_scores is None else deployed_scores[metric]
    logger.info("candidate %s (window %s): %s %s on the test data", metadata["release_id"], window_name, metric,
                "undefined" if scores[metric] is None else f"{scores[metric]:.4f}")
    judged_on = "held_out" if trial is not None else "testdata"
    allowed, why = policy_allows(candidate_score, deployed_score, config.deployment, judged_on=judged_on)
    if allowed and RetrainReason.SCORE_DROP in reasons and trial is not None and \
            trial.comparison.p_value >= WINDOW_ALPHA:
        # A challenger no better where the score dropped does not answer the drop: deployed, it would only
        # bring a lower expectation, learnt from these rows, that no rise could end. The new normal does
        # that openly (held for the next batch first, and ended by a rise back).
        allowed = False
        why += (f", but it is not significantly better on the {trial.comparison.rows} held-out rows where the "
                f"score dropped (p={trial.comparison.p_value:.2g} that it is no better): a retrain does not answer "
                "the drop")
    outcome.policy = {"policy": config.deployment.policy, "metric": metric, "tolerance": config.deployment.tolerance,
                      "evaluate_on": judged_on, "allowed": allowed, "reason": why}
    files = (outcome.data_drift or {}).get("files") or []

    def hold(kind: str, why_held: str, held_reasons: list[str]) -> dict[str, Any]:
        outcome.held = hold_change(kind, release_id=deployed.release_id, reasons=held_reasons, files=files,
                                   first_row=judged_first_row, first_byte=judged_from_byte, last_row=total,
                                   why=why_held, candidate=metadata["release_id"] if kind == HOLD_MODEL else None)
        outcome.held["status"] = "held"
        message = held_message(outcome.held)
        logger.warning("%s", message)
        return {"message": message}

    if allowed and on_test is not None and on_test.significantly_worse and config.deployment.policy == "always":
        why += (f"; deployed although it does significantly worse than release {deployed.release_id} on the "
                f"{on_test.rows} test rows ({metric} {on_test.challenger:.3f} vs {on_test.champion:.3f}): "
                "policy always")
    elif allowed and on_test is not None and on_test.significantly_worse and not confirmed:
        outcome.decision = Decision.RETRAINED_REFUSED
        held_now = hold(HOLD_MODEL, f"candidate {metadata['release_id']} does significantly worse than release "
                                    f"{deployed.release_id} on the {on_test.rows} test rows "
                                    f"({metric} {on_test.challenger:.3f} vs {on_test.champion:.3f}, difference "
                                    f"{on_test.difference:+.3f}, 95% CI {on_test.difference_low:+.2f} to "
                                    f"{on_test.difference_high:+.2f})", reasons)
        outcome.reason = (f"{reason}; {why}, but {held_now['message']}: release {deployed.release_id} stays")
        return last_retrain
    if not allowed:
        outcome.decision = Decision.RETRAINED_REFUSED
        outcome.reason = f"{reason}; retrained, but {why}: release {deployed.release_id} stays"
        # Only a challenger judged on the newest rows can show that a shift cannot be learnt from; a
        # refusal on the test data (the classic judge) says nothing about the new world.
        no_better = trial is not None and trial.comparison.p_value >= WINDOW_ALPHA
        if drifted and no_better and judged_rows:
            normal_reasons = [r for r in reasons if r in DRIFT_REASONS]
            if RetrainReason.SCORE_DROP in normal_reasons and not confirmed:
                # A lower expectation from one batch alone would make the next ordinary batch a "rise" and
                # a real fall no alarm: held for the next batch; a new drift reference is harmless, kept.
                # Only the drop is held: against that new reference, the next batch's feature drift is
                # the old world coming back, never a confirmation.
                normal_reasons.remove(RetrainReason.SCORE_DROP)
                held_now = hold(HOLD_EXPECTATION, f"the {judged_rows} new rows score significantly below what "
                                                  f"release {deployed.release_id} expects, and a challenger "
                                                  "trained on them did no better", [RetrainReason.SCORE_DROP])
                outcome.reason += f"; {held_now['message']}"
            if normal_reasons:
                outcome.new_normal = accept_new_normal(config, deployed, schema, history.pandas(judged_first_row, total),
                                                       reasons=normal_reasons, predictor=champion)
                refused = outcome.new_normal.get("calibration_refused")
                if refused:
                    logger.warning("not a new normal: %s; check the labels of %s", refused["reason"],
                                   ", ".join(files) or "the new rows")
                    outcome.reason += f"; not a new normal: {refused['reason']}"
                if outcome.new_normal["reasons"]:
                    # A held score drop leaves the expected score as it was: only the drift reference is new.
                    what = f"new normal of release {deployed.release_id}" + (
                        "" if str(RetrainReason.SCORE_DROP) in outcome.new_normal["reasons"]
                        else " (its drift reference; its expected score stays)")
                    outcome.reason += (f"; the challenger did no better, so the {judged_rows} judged rows are the "
                                       f"{what}" + (f" ({confirmed})" if confirmed else ""))
        return last_retrain
    if confirmed:
        why += f"; {confirmed}"

    started = time.perf_counter()
    drift = outcome.data_drift
    diagnostics = run_diagnostics(
        pipeline=model, metadata=metadata, schema=schema, dataset=test,
        dataset_name=str(config.paths.testdata), ingested_folder=config.paths.ingested, record=record,
        log_folder=config.paths.logs, probabilities=test_probabilities,
    )
    decision_record = {"decision": decision.value, "reason": f"{reason}; {why}", "at": utc_now(),
                       "data_drift": drift, "score_drift": outcome.score_drift, "challenge": outcome.challenge}
    try:
        judged = history.pandas(total - judged_rows, total) if judged_rows else None
        # The training rows only when there are no judged rows to show (on the dask engine, a sample of them).
        training = None if deployed is not None and judged_rows else history.reference(
            window_first, last_row, config.drift.reference_sample_size, model_settings.random_seed)
        report = build_report(metadata=metadata, scores=scores, labels=test_labels, probabilities=test_probabilities,
                              drift=drift, diagnostics=diagnostics, decision=decision_record,
                              previous_scores=deployed_scores, pipeline=model,
                              comparison=report_comparison(config, deployed, judged, training, test, schema,
                                                           training_rows=len(final_frame)))
    except Exception as exc:  # a view: its failure is logged and alerted, and never stops the deploy
        logger.debug("%s", "".join(traceback.format_exception(exc)))
        report = {}
        outcome.report_error = describe_error(exc, config_label=config.label)
        logger.error("the report of release %s was not built: %s; the release is deployed without it (run "
                     "reporting.py to build it again)", metadata["release_id"], outcome.report_error)
    extra = {**report, DIAGNOSTICS_FILE: (json.dumps(diagnostics, indent=2) + "\n").encode()}
    outcome.timings["diagnostics_and_report"] = round(time.perf_counter() - started, 3)
    release_id = deploy_release(config.paths.models, config.paths.deployment, ingested_folder=config.paths.ingested,
                                keep_releases=config.deployment.keep_releases, extra_files=extra,
                                decision=decision_record)
    atomic_write_json(config.paths.logs / DIAGNOSTICS_FILE, diagnostics)
    outcome.decision = decision
    outcome.reason = decision_record["reason"]
    outcome.deployed_release_after = release_id
    if report:
        outcome.report = str(config.paths.deployment / RELEASES_FOLDER / release_id / REPORT_FILE)
    return last_retrain


def report_comparison(config: Config, deployed, judged, training, test, schema, *, training_rows: int | None = None):
    """Return the two samples the report sets side by side: the deployed release's drift reference
    against the judged new rows that called for the retrain, or (none) the training data (a sample of
    it when it has fewer than ``training_rows`` rows: the dask engine's) against the test data."""
    if deployed is not None and judged is not None and len(judged):
        _calibration, _expected, reference, normal = release_expectations(config.paths.deployment, deployed, schema)
        what = "new normal" if normal and normal.get("reference") else "training sample"
        return (f"release {deployed.release_id}'s {what}", reference, "the new rows", judged)
    name = "the training data" if training_rows is None or len(training) >= training_rows else "a sample of the training data"
    return (name, training, "the test data", test)


# --- the tick -----------------------------------------------------------------------------------


def run_tick(config: Config) -> TickOutcome:
    """Do one tick's work (the lock is held) and return its outcome; a failure is an outcome too."""
    try:
        work = find_work(config)
    except Exception as exc:
        return TickOutcome(decision=Decision.FAILED, reason="").fail(exc, config.label)
    outcome = TickOutcome(
        decision=Decision.NOTHING_NEW, reason="",
        deployed_release_before=work.pointer["current"] if work.pointer else None,
        new_files=[source.name for source in work.scan.new_files],
        pending_rows=work.pending_rows, rows_needed=work.rows_needed,
    )
    with contextlib.ExitStack() as engine_open:  # one engine (one local cluster) for the tick's work and lists
        try:
            if work.idle:
                idle_outcome(config, work, outcome)
            else:
                from churnlib.engine import using  # compute.engine: opened before anything changes, closed after

                # Open for the lists below too, even if the scheduler does not answer: they then fail
                # with its error at once instead of waiting for it again.
                engine = engine_open.enter_context(using(config.compute, connect_now=False))
                if engine is not None:
                    engine.reach_scheduler()
                decide(config, work, outcome)
        except Exception as exc:  # any failure ends the tick with its reason on stderr and in runs.jsonl
            outcome.fail(exc, config.label)
        customers = work.customers
        if not work.idle or customers.pending or customers.rejected or customers.record_changed:
            # Even after a failed decision: the deployed release still serves, and lists should not wait.
            score_customers(config, outcome, customers, release_before=outcome.deployed_release_before)
            if outcome.decision is Decision.NOTHING_NEW and outcome.scoring:
                scored, rejected = len(outcome.scoring.get("files", [])), len(outcome.scoring.get("rejected", []))
                outcome.reason += (f"; {scored} customer file(s) scored" if scored else "") + \
                    (f"; {rejected} customer file(s) rejected" if rejected else "")
    return outcome


# --- 5. risk lists of current customers -------------------------------------------------------------


def score_customers(config: Config, outcome: TickOutcome, found: CustomerWork, *, release_before: str | None) -> None:
    """Score the customer files that need it with the deployed release (all of them after a redeploy);
    put the figures in ``outcome.scoring``. Never raises: a failure fails the tick, keeping its figures.

    ``found`` is what ``find_work`` found while ``release_before`` was deployed; after a deploy (or
    the cold start) the folder is looked at again for the new release.
    """
    try:
        pointer = read_pointer(config.paths.deployment)
        current = pointer["current"] if pointer else None
        customers = found
        if current != release_before:
            customers = find_customer_files(config.paths.scoring, found.record, current,
                                            settings=list_settings(config.risk_lists, config.outreach))
            customers.rejected[:0] = found.rejected
            customers.record_changed |= found.record_changed
        if not customers.pending:
            if customers.record_changed:
                save_scoring_record(customers.record, config.paths.predictions)
            if customers.rejected or found.stale:
                outcome.scoring = {"files": [], "rejected": [{"name": r["name"], "reason": r["reason"]}
                                                             for r in customers.rejected]}
                if found.stale:
                    outcome.scoring["stale"] = found.stale
            return
        from churnlib.engine import using
        from churnlib.modelstore import load_deployed
        from scoring import score_customer_files

        started = time.perf_counter()
        logger.info("scoring %d customer file(s) with release %s: %s", len(customers.pending), pointer["current"],
                    ", ".join(source.name for source in customers.pending))
        # The tick's engine if it has one; else one that connects only for a file large enough to need it.
        with using(config.compute, connect_now=False):
            outcome.scoring = score_customer_files(config, customers, load_deployed(config.paths.deployment))
        if found.stale:
            outcome.scoring["stale"] = found.stale
        if outcome.scoring.get("failed"):  # the lists that were made are kept, and in the run line
            failed = ChurnError("; ".join(failure["reason"] for failure in outcome.scoring["failed"]))
            failed.step = "scoring"
            raise failed
        outcome.timings["scoring"] = round(time.perf_counter() - started, 3)
    except Exception as exc:
        if outcome.error is None:
            outcome.fail(exc, config.label)
        else:
            logger.error("scoring customer files failed too: %s", describe_error(exc, config_label=config.label))


def describe_due(config: Config, reasons: list[str]) -> list[str]:
    """Return the reasons to retrain other than drift, in words."""
    words = []
    if RetrainReason.CONFIG_CHANGED in reasons:
        words.append("changed model settings in config.json")
    if RetrainReason.SCHEDULE in reasons:
        every = [f"every {config.schedule.every_rows} new rows" if config.schedule.every_rows else "",
                 f"every {config.schedule.every_days:g} days" if config.schedule.every_days else ""]
        words.append("the schedule (" + " or ".join(e for e in every if e) + ")")
    return words


def decide(config: Config, work: Work, outcome: TickOutcome) -> TickOutcome:
    """Ingest, judge the new rows, retrain and maybe deploy; return the outcome."""
    # Only now the heavy imports: pandas, scikit-learn, scipy.
    from churnlib.dataset import FrozenSchema
    from churnlib.ingested import read_ingested_rows
    from churnlib.modelstore import load_deployed

    started = time.perf_counter()
    result, outcome.ingest = ingest(config, work)
    outcome.timings["ingestion"] = round(time.perf_counter() - started, 3)
    record = work.record
    if record["rows"] == 0:
        outcome.decision = Decision.NO_DATA
        outcome.reason = "no rows ingested yet: add labelled CSV files to " + config.paths.source.name + "/"
        return outcome

    if work.pointer is None:
        logger.info("cold start: no model deployed yet; training the first one on %d rows", record["rows"])
        tried = retrain(config, outcome, decision=Decision.COLD_START, reasons=[RetrainReason.COLD_START],
                        reason=f"cold start: first model, trained on {record['rows']} rows")
        mark_evaluated(config.paths.ingested, record, last_retrain=tried)
        return outcome

    state = read_decision_state(config.paths.ingested, record)
    pending_rows = record["rows"] - state["evaluated_rows"]
    outcome.pending_rows = pending_rows
    # Due again now that the new rows are in (the schedule counts rows).
    reasons: list[str] = due_retrains(config, work.deployed_metadata, record, state["last_retrain"])
    held = state["held"]
    if held and held.get("approved"):  # a held retrain of another kind (settings, schedule): tried again
        reasons += [RetrainReason(r) for r in held["reasons"]
                    if RetrainReason(r) not in DRIFT_REASONS and RetrainReason(r) not in reasons]
    causes = describe_due(config, reasons)
    schema = FrozenSchema.from_dict(record["schema"])
    deployed = None
    if pending_rows >= work.rows_needed or reasons:
        deployed = load_deployed(config.paths.deployment)
        if FrozenSchema.from_dict(deployed.metadata["schema"]) != schema:
            logger.warning("the deployed model's schema differs from the ingested data's; retraining")
            tried = retrain(config, outcome, decision=Decision.SCHEMA_CHANGED, reasons=[RetrainReason.SCHEMA_CHANGED],
                            reason="the ingested data's schema differs from the deployed model's")
            mark_evaluated(config.paths.ingested, record, last_retrain=tried)
            return outcome
    if pending_rows >= work.rows_needed:
        new_rows = read_ingested_rows(config.paths.ingested, schema, start=state["evaluated_bytes"], end=record["bytes"])
        started = time.perf_counter()
        judgement = judge(config, deployed, new_rows, schema, files=[f["name"] for f in result.accepted])
        outcome.score_drift, outcome.data_drift = judgement.score, judgement.drift
        outcome.timings["checks"] = round(time.perf_counter() - started, 3)
        reasons = judgement.reasons + reasons
        causes = judgement.causes() + causes
        if held and held.get("release_id") == deployed.release_id and RetrainReason.SCORE_DROP not in reasons \
                and str(RetrainReason.SCORE_DROP) in held["reasons"] and drop_confirms(judgement.score):
            # The batch after a held drop falls short again, significantly, if by less than max_drop on its
            # own: the held change stands confirmed.
            reasons.insert(0, RetrainReason.SCORE_DROP)
            causes.insert(0, f"a significant drop again after the held one ({judgement.score['reason']})")
        if not reasons:
            outcome.decision = Decision.NO_DRIFT
            outcome.reason = (f"no score drop and no feature drift in {judgement.new_rows} new rows; "
                              f"release {deployed.release_id} stays")
            if held:
                outcome.held = {**held, "status": "dropped"}
                outcome.reason += (f"; the change held since {held['at']} ({', '.join(held['files']) or 'earlier rows'}) "
                                   "is not confirmed by these rows: dropped, the release and its expectation stay")
            mark_evaluated(config.paths.ingested, record, last_retrain=state["last_retrain"])
            return outcome
    elif not reasons:
        if pending_rows == 0:
            found = []
            if result.rejected:
                found.append(f"{len(result.rejected)} file(s) rejected")
            if result.accepted:
                found.append(f"{len(result.accepted)} file(s) held only rows ingested before")
            if result.deferred:
                found.append(f"{len(result.deferred)} file(s) changed while read, left for the next tick")
            outcome.decision = Decision.NO_NEW_ROWS
            outcome.reason = "no new rows: " + (", ".join(found) or "nothing to ingest")
            return outcome
        # Too few rows for the checks to mean anything: they stay pending, to be checked together
        # with the next files, rather than being waved through unchecked.
        outcome.decision = Decision.WAITING_FOR_ROWS
        outcome.reason = (f"{pending_rows} new row(s) pending, not checked yet: the score and drift checks need "
                          f"at least {work.rows_needed} (score_drift.min_rows, drift.min_rows); they wait for more data")
        return outcome
    logger.info("retraining because of %s", " and ".join(causes))
    tried = retrain(config, outcome, decision=Decision.RETRAINED_DEPLOYED, reasons=reasons, deployed=deployed,
                    judged_rows=pending_rows, judged_from_byte=state["evaluated_bytes"], held=held,
                    reason="retrained because of " + " and ".join(causes))
    evaluated = record
    if pending_rows < work.rows_needed and outcome.deployed_release_after is None:
        # Too few rows to check, and no release trained on them deployed: they still wait for the next
        # files, as on a tick without this retrain, rather than being waved through unchecked.
        evaluated = {"rows": state["evaluated_rows"], "bytes": state["evaluated_bytes"]}
    still_held = None
    if held and outcome.held is None:
        how = confirmation(held, deployed.release_id, reasons)
        if how or outcome.score_drift is not None or outcome.deployed_release_after:
            outcome.held = {**held, "status": "adopted" if how else "dropped", **({"how": how} if how else {})}
        else:
            # A retrain of another kind (settings, schedule) that judged no new batch and deployed nothing
            # neither confirms nor contradicts the held change: it waits for the next batch still.
            still_held = held
    mark_evaluated(config.paths.ingested, evaluated, last_retrain=tried,
                   held=outcome.held if outcome.held and outcome.held.get("status") == "held" else still_held)
    return outcome


def call_api_after_deploy(config: Config, release_id: str) -> dict[str, Any]:
    """Ask the API, if it is running, for every endpoint's reply; return what happened, never fail the tick."""
    from apicalls import OUTPUT_FILE, call_all_if_running, default_prediction_path
    from churnlib.config import ConfigError, api_token
    from churnlib.identity import ensure_deployment_id, first_sighting, forget_sighting

    try:
        outcome = call_all_if_running(config.api.url, config.paths.models / OUTPUT_FILE,
                                      prediction_path=default_prediction_path(config),
                                      expect_release=release_id,
                                      reload_interval=config.api.reload_interval_seconds,
                                      token=api_token(config),
                                      expect_deployment=ensure_deployment_id(config.paths.deployment))
    except ConfigError as exc:  # api.token_env names a variable cron's environment lacks
        outcome = {"running": None, "summary": f"not called: {exc.message}"}
        logger.warning("API at %s: %s", config.api.url, outcome["summary"])
    except OSError as exc:  # apireturns.txt not writable, say: the deploy itself succeeded
        outcome = {"running": None, "summary": f"replies not saved: {exc}"}
        logger.warning("API at %s: %s", config.api.url, outcome["summary"])
    except Exception as exc:  # never fail a tick after its deploy; the message may hold a header value (a token)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = {"running": None, "summary": f"not called: {type(exc).__name__} in "
                                               f"{os.path.basename(where.filename)}:{where.lineno}"}
        logger.error("API at %s: %s", config.api.url, outcome["summary"])
    else:
        if "other_deployment" not in outcome:
            logger.info("API at %s: %s", config.api.url, outcome["summary"])
            if outcome["running"]:
                forget_sighting(config.paths.logs)
        elif first_sighting(config.paths.logs, config.api.url, outcome["other_deployment"]):  # once, not every deploy
            logger.warning("the API at %s %s: give this set-up an api.url of its own", config.api.url, outcome["summary"])
    return outcome


def finish(config: Config, outcome: TickOutcome, *, started_at: str, started: float) -> dict[str, Any]:
    """Log the decision's line and append the run's JSON line to logs/runs.jsonl; return the line."""
    level, text = outcome.log_line(config.paths.source.name)
    logger.log(level, "%s", text)
    run = {"started_at": started_at, "pid": os.getpid(), "config": str(config.file), **outcome.to_json(),
           "finished_at": utc_now(), "seconds": round(time.perf_counter() - started, 3)}
    append_run(config.paths.logs, run)
    return run


def after_tick(config: Config, run: dict[str, Any], *, did_work: bool) -> None:
    """Raise and send the alerts the tick calls for, then rewrite the history page after a tick that did
    work (it shows the alert conditions active); neither ever fails the tick."""
    if config.alerts.channels or (config.paths.logs / OUTBOX_FILE).exists():
        try:
            from churnlib.alerts import process_alerts

            process_alerts(config, run)
        except Exception as exc:  # delivery problems are handled inside; this is a bug, logged, not fatal
            logger.error("alerts not processed: %s", describe_error(exc, config_label=config.label))
            logger.debug("%s", "".join(traceback.format_exception(exc)))
    if did_work or not (config.paths.logs / DASHBOARD_FILE).exists():
        try:
            from churnlib.history import write_dashboard

            write_dashboard(config)
        except Exception as exc:  # the page is a view: a failure is logged, the tick stands
            logger.warning("history page not written: %s", describe_error(exc, config_label=config.label))
            logger.debug("%s", "".join(traceback.format_exception(exc)))


def approve_held(config: Config) -> str:
    """Approve the change held for confirmation (``--accept-held``): its rows are judged again on this tick,
    which adopts it as a confirmation would. Return what was approved; PipelineError when nothing is held."""
    record = load_record(config.paths.ingested)
    state = read_decision_state(config.paths.ingested, record)
    held = state["held"]
    if not held:
        raise PipelineError(f"nothing is held for confirmation in {config.paths.ingested / DECISION_STATE_FILE}")
    pointer = read_pointer(config.paths.deployment)
    current = pointer["current"] if pointer else None
    if current != held["release_id"]:
        # Its rows would be judged against another release, and the change dropped: say so, approve nothing.
        raise PipelineError(f"the change held since {held['at']} is against release {held['release_id']}, but "
                            f"release {current} is deployed now (deployed or rolled back since): nothing approved; "
                            "the next batch is judged against the deployed release")
    held = {**held, "approved": utc_now()}
    atomic_write_json(config.paths.ingested / DECISION_STATE_FILE,
                      {"evaluated_rows": held["first_row"], "evaluated_bytes": held["first_byte"], "at": utc_now(),
                       "last_retrain": state["last_retrain"], "held": held})
    files = ", ".join(held.get("files") or []) or f"{held['rows']} rows"
    text = (f"approved the change held since {held['at']} ({held['kind']}, {files}, against release "
            f"{held['release_id']}): its rows are judged again now and the change adopted")
    logger.warning("%s", text)
    return text


def _tick(config: Config, args) -> int:
    if args.test_alert:
        return _test_alert(config)
    if args.accept_held:
        try:
            print(approve_held(config))
        except PipelineError as exc:
            print(f"fullprocess.py --accept-held: {exc}", file=sys.stderr)
            return 1
    started_at, started = utc_now(), time.perf_counter()
    outcome = run_tick(config)
    if outcome.deployed_release_after and not args.no_api:
        outcome.api = call_api_after_deploy(config, outcome.deployed_release_after)
    run = finish(config, outcome, started_at=started_at, started=started)
    after_tick(config, run, did_work=outcome.decision is not Decision.NOTHING_NEW or outcome.scoring is not None)
    return outcome.exit_status


def _test_alert(config: Config) -> int:
    from churnlib.alerts import send_test_alert

    if not config.alerts.channels:
        print(f"no alert channel configured: add alerts.email or alerts.webhook to {config.label}", file=sys.stderr)
        return 1
    results = send_test_alert(config)
    for channel, result in results.items():
        print(f"{channel}: {result}")
    return 0 if all(result == "sent" for result in results.values()) else 1


def _lock_held(config: Config, holder: int | None) -> int:
    outcome = TickOutcome(decision=Decision.LOCK_HELD, reason=f"another run (PID {holder or '?'}) holds the lock")
    finish(config, outcome, started_at=utc_now(), started=time.perf_counter())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        "One cron tick: ingest new files from the source folder, check the deployed model for a "
        "score drop and feature drift, and retrain and redeploy when needed; then score new or changed "
        "customer files in the scoring folder (all of them after a redeploy or a change of the risk_lists or "
        "outreach settings; scoring.py --rescore-lists does it on demand) into ranked risk lists in "
        "the predictions folder. Logs go to the log folder "
        "(fullprocess.log, one line per run in runs.jsonl). Exit 0 unless something failed: 1 for a "
        "failed tick (the reason on stderr), 2 for a bad config."
    )
    parser.add_argument("--no-api", action="store_true", help="do not call the API after a deploy")
    parser.add_argument("--test-alert", action="store_true",
                        help="send a test alert through every channel in the alerts section, print each "
                        "channel's result and exit (1 if one failed); no tick runs")
    parser.add_argument("--accept-held", action="store_true",
                        help="incident tool: approve the change held for confirmation (a model, or a lower "
                        "expected score, resting on one batch that contradicts everything before it; the run "
                        "line's 'held'), instead of waiting for the next batch to confirm it; then run the tick")
    return run_script(parser, argv, "fullprocess", _tick, lock=lambda args: not args.test_alert,
                      on_lock_held=_lock_held)


if __name__ == "__main__":
    sys.exit(main())
