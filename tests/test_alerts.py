"""Alerts: once when a condition starts, once when it clears; a real SMTP server and a real webhook receiver."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from email import message_from_bytes
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from churnlib.alerts import transitions
from churnlib.config import ALERT_EVENTS
from helpers import ROOT, SAMPLE_LATER, base_config, batch, free_port


# --- real receivers, started and stopped by the tests ------------------------------------------


class Webhook:
    """An HTTP receiver on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self, port: int | None = None, *, status: int = 200):
        self.bodies: list[dict] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/B000/secret"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Smtp:
    """An SMTP server on 127.0.0.1 (aiosmtpd) that keeps every message it receives."""

    def __init__(self, *, tls_context=None, credentials=None):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages = []
        smtp = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                smtp.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
                return "250 OK"

        def authenticate(server, session, envelope, mechanism, auth_data):
            ok = credentials is not None and (auth_data.login.decode(), auth_data.password.decode()) == credentials
            return AuthResult(success=ok, handled=False)

        options = {}
        if tls_context is not None:
            options.update(tls_context=tls_context, require_starttls=True)
        if credentials is not None:
            options.update(authenticator=authenticate, auth_require_tls=tls_context is not None)
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **options)
        self.controller.start()

    def stop(self):
        self.controller.stop()


@pytest.fixture
def webhook():
    receiver = Webhook()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp():
    server = Smtp()
    yield server
    server.stop()


def alert_config(*, webhook_url=None, smtp_port=None, **alerts):
    section = dict(alerts)
    if webhook_url:
        section["webhook"] = {"url": webhook_url}
    if smtp_port:
        section["email"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none",
                            "sender": "churn@example.com", "recipients": ["team@example.com", "oncall@example.com"]}
    return base_config(alerts=section)


# --- the once-per-condition rule, on run lines ---------------------------------------------------


def run_line(decision="nothing_new", **keys):
    return {"decision": decision, "reason": keys.pop("reason", decision), **keys}


FEATURE_DRIFT = {"tested": True, "drift": True, "new_rows": 400, "reference_rows": 790, "files": ["d3.csv"],
                 "features": [{"feature": "plan", "test": "chi2", "statistic": 80.0, "effect": 0.26,
                               "p_adjusted": 1e-17, "drifted": True},
                              {"feature": "age", "test": "ks", "statistic": 0.02, "effect": 0.02,
                               "p_adjusted": 0.9, "drifted": False}]}
NO_FEATURE_DRIFT = {**FEATURE_DRIFT, "drift": False,
                    "features": [{**row, "drifted": False} for row in FEATURE_DRIFT["features"]]}


def replay(lines, events=ALERT_EVENTS):
    """Return the alerts of each run line in turn, carrying the active conditions along."""
    active, raised = {}, []
    for index, line in enumerate(lines):
        alerts, active = transitions(line, active, events=events, started_at=f"t{index}")
        raised.append([(alert.key, alert.status) for alert in alerts])
    return raised, active


def test_a_condition_alerts_when_it_starts_and_once_when_it_clears_not_while_it_lasts():
    drifted = run_line("retrained_refused", data_drift=FEATURE_DRIFT, policy={"metric": "f1", "reason": "policy x"},
                       candidate={"scores": {"f1": 0.5, "rows": 300}}, deployed_on_test={"scores": {"f1": 0.6}})
    raised, active = replay([drifted, drifted, run_line(), drifted,
                             run_line("no_drift", data_drift=NO_FEATURE_DRIFT)])
    assert raised == [
        [("drift:features", "started"), ("refused", "started")],
        [],
        [],  # an idle tick looks at neither condition: both last
        [],
        [("drift:features", "cleared"), ("refused", "cleared")],
    ]
    assert active == {}


def test_drift_a_deploy_answered_on_the_same_tick_is_one_alert_that_says_so():
    answered = run_line("retrained_deployed", data_drift=FEATURE_DRIFT, retrain_reason=["feature_drift"],
                        deployed_release_after="r2", policy={"metric": "f1", "reason": "policy x"},
                        candidate={"scores": {"f1": 0.6, "rows": 300}})
    again = run_line("retrained_refused", data_drift=FEATURE_DRIFT, retrain_reason=["feature_drift"],
                     policy={"metric": "f1", "reason": "policy x"}, candidate={"scores": {"f1": 0.5, "rows": 300}})
    raised, active = replay([answered, run_line(), again])
    assert raised[0] == [("drift:features", "started"), ("deployed:r2", "notice")]
    assert raised[1] == []  # the idle tick after: nothing active, nothing to clear
    assert ("drift:features", "started") in raised[2]  # drift again: a new alert
    assert "drift:features" in active
    alerts, _ = transitions(answered, {}, events=("drift",), started_at="t0")
    assert [(a.key, a.status) for a in alerts] == [("drift:features", "started")]
    assert alerts[0].fields["answered_by"] == "r2" and "Answered on this tick: release r2 deployed" in alerts[0].text


