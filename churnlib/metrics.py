"""Prometheus metrics for ``GET /metrics``, with the standard client library (``prometheus_client``).

Two kinds, both in the standard exposition format:

- What the API workers count (requests and latency by route, method and status; records
  predicted and predicted churners; which release each worker serves). Under gunicorn these live
  in prometheus_client's multiprocess mode: each worker writes its own files in
  ``$PROMETHEUS_MULTIPROC_DIR`` (set up by ``gunicorn.conf.py``) and a scrape, whichever worker
  answers it, sums them, so the counts are the API's and not one worker's. Without that variable
  (the Flask test client, ``python app.py``) they are kept in the process.
- What the pipeline wrote (read at scrape time from its files, and only again when a file
  changed): the release the pointer names, when it was deployed and trained, and its test scores;
  the last tick's time, duration and decision, the last score check and drift test; the ingested
  data's size; the alert conditions active and the alerts waiting to be sent.

Every metric is listed, with its meaning, in docs/api.md (section "Prometheus metrics").
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from churnlib.clock import stamp_seconds
from churnlib.config import METRICS, Config
from churnlib.fsutil import read_json_or_none
from churnlib.ingested import RECORD_FILE
from churnlib.modelstore import METADATA_FILE, POINTER_FILE, RELEASES_FOLDER, SCORE_DETAILS_FILE
from churnlib.runlog import ALERT_STATE_FILE, LATEST_DRIFT_FILE, OUTBOX_FILE, RUNS_FILE, Decision
from churnlib.serving import FileCache

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"  # requests for no route share one label: a scanner must not create thousands
# Likewise methods: HTTP's own (RFC 9110, plus PATCH) keep their name, any other shares one label.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "<other>"
# Finer than the library's default at the low end: a single-record prediction takes a few milliseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

__all__ = ["ApiMetrics", "CONTENT_TYPE_LATEST", "MULTIPROCESS_ENV"]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


CHECK_LOOKBACK = 50  # ticks that did work, searched from the end for the last score check


def _last_lines(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """Return the last line of runs.jsonl, the last tick that did work, and the last one that checked the score."""
    from churnlib.history import read_recent_runs

    ticks, last, _skipped, _complete = read_recent_runs(path, limit=CHECK_LOOKBACK)
    checked = next((t for t in reversed(ticks) if isinstance(t.get("score_drift"), dict)
                    and t["score_drift"].get("checked")), None)
    return last, (ticks[-1] if ticks else None), checked


class PipelineCollector:
    """Reads the pipeline's files at scrape time (each only again once it changed) and yields gauges."""

    def __init__(self, config: Config):
        logs, deployment = config.paths.logs, config.paths.deployment
        self.pointer = FileCache(deployment / POINTER_FILE, lambda: self._release(deployment))
        self.runs = FileCache(logs / RUNS_FILE, lambda: _last_lines(logs / RUNS_FILE))
        self.record = FileCache(config.paths.ingested / RECORD_FILE,
                                lambda: read_json_or_none(config.paths.ingested / RECORD_FILE))
        self.drift = FileCache(logs / LATEST_DRIFT_FILE, lambda: read_json_or_none(logs / LATEST_DRIFT_FILE))
        self.alerts = FileCache(logs / ALERT_STATE_FILE, lambda: read_json_or_none(logs / ALERT_STATE_FILE))
        self.outbox = FileCache(logs / OUTBOX_FILE, lambda: read_json_or_none(logs / OUTBOX_FILE))

    def _release(self, deployment: Path) -> dict[str, Any] | None:
        pointer = read_json_or_none(deployment / POINTER_FILE)
        if not isinstance(pointer, dict) or not isinstance(pointer.get("current"), str):
            return None
        folder = deployment / RELEASES_FOLDER / pointer["current"]
        return {"pointer": pointer, "metadata": read_json_or_none(folder / METADATA_FILE) or {},
                "scores": read_json_or_none(folder / SCORE_DETAILS_FILE) or {}}

    def describe(self) -> Iterable:
        return []  # collected at scrape time only; nothing to check at registration

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield from self._release_metrics(self.pointer.get())
        last, last_work, last_checked = self.runs.get()
        yield from self._tick_metrics(last, last_work, last_checked)
        yield from self._data_metrics(self.record.get(), self.drift.get())
        yield from self._alert_metrics(self.alerts.get(), self.outbox.get())

    @staticmethod
    def _gauge(name: str, documentation: str, value: float | None, labels: dict[str, str] | None = None):
        family = GaugeMetricFamily(name, documentation, labels=list(labels or {}))
        if value is not None:
            family.add_metric(list((labels or {}).values()), value)
        return family

    def _release_metrics(self, release: dict[str, Any] | None):
        info = GaugeMetricFamily("churn_release_info", "The release the deployment pointer names (value 1).",
                                 labels=["release_id", "algorithm"])
        if release is None:
            yield info
            return
        pointer, metadata, scores = release["pointer"], release["metadata"], release["scores"]
        info.add_metric([pointer["current"], str(metadata.get("algorithm", ""))], 1)
        yield info
        deployed_at = stamp_seconds(pointer.get("switched_at"))
        yield self._gauge("churn_release_deployed_timestamp_seconds",
                          "When the deployment pointer was switched to the current release (Unix time).", deployed_at)
        yield self._gauge("churn_release_age_seconds", "Seconds since the current release was deployed.",
                          None if deployed_at is None else max(0.0, time.time() - deployed_at))
        yield self._gauge("churn_release_trained_timestamp_seconds", "When the current release was trained (Unix time).",
                          stamp_seconds(metadata.get("trained_at")))
        yield self._gauge("churn_release_training_rows", "Rows the current release was trained on.",
                          _number((metadata.get("training_data") or {}).get("rows")))
        test_score = GaugeMetricFamily("churn_release_test_score", "The current release's scores on the test data, "
                                       "computed at deploy time.", labels=["metric"])
        for key in METRICS:
            if _number(scores.get(key)) is not None:
                test_score.add_metric([key], scores[key])
        yield test_score

    def _tick_metrics(self, last: dict[str, Any] | None, last_work: dict[str, Any] | None,
                      last_checked: dict[str, Any] | None):
        last = last or {}
        yield self._gauge("churn_last_tick_timestamp_seconds", "When the last tick started (Unix time).",
                          stamp_seconds(last.get("started_at")))
        yield self._gauge("churn_last_tick_duration_seconds", "How long the last tick took.", _number(last.get("seconds")))
        decision = GaugeMetricFamily("churn_last_tick_decision", "1 for the last tick's decision, 0 for the others.",
                                     labels=["decision"])
        if last:
            for value in Decision:
                decision.add_metric([value.value], 1 if last.get("decision") == value.value else 0)
        yield decision
        work = last_work or {}
        yield self._gauge("churn_last_work_tick_timestamp_seconds",
                          "When the last tick that did work (more than find nothing new) started (Unix time).",
                          stamp_seconds(work.get("started_at")))
        check = (last_checked or {}).get("score_drift") or {}
        checked = bool(check.get("checked"))
        yield self._gauge("churn_last_check_timestamp_seconds", "When the tick that last checked the deployed "
                          "model's score on new rows started (Unix time).",
                          stamp_seconds((last_checked or {}).get("started_at")))
        metric = str(check.get("metric", ""))
        for name, key, documentation in (
            ("churn_last_check_score", "new_score", "The deployed model's score on the last checked batch of new rows."),
            ("churn_last_check_expected_score", "baseline", "The score expected of it on those rows (the deploy-time score under score_drift.method deploy_time)."),
            ("churn_last_check_alarm_threshold", "alarm_below", "The score under which that batch would raise the alarm."),
        ):
            yield self._gauge(name, documentation, _number(check.get(key)) if checked else None, {"metric": metric})
        yield self._gauge("churn_last_check_rows", "Rows in the last checked batch.",
                          _number(check.get("rows")) if checked else None)
        yield self._gauge("churn_last_check_drift", "1 when the last score check found a drop, else 0.",
                          float(bool(check.get("drift"))) if checked else None)
        ingest = work.get("ingest") if isinstance(work.get("ingest"), dict) else {}
        yield self._gauge("churn_last_tick_rows_added", "Rows the last tick that did work added to the ingested data.",
                          _number(ingest.get("rows_added")) if ingest else None)
        yield self._gauge("churn_last_tick_files_rejected", "Files the last tick that did work rejected.",
                          float(len(ingest.get("rejected", []))) if ingest else None)

    def _data_metrics(self, record: Any, drift: Any):
        record = record if isinstance(record, dict) else {}
        yield self._gauge("churn_ingested_rows", "Rows in the ingested data.", _number(record.get("rows")))
        yield self._gauge("churn_ingested_files", "Files ingested so far.",
                          float(len(record.get("files", []))) if record else None)
        yield self._gauge("churn_rejected_files", "Files rejected so far.",
                          float(len(record.get("rejected", []))) if record else None)
        yield self._gauge("churn_ingested_data_version", "The ingested data's version (one more per file added).",
                          _number(record.get("data_version")))
        effect = GaugeMetricFamily("churn_feature_drift_effect", "Each feature's drift effect in the latest drift test "
                                   "(KS D for numeric, Cramér's V for categorical features).", labels=["feature", "test"])
        drifted = GaugeMetricFamily("churn_feature_drifted", "1 for a feature the latest drift test found drifted.",
                                    labels=["feature"])
        if isinstance(drift, dict) and drift.get("tested"):
            for row in drift.get("features", []):
                if _number(row.get("effect")) is not None:
                    effect.add_metric([str(row["feature"]), str(row.get("test", ""))], row["effect"])
                drifted.add_metric([str(row["feature"])], 1 if row.get("drifted") else 0)
        yield effect
        yield drifted

    def _alert_metrics(self, state: Any, outbox: Any):
        active = (state or {}).get("active", {}) if isinstance(state, dict) else {}
        conditions = GaugeMetricFamily("churn_alert_condition_active", "Alert conditions active now, by event.",
                                       labels=["event"])
        counts: dict[str, int] = {}
        for condition in active.values():
            counts[condition.get("event", "unknown")] = counts.get(condition.get("event", "unknown"), 0) + 1
        for event, count in sorted(counts.items()):
            conditions.add_metric([event], count)
        yield conditions
        items = (outbox or {}).get("items", []) if isinstance(outbox, dict) else []
        yield self._gauge("churn_alerts_waiting", "Alerts in the outbox, waiting to be sent.", float(len(items)))


