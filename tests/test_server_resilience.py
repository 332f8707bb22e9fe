"""The API under real gunicorn stays up when clients misbehave or config.json is mid-edit."""

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from helpers import RECORD, SAMPLE_LATER, base_config, free_port, request, start_gunicorn

pytestmark = pytest.mark.slow


SLOW_CONNECTIONS = 64


def workers_of(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


@pytest.fixture
def gunicorn(deployed):
    process, url = start_gunicorn(deployed.config_path, free_port())
    yield process, url
    process.terminate()
    process.wait(timeout=30)


def test_64_slow_clients_do_not_stop_normal_requests(gunicorn, deployed):
    """64 connections send their request one byte every 0.2 s; normal requests meanwhile are answered."""
    process, url = gunicorn
    port = int(url.rsplit(":", 1)[1])
    slow = []
    for _ in range(SLOW_CONNECTIONS):
        connection = socket.create_connection(("127.0.0.1", port), timeout=5)
        connection.settimeout(None)  # blocking: a recv with MSG_DONTWAIT then answers at once
        connection.sendall(b"POST /prediction HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        slow.append(connection)
    stop = threading.Event()

    def dribble():  # one byte of a header that never ends, per connection, every 0.2 s; bounded by stop
        while not stop.wait(0.2):
            for connection in slow:
                try:
                    connection.send(b"X")
                except OSError:
                    pass

    dribbler = threading.Thread(target=dribble)
    dribbler.start()
    answered = []
    try:
        time.sleep(1.0)  # every slow connection has been accepted and has sent bytes
        for _ in range(20):
            # A generous client-side bound: far longer than an answer takes, far shorter than the
            # 30 s a sync worker stays blocked on a slow client before gunicorn kills it.
            status, body = request(url + "/prediction", RECORD, timeout=10)
            answered.append(status)
            status, body = request(url + "/health", timeout=10)
            answered.append(status)
        still_open = 0
        for connection in slow:  # the slow clients were served all along, not dropped
            try:
                connection.send(b"X")
                connection.recv(1, socket.MSG_DONTWAIT)
            except BlockingIOError:
                still_open += 1  # no reply and no close: the request is still being read
            except OSError:
                pass
    finally:
        stop.set()
        dribbler.join()
        for connection in slow:
            connection.close()
    assert answered == [200] * 40
    assert still_open == SLOW_CONNECTIONS
    assert process.poll() is None
    assert "WORKER TIMEOUT" not in (deployed.logs / "api_error.log").read_text()


def wait_for(check, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def test_a_broken_config_never_takes_the_api_down(gunicorn, deployed):
    process, url = gunicorn
    good = deployed.config_path.read_text()
    deployed.config_path.write_text(good.replace('"url"', '"url": "x", "urll"'))  # mid-edit: an unknown key
    for worker in workers_of(process.pid):  # workers restarted for any reason while it is broken
        os.kill(worker, signal.SIGKILL)
    time.sleep(3)
    assert process.poll() is None, "gunicorn shut down"
    assert wait_for(lambda: request(url + "/health", timeout=2)[0] == 200)
    assert len(workers_of(process.pid)) == 2

    process.send_signal(signal.SIGHUP)  # an explicit reload of the broken config: refused, logged
    error_log = deployed.logs / "api_error.log"
    assert wait_for(lambda: "not reloaded" in error_log.read_text())
    assert "unknown key 'api.urll'" in error_log.read_text()
    assert process.poll() is None
    # A reload restarts the workers: a request meanwhile waits for a new one (a few seconds on a
    # busy machine), none is refused. The bound is generous for that.
    assert all(request(url + "/health", timeout=30)[0] == 200 for _ in range(10))

    config = json.loads(good)
    config["api"] = {**config.get("api", {}), "max_records": 2}
    deployed.write_config(config)
    assert request(url + "/prediction", {"records": [RECORD] * 3})[0] == 200  # not picked up without a reload
    process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: all(request(url + "/prediction", {"records": [RECORD] * 3})[0] == 413 for _ in range(6)))
    assert process.poll() is None


def test_apicalls_and_the_pipeline_send_the_api_token(deployed):
    port = free_port()
    config = base_config(api={"token_env": "CHURN_TEST_TOKEN", "url": f"http://127.0.0.1:{port}"},
                         deployment={"policy": "always"})
    deployed.write_config(config)
    env = {"CHURN_TEST_TOKEN": "s3cret-token"}
    process, url = start_gunicorn(deployed.config_path, port, env=env)
    try:
        assert request(url + "/scoring")[0] == 401
        from helpers import run_script

        result = run_script("apicalls.py", "--config", str(deployed.config_path), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (deployed.models / "apireturns.txt").read_text().count("-> 200") == 6  # /metrics too, with the token
        deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
        tick = run_fullprocess(deployed, env)
        assert tick.returncode == 0, tick.stderr
        run = deployed.last_run()
        assert run["decision"] == "retrained_deployed"
        assert run["api"]["running"] is True and run["api"]["failed"] == [], run["api"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_fullprocess(project, env):
    from helpers import run_script

    return run_script("fullprocess.py", "--config", str(project.config_path), env=env)


def test_errors_gunicorn_answers_itself_are_what_the_docs_say(gunicorn):
    """A request line over gunicorn's limit never reaches the app: docs/api.md must not promise JSON for it."""
    from helpers import ROOT

    _process, url = gunicorn
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    head = reply.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 414")
    assert "Content-Type: text/html" in head
    api_docs = (ROOT / "docs" / "api.md").read_text()
    assert "Every error is `{\"error\": \"...\"}`" not in api_docs
    assert "gunicorn answers itself" in api_docs and "414" in api_docs
