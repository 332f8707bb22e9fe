"""GET /metrics: Prometheus's format, counts summed across real gunicorn workers, the pipeline's figures."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from helpers import RECORD, SAMPLE_LATER, base_config, free_port, request, start_gunicorn


@pytest.fixture
def client(deployed):
    deployed.write_config(base_config(api={"reload_interval_seconds": 0.05}))
    return create_app(deployed.config_path).test_client()


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=")
        text = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(metrics, name, **labels):
    return metrics.get((name, tuple(sorted(labels.items()))))


def test_the_metrics_of_the_api_and_the_pipeline_by_the_test_client(client, deployed):
    client.post("/prediction", json={"records": [RECORD, RECORD, RECORD]})
    client.get("/no-such-route")
    client.get("/no-such-route-either")
    text = client.get("/metrics").data.decode()
    metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert value(metrics, "churn_api_requests_total", route="/prediction", method="POST", status="200") == 1
    assert value(metrics, "churn_api_requests_total", route="<unmatched>", method="GET", status="404") == 2
    assert value(metrics, "churn_api_request_duration_seconds_count", route="/prediction", method="POST", status="200") == 1
    assert value(metrics, "churn_api_predictions_total") == 3
    release = deployed.pointer()["current"]
    assert value(metrics, "churn_release_info", release_id=release, algorithm="logistic_regression") == 1
    assert value(metrics, "churn_api_workers_serving", release_id=release) == 1
    from churnlib.clock import stamp_seconds

    deployed_at = stamp_seconds(deployed.pointer()["switched_at"])
    assert value(metrics, "churn_release_deployed_timestamp_seconds") == pytest.approx(deployed_at)
    assert 0 <= value(metrics, "churn_release_age_seconds") <= time.time() - deployed_at + 1
    assert value(metrics, "churn_last_tick_decision", decision="cold_start") == 1
    assert value(metrics, "churn_last_tick_decision", decision="failed") == 0
    assert value(metrics, "churn_ingested_rows") == 790
    assert value(metrics, "churn_release_test_score", metric="f1") == pytest.approx(
        client.get("/scoring").json["f1"])

    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0
    metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(client.get("/metrics").data.decode()) for s in f.samples}
    run = deployed.last_run()
    assert value(metrics, "churn_last_tick_decision", decision="retrained_deployed") == 1
    assert value(metrics, "churn_last_check_score", metric="f1") == pytest.approx(run["score_drift"]["new_score"])
    assert value(metrics, "churn_last_check_rows") == 400
    assert value(metrics, "churn_feature_drifted", feature="plan") == 1
    assert value(metrics, "churn_ingested_rows") == 1190


def per_worker(folder: Path, name: str) -> dict[str, float]:
    """Return one worker's count of ``name`` per worker PID, read from its own files alone."""
    counts = {}
    for db in folder.glob("counter_*.db"):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(db, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            counts[db.stem.split("_")[1]] = registry.get_sample_value(name) or 0.0
    return counts


@pytest.mark.slow
def test_counts_are_summed_across_two_gunicorn_workers_and_survive_a_worker_restart(deployed):
    folder = deployed.logs / "prometheus_multiproc"  # gunicorn.conf.py's default
    process, url = start_gunicorn(deployed.config_path, free_port(), workers=2)
    try:
        def predict(_):
            status, body = request(url + "/prediction", {"records": [RECORD, RECORD]})
            assert status == 200
            return body

        def load_until_both_workers_predicted(already: int) -> int:
            """Send batches of 16 at 8 connections until each live worker has predicted; return requests sent."""
            sent, deadline = already, time.monotonic() + 90
            while True:
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(predict, range(16)))
                sent += 16
                live = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                                                           text=True).stdout.split()]
                counts = per_worker(folder, "churn_api_predictions_total")
                if len(live) == 2 and all(counts.get(str(pid), 0) > 0 for pid in live):
                    return sent
                assert time.monotonic() < deadline, counts

        sent = load_until_both_workers_predicted(0)
        counts = per_worker(folder, "churn_api_predictions_total")
        assert sum(counts.values()) == 2 * sent and sum(1 for c in counts.values() if c > 0) >= 2
        release = deployed.pointer()["current"]
        for _ in range(8):  # whichever worker answers a scrape, it reports the API's counts, not its own
            metrics = scrape(url)
            assert value(metrics, "churn_api_requests_total", route="/prediction", method="POST", status="200") == sent
            assert value(metrics, "churn_api_predictions_total") == 2 * sent
        assert value(metrics, "churn_api_workers_serving", release_id=release) == 2

        workers = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                                                      text=True).stdout.split()]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)  # gunicorn starts another; child_exit drops the dead one's gauges
        time.sleep(1)
        sent = load_until_both_workers_predicted(sent)
        metrics = scrape(url)
        assert value(metrics, "churn_api_workers_serving", release_id=release) == 2  # not 3: the dead one is gone
        assert value(metrics, "churn_api_predictions_total") == 2 * sent  # the dead worker's counts stay
    finally:
        process.terminate()
        process.wait(timeout=30)