def test_drift_that_lasted_until_a_deploy_answered_it_gets_a_cleared_alert_naming_the_release():
    refused = run_line("retrained_refused", data_drift=FEATURE_DRIFT, retrain_reason=["feature_drift"],
                       policy={"metric": "f1", "reason": "policy x"}, candidate={"scores": {"f1": 0.5, "rows": 300}})
    deployed = run_line("retrained_deployed", data_drift=FEATURE_DRIFT, retrain_reason=["feature_drift"],
                        deployed_release_after="r3", policy={"metric": "f1", "reason": "policy x"},
                        candidate={"scores": {"f1": 0.6, "rows": 300}})
    active, raised = {}, []
    for index, line in enumerate([refused, deployed, run_line("no_drift", data_drift=NO_FEATURE_DRIFT)]):
        found, active = transitions(line, active, events=("drift",), started_at=f"t{index}")
        raised.append(found)
    assert [(a.key, a.status) for a in raised[0]] == [("drift:features", "started")]
    assert [(a.key, a.status) for a in raised[1]] == [("drift:features", "cleared")]
    cleared = raised[1][0]
    assert cleared.fields["answered_by"] == "r3" and "release r3 deployed" in cleared.text
    assert cleared.fields["since"] == "t0" and raised[2] == [] and active == {}


def test_a_failing_tick_alerts_once_and_the_first_tick_that_succeeds_clears_it():
    failed = run_line("failed", reason="ingesteddata/ingestion_record.json: not valid JSON")
    raised, _ = replay([failed, failed, failed, run_line(), run_line()])
    assert raised == [[("tick_failed", "started")], [], [], [("tick_failed", "cleared")], []]


def test_a_rejected_file_alerts_once_and_clears_when_a_file_of_that_name_is_accepted():
    rejected = run_line("no_new_rows", ingest={"rejected": [{"name": "b.csv", "reason": "empty file"}], "accepted": []})
    accepted = run_line("waiting_for_rows", ingest={"rejected": [], "accepted": [{"name": "b.csv", "rows_added": 3}]})
    raised, _ = replay([rejected, run_line(), accepted])
    assert raised == [[("file_rejected:b.csv", "started")], [], [("file_rejected:b.csv", "cleared")]]


def test_each_deploy_is_a_notice_with_both_scores_and_an_unanswering_api_alerts_until_it_answers():
    deploy = run_line("retrained_deployed", deployed_release_after="r2", deployed_release_before="r1",
                      candidate={"release_id": "r2", "scores": {"f1": 0.68, "rows": 300}},
                      deployed_on_test={"release_id": "r1", "scores": {"f1": 0.65}},
                      policy={"metric": "f1", "reason": "policy not_worse"},
                      api={"running": False, "summary": "not running (refused)"})
    answered = {**deploy, "deployed_release_after": "r3", "api": {"running": True, "serving": "r3", "failed": []}}
    active, alerts = {}, []
    for index, line in enumerate([deploy, answered]):
        found, active = transitions(line, active, events=ALERT_EVENTS, started_at=f"t{index}")
        alerts.append(found)
    assert [(a.key, a.status) for a in alerts[0]] == [("api_down", "started"), ("deployed:r2", "notice")]
    notice = alerts[0][1]
    assert "candidate f1 0.6800, release r1 0.6500 on the same 300 test rows" in notice.text
    assert notice.fields["candidate"] == 0.68 and notice.fields["deployed"] == 0.65
    assert [(a.key, a.status) for a in alerts[1]] == [("api_down", "cleared"), ("deployed:r3", "notice")]


def test_only_the_events_the_user_picks_alert():
    failed = run_line("failed")
    drifted = run_line("no_drift", data_drift=FEATURE_DRIFT)
    raised, active = replay([failed, drifted], events=("drift",))
    assert raised == [[], [("drift:features", "started")]]
    assert set(active) == {"drift:features"}


