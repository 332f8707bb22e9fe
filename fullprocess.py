"""The cron job: find new data, check the deployed model against it, retrain and redeploy when needed.

One tick (DESIGN.md section 4):

1. Take the run lock; a second tick that finds it held logs that and exits 0 at once.
2. Look for new files. Nothing new and a model deployed: one log line, exit 0. This path imports no
   pandas, scikit-learn or xgboost, so it costs a fraction of a second.
3. Ingest the new files (bad ones are rejected with a reason, good ones appended).
4. No model deployed yet (cold start): train, score, deploy, and stop.
5. Score drift: score the deployed model on the newly ingested rows and compare with its score at
   deploy time (``score_drift`` in config.json).
6. Data drift: test each feature of the new rows against the deployed release's reference sample
   (``drift`` in config.json).
7. Neither: stop. Either: retrain on all ingested data, score on the test data, and deploy when the
   deployment policy allows (``deployment.policy``), with diagnostics and a report in the release;
   then call the API if it is running.
8. Append one JSON line to ``logs/runs.jsonl`` with every figure behind the decision.

Crash safety: the rows a tick ingests stay "pending" (``ingesteddata/decision_state.json``) until
their decision is complete, so a tick killed after ingesting and before deciding is finished by the
next tick instead of being forgotten.

Exit status: 0 when the tick did its job (including "nothing new", "lock held", rejected files and a
retrained model refused by the policy); 1 on a real failure, with the reason on stderr; 2 for a bad
config.json.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from churnlib.clock import utc_now
from churnlib.cli import script_parser, start_script
from churnlib.config import ConfigError
from churnlib.fsutil import RunLock, append_line, atomic_write_json, lock_path, read_json, remove_stale_temporaries
from churnlib.modelstore import RELEASES_FOLDER, SCORE_DETAILS_FILE, read_pointer
from ingestion import load_record, save_record, scan_source

logger = logging.getLogger(Path(__file__).stem)

RUNS_FILE = "runs.jsonl"
DECISION_STATE_FILE = "decision_state.json"


class PipelineError(RuntimeError):
    """A tick that cannot complete; the message says why."""


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


def rows_needed(config) -> int:
    """Return how many new rows the score and drift checks need before either runs."""
    return max(config.score_drift.min_rows, config.drift.min_rows)


def sweep_temporaries(config) -> None:
    """Remove temporary files left by killed writers in every folder the pipeline writes."""
    folders = [config.paths.ingested, config.paths.models, config.paths.deployment,
               config.paths.deployment / RELEASES_FOLDER, config.paths.logs]
    for folder in folders:
        for path in remove_stale_temporaries(folder):
            logger.info("removed %s, left by an interrupted run", path)


def check_score(deployed, new_rows, schema, settings) -> dict[str, Any]:
    """Return the score-drift check: the deployed model on the new rows against its deploy-time score."""
    from scoring import score_model

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
    scores = score_model(deployed.pipeline, new_rows, schema)
    new_score = scores[settings.metric]
    check.update(checked=True, new_score=new_score, drop=baseline - new_score, scores_on_new_rows=scores)
    check["drift"] = bool(baseline - new_score > settings.max_drop)
    check["reason"] = (
        f"{settings.metric} {new_score:.4f} on {len(new_rows)} new rows vs {baseline:.4f} at deploy time: "
        f"drop {baseline - new_score:+.4f} {'>' if check['drift'] else '<='} max_drop {settings.max_drop}"
    )
    return check


def load_reference(deployed, schema):
    """Return the deployed release's reference sample of training rows (hash-checked)."""
    from churnlib.dataset import read_canonical_csv
    from churnlib.modelstore import checked_reference_sample

    return read_canonical_csv(checked_reference_sample(deployed.folder, deployed.metadata), schema)