class ApiMetrics:
    """The API's metrics: what the workers count, plus the pipeline's files, rendered for ``/metrics``."""

    def __init__(self, config: Config):
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        # The *_created series double the output for no use here (multiprocess mode has none anyway).
        disable_created_metrics()
        # Each app has its own registry (tests build many apps in one process); in multiprocess
        # mode the values live in the workers' files and this registry is never rendered.
        self.own = CollectorRegistry(auto_describe=True)
        self.requests = Counter("churn_api_requests", "HTTP requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=self.own)
        self.latency = Histogram("churn_api_request_duration_seconds", "Time to answer a request, by route, method "
                                 "and status.", ["route", "method", "status"], registry=self.own,
                                 buckets=LATENCY_BUCKETS)
        self.predictions = Counter("churn_api_predictions", "Records predicted by POST /prediction.", registry=self.own)
        self.churners = Counter("churn_api_predicted_churners", "Records predicted to churn (probability above the "
                                "threshold).", registry=self.own)
        self.serving = Gauge("churn_api_workers_serving", "API workers serving each release (a worker notices a new "
                             "release within api.reload_interval_seconds of its next request).", ["release_id"],
                             registry=self.own, multiprocess_mode="livesum")
        self._serving: str | None = None
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._lock = threading.Lock()
        self.pipeline = PipelineCollector(config)

    def observe(self, route: str | None, method: str, status: int, seconds: float) -> None:
        labels = (route or UNMATCHED_ROUTE, method if method in KNOWN_METHODS else OTHER_METHOD, status)
        # Each label set's children, kept here: labels() takes the metric's lock on every call,
        # where a hundred threads of a worker queue. A plain dict read needs none; the label sets are bounded.
        children = self._children.get(labels)
        if children is None:
            children = self._children[labels] = (self.requests.labels(*labels[:2], str(status)),
                                                  self.latency.labels(*labels[:2], str(status)))
        children[0].inc()
        children[1].observe(seconds)

    def predicted(self, records: int, churners: int) -> None:
        self.predictions.inc(records)
        if churners:  # in multiprocess mode each inc takes a process-wide lock and writes a file: none for nothing
            self.churners.inc(churners)

    def note_release(self, release_id: str | None) -> None:
        """Record the release this worker serves now (a cheap comparison when it did not change)."""
        if release_id == self._serving:
            return
        with self._lock:  # a threaded worker: one thread moves the gauge from the old release to the new
            if release_id == self._serving:
                return
            if self._serving is not None:
                self.serving.labels(self._serving).set(0)
            if release_id is not None:
                self.serving.labels(release_id).set(1)
            self._serving = release_id

    def render(self) -> bytes:
        """Return every metric in the text exposition format, summed over workers in multiprocess mode."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = CollectorRegistry()
            registry.register(_Forward(self.own))
        registry.register(self.pipeline)
        return generate_latest(registry)


class _Forward:
    """Collects another registry's metrics (the in-process ones) into a scrape's registry."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def describe(self) -> Iterable:
        return []

    def collect(self):
        return self.registry.collect()