def test_score_drift_alert_carries_the_intervals_and_the_alarm_threshold_when_the_run_line_has_them():
    check = {"checked": True, "drift": True, "metric": "f1", "new_score": 0.41, "new_score_ci": [0.33, 0.49],
             "baseline": 0.6, "baseline_ci": [0.57, 0.63], "alarm_below": 0.5, "rows": 120, "reason": "significant drop"}
    alerts, _ = transitions(run_line("retrained_deployed", score_drift=check), {}, events=("drift",), started_at="t")
    assert alerts[0].key == "drift:score"
    assert "f1 0.410 (95% CI 0.330-0.490) on 120 new rows, against 0.600 (95% CI 0.570-0.630) expected" in alerts[0].text
    assert "below 0.500" in alerts[0].text and alerts[0].fields["alarm_below"] == 0.5


# --- real ticks, real receivers ----------------------------------------------------------------


def test_drift_and_deploy_reach_the_smtp_server_and_the_webhook_once(deployed, smtp, webhook):
    deployed.write_config(alert_config(webhook_url=webhook.url, smtp_port=smtp.port))
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0
    assert deployed.last_run()["decision"] == "retrained_deployed"
    titles = [body["title"] for body in webhook.bodies]
    assert titles[0].startswith("feature drift: 3 of 4 features drifted")
    assert any(t.startswith("deployed release ") for t in titles)
    drift = webhook.bodies[0]
    assert drift["status"] == "started" and drift["event"] == "drift" and drift["condition"] == "drift:features"
    assert "lastmonth_activity: KS D = 0.4" in drift["text"]  # Slack-style receivers show text
    assert set(drift["fields"]["drifted_features"]) >= {"lastmonth_activity", "plan"}
    assert len(smtp.messages) == len(webhook.bodies)
    sender, recipients, message = smtp.messages[0]
    assert sender == "churn@example.com" and recipients == ["team@example.com", "oncall@example.com"]
    assert message["Subject"].startswith("churn [project]: feature drift")
    assert "lastmonth_activity" in message.get_payload()
    assert not (deployed.logs / "alerts_outbox.json").exists()

    count = len(webhook.bodies)
    assert deployed.tick() == 0  # nothing new: nothing to say
    assert len(webhook.bodies) == count and len(smtp.messages) == count


def test_an_alert_that_cannot_be_sent_waits_in_the_outbox_and_goes_out_with_a_later_tick(deployed):
    port = free_port()  # nothing listens there yet
    deployed.write_config(alert_config(webhook_url=f"http://127.0.0.1:{port}/hook"))
    deployed.add_source("broken.csv", "corporation;exited\nx;1\n")
    assert deployed.tick() == 0
    outbox = json.loads((deployed.logs / "alerts_outbox.json").read_text())["items"]
    assert [item["alert"]["title"] for item in outbox] == ["file rejected: broken.csv"]
    assert outbox[0]["attempts"] == 1 and "refused" in outbox[0]["last_error"].lower()
    assert "wait in" in deployed.log() and "/hook" not in deployed.log()  # the URL's path may be a secret

    assert deployed.tick() == 0  # the receiver is still down: the alert stays, once
    assert len(json.loads((deployed.logs / "alerts_outbox.json").read_text())["items"]) == 1

    receiver = Webhook(port)
    try:
        assert deployed.tick() == 0  # an idle tick delivers it
    finally:
        receiver.stop()
    assert [body["title"] for body in receiver.bodies] == ["file rejected: broken.csv"]
    assert "seems to use ';' as delimiter" in receiver.bodies[0]["text"]
    assert not (deployed.logs / "alerts_outbox.json").exists()


def test_a_webhook_that_never_answers_does_not_stall_the_tick(deployed):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts into the backlog, never replies
    try:
        deployed.write_config(alert_config(webhook_url=f"http://127.0.0.1:{silent.getsockname()[1]}/",
                                           timeout_seconds=0.5))
        deployed.add_source("broken.csv", "a,b\n1,2\n")
        assert deployed.tick() == 0
    finally:
        silent.close()
    item = json.loads((deployed.logs / "alerts_outbox.json").read_text())["items"][0]
    assert "alerts.timeout_seconds=0.5" in item["last_error"] or "timed out" in item["last_error"]


