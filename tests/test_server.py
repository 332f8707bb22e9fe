"""Real gunicorn on a free 127.0.0.1 port: predictions, a redeploy underneath it, apicalls.py."""

import os
import subprocess
import sys
import time

import pytest

from helpers import RECORD, ROOT, SAMPLE_LATER, base_config, free_port, make_project, request, run_script, start_gunicorn

pytestmark = pytest.mark.slow


@pytest.fixture
def server(deployed):
    process, url = start_gunicorn(deployed.config_path, free_port())
    yield url
    process.terminate()
    process.wait(timeout=30)




def test_gunicorn_serves_predictions_and_picks_up_a_redeploy(server, deployed):
    status, body = request(server + "/prediction", RECORD)
    assert status == 200
    first = body["release_id"]
    assert first == deployed.pointer()["current"]

    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    tick = deployed.tick_subprocess()
    assert tick.returncode == 0, tick.stderr
    second = deployed.pointer()["current"]
    assert second != first

    seen = set()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, body = request(server + "/prediction", RECORD)
        assert status == 200
        seen.add(body["release_id"])
        if body["release_id"] == second and len(seen) >= 1:
            # both workers: every further reply is the new release
            replies = [request(server + "/prediction", RECORD)[1]["release_id"] for _ in range(10)]
            if set(replies) == {second}:
                break
        time.sleep(0.1)
    assert request(server + "/health")[1]["release_id"] == second
    assert {request(server + "/prediction", RECORD)[1]["release_id"] for _ in range(10)} == {second}
    access_log = (deployed.logs / "api_access.log").read_text()
    assert "POST /prediction" in access_log
    assert "now serving release " + second in (deployed.logs / "api_error.log").read_text()


def test_apicalls_saves_every_reply(server, deployed):
    result = run_script("apicalls.py", "--config", str(deployed.config_path), "--url", server)
    assert result.returncode == 0, result.stdout + result.stderr
    saved = (deployed.models / "apireturns.txt").read_text()
    for route in ("/health", "/prediction", "/scoring", "/summarystats", "/diagnostics", "/metrics"):
        assert f" {route}" in saved
    assert saved.count("-> 200") == 6
    assert "churn_" in saved.split("GET /metrics", 1)[1]  # the Prometheus text itself, not an error body


def test_apicalls_says_clearly_when_the_api_is_not_running(deployed):
    result = run_script("apicalls.py", "--config", str(deployed.config_path), "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "no API answering at" in result.stderr and "make serve" in result.stderr


@pytest.mark.parametrize("token_env", [None, "CHURN_TEST_TOKEN"])
def test_gunicorn_config_checks_out(tmp_path, token_env):
    """On this test's own project (CHURN_CONFIG), never the checkout's config.json, with and without a token."""
    project = make_project(tmp_path / "project", config=base_config(**({"api": {"token_env": token_env}} if token_env else {})))
    env = {**os.environ, "CHURN_CONFIG": str(project.config_path), **({token_env: "s3cret-token"} if token_env else {})}
    result = subprocess.run([sys.executable, "-m", "gunicorn", "--check-config", "--config", "gunicorn.conf.py", "wsgi:app"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (project.logs / "prometheus_multiproc").is_dir()  # the project's folders, not the checkout's


def test_redeploy_under_load_fails_no_request(tmp_path):
    """About 20 s of steady load on real gunicorn while the pipeline deploys three new releases."""
    import threading

    import numpy as np

    from helpers import base_config, make_project
    from samples.generate import HEADER, make_customers

    project = make_project(tmp_path / "project", config=base_config(
        deployment={"policy": "always"}, api={"reload_interval_seconds": 0.5}))
    assert project.tick_subprocess().returncode == 0
    releases = [project.pointer()["current"]]
    process, url = start_gunicorn(project.config_path, free_port())
    replies: list[tuple[float, int, str | None]] = []
    failures: list[str] = []
    stop = threading.Event()

    def load():
        # Bounded: about 100 requests a second per thread. Each request is a new connection (sync
        # workers close it), and an unbounded loop would run loopback out of ephemeral ports.
        while not stop.wait(0.01):
            try:
                status, body = request(url + "/prediction", RECORD, timeout=10)
                replies.append((time.monotonic(), status, body.get("release_id")))
                if status != 200:
                    failures.append(f"{status} {body}")
            except Exception as exc:  # any failed request counts, whatever its kind
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2)
        for seed in (1, 2, 3):
            rows = make_customers(np.random.default_rng(700 + seed), 300)
            # The world flips back and forth (labels flipped, then not, then again): each batch is a
            # score drop for the model deployed before it, so each tick retrains and deploys.
            if seed != 2:
                for row in rows:
                    row[-1] = str(1 - int(row[-1]))
            project.add_source(f"batch{seed}.csv", "\n".join(",".join(r) for r in [HEADER, *rows]) + "\n")
            tick = project.tick_subprocess()
            assert tick.returncode == 0, tick.stderr
            assert project.last_run()["decision"] == "retrained_deployed", project.last_run()["reason"]
            releases.append(project.pointer()["current"])
            time.sleep(2)
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        process.terminate()
        process.wait(timeout=30)

    assert failures == []
    assert len(set(releases)) == 4
    first_seen = []
    for _when, _status, release in replies:
        if release not in first_seen:
            first_seen.append(release)
    assert first_seen == releases  # every release served, in deploy order
    last_second = [release for when, _status, release in replies if when > replies[-1][0] - 1.0]
    assert set(last_second) == {releases[-1]}
    print(f"\nredeploy under load: {len(replies)} requests, 0 failed, releases served in order: {len(releases)}")