def policy_allows(candidate: float, deployed: float | None, settings) -> tuple[bool, str]:
    """Return whether the deployment policy lets the candidate replace the deployed model, and why."""
    if deployed is None:
        return True, "no deployed model to compare with"
    if settings.policy == "always":
        return True, "policy always"
    if settings.policy == "not_worse":
        allowed = candidate >= deployed - settings.tolerance
        relation = ">=" if allowed else "<"
        return allowed, (f"policy not_worse: candidate {settings.metric} {candidate:.4f} {relation} deployed "
                         f"{deployed:.4f} - tolerance {settings.tolerance}")
    allowed = candidate > deployed + settings.tolerance
    relation = ">" if allowed else "<="
    return allowed, (f"policy better: candidate {settings.metric} {candidate:.4f} {relation} deployed "
                     f"{deployed:.4f} + tolerance {settings.tolerance}")


def _describe_drift(drift: dict[str, Any]) -> str:
    if not drift.get("tested"):
        return f"drift not tested: {drift.get('reason')}"
    drifted = [row for row in drift["features"] if row["drifted"]]
    details = "; ".join(
        f"{row['feature']} {'D' if row['test'] == 'ks' else 'V'}={row['effect']:.3f} p_adj={row['p_adjusted']:.1e}"
        for row in drifted
    )
    return (f"{len(drifted)} of {len(drift['features'])} features drifted"
            f"{': ' + details if details else ''} (needs {drift['min_drifted_features']})")


def train_score_and_maybe_deploy(config, run: dict[str, Any], *, reason: str, decision: str,
                                 deployed=None, drift: dict[str, Any] | None = None) -> None:
    """Retrain on all ingested data, score, and deploy when the policy allows. Fills ``run``."""
    from diagnostics import DIAGNOSTICS_FILE, run_diagnostics
    from reporting import build_report
    from scoring import churn_probabilities, metrics_from_predictions, read_test_data, write_scores
    from deployment import deploy_release
    from training import read_training_data, train_and_save

    from churnlib.dataset import FrozenSchema
    from churnlib.modelstore import load_model

    started = time.perf_counter()
    frame, schema, fingerprint = read_training_data(config.paths.ingested)
    metadata = train_and_save(frame, schema, fingerprint, model_settings=config.model,
                              reference_size=config.drift.reference_sample_size, model_folder=config.paths.models)
    run["timings"]["training"] = round(time.perf_counter() - started, 3)
    candidate = load_model(config.paths.models)
    test = read_test_data(config.paths.testdata, settings=config.schema, schema=schema)
    labels = test[schema.target].to_numpy()
    probabilities = churn_probabilities(candidate.pipeline, test, schema)
    scores = metrics_from_predictions(labels, probabilities)
    write_scores(scores, config.paths.models, release_id=metadata["release_id"])
    metric = config.deployment.metric
    run["candidate"] = {"release_id": metadata["release_id"], "training_rows": fingerprint["rows"], "scores": scores}
    if scores[metric] is None:
        raise PipelineError(f"deployment.metric {metric} is undefined on the test data, which holds one class "
                            f"only; add rows of both classes to {config.paths.testdata.name}/ or choose another metric")
    logger.info("candidate %s: %s %.4f on %d test rows", metadata["release_id"], metric, scores[metric], scores["rows"])

    deployed_scores = None
    if deployed is not None:
        deployed_schema = FrozenSchema.from_dict(deployed.metadata["schema"])
        if deployed_schema == schema:
            deployed_scores = metrics_from_predictions(labels, churn_probabilities(deployed.pipeline, test, deployed_schema))
            run["deployed_on_test"] = {"release_id": deployed.release_id, "scores": deployed_scores}
    allowed, why = policy_allows(scores[metric], None if deployed_scores is None else deployed_scores[metric],
                                 config.deployment)
    run["policy"] = {"policy": config.deployment.policy, "metric": metric, "tolerance": config.deployment.tolerance,
                     "allowed": allowed, "reason": why}
    if not allowed:
        run["decision"] = "retrained_refused"
        run["reason"] = f"{reason}; retrained, but {why}: release {deployed.release_id} stays"
        logger.warning("%s", run["reason"])
        return

    started = time.perf_counter()
    record = load_record(config.paths.ingested)
    diagnostics = run_diagnostics(
        pipeline=candidate.pipeline, metadata=metadata, schema=schema, dataset=test,
        dataset_name=str(config.paths.testdata), ingested=frame, record=record, log_folder=config.paths.logs,
        probabilities=probabilities,
    )
    decision_record = {"decision": decision, "reason": f"{reason}; {why}", "at": utc_now(),
                       "data_drift": drift, "score_drift": run.get("score_drift")}
    report = build_report(metadata=metadata, scores=scores, labels=labels, probabilities=probabilities,
                          drift=drift, diagnostics=diagnostics, decision=decision_record,
                          previous_scores=deployed_scores)
    extra = {**report, DIAGNOSTICS_FILE: (json.dumps(diagnostics, indent=2) + "\n").encode()}
    run["timings"]["diagnostics_and_report"] = round(time.perf_counter() - started, 3)
    release_id = deploy_release(config.paths.models, config.paths.deployment, ingested_folder=config.paths.ingested,
                                keep_releases=config.deployment.keep_releases, extra_files=extra,
                                decision=decision_record)
    atomic_write_json(config.paths.logs / DIAGNOSTICS_FILE, diagnostics)
    run["decision"] = decision
    run["reason"] = decision_record["reason"]
    run["deployed_release_after"] = release_id
    run["report"] = str(config.paths.deployment / RELEASES_FOLDER / release_id / "report.html")
    logger.info("deployed release %s: %s. Report: %s", release_id, run["reason"], run["report"])