def test_a_failed_tick_alerts_once_and_the_next_good_tick_says_it_cleared(deployed, webhook):
    deployed.write_config(alert_config(webhook_url=webhook.url))
    record = deployed.ingested / "ingestion_record.json"
    good = record.read_text()
    record.write_text("{broken")
    assert deployed.tick() == 1
    assert deployed.tick() == 1
    record.write_text(good)
    assert deployed.tick() == 0
    assert [(b["event"], b["status"]) for b in webhook.bodies] == [("tick_failed", "started"), ("tick_failed", "cleared")]
    assert "not valid JSON" in webhook.bodies[0]["text"]
    assert "2 tick(s)" in webhook.bodies[1]["text"]


def test_an_api_that_stops_answering_after_a_deploy_alerts_and_one_never_run_does_not(deployed, webhook):
    import fullprocess

    config = alert_config(webhook_url=webhook.url, events=["api_down"])
    config["api"] = {"url": f"http://127.0.0.1:{free_port()}", "reload_interval_seconds": 0.05}
    deployed.write_config(config)
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert fullprocess.main(["--config", str(deployed.config_path)]) == 0  # calls the API after the deploy
    assert webhook.bodies == []  # no API ever answered here: a set-up without one is not pestered

    state = json.loads((deployed.logs / "alert_state.json").read_text()) if (deployed.logs / "alert_state.json").exists() else {}
    state["api_answered"] = True  # as after a deploy the API answered
    (deployed.logs / "alert_state.json").write_text(json.dumps(state))
    deployed.add_source("flipped.csv", batch(102, flip_labels=True))
    deployed.write_config({**config, "deployment": {"policy": "always"}})
    assert fullprocess.main(["--config", str(deployed.config_path)]) == 0
    assert deployed.last_run()["decision"] == "retrained_deployed"
    assert [(b["event"], b["status"]) for b in webhook.bodies] == [("api_down", "started")]
    assert "did not answer" in webhook.bodies[0]["title"]


def test_starttls_and_a_password_from_the_environment(deployed, tmp_path, monkeypatch):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this test's certificate, and only it
    monkeypatch.setenv("CHURN_SMTP_PASSWORD", "s3cret")
    server = Smtp(tls_context=context, credentials=("churn", "s3cret"))
    try:
        config = alert_config(smtp_port=server.port)
        config["alerts"]["email"].update(security="starttls", user="churn", password_env="CHURN_SMTP_PASSWORD")
        deployed.write_config(config)
        deployed.add_source("broken.csv", "a,b\n1,2\n")
        assert deployed.tick() == 0
        monkeypatch.setenv("CHURN_SMTP_PASSWORD", "wrong")
        deployed.add_source("broken2.csv", "a,b\n3,4\n")
        assert deployed.tick() == 0
    finally:
        server.stop()
    assert [m[2]["Subject"] for m in server.messages] == ["churn [project]: file rejected: broken.csv"]
    item = json.loads((deployed.logs / "alerts_outbox.json").read_text())["items"][0]
    assert item["alert"]["title"] == "file rejected: broken2.csv" and "535" in item["last_error"]


