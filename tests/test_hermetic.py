"""Tests never touch the user's set-up: not the checkout's config.json, data or state, not a variable
of the user's shell; and the shared data sets skip in a clone without them, but never on CI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, free_port, is_scrubbed, shared_dataset

# --- the shared data sets --------------------------------------------------------------------------


def test_a_shared_dataset_is_used_when_present_skipped_when_missing_and_missing_fails_under_ci(tmp_path, monkeypatch):
    (tmp_path / "course").mkdir()
    monkeypatch.delenv("CI", raising=False)
    assert shared_dataset("course", datasets=tmp_path) == tmp_path / "course"
    with pytest.raises(pytest.skip.Exception) as skipped:
        shared_dataset("absent", datasets=tmp_path)
    assert str(skipped.value) == (f"shared data set absent not found at {tmp_path / 'absent'} "
                                  "(not shipped; CI lays it beside the clone)")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        shared_dataset("absent", datasets=tmp_path)
    assert "\n" not in str(failed.value) and str(failed.value).endswith("and CI is set: CI must check it")
    assert shared_dataset("course", datasets=tmp_path) == tmp_path / "course"


# --- the environment -------------------------------------------------------------------------------

PRODUCT_CODE = sorted([*ROOT.glob("*.py"), *(ROOT / "churnlib").glob("*.py")])
# os.environ only: a WSGI environ (environ["REQUEST_METHOD"] in churnlib/accesslog.py) is no variable of the shell.
READS_VARIABLE = re.compile(r"""(?:os\.environ(?:\.get|\.setdefault|\.pop)?\(\s*|os\.environ\[\s*|getenv\(\s*|"""
                            r"""\b[A-Z_]+_ENV(?:_VAR)?\s*=\s*)["']([A-Za-z_][A-Za-z0-9_]*)["']""")
NAMES_VARIABLE = re.compile(r"""["']?(?:token_env|password_env)["']?\s*[:=]\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")


def test_every_environment_variable_the_product_reads_is_scrubbed_for_the_tests():
    read = {name for path in PRODUCT_CODE for name in READS_VARIABLE.findall(path.read_text(encoding="utf-8"))}
    assert {"CHURN_CONFIG", "CHURN_PYPI_URL", "CHURN_API_BIND", "PROMETHEUS_MULTIPROC_DIR"} <= read  # the scan works
    assert [name for name in sorted(read) if not is_scrubbed(name)] == []
    assert not [name for name in os.environ if is_scrubbed(name) and name != "CHURN_PYPI_URL"]


def test_every_variable_a_test_config_names_is_scrubbed():
    """A test config's api.token_env or alerts.email.password_env names a CHURN_* variable: the user's
    shell may hold any other name, which a test that expects it unset would then find set."""
    named = {name for path in (ROOT / "tests").glob("*.py")
             for name in NAMES_VARIABLE.findall(path.read_text(encoding="utf-8"))}
    assert {"CHURN_TEST_TOKEN", "CHURN_SMTP_PASSWORD"} <= named  # the scan works
    assert [name for name in sorted(named) if not is_scrubbed(name)] == []


# --- the test of the tests: a user's checkout --------------------------------------------------------

# Chosen to cover what made tests touch a user's set-up, in about a minute (the whole suite nested
# would double CI's time): the tests that used to copy or read the checkout's config.json,
# sourcedata/ and testdata/ (the walk-through, the shipped configs, the generator's check; every
# test on the session-wide deployed project reads the sample files the same way, through
# make_project), the one that ran gunicorn on the checkout's config (with a token, the case the
# issue names), the alert tests that deliver by SMTP and webhook or read a password from the
# environment, the one that calls the API after a deploy, and one that expects a token variable
# to be unset. Most of the suite builds its config with base_config() like these and is left out.
SUBSET = [
    "tests/test_fullprocess.py::test_the_shipped_sample_data_runs_the_whole_walk_through",
    "tests/test_config.py::test_the_shipped_configs_are_valid",
    "tests/test_examples.py::test_the_sample_data_generator_reproduces_the_shipped_files",
    "tests/test_server.py::test_gunicorn_config_checks_out[CHURN_TEST_TOKEN]",
    "tests/test_alerts.py::test_drift_and_deploy_reach_the_smtp_server_and_the_webhook_once",
    "tests/test_alerts.py::test_starttls_and_a_password_from_the_environment",
    "tests/test_alerts.py::test_an_api_that_stops_answering_after_a_deploy_alerts_and_one_never_run_does_not",
    "tests/test_api_replies.py::test_a_token_variable_that_is_not_set_stops_the_api_from_starting",
]
STATE_FOLDERS = ("ingesteddata", "models", "production_deployment", "logs", "predictions", "scoringdata")
# Names a user's config may give its secrets: not CHURN_*, so only "tests never load the user's config" keeps them out.
USER_TOKEN, USER_PASSWORD = "ACME_CHURN_API_TOKEN", "ACME_MAIL_PASSWORD"


class HttpRecorder:
    """An HTTP server on 127.0.0.1 that keeps every connection and request made to it: webhook, API, proxy."""

    def __init__(self):
        self.requests: list[str] = []
        self.connections = 0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                recorder.requests.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = do_CONNECT = answer

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def process_request(self, request, client_address):
                recorder.connections += 1
                super().process_request(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class SmtpRecorder:
    """An SMTP server on 127.0.0.1 (aiosmtpd) that accepts any login and keeps every login and message."""

    def __init__(self):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.received: list[str] = []
        recorder = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                recorder.received.append(f"message to {envelope.rcpt_tos}")
                return "250 OK"

        def authenticate(server, session, envelope, mechanism, auth_data):
            recorder.received.append(f"login {auth_data.login.decode()}")
            return AuthResult(success=True, handled=False)

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, authenticator=authenticate,
                                     auth_require_tls=False)
        self.controller.start()

    def stop(self):
        self.controller.stop()


def checkout_files() -> list[Path]:
    """Return the checkout's files a clone holds (git's tracked and not-ignored ones), relative to it."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode()
        return sorted({Path(name) for name in listed.split("\0") if name and (ROOT / name).is_file()})
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked archive)
        skipped = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "results", *STATE_FOLDERS}
        return sorted(path.relative_to(ROOT) for path in ROOT.rglob("*")
                      if path.is_file() and not skipped & set(path.relative_to(ROOT).parts[:-1]))


def users_own_data(rng: np.random.Generator, count: int) -> str:
    """Return CSV text of another schema than the samples': customer_id, tenure, fee, region, churned yes/no."""
    tenure = rng.integers(1, 72, count)
    fee = np.round(rng.uniform(10, 120, count), 2)
    region = rng.choice(["north", "south", "east"], count)
    churned = rng.random(count) < 1 / (1 + np.exp(0.05 * tenure - 0.02 * fee))
    rows = [f"c{rng.integers(10**8)},{t},{f},{r},{'yes' if c else 'no'}" for t, f, r, c in zip(tenure, fee, region, churned)]
    return "customer_id,tenure_months,monthly_fee,region,churned\n" + "\n".join(rows) + "\n"


def state_of(checkout: Path) -> dict[str, list[str]]:
    return {folder: sorted(str(p.relative_to(checkout)) for p in (checkout / folder).rglob("*"))
            for folder in STATE_FOLDERS}


@pytest.mark.slow
def test_a_users_own_setup_neither_breaks_the_tests_nor_hears_from_them(tmp_path):
    """A checkout adapted as the README says (own data of another schema, alerts by webhook and SMTP,
    an API token) whose user's shell sets CHURN_CONFIG, the secrets, a proxy and a PyPI mirror: the
    tests pass in it, and not one connection reaches the user's receivers."""
    checkout = tmp_path / "checkout"
    for name in checkout_files():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, checkout / name)
    for folder in ("sourcedata", "testdata"):
        shutil.rmtree(checkout / folder, ignore_errors=True)
        (checkout / folder).mkdir()
    rng = np.random.default_rng(15)
    (checkout / "sourcedata" / "customers_2026_01.csv").write_text(users_own_data(rng, 200))
    (checkout / "testdata" / "holdout.csv").write_text(users_own_data(rng, 100))
    http, smtp = HttpRecorder(), SmtpRecorder()
    try:
        config = {
            "schema": {"target": "churned", "id_columns": ["customer_id"]},
            "api": {"url": http.url, "token_env": USER_TOKEN},
            "alerts": {"webhook": {"url": http.url + "/hooks/acme"},
                       "email": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "user": "acme",
                                 "password_env": USER_PASSWORD, "sender": "churn@acme.example",
                                 "recipients": ["ops@acme.example"]}},
        }
        (checkout / "config.json").write_text(json.dumps(config, indent=2))
        users_metrics = tmp_path / "users_metrics"
        users_metrics.mkdir()
        shell = {**os.environ, "CHURN_CONFIG": str(checkout / "config.json"), USER_TOKEN: "acme-token",
                 USER_PASSWORD: "acme-password", "CHURN_TEST_TOKEN": "the user's own", "CHURN_SMTP_PASSWORD": "theirs",
                 "CHURN_PYPI_URL": http.url, "CHURN_API_BIND": http.url.removeprefix("http://"),
                 "PROMETHEUS_MULTIPROC_DIR": str(users_metrics), "http_proxy": http.url, "HTTPS_PROXY": http.url}
        # The receivers hear the user's set-up when it speaks: a leak would be seen.
        probe = subprocess.run([sys.executable, "fullprocess.py", "--test-alert"], cwd=checkout, env=shell,
                               capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert [request.endswith("/hooks/acme") for request in http.requests] == [True], http.requests  # (by the proxy)
        assert smtp.received == ["login acme", "message to ['ops@acme.example']"]
        http.requests.clear()
        http.connections = 0
        smtp.received.clear()
        before = state_of(checkout)

        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "--basetemp", str(tmp_path / "inner"), *SUBSET],
                                cwd=checkout, env=shell, capture_output=True, text=True, timeout=900)
    finally:
        http.stop()
        smtp.stop()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(rf"\b{len(SUBSET)} passed\b", result.stdout) and "skipped" not in result.stdout, result.stdout[-2000:]
    assert (http.requests, http.connections, smtp.received) == ([], 0, [])
    assert json.loads((checkout / "config.json").read_text()) == config
    assert state_of(checkout) == before  # nothing written into the user's folders
    assert list(users_metrics.iterdir()) == []
