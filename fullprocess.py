"""The cron job: find new data, check the deployed model against it, retrain and redeploy when needed.

One tick (DESIGN.md section 4), each part a function that returns what it found:

1. ``find_work``: take stock without importing pandas, scikit-learn or xgboost: new files in the
   source folder, the deployed release, rows ingested but not yet judged. Nothing to do: one log
   line, exit 0, in a fraction of a second.
2. ``ingest``: the new files (bad ones are rejected with a reason, good ones appended).
3. No model deployed yet (cold start): ``retrain`` trains, scores and deploys the first one.
4. ``judge``: the deployed model's score on the new rows against its score at deploy time
   (``score_drift`` in config.json), and each feature of the new rows against the release's
   reference sample (``drift``).
5. Neither drifted: stop. Either: ``retrain`` on all ingested data, score on the test data, and
   deploy when the deployment policy allows (``deployment.policy``), with diagnostics and a report
   in the release; then call the API if it is running.
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

import dataclasses
import json
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnlib.cli import run_script, script_parser
from churnlib.clock import utc_now
from churnlib.config import Config, DeploymentSettings, ScoreDriftSettings
from churnlib.errors import ChurnError, describe_error
from churnlib.fsutil import atomic_write_json, read_json, remove_stale_temporaries
from churnlib.ingested import load_record, save_record
from churnlib.modelstore import RELEASES_FOLDER, SCORE_DETAILS_FILE, read_pointer
from churnlib.runlog import Decision, append_run
from ingestion import Scan, scan_source
from churnlib.risklists import CustomerWork, find_customer_files, load_scoring_record, save_scoring_record

logger = logging.getLogger(Path(__file__).stem)

DECISION_STATE_FILE = "decision_state.json"


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
    deployed_release_after: str | None = None
    report: str | None = None
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
            return logging.INFO, f"deployed release {self.deployed_release_after}: {self.reason}. Report: {self.report}"
        return logging.INFO, self.reason


# --- decision state: how far into the ingested data decisions are complete ---------------------


def read_decision_state(ingested_folder: Path, record: dict[str, Any]) -> dict[str, int]:
    """Return how far into the ingested data decisions are complete (rows and bytes)."""
    state = read_json(ingested_folder / DECISION_STATE_FILE) or {}
    rows, size = int(state.get("evaluated_rows", 0)), int(state.get("evaluated_bytes", 0))
    if rows > record["rows"] or size > record["bytes"]:
        # The ingested data was reset under us (ingesteddata/ moved away): start over.
        return {"evaluated_rows": 0, "evaluated_bytes": 0}
    return {"evaluated_rows": rows, "evaluated_bytes": size}


def mark_evaluated(ingested_folder: Path, record: dict[str, Any]) -> None:
    """Record that every ingested row has been through a decision."""
    atomic_write_json(ingested_folder / DECISION_STATE_FILE,
                      {"evaluated_rows": record["rows"], "evaluated_bytes": record["bytes"], "at": utc_now()})


def rows_needed(config: Config) -> int:
    """Return how many new rows the score and drift checks need before either runs."""
    return max(config.score_drift.min_rows, config.drift.min_rows)


def sweep_temporaries(config: Config) -> None:
    """Remove temporary files left by killed writers in every folder the pipeline writes."""
    folders = [config.paths.ingested, config.paths.models, config.paths.deployment,
               config.paths.deployment / RELEASES_FOLDER, config.paths.logs, config.paths.predictions]
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

    @property
    def pending_rows(self) -> int:
        """Rows ingested (by this tick or a killed one) that no decision has judged yet."""
        return self.record["rows"] - self.evaluated_rows

    @property
    def idle(self) -> bool:
        """No new file, and either a model deployed with too few pending rows to check, or no data at all."""
        if self.scan.new_files:
            return False
        if self.pointer is None:
            return self.record["rows"] == 0
        return self.pending_rows < self.rows_needed


def find_work(config: Config) -> Work:
    """Return the new files, the deployed release, the pending rows and the customer files to score;
    imports no pandas or scikit-learn."""
    sweep_temporaries(config)
    record = load_record(config.paths.ingested)
    scan = scan_source(config.paths.source, record, config.schema)
    state = read_decision_state(config.paths.ingested, record)
    pointer = read_pointer(config.paths.deployment)
    for folder in (config.paths.scoring, config.paths.predictions):
        folder.mkdir(parents=True, exist_ok=True)
    customers = find_customer_files(config.paths.scoring, load_scoring_record(config.paths.predictions),
                                    pointer["current"] if pointer else None)
    return Work(record=record, scan=scan, pointer=pointer,
                evaluated_rows=state["evaluated_rows"], evaluated_bytes=state["evaluated_bytes"],
                rows_needed=rows_needed(config), customers=customers)


def idle_outcome(config: Config, work: Work, outcome: TickOutcome) -> TickOutcome:
    """Return the outcome of a tick with nothing to do (the scan's notes saved)."""
    if work.scan.record_changed:
        save_record(work.record, config.paths.ingested, config.paths.logs)
    if work.scan.rejected:  # refused unread by the scan (a symlink out, an unreadable file)
        outcome.ingest = {"rejected": [{"name": r["name"], "reason": r["reason"]} for r in work.scan.rejected]}
    outcome.reason = f"no new files in {config.paths.source.name}/"
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
    def drifted(self) -> bool:
        return bool(self.score["drift"] or self.drift["drift"])

    def causes(self) -> str:
        """Return why a retrain is due, in words ("score drop (...) and feature drift (...)")."""
        causes = []
        if self.score["drift"]:
            causes.append(f"score drop ({self.score['reason']})")
        if self.drift["drift"]:
            causes.append(f"feature drift ({describe_drift(self.drift)})")
        return " and ".join(causes)


def check_score(deployed, predictor, new_rows, schema, settings: ScoreDriftSettings) -> dict[str, Any]:
    """Return the score-drift check: the deployed model on the new rows against its deploy-time score."""
    from churnlib.pipeline import frame_probabilities, model_threshold
    from scoring import metrics_from_predictions

    baseline_scores = read_json(deployed.folder / SCORE_DETAILS_FILE) or {}
    baseline = baseline_scores.get(settings.metric)
    check: dict[str, Any] = {"metric": settings.metric, "baseline": baseline, "max_drop": settings.max_drop,
                             "rows": int(len(new_rows)), "checked": False, "drift": False}
    if len(new_rows) < settings.min_rows:
        check["reason"] = f"{len(new_rows)} new rows, fewer than score_drift.min_rows={settings.min_rows}"
        return check
    if new_rows[schema.target].nunique() < 2:
        check["reason"] = "the new rows hold one class only; the score is not meaningful"
        return check
    if baseline is None:
        check["reason"] = f"the deployed release has no {settings.metric} score"
        return check
    scores = metrics_from_predictions(new_rows[schema.target].to_numpy(),
                                      frame_probabilities(predictor, new_rows, schema),
                                      threshold=model_threshold(deployed.metadata))
    new_score = scores[settings.metric]
    check.update(checked=True, new_score=new_score, drop=baseline - new_score, scores_on_new_rows=scores)
    check["drift"] = bool(baseline - new_score > settings.max_drop)
    check["reason"] = (
        f"{settings.metric} {new_score:.4f} on {len(new_rows)} new rows vs {baseline:.4f} at deploy time: "
        f"drop {baseline - new_score:+.4f} {'>' if check['drift'] else '<='} max_drop {settings.max_drop}"
    )
    return check


def describe_drift(drift: dict[str, Any]) -> str:
    """Return the feature-drift verdict in one line, with the figures of each drifted feature."""
    if not drift.get("tested"):
        return f"drift not tested: {drift.get('reason')}"
    drifted = [row for row in drift["features"] if row["drifted"]]
    details = "; ".join(
        f"{row['feature']} {'D' if row['test'] == 'ks' else 'V'}={row['effect']:.3f} p_adj={row['p_adjusted']:.1e}"
        for row in drifted
    )
    return (f"{len(drifted)} of {len(drift['features'])} features drifted"
            f"{': ' + details if details else ''} (needs {drift['min_drifted_features']})")


def judge(config: Config, deployed, new_rows, schema, *, files: list[str]) -> Judgement:
    """Check the deployed release against the new rows (score and features); write logs/latest_drift.json."""
    from churnlib.dataset import read_canonical_csv
    from churnlib.drift import drift_table
    from churnlib.modelstore import checked_reference_sample
    from churnlib.pipeline import checked_predictor
    from diagnostics import LATEST_DRIFT_FILE

    logger.info("checking release %s against %d new rows", deployed.release_id, len(new_rows))
    reference = read_canonical_csv(checked_reference_sample(deployed.folder, deployed.metadata), schema)
    predictor = checked_predictor(deployed, schema, reference)
    score = check_score(deployed, predictor, new_rows, schema, config.score_drift)
    logger.info("score check: %s", score["reason"])
    drift = drift_table(reference, new_rows, schema, config.drift)
    drift.update(release_id=deployed.release_id, at=utc_now(), files=files)
    atomic_write_json(config.paths.logs / LATEST_DRIFT_FILE, drift)
    logger.info("drift check: %s", describe_drift(drift))
    return Judgement(release_id=deployed.release_id, new_rows=len(new_rows), score=score, drift=drift)


# --- 4. retrain, and deploy when the policy allows ---------------------------------------------


# Scores and tolerances are decimals that floats hold inexactly (0.7 - 0.1 < 0.6): a candidate
# exactly at the boundary is judged as a person reading the log would judge it.
POLICY_SLACK = 1e-9


def policy_allows(candidate: float, deployed: float | None, settings: DeploymentSettings) -> tuple[bool, str]:
    """Return whether the deployment policy lets the candidate replace the deployed model, and why."""
    if deployed is None:
        return True, "no deployed model to compare with"
    if settings.policy == "always":
        return True, "policy always"
    if settings.policy == "not_worse":
        allowed = candidate >= deployed - settings.tolerance - POLICY_SLACK
        relation = ">=" if allowed else "<"
        return allowed, (f"policy not_worse: candidate {settings.metric} {candidate:.4f} {relation} deployed "
                         f"{deployed:.4f} - tolerance {settings.tolerance}")
    allowed = candidate > deployed + settings.tolerance + POLICY_SLACK
    relation = ">" if allowed else "<="
    return allowed, (f"policy better: candidate {settings.metric} {candidate:.4f} {relation} deployed "
                     f"{deployed:.4f} + tolerance {settings.tolerance}")


def retrain(config: Config, outcome: TickOutcome, *, decision: Decision, reason: str, deployed=None,
            judgement: Judgement | None = None) -> TickOutcome:
    """Retrain on all ingested data, score, and deploy when the policy allows; return the outcome."""
    from churnlib.dataset import FrozenSchema
    from churnlib.ingested import read_ingested_data
    from churnlib.modelstore import load_model
    from churnlib.pipeline import churn_probabilities, model_threshold
    from deployment import deploy_release
    from diagnostics import DIAGNOSTICS_FILE, run_diagnostics
    from reporting import REPORT_FILE, build_report
    from scoring import metrics_from_predictions, read_test_data, write_scores
    from training import train_and_save

    started = time.perf_counter()
    record = load_record(config.paths.ingested)
    frame, schema, fingerprint = read_ingested_data(config.paths.ingested, record)
    test = read_test_data(config.paths.testdata, settings=config.schema, schema=schema)
    # Issue 9: the calibration check (and the fix when it fails) needs labelled rows the model was
    # not trained on. The test data stands in for them until the held-out newest rows (issue 8) are
    # passed here instead.
    held_out = test
    metadata = train_and_save(frame, schema, fingerprint, model_settings=config.model,
                              reference_size=config.drift.reference_sample_size, model_folder=config.paths.models,
                              held_out=held_out)
    outcome.timings["training"] = round(time.perf_counter() - started, 3)
    candidate = load_model(config.paths.models)
    labels = test[schema.target].to_numpy()
    probabilities = churn_probabilities(candidate.pipeline, test, schema)
    scores = metrics_from_predictions(labels, probabilities, threshold=model_threshold(metadata))
    write_scores(scores, config.paths.models, release_id=metadata["release_id"])
    metric = config.deployment.metric
    outcome.candidate = {"release_id": metadata["release_id"], "training_rows": fingerprint["rows"], "scores": scores,
                         "calibration": metadata["calibration"]}
    if scores[metric] is None:
        raise PipelineError(f"deployment.metric {metric} is undefined on the test data, which holds one class "
                            f"only; add rows of both classes to {config.paths.testdata.name}/ or choose another metric")
    logger.info("candidate %s: %s %.4f on %d test rows", metadata["release_id"], metric, scores[metric], scores["rows"])

    deployed_scores = None
    if deployed is not None:
        deployed_schema = FrozenSchema.from_dict(deployed.metadata["schema"])
        if deployed_schema == schema:
            deployed_scores = metrics_from_predictions(labels, churn_probabilities(deployed.pipeline, test, deployed_schema),
                                                       threshold=model_threshold(deployed.metadata))
            outcome.deployed_on_test = {"release_id": deployed.release_id, "scores": deployed_scores}
    allowed, why = policy_allows(scores[metric], None if deployed_scores is None else deployed_scores[metric],
                                 config.deployment)
    outcome.policy = {"policy": config.deployment.policy, "metric": metric, "tolerance": config.deployment.tolerance,
                      "allowed": allowed, "reason": why}
    if not allowed:
        outcome.decision = Decision.RETRAINED_REFUSED
        outcome.reason = f"{reason}; retrained, but {why}: release {deployed.release_id} stays"
        return outcome

    started = time.perf_counter()
    drift = judgement.drift if judgement else None
    diagnostics = run_diagnostics(
        pipeline=candidate.pipeline, metadata=metadata, schema=schema, dataset=test,
        dataset_name=str(config.paths.testdata), ingested=frame, record=record, log_folder=config.paths.logs,
        probabilities=probabilities,
    )
    decision_record = {"decision": decision.value, "reason": f"{reason}; {why}", "at": utc_now(),
                       "data_drift": drift, "score_drift": judgement.score if judgement else None}
    report = build_report(metadata=metadata, scores=scores, labels=labels, probabilities=probabilities,
                          drift=drift, diagnostics=diagnostics, decision=decision_record,
                          previous_scores=deployed_scores)
    extra = {**report, DIAGNOSTICS_FILE: (json.dumps(diagnostics, indent=2) + "\n").encode()}
    outcome.timings["diagnostics_and_report"] = round(time.perf_counter() - started, 3)
    release_id = deploy_release(config.paths.models, config.paths.deployment, ingested_folder=config.paths.ingested,
                                keep_releases=config.deployment.keep_releases, extra_files=extra,
                                decision=decision_record)
    atomic_write_json(config.paths.logs / DIAGNOSTICS_FILE, diagnostics)
    outcome.decision = decision
    outcome.reason = decision_record["reason"]
    outcome.deployed_release_after = release_id
    outcome.report = str(config.paths.deployment / RELEASES_FOLDER / release_id / REPORT_FILE)
    return outcome


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
    try:
        if work.idle:
            idle_outcome(config, work, outcome)
        else:
            decide(config, work, outcome)
    except Exception as exc:  # any failure ends the tick with its reason on stderr and in runs.jsonl
        outcome.fail(exc, config.label)
    customers = work.customers
    if not work.idle or customers.pending or customers.rejected or customers.record_changed:
        # Even after a failed decision: the deployed release still serves, and lists should not wait.
        score_customers(config, outcome, customers, release_before=outcome.deployed_release_before)
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
            customers = find_customer_files(config.paths.scoring, found.record, current)
            customers.rejected[:0] = found.rejected
            customers.record_changed |= found.record_changed
        if not customers.pending:
            if customers.record_changed:
                save_scoring_record(customers.record, config.paths.predictions)
            if customers.rejected:
                outcome.scoring = {"files": [], "rejected": [{"name": r["name"], "reason": r["reason"]}
                                                             for r in customers.rejected]}
            return
        from churnlib.modelstore import load_deployed
        from scoring import score_customer_files

        started = time.perf_counter()
        logger.info("scoring %d customer file(s) with release %s: %s", len(customers.pending), pointer["current"],
                    ", ".join(source.name for source in customers.pending))
        outcome.scoring = score_customer_files(config, customers, load_deployed(config.paths.deployment))
        outcome.timings["scoring"] = round(time.perf_counter() - started, 3)
    except Exception as exc:
        if outcome.error is None:
            outcome.fail(exc, config.label)
        else:
            logger.error("scoring customer files failed too: %s", describe_error(exc, config_label=config.label))


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
        retrain(config, outcome, decision=Decision.COLD_START,
                reason=f"cold start: first model, trained on {record['rows']} rows")
        mark_evaluated(config.paths.ingested, record)
        return outcome

    state = read_decision_state(config.paths.ingested, record)
    pending_rows = record["rows"] - state["evaluated_rows"]
    outcome.pending_rows = pending_rows
    if pending_rows == 0:
        causes = []
        if result.rejected:
            causes.append(f"{len(result.rejected)} file(s) rejected")
        if result.accepted:
            causes.append(f"{len(result.accepted)} file(s) held only rows ingested before")
        if result.deferred:
            causes.append(f"{len(result.deferred)} file(s) changed while read, left for the next tick")
        outcome.decision = Decision.NO_NEW_ROWS
        outcome.reason = "no new rows: " + (", ".join(causes) or "nothing to ingest")
        return outcome
    if pending_rows < work.rows_needed:
        # Too few rows for the checks to mean anything: they stay pending, to be checked together
        # with the next files, rather than being waved through unchecked.
        outcome.decision = Decision.WAITING_FOR_ROWS
        outcome.reason = (f"{pending_rows} new row(s) not checked yet: the score and drift checks need at least "
                          f"{work.rows_needed} (score_drift.min_rows, drift.min_rows); they wait for more data")
        return outcome

    deployed = load_deployed(config.paths.deployment)
    schema = FrozenSchema.from_dict(record["schema"])
    if FrozenSchema.from_dict(deployed.metadata["schema"]) != schema:
        logger.warning("the deployed model's schema differs from the ingested data's; retraining")
        retrain(config, outcome, decision=Decision.SCHEMA_CHANGED,
                reason="the ingested data's schema differs from the deployed model's")
        mark_evaluated(config.paths.ingested, record)
        return outcome
    new_rows = read_ingested_rows(config.paths.ingested, schema, start=state["evaluated_bytes"], end=record["bytes"])
    started = time.perf_counter()
    judgement = judge(config, deployed, new_rows, schema, files=[f["name"] for f in result.accepted])
    outcome.score_drift, outcome.data_drift = judgement.score, judgement.drift
    outcome.timings["checks"] = round(time.perf_counter() - started, 3)

    if not judgement.drifted:
        outcome.decision = Decision.NO_DRIFT
        outcome.reason = (f"no score drop and no feature drift in {judgement.new_rows} new rows; "
                          f"release {deployed.release_id} stays")
        mark_evaluated(config.paths.ingested, record)
        return outcome
    logger.info("retraining because of %s", judgement.causes())
    retrain(config, outcome, decision=Decision.RETRAINED_DEPLOYED, deployed=deployed, judgement=judgement,
            reason="retrained because of " + judgement.causes())
    mark_evaluated(config.paths.ingested, record)
    return outcome


def call_api_after_deploy(config: Config, release_id: str) -> dict[str, Any]:
    """Ask the API, if it is running, for every endpoint's reply; return what happened, never fail the tick."""
    from apicalls import OUTPUT_FILE, call_all_if_running, default_prediction_path

    try:
        outcome = call_all_if_running(config.api.url, config.paths.models / OUTPUT_FILE,
                                      prediction_path=default_prediction_path(config),
                                      expect_release=release_id,
                                      reload_interval=config.api.reload_interval_seconds)
    except OSError as exc:  # apireturns.txt not writable, say: the deploy itself succeeded
        outcome = {"running": None, "summary": f"replies not saved: {exc}"}
        logger.warning("API at %s: %s", config.api.url, outcome["summary"])
    else:
        logger.info("API at %s: %s", config.api.url, outcome["summary"])
    return outcome


def finish(config: Config, outcome: TickOutcome, *, started_at: str, started: float) -> None:
    """Log the decision's line and append the run's JSON line to logs/runs.jsonl."""
    level, text = outcome.log_line(config.paths.source.name)
    logger.log(level, "%s", text)
    run = {"started_at": started_at, "pid": os.getpid(), "config": str(config.file), **outcome.to_json(),
           "finished_at": utc_now(), "seconds": round(time.perf_counter() - started, 3)}
    append_run(config.paths.logs, run)


def _tick(config: Config, args) -> int:
    started_at, started = utc_now(), time.perf_counter()
    outcome = run_tick(config)
    if outcome.deployed_release_after and not args.no_api:
        outcome.api = call_api_after_deploy(config, outcome.deployed_release_after)
    finish(config, outcome, started_at=started_at, started=started)
    return outcome.exit_status


def _lock_held(config: Config, holder: int | None) -> int:
    outcome = TickOutcome(decision=Decision.LOCK_HELD, reason=f"another run (PID {holder or '?'}) holds the lock")
    finish(config, outcome, started_at=utc_now(), started=time.perf_counter())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        "One cron tick: ingest new files from the source folder, check the deployed model for a "
        "score drop and feature drift, and retrain and redeploy when needed; then score new or changed "
        "customer files in the scoring folder (all of them after a redeploy) into ranked risk lists in "
        "the predictions folder. Logs go to the log folder "
        "(fullprocess.log, one line per run in runs.jsonl). Exit 0 unless something failed: 1 for a "
        "failed tick (the reason on stderr), 2 for a bad config."
    )
    parser.add_argument("--no-api", action="store_true", help="do not call the API after a deploy")
    return run_script(parser, argv, "fullprocess", _tick, lock=True, on_lock_held=_lock_held)


if __name__ == "__main__":
    sys.exit(main())