def call_api_after_deploy(config, run: dict[str, Any]) -> None:
    """Ask the API, if it is running, for every endpoint's reply; never fails the tick."""
    from apicalls import OUTPUT_FILE, call_all_if_running, default_prediction_path

    try:
        outcome = call_all_if_running(config.api.url, config.paths.models / OUTPUT_FILE,
                                      prediction_path=default_prediction_path(config),
                                      expect_release=run.get("deployed_release_after"),
                                      reload_interval=config.api.reload_interval_seconds)
    except OSError as exc:  # apireturns.txt not writable, say: the deploy itself succeeded
        outcome = {"running": None, "summary": f"replies not saved: {exc}"}
        logger.warning("API at %s: %s", config.api.url, outcome["summary"])
    else:
        logger.info("API at %s: %s", config.api.url, outcome["summary"])
    run["api"] = outcome


def run_tick(config, run: dict[str, Any]) -> None:
    """Do one tick's work (the lock is held); fill ``run`` with every figure and the decision."""
    sweep_temporaries(config)
    record = load_record(config.paths.ingested)
    scan = scan_source(config.paths.source, record, config.schema)
    pointer = read_pointer(config.paths.deployment)
    run["deployed_release_before"] = pointer["current"] if pointer else None
    state = read_decision_state(config.paths.ingested, record)
    pending_rows = record["rows"] - state["evaluated_rows"]
    needed = rows_needed(config)
    run["new_files"] = [source.name for source in scan.new_files]
    # Nothing to do: no new file, and either a model deployed with too few pending rows to check,
    # or no data at all yet. Decided without importing pandas, scikit-learn or xgboost.
    idle = (pointer is not None and pending_rows < needed) or (pointer is None and record["rows"] == 0)
    if not scan.new_files and idle:
        if scan.record_changed:
            save_record(record, config.paths.ingested, config.paths.logs)
        if scan.rejected:  # refused unread by the scan (a symlink out, an unreadable file)
            run["ingest"] = {"rejected": [{"name": r["name"], "reason": r["reason"]} for r in scan.rejected]}
        run["decision"] = "nothing_new"
        run["reason"] = f"no new files in {config.paths.source.name}/"
        waiting = f"; {pending_rows} new row(s) wait for {needed} to be checked" if pending_rows else ""
        if pointer is None:
            logger.info("nothing new in %s/ and no data yet", config.paths.source.name)
        else:
            logger.info("nothing new in %s/ (%d file(s) ingested)%s; release %s stays",
                        config.paths.source.name, len(record["files"]), waiting, pointer["current"])
        return

    # Only now the heavy imports: pandas, scikit-learn, scipy.
    from churnlib.dataset import FrozenSchema, read_canonical_tail
    from churnlib.drift import drift_table
    from churnlib.modelstore import load_deployed
    from diagnostics import LATEST_DRIFT_FILE
    from ingestion import ingest_scanned

    if scan.new_files:
        logger.info("found %d new file(s): %s", len(scan.new_files), ", ".join(run["new_files"]))
    started = time.perf_counter()
    result = ingest_scanned(config, record, scan)
    run["timings"]["ingestion"] = round(time.perf_counter() - started, 3)
    run["ingest"] = {
        "accepted": [{k: f[k] for k in ("name", "rows_read", "rows_added", "duplicates_in_file",
                                         "duplicates_of_earlier_rows")} for f in result.accepted],
        "rejected": [{"name": r["name"], "reason": r["reason"]} for r in result.rejected],
        "deferred": result.deferred,
        "rows_added": result.rows_added,
        "total_rows": record["rows"],
    }
    if record["rows"] == 0:
        run["decision"] = "no_data"
        run["reason"] = "no rows ingested yet: add labelled CSV files to " + config.paths.source.name + "/"
        logger.info("%s", run["reason"])
        return

    if pointer is None:
        logger.info("cold start: no model deployed yet; training the first one on %d rows", record["rows"])
        train_score_and_maybe_deploy(config, run, decision="cold_start",
                                     reason=f"cold start: first model, trained on {record['rows']} rows")
        mark_evaluated(config.paths.ingested, record)
        return

    state = read_decision_state(config.paths.ingested, record)
    pending_rows = record["rows"] - state["evaluated_rows"]
    if pending_rows == 0:
        causes = []
        if result.rejected:
            causes.append(f"{len(result.rejected)} file(s) rejected")
        if result.accepted:
            causes.append(f"{len(result.accepted)} file(s) held only rows ingested before")
        if result.deferred:
            causes.append(f"{len(result.deferred)} file(s) changed while read, left for the next tick")
        run["decision"] = "no_new_rows"
        run["reason"] = "no new rows: " + (", ".join(causes) or "nothing to ingest")
        logger.info("%s", run["reason"])
        return
    if pending_rows < needed:
        # Too few rows for the checks to mean anything: they stay pending, to be checked together
        # with the next files, rather than being waved through unchecked.
        run["decision"] = "waiting_for_rows"
        run["reason"] = (f"{pending_rows} new row(s) not checked yet: the score and drift checks need at least "
                         f"{needed} (score_drift.min_rows, drift.min_rows); they wait for more data")
        logger.info("%s", run["reason"])
        return

    deployed = load_deployed(config.paths.deployment)
    schema = FrozenSchema.from_dict(record["schema"])
    if FrozenSchema.from_dict(deployed.metadata["schema"]) != schema:
        logger.warning("the deployed model's schema differs from the ingested data's; retraining")
        train_score_and_maybe_deploy(config, run, decision="schema_changed", deployed=None,
                                     reason="the ingested data's schema differs from the deployed model's")
        mark_evaluated(config.paths.ingested, record)
        return
    new_rows = read_canonical_tail(config.paths.ingested / "finaldata.csv", schema,
                                   start=state["evaluated_bytes"], end=record["bytes"])
    logger.info("checking release %s against %d new rows", deployed.release_id, len(new_rows))
    started = time.perf_counter()
    score = check_score(deployed, new_rows, schema, config.score_drift)
    run["score_drift"] = score
    logger.info("score check: %s", score["reason"])
    drift = drift_table(load_reference(deployed, schema), new_rows, schema, config.drift)
    drift["release_id"] = deployed.release_id
    drift["at"] = utc_now()
    drift["files"] = [f["name"] for f in result.accepted]
    atomic_write_json(config.paths.logs / LATEST_DRIFT_FILE, drift)
    run["data_drift"] = drift
    run["timings"]["checks"] = round(time.perf_counter() - started, 3)
    logger.info("drift check: %s", _describe_drift(drift))

    if not score["drift"] and not drift["drift"]:
        run["decision"] = "no_drift"
        run["reason"] = f"no score drop and no feature drift in {len(new_rows)} new rows; release {deployed.release_id} stays"
        logger.info("%s", run["reason"])
        mark_evaluated(config.paths.ingested, record)
        return
    causes = []
    if score["drift"]:
        causes.append(f"score drop ({score['reason']})")
    if drift["drift"]:
        causes.append(f"feature drift ({_describe_drift(drift)})")
    logger.info("retraining because of %s", " and ".join(causes))
    train_score_and_maybe_deploy(config, run, decision="retrained_deployed", deployed=deployed, drift=drift,
                                 reason="retrained because of " + " and ".join(causes))
    mark_evaluated(config.paths.ingested, record)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        "One cron tick: ingest new files from the source folder, check the deployed model for a "
        "score drop and feature drift, and retrain and redeploy when needed. Logs go to the log folder "
        "(fullprocess.log, one line per run in runs.jsonl). Exit 0 unless something failed: 1 for a "
        "failed tick (the reason on stderr), 2 for a bad config."
    )
    parser.add_argument("--no-api", action="store_true", help="do not call the API after a deploy")
    args = parser.parse_args(argv)
    config = start_script(args, "fullprocess")
    if config is None:
        return 2
    started = time.perf_counter()
    run: dict[str, Any] = {"started_at": utc_now(), "pid": os.getpid(), "config": str(config.file), "timings": {}}
    lock = RunLock(lock_path(config))
    if not lock.acquire():
        run.update(decision="lock_held", reason=f"another run (PID {lock.holder_pid() or '?'}) holds the lock")
        logger.info("another run (PID %s) holds the lock; exiting", lock.holder_pid() or "?")
        _finish(config, run, started)
        return 0
    status = 0
    try:
        run_tick(config, run)
        if run.get("deployed_release_after") and not args.no_api:
            call_api_after_deploy(config, run)
    except Exception as exc:  # any failure ends the tick with its reason on stderr and in runs.jsonl
        logger.debug("%s", traceback.format_exc())
        status = _fail(run, _reason(exc), 2 if isinstance(exc, ConfigError) else 1)
    finally:
        lock.release()
    _finish(config, run, started)
    return status


def _reason(exc: Exception) -> str:
    """Return the failure as one line: our own errors carry a full message, others get their type."""
    from churnlib.dataset import DatasetError
    from churnlib.modelstore import ModelLoadError
    from deployment import DeploymentError
    from ingestion import IngestedDataError
    from training import TrainingError

    ours = (ConfigError, DatasetError, ModelLoadError, DeploymentError, IngestedDataError, TrainingError,
            PipelineError, FileNotFoundError)
    return str(exc) if isinstance(exc, ours) else f"{type(exc).__name__}: {exc}"


def _fail(run: dict[str, Any], message: str, status: int) -> int:
    """Record the failure; the console handler puts the critical line on stderr for cron."""
    run["decision"] = "failed"
    run["reason"] = message
    logger.critical("tick failed: %s", message)
    return status


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _finish(config, run: dict[str, Any], started: float) -> None:
    """Append the run's JSON line to logs/runs.jsonl."""
    run["finished_at"] = utc_now()
    run["seconds"] = round(time.perf_counter() - started, 3)
    line = json.dumps(_json_safe(run), default=str, allow_nan=False, separators=(",", ":"))
    append_line(config.paths.logs / RUNS_FILE, line)


if __name__ == "__main__":
    sys.exit(main())