def test_test_alert_reports_each_channel(deployed, webhook):
    deployed.write_config(alert_config(webhook_url=webhook.url, smtp_port=free_port()))
    result = subprocess.run([sys.executable, "fullprocess.py", "--config", str(deployed.config_path), "--test-alert"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert "webhook: sent" in result.stdout and "email: SMTP 127.0.0.1" in result.stdout
    assert webhook.bodies[0]["title"] == "test alert"


def test_an_idle_tick_with_alerts_configured_stays_light(deployed, webhook):
    deployed.write_config(alert_config(webhook_url=webhook.url, smtp_port=free_port()))
    code = (
        "import sys, fullprocess\n"
        f"status = fullprocess.main(['--config', {str(deployed.config_path)!r}, '--no-api'])\n"
        "print(sorted(m for m in ('pandas', 'numpy', 'smtplib', 'ssl', 'urllib.request') if m in sys.modules))\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_example_receiver_prints_each_alert(deployed):
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "examples/webhook_receiver.py", "--port", str(port)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert "waiting for alerts" in receiver.stdout.readline()
        deployed.write_config(alert_config(webhook_url=f"http://127.0.0.1:{port}/"))
        deployed.add_source("broken.csv", "a,b\n1,2\n")
        assert deployed.tick() == 0
    finally:
        receiver.terminate()
        output = receiver.communicate(timeout=30)[0]
    assert "--- started file_rejected" in output and "file rejected: broken.csv" in output


def test_a_refused_model_alerts_with_both_scores(deployed, webhook):
    config = alert_config(webhook_url=webhook.url, events=["refused"])
    config["deployment"] = {"policy": "better", "tolerance": 0.5}
    deployed.write_config(config)
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0
    assert deployed.last_run()["decision"] == "retrained_refused"
    [alert] = webhook.bodies
    assert (alert["event"], alert["status"], alert["title"]) == ("refused", "started", "a retrained model was refused")
    assert "policy better" in alert["text"] and alert["fields"]["candidate"] > 0 and alert["fields"]["deployed"] > 0


def test_a_rejected_customer_file_alerts_once_and_clears_when_it_is_scored():
    rejected = run_line(scoring={"files": [], "rejected": [{"name": "today.csv", "reason": "binary data"}]})
    scored = run_line(scoring={"files": [{"name": "today.csv", "rows": 10}], "rejected": []})
    raised, active = replay([rejected, rejected, scored])
    assert raised == [[("file_rejected:customers/today.csv", "started")], [],
                      [("file_rejected:customers/today.csv", "cleared")]]
    assert active == {}


# --- hostile file names and refused messages ---------------------------------------------------


class RefusingSmtp(Smtp):
    """An SMTP server that refuses (554) every message whose subject holds ``word``, and keeps the others."""

    def __init__(self, word: str):
        super().__init__()
        self.refused = 0
        original = self.controller.handler.handle_DATA
        smtp = self

        async def handle_DATA(server, session, envelope):  # noqa: N802 (aiosmtpd's name)
            if word in message_from_bytes(envelope.content)["Subject"]:
                smtp.refused += 1
                return "554 5.6.0 message refused"
            return await original(server, session, envelope)

        self.controller.handler.handle_DATA = handle_DATA


CUSTOMERS = "corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan\nc1,10,200,5,basic\n"
NEWLINE_NAME = "x\nBcc: attacker@evil.example\nX-Injected: yes.csv"


@pytest.mark.parametrize("name, shown", [(os.fsencode(NEWLINE_NAME), "x\\nBcc: attacker@evil.example\\nX-Injected: yes.csv"),
                                         (b"caf\xe9.csv", "caf\\xe9.csv")], ids=["newline", "latin1"])
def test_a_file_name_with_a_line_break_or_bytes_not_utf8_blocks_no_alert_and_forges_no_line(deployed, smtp, capfd,
                                                                                            name, shown):
    deployed.write_config(alert_config(smtp_port=smtp.port))
    folder = deployed.root / "scoringdata"
    folder.mkdir(exist_ok=True)
    (folder / "bad.csv").write_text("a;b\n1;2\n")
    with open(os.path.join(os.fsencode(folder), name), "w") as handle:
        handle.write(CUSTOMERS)
    assert deployed.tick() == 0
    subjects = sorted(message["Subject"].replace("\r\n", "") for _, _, message in smtp.messages)
    assert subjects == ["churn [project]: customer file rejected: bad.csv",
                        f"churn [project]: customer file rejected: {shown}"]
    assert all(message["Bcc"] is None and message["X-Injected"] is None for _, _, message in smtp.messages)
    assert not (deployed.logs / "alerts_outbox.json").exists()
    assert deployed.tick() == 0  # sent once, never again
    assert len(smtp.messages) == 2
    log = deployed.log()
    assert f"alert started: customer file rejected: {shown}" in log
    assert all(line[:4].isdigit() or line.startswith(" ") for line in log.splitlines())  # no forged line
    assert "Logging error" not in capfd.readouterr().err
    state = json.loads((deployed.logs / "alert_state.json").read_text())
    assert f"file_rejected:customers/{shown}" in state["active"]
    assert json.dumps(deployed.runs()).encode("utf-8").decode("ascii")  # no lone surrogate in the run lines
    assert shown.replace("\\", "\\\\") in (deployed.logs / "runs.jsonl").read_text()
    page = (deployed.logs / "dashboard.html").read_text(encoding="utf-8")
    assert f"customer file rejected: {shown}" in page


def test_a_message_the_server_refuses_goes_aside_after_three_tries_and_blocks_no_other(deployed, capfd):
    server = RefusingSmtp("poison")
    try:
        deployed.write_config(alert_config(smtp_port=server.port))
        folder = deployed.root / "scoringdata"
        folder.mkdir(exist_ok=True)
        (folder / "poison.csv").write_text("a;b\n1;2\n")
        assert deployed.tick() == 0
        (folder / "later.csv").write_text("a;b\n1;2\n")  # an alert queued behind the refused one
        assert deployed.tick() == 0
        outbox = json.loads((deployed.logs / "alerts_outbox.json").read_text())["items"]
        assert [(item["alert"]["title"], item["refusals"]) for item in outbox] == [("customer file rejected: poison.csv", 2)]
        assert "554 5.6.0 message refused" in outbox[0]["last_error"]
        assert 'alerts: email: "customer file rejected: poison.csv" refused (2 of 3 before it is set aside)' in deployed.log()
        assert deployed.tick() == 0
        assert deployed.tick() == 0  # nothing left to try
    finally:
        server.stop()
    assert server.refused == 3
    assert [message["Subject"] for _, _, message in server.messages] == ["churn [project]: customer file rejected: later.csv"]
    assert not (deployed.logs / "alerts_outbox.json").exists()
    [aside] = json.loads((deployed.logs / "alerts_undeliverable.json").read_text())["items"]
    assert aside["alert"]["title"] == "customer file rejected: poison.csv"
    assert ('alerts: email: "customer file rejected: poison.csv" refused 3 times (SMTP 127.0.0.1'
            in deployed.log())
    assert "moved aside to" in capfd.readouterr().err  # cron.log says so too


def test_an_alert_sent_before_the_channel_stalled_is_recorded_as_sent_and_not_sent_again(deployed, smtp):
    import asyncio
    from dataclasses import asdict

    from churnlib.alerts import Alert, process_alerts

    deployed.write_config(alert_config(smtp_port=smtp.port, timeout_seconds=1))
    item = {"channel": "email", "attempts": 0, "queued_at": "t"}
    alerts = [Alert("k1", "tick_failed", "started", "first", "body"), Alert("k2", "tick_failed", "started", "second", "")]
    (deployed.logs / "alerts_outbox.json").write_text(json.dumps({"items": [{**item, "alert": asdict(a)} for a in alerts]}))
    original = smtp.controller.handler.handle_DATA

    async def stall_on_the_second(server, session, envelope):  # noqa: N802
        if "second" in message_from_bytes(envelope.content)["Subject"]:
            await asyncio.sleep(3)  # past alerts.timeout_seconds: the tick moves on
            return "451 try again later"
        return await original(server, session, envelope)

    smtp.controller.handler.handle_DATA = stall_on_the_second
    process_alerts(deployed.config(), {"decision": "nothing_new"})
    assert [m["Subject"] for _, _, m in smtp.messages] == ["churn: first"]
    outbox = json.loads((deployed.logs / "alerts_outbox.json").read_text())["items"]
    assert [i["alert"]["title"] for i in outbox] == ["second"]
    assert "alerts.timeout_seconds=1" in outbox[0]["last_error"]
    smtp.controller.handler.handle_DATA = original
    process_alerts(deployed.config(), {"decision": "nothing_new"})
    assert [m["Subject"] for _, _, m in smtp.messages] == ["churn: first", "churn: second"]


def test_a_rejected_file_that_is_deleted_clears_its_condition(deployed, webhook):
    deployed.write_config(alert_config(webhook_url=webhook.url))
    for index in range(3):
        deployed.add_source(f"bad{index}.csv", "a;b\n1;2\n")
    (deployed.root / "scoringdata" / "today.csv").write_text("a;b\n1;2\n")
    assert deployed.tick() == 0
    state = json.loads((deployed.logs / "alert_state.json").read_text())["active"]
    assert sorted(state) == ["file_rejected:bad0.csv", "file_rejected:bad1.csv", "file_rejected:bad2.csv",
                             "file_rejected:customers/today.csv"]
    for index in range(2):
        (deployed.source / f"bad{index}.csv").unlink()
    (deployed.root / "scoringdata" / "today.csv").unlink()
    webhook.bodies.clear()
    assert deployed.tick() == 0  # an idle tick notices
    assert sorted((b["status"], b["title"]) for b in webhook.bodies) == [
        ("cleared", "cleared: bad0.csv is gone"), ("cleared", "cleared: bad1.csv is gone"),
        ("cleared", "cleared: customer file today.csv is gone")]
    assert list(json.loads((deployed.logs / "alert_state.json").read_text())["active"]) == ["file_rejected:bad2.csv"]
    assert "alert cleared: bad0.csv is gone" in deployed.log()
    assert "cleared: cleared" not in deployed.log()
    assert deployed.tick() == 0
    assert len(webhook.bodies) == 3  # said once


def test_a_condition_whose_file_is_gone_clears_and_one_still_there_stays():
    rejected = run_line(ingest={"rejected": [{"name": "bad7.csv", "reason": "binary"}, {"name": "kept.csv", "reason": "x"}]})
    alerts, active = transitions(rejected, {}, events=ALERT_EVENTS, started_at="t0")
    assert len(alerts) == 2
    present = {"labelled": {"kept.csv"}, "customers": set()}
    alerts, active = transitions(run_line(), active, events=ALERT_EVENTS, started_at="t1", present=present)
    assert [(a.key, a.status, a.title) for a in alerts] == [("file_rejected:bad7.csv", "cleared", "cleared: bad7.csv is gone")]
    assert "file_rejected:bad7.csv" not in active and "file_rejected:kept.csv" in active


def test_slack_markup_in_a_file_name_is_escaped_in_the_text_a_channel_shows(deployed, webhook):
    deployed.write_config(alert_config(webhook_url=webhook.url))
    deployed.add_source("<!channel> & <mailto:x@evil.example|click>.csv", "a;b\n1;2\n")
    assert deployed.tick() == 0
    [body] = webhook.bodies
    assert body["text"].startswith("file rejected: &lt;!channel&gt; &amp; &lt;mailto:x@evil.example|click&gt;.csv")
    assert "<" not in body["text"] and ">" not in body["text"]
    assert body["title"] == "file rejected: <!channel> & <mailto:x@evil.example|click>.csv"  # for programs, as is


def test_an_outbox_over_its_bound_drops_the_oldest_once_and_says_what_waits(deployed):
    from dataclasses import asdict

    from churnlib.alerts import MAX_OUTBOX_ITEMS, Alert

    deployed.write_config(alert_config(webhook_url=f"http://127.0.0.1:{free_port()}/hook"))  # nobody listens
    old = [{"channel": "webhook", "alert": asdict(Alert(f"k{i}", "tick_failed", "started", f"old {i}", "")),
            "attempts": 1, "queued_at": "t"} for i in range(MAX_OUTBOX_ITEMS)]
    (deployed.logs / "alerts_outbox.json").write_text(json.dumps({"items": old}))
    deployed.add_source("broken.csv", "a;b\n1;2\n")
    assert deployed.tick() == 0
    log = deployed.log()
    assert log.count("dropped the") == 1
    assert f"dropped the 1 oldest, {MAX_OUTBOX_ITEMS} kept (webhook: old 0)" in log
    assert f"{MAX_OUTBOX_ITEMS} alert(s) wait in" in log
    items = json.loads((deployed.logs / "alerts_outbox.json").read_text())["items"]
    assert len(items) == MAX_OUTBOX_ITEMS and items[-1]["alert"]["title"] == "file rejected: broken.csv"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_webhook_that_redirects_is_a_failed_delivery_naming_the_new_address(deployed, status):
    gets = []  # urllib followed a 301/302/303 with a GET without the alert, answered 200: "sent"

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(status)
            self.send_header("Location", "/moved/secret")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            gets.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_port
        deployed.write_config(alert_config(webhook_url=f"http://127.0.0.1:{port}/hooks/secret"))
        deployed.add_source("broken.csv", "a;b\n1;2\n")
        assert deployed.tick() == 0
        result = subprocess.run([sys.executable, "fullprocess.py", "--config", str(deployed.config_path), "--test-alert"],
                                capture_output=True, text=True, cwd=ROOT, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    [item] = json.loads((deployed.logs / "alerts_outbox.json").read_text())["items"]
    assert item["last_error"].startswith(f"webhook http://127.0.0.1:{port}/...: HTTP {status} ")
    assert f"redirects to http://127.0.0.1:{port}/...; an alert is not sent on" in item["last_error"]
    assert "secret" not in item["last_error"] and "secret" not in deployed.log()
    assert not gets  # nothing followed the redirect
    assert result.returncode == 1 and "webhook: sent" not in result.stdout
    assert f"HTTP {status}" in result.stdout


def test_state_and_run_lines_an_older_version_wrote_with_a_latin1_name_no_longer_stop_the_page(deployed, webhook):
    """Before the fix the raw name (a lone surrogate) in alert_state.json and runs.jsonl stopped the page for good."""
    deployed.write_config(alert_config(webhook_url=webhook.url))
    raw = "caf\udce9.csv"
    (deployed.logs / "alert_state.json").write_text(json.dumps({"active": {f"file_rejected:{raw}": {
        "event": "file_rejected", "since": "2026-01-01T00:00:00Z", "ticks": 1, "title": f"file rejected: {raw}"}}}))
    line = {**deployed.last_run(), "decision": "no_new_rows",
            "ingest": {"accepted": [], "rejected": [{"name": raw, "reason": "the file name is not printable"}]}}
    with open(deployed.logs / "runs.jsonl", "a") as handle:
        handle.write(json.dumps(line) + "\n")
    (deployed.logs / "dashboard.html").unlink()
    assert deployed.tick() == 0
    page = (deployed.logs / "dashboard.html").read_text(encoding="utf-8")
    assert "caf\\xe9.csv rejected" in page
    assert json.loads((deployed.logs / "alert_state.json").read_text())["active"] == {}
    assert [body["title"] for body in webhook.bodies] == ["cleared: caf\\xe9.csv is gone"]


def test_a_webhook_that_refuses_one_alerts_body_takes_the_others_and_that_one_goes_aside(deployed):
    receiver = Webhook()  # made to answer 400 (Slack's invalid_payload) to a body naming poison.csv
    handler = receiver.server.RequestHandlerClass
    original = handler.do_POST

    def do_post(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if b"poison.csv" in body:
            self.send_response(400)
            self.send_header("Content-Length", "15")
            self.end_headers()
            self.wfile.write(b"invalid_payload")
            return
        receiver.bodies.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    handler.do_POST = do_post
    try:
        deployed.write_config(alert_config(webhook_url=receiver.url))
        deployed.add_source("poison.csv", "a;b\n1;2\n")
        deployed.add_source("zzz.csv", "a;b\n1;2\n")  # its alert comes after the refused one
        for _ in range(3):
            assert deployed.tick() == 0
    finally:
        handler.do_POST = original
        receiver.stop()
    assert [body["title"] for body in receiver.bodies] == ["file rejected: zzz.csv"]
    assert not (deployed.logs / "alerts_outbox.json").exists()
    [aside] = json.loads((deployed.logs / "alerts_undeliverable.json").read_text())["items"]
    assert aside["alert"]["title"] == "file rejected: poison.csv" and "HTTP 400" in aside["last_error"]


def test_a_server_that_says_try_again_later_keeps_the_alert_in_the_outbox_until_it_takes_it(deployed, smtp):
    from dataclasses import asdict

    from churnlib.alerts import MAX_ITEM_FAILURES, Alert, process_alerts

    deployed.write_config(alert_config(smtp_port=smtp.port))
    alert = Alert("k1", "tick_failed", "started", "first", "body")
    item = {"channel": "email", "attempts": 0, "queued_at": "t", "alert": asdict(alert)}
    (deployed.logs / "alerts_outbox.json").write_text(json.dumps({"items": [item]}))
    original = smtp.controller.handler.handle_DATA

    async def busy(server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        return "451 4.3.0 mail server busy, try again later"  # a 4xx: the message is fine, the server is not

    smtp.controller.handler.handle_DATA = busy
    for _ in range(MAX_ITEM_FAILURES + 1):
        process_alerts(deployed.config(), {"decision": "nothing_new"})
    assert not (deployed.logs / "alerts_undeliverable.json").exists()
    [waiting] = json.loads((deployed.logs / "alerts_outbox.json").read_text())["items"]
    assert "451" in waiting["last_error"]
    smtp.controller.handler.handle_DATA = original
    process_alerts(deployed.config(), {"decision": "nothing_new"})
    assert [m["Subject"] for _, _, m in smtp.messages] == ["churn: first"]
    assert not (deployed.logs / "alerts_outbox.json").exists()


def test_an_encoded_word_in_a_file_name_adds_no_header_and_no_recipient(deployed, smtp):
    # The mail library decodes RFC 2047 encoded words in a header it is given, line breaks included, and
    # (before Python 3.11.10) writes them out raw: any header (Bcc, Reply-To) forged by a file's name.
    name = "=?utf-8?q?=0ABcc:_attacker@evil.example?=.csv"
    deployed.write_config(alert_config(smtp_port=smtp.port))
    folder = deployed.root / "scoringdata"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("a;b\n1;2\n")
    assert deployed.tick() == 0
    [(_, recipients, message)] = smtp.messages
    assert recipients == ["team@example.com", "oncall@example.com"]
    assert message["Bcc"] is None
    subject = str(make_header(decode_header(message["Subject"].replace("\r\n", ""))))
    assert "\n" not in subject and "utf-8" in subject and "evil.example" in subject
