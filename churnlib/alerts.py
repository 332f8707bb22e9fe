"""Alerts: an e-mail or a chat message when a condition starts, and once when it clears.

What a tick found (its line in ``logs/runs.jsonl``, as ``TickOutcome.to_json`` makes it) is turned
into the conditions it observed, each active or not; a tick that did not look at a condition
leaves it as it was. Against the conditions active before (``logs/alert_state.json``), a condition
that starts sends one alert, one that lasts sends nothing, one that ends sends one "cleared" alert.
A deploy is a notice of its own, one per deploy.

| event | condition (key) | observed by | active when |
|---|---|---|---|
| ``drift`` | ``drift:score``, ``drift:features`` | a tick that ran that check | the check found drift, until a check finds none, or a deploy (or a new normal) answers it (cleared then with ``answered_by``; found and answered on one tick: one alert, with ``answered_by``) |
| ``refused`` | ``refused`` | a tick that judged new rows or trained | the policy refused the retrained model |
| ``tick_failed`` | ``tick_failed`` | every tick that held the lock | the tick failed |
| ``tick_failed`` | ``report_failed`` | a deploy | the release was deployed without its report (building it failed) |
| ``file_rejected`` | ``file_rejected:<file name>``, ``file_rejected:customers/<file name>`` | a tick that read or refused that file (labelled, or of customers to score) | it was rejected (clears once a file of that name is accepted or scored) |
| ``api_down`` | ``api_down`` | a deploy that called the API | the API did not answer (once it has answered after an earlier deploy), answered with errors, or did not serve the new release |
| ``deployed`` | (a notice per deploy) | a deploy | always |

Delivery never fails or stalls the tick: new alerts are first written to the outbox
(``logs/alerts_outbox.json``, one item per alert and channel), then sent, all channels together
within ``alerts.timeout_seconds``; what was sent leaves the outbox, the rest is tried again by the
next tick, idle ticks included. A tick with an empty outbox pays a file-existence check for it.
smtplib, ssl and urllib are imported only to send.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from churnlib.clock import utc_now
from churnlib.columns import shown_lines, shown_name
from churnlib.config import AlertSettings, Config, EmailSettings, WebhookSettings
from churnlib.display import number
from churnlib.fsutil import atomic_write_json, read_json
from churnlib.runlog import ALERT_STATE_FILE, OUTBOX_FILE, UNDELIVERABLE_FILE

logger = logging.getLogger(__name__)

# An outbox that cannot be delivered for weeks must not grow without end: past this many items the
# oldest are dropped, with a warning naming them.
MAX_OUTBOX_ITEMS = 500
# An alert the receiver (or the mail library) refused this many times, while the channel itself
# worked, is moved aside to logs/alerts_undeliverable.json: it must not be retried for ever.
MAX_ITEM_FAILURES = 3
# Replies of a webhook that refuse one message's body (Slack: 400 invalid_payload), not the hook:
# the other alerts are sent on. Any other failure stops the channel until the next tick.
PAYLOAD_REFUSED = frozenset({400, 413, 415, 422})
MAX_FEATURES_LISTED = 10

STARTED, CLEARED, NOTICE = "started", "cleared", "notice"
# The key of a rejected file's condition: REJECTED + name, or REJECTED + CUSTOMERS + name for a
# file of customers to score (the name in its shown form).
REJECTED, CUSTOMERS = "file_rejected:", "customers/"


@dataclass
class Alert:
    """One message: what happened, in a line (``title``) and in words (``text``), and its figures."""

    key: str
    event: str
    status: str  # started, cleared or notice
    title: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=utc_now)
    project: str = ""
    host: str = ""
    id: str = field(default_factory=lambda: os.urandom(6).hex())

    def __post_init__(self) -> None:
        # File names and cell values reach the text: a line break or an undecodable byte must neither
        # forge a header or a log line nor make the mail library refuse the message (an outbox
        # written by an older version included).
        self.key, self.title = shown_name(self.key), shown_name(self.title)
        self.text = shown_lines(self.text)
        self.fields = _shown_values(self.fields)

    def full_text(self) -> str:
        return f"{self.title}\n{self.text}" if self.text else self.title

    def webhook_body(self) -> dict[str, Any]:
        """The JSON a webhook receives: ``text`` for Slack-style receivers, the rest for programs."""
        return {"text": slack_escaped(self.full_text()), "title": self.title, "event": self.event, "status": self.status,
                "condition": self.key, "at": self.at, "project": self.project, "host": self.host,
                "id": self.id, "fields": self.fields}


def _shown_values(value: Any) -> Any:
    if isinstance(value, str):
        return shown_name(value)
    if isinstance(value, dict):
        return {shown_name(str(k)): _shown_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shown_values(v) for v in value]
    return value


def slack_escaped(text: str) -> str:
    """Return ``text`` with ``&``, ``<`` and ``>`` escaped as Slack asks: a file name ``<!channel>.csv``
    must not notify a whole channel, nor ``<https://...|label>`` make a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class Observation:
    """A condition a tick looked at: whether it holds, and how to say so."""

    key: str
    event: str
    active: bool
    title: str = ""
    text: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


# --- what a tick observed ----------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".4f") -> str:
    return number(value, spec)


def _interval(values: Any) -> str:
    if isinstance(values, (list, tuple)) and len(values) == 2 and None not in values:
        return f" (95% CI {values[0]:.3f}-{values[1]:.3f})"
    return ""


def _score_observation(run: dict[str, Any]) -> Observation | None:
    check = run.get("score_drift")
    if not check or not check.get("checked"):
        return None
    metric = check.get("metric", "score")
    figures = {k: check.get(k) for k in ("metric", "new_score", "new_score_ci", "baseline", "baseline_ci",
                                         "alarm_below", "p_value", "max_drop", "rows", "drop") if k in check}
    if not check.get("drift"):
        return Observation("drift:score", "drift", False,
                           f"score check passes again: {metric} {_fmt(check.get('new_score'), '.3f')} "
                           f"on {check.get('rows')} new rows", check.get("reason", ""), figures)
    text = (f"{metric} {_fmt(check.get('new_score'), '.3f')}{_interval(check.get('new_score_ci'))} on "
            f"{check.get('rows')} new rows, against {_fmt(check.get('baseline'), '.3f')}"
            f"{_interval(check.get('baseline_ci'))} expected")
    if check.get("alarm_below") is not None:
        text += f"; the alarm is raised below {check['alarm_below']:.3f}"
    return Observation("drift:score", "drift", True, f"score drift: {metric} dropped on the new rows",
                       f"{text}.\n{check.get('reason', '')}", figures)


def _feature_observation(run: dict[str, Any]) -> Observation | None:
    drift = run.get("data_drift")
    if not drift or not drift.get("tested"):
        return None
    drifted = [row for row in drift.get("features", []) if row.get("drifted")]
    figures = {"new_rows": drift.get("new_rows"), "reference_rows": drift.get("reference_rows"),
               "files": drift.get("files"), "drifted_features": [row["feature"] for row in drifted],
               "features": [{k: row.get(k) for k in ("feature", "test", "statistic", "effect", "p_adjusted", "drifted")}
                            for row in drift.get("features", [])]}
    count = f"{len(drifted)} of {len(drift.get('features', []))} features"
    if not drift.get("drift"):
        return Observation("drift:features", "drift", False, f"feature drift over: {count} drifted in the latest new rows",
                           "", figures)
    lines = [f"- {row['feature']}: {'KS D' if row.get('test') == 'ks' else 'Cramér V'} = {_fmt(row.get('effect'), '.3f')}, "
             f"corrected p = {_fmt(row.get('p_adjusted'), '.1e')}" for row in drifted[:MAX_FEATURES_LISTED]]
    if len(drifted) > MAX_FEATURES_LISTED:
        lines.append(f"- and {len(drifted) - MAX_FEATURES_LISTED} more")
    files = ", ".join(drift.get("files") or []) or "pending rows"
    return Observation("drift:features", "drift", True, f"feature drift: {count} drifted",
                       f"{drift.get('new_rows')} new rows ({files}) against {drift.get('reference_rows')} reference rows:\n"
                       + "\n".join(lines), figures)


def _scores_text(run: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    policy = run.get("policy") or {}
    metric = policy.get("metric", "f1")
    candidate = (run.get("candidate") or {}).get("scores") or {}
    deployed = (run.get("deployed_on_test") or {}).get("scores") or {}
    figures = {"metric": metric, "candidate": candidate.get(metric), "deployed": deployed.get(metric),
               "candidate_release": (run.get("candidate") or {}).get("release_id"),
               "deployed_release": (run.get("deployed_on_test") or {}).get("release_id") or run.get("deployed_release_before"),
               "test_rows": candidate.get("rows")}
    text = f"candidate {metric} {_fmt(candidate.get(metric), '.4f')}"
    if deployed:
        text += f", release {figures['deployed_release']} {_fmt(deployed.get(metric), '.4f')}"
    text += f" on the same {candidate.get('rows')} test rows"
    challenge = run.get("challenge")
    if isinstance(challenge, dict) and challenge.get("champion") is not None:
        text += (f"; on {challenge.get('rows')} held-out new rows: challenger {_fmt(challenge.get('challenger'), '.4f')}, "
                 f"champion {_fmt(challenge.get('champion'), '.4f')}")
        figures["challenge"] = challenge
    return text, figures


def observations(run: dict[str, Any], *, api_expected: bool = True) -> tuple[list[Observation], list[Observation]]:
    """Return the conditions a tick's run line observed, and its notices (deploys).

    ``api_expected``: whether an API that is not running counts as down (once it has answered
    after some deploy); a set-up that runs no API is not told after every deploy that none answers.
    """
    decision = run.get("decision")
    seen: list[Observation] = []
    notices: list[Observation] = []
    if decision == "failed":
        seen.append(Observation("tick_failed", "tick_failed", True, "a tick failed", run.get("reason", ""),
                                {"reason": run.get("reason")}))
    else:
        seen.append(Observation("tick_failed", "tick_failed", False, "ticks succeed again",
                                f"this tick: {decision}", {"decision": decision}))
    for found in (_score_observation(run), _feature_observation(run)):
        if found is not None:
            seen.append(found)
    if decision in ("retrained_deployed", "retrained_refused", "no_drift", "cold_start", "schema_changed"):
        text, figures = _scores_text(run)
        if decision == "retrained_refused":
            seen.append(Observation("refused", "refused", True, "a retrained model was refused",
                                    f"{(run.get('policy') or {}).get('reason', '')}; release "
                                    f"{run.get('deployed_release_before')} stays.\n{text}.\n{run.get('reason', '')}", figures))
        else:
            seen.append(Observation("refused", "refused", False, "no refused model any more",
                                    f"this tick: {decision}", {"decision": decision}))
    if run.get("deployed_release_after"):
        text, figures = _scores_text(run)
        figures["release"] = run["deployed_release_after"]
        notices.append(Observation(f"deployed:{run['deployed_release_after']}", "deployed", True,
                                   f"deployed release {run['deployed_release_after']} ({decision})",
                                   f"{text}.\n{run.get('reason', '')}\n"
                                   f"Report: {run.get('report') or 'not built (' + str(run.get('report_error')) + ')'}", figures))
        # The report is a view: a deploy goes on without it, and says so until a deploy builds one again.
        failed = run.get("report_error")
        seen.append(Observation("report_failed", "tick_failed", bool(failed),
                                f"the report of release {run['deployed_release_after']} was not built" if failed
                                else f"the report of release {run['deployed_release_after']} was built",
                                f"{failed}\nThe release is deployed; run reporting.py to build its report." if failed
                                else "", {"release": run["deployed_release_after"], "error": failed}))
    # A file name is shown in one form (churnlib.columns.shown_name) in the key, the title and the fields.
    ingest = run.get("ingest") or {}
    for rejected in ingest.get("rejected", []):
        name = shown_name(rejected["name"])
        seen.append(Observation(f"{REJECTED}{name}", "file_rejected", True,
                                f"file rejected: {name}", rejected.get("reason", ""), {**rejected, "name": name}))
    for accepted in ingest.get("accepted", []):
        name = shown_name(accepted["name"])
        seen.append(Observation(f"{REJECTED}{name}", "file_rejected", False, f"{name} accepted now",
                                f"{accepted.get('rows_added')} rows added", {"name": name}))
    # Files of current customers too: the retention team waits for their lists.
    scoring = run.get("scoring") or {}
    for rejected in scoring.get("rejected", []):
        name = shown_name(rejected["name"])
        seen.append(Observation(f"{REJECTED}{CUSTOMERS}{name}", "file_rejected", True,
                                f"customer file rejected: {name}", rejected.get("reason", ""),
                                {**rejected, "name": name}))
    for scored in scoring.get("files", []):
        name = shown_name(scored["name"])
        seen.append(Observation(f"{REJECTED}{CUSTOMERS}{name}", "file_rejected", False,
                                f"customer file {name} scored now", f"{scored.get('rows')} rows scored",
                                {"name": name}))
    api = run.get("api")
    if isinstance(api, dict) and api.get("running") is not None:
        release = run.get("deployed_release_after")
        problem = None
        if api["running"] is False:
            problem = "did not answer" if api_expected else None
        elif api.get("failed"):
            problem = f"answered with errors: {', '.join(api['failed'])}"
        elif release and api.get("serving") != release:
            problem = f"still serves release {api.get('serving')}, not {release}"
        if problem is None and api["running"] is False:
            pass  # no API was ever seen answering: nothing to say
        elif problem:
            seen.append(Observation("api_down", "api_down", True, f"the API {problem} after deploying {release}",
                                    api.get("summary", ""), {"release": release, **api}))
        else:
            seen.append(Observation("api_down", "api_down", False, f"the API answers, serving release {release}",
                                    api.get("summary", ""), {"release": release, **api}))
    return seen, notices


def gone_files(active: dict[str, Any], present: dict[str, set[str]]) -> list[Observation]:
    """Return a cleared observation for each rejected file's condition whose file is in its folder no more.

    ``present`` maps "labelled" and "customers" to the shown names of the files in ``sourcedata/``
    and ``scoringdata/``: a bad file that was deleted (or renamed) is no condition any more.
    """
    gone = []
    for key in active:
        if not key.startswith(REJECTED):
            continue
        name = key.removeprefix(REJECTED)
        kind = "labelled"
        if name.startswith(CUSTOMERS):
            name, kind = name.removeprefix(CUSTOMERS), "customers"
        if shown_name(name) not in present[kind]:
            what = "customer file " if kind == "customers" else ""
            gone.append(Observation(key, "file_rejected", False, f"{what}{shown_name(name)} is gone",
                                    "the file was removed (or renamed)", {"name": shown_name(name)}))
    return gone


def transitions(run: dict[str, Any], active: dict[str, Any], *, events: tuple[str, ...], started_at: str,
                project: str = "", host: str = "", api_expected: bool = True,
                present: dict[str, set[str]] | None = None) -> tuple[list[Alert], dict[str, Any]]:
    """Return the alerts a tick's run line raises against the conditions active before, and those active after.

    ``present``: the files in the folders now (see ``gone_files``); None leaves rejected files' conditions be.
    """
    seen, notices = observations(run, api_expected=api_expected)
    if present is not None:
        observed = {item.key for item in seen}
        seen += [item for item in gone_files(active, present) if item.key not in observed]
    active = {key: dict(value) for key, value in active.items()}
    alerts: list[Alert] = []
    for item in seen:
        if item.event not in events:
            continue
        before = active.get(item.key)
        if item.active and before is None:
            active[item.key] = {"event": item.event, "since": started_at, "ticks": 1, "title": item.title}
            alerts.append(Alert(item.key, item.event, STARTED, item.title, item.text, item.fields,
                                project=project, host=host))
        elif item.active:
            before["ticks"] = before.get("ticks", 1) + 1
        elif before is not None:
            del active[item.key]
            lasted = f"{before.get('ticks', 1)} tick(s) since {before.get('since')}"
            alerts.append(Alert(item.key, item.event, CLEARED, f"cleared: {item.title}",
                                f"was: {before.get('title')} ({lasted}).\n{item.text}".rstrip(),
                                {**item.fields, "since": before.get("since"), "ticks": before.get("ticks")},
                                project=project, host=host))
    for item in notices:
        if item.event in events:
            alerts.append(Alert(item.key, item.event, NOTICE, item.title, item.text, item.fields,
                                project=project, host=host))
    # Drift that a deploy answered (or that was accepted as the new normal) is over, and the next drift
    # starts a new alert. Drift found on an earlier tick gets its "cleared" alert now, saying what
    # answered it; drift found and answered on this tick says so in its own alert, with
    # ``fields["answered_by"]``, instead of a second message: no "cleared" alert follows it.
    answered = [r for r in run.get("retrain_reason") or [] if r in ("score_drop", "feature_drift")]
    release = run.get("deployed_release_after")
    if answered and (release or run.get("new_normal")):
        how = f"release {release} deployed" if release else "the new rows accepted as the new normal"
        by = release or "new_normal"
        for reason, key in (("score_drop", "drift:score"), ("feature_drift", "drift:features")):
            before = active.pop(key, None) if reason in answered else None
            if before is None:
                continue
            started_now = [a for a in alerts if a.key == key and a.status == STARTED]
            if started_now:
                started_now[0].text = f"{started_now[0].text}\nAnswered on this tick: {how}.".lstrip()
                started_now[0].fields["answered_by"] = by
                continue
            lasted = f"{before.get('ticks', 1)} tick(s) since {before.get('since')}"
            alerts.append(Alert(key, "drift", CLEARED, f"cleared: {before.get('title')}",
                                f"answered: {how} (it lasted {lasted}).",
                                {"since": before.get("since"), "ticks": before.get("ticks"), "answered_by": by},
                                project=project, host=host))
    return alerts, active


# --- delivery ----------------------------------------------------------------------------------


class DeliveryError(Exception):
    """A channel that could not deliver (the rest of) its alerts this time; the message says why."""


class Progress:
    """What a channel's sender did so far, reported alert by alert (thread-safe): an alert sent
    before the channel failed or the deadline passed is recorded as sent, never sent again."""

    def __init__(self, channel: str, lock: threading.Lock, sent: set[tuple[str, str]],
                 refused: dict[tuple[str, str], str]):
        self.channel, self._lock, self._sent, self._refused = channel, lock, sent, refused

    def sent(self, alert_id: str) -> None:
        with self._lock:
            self._sent.add((alert_id, self.channel))

    def refused(self, alert_id: str, reason: str) -> None:
        """This alert, not the channel, failed (a header the mail library refuses, a message the server rejects)."""
        with self._lock:
            self._refused[(alert_id, self.channel)] = reason


def _header_text(text: str) -> str:
    """Return text for a mail header that the mail library takes as it is.

    It decodes an RFC 2047 encoded word in a header it is given (a file named
    ``=?utf-8?q?=0ABcc:_x@evil.example?=.csv``), line breaks included, and Pythons before 3.11.10
    write those out raw: a header forged. A word joiner (invisible) after each ``=`` makes none.
    """
    return shown_name(text).replace("=?", "=\u2060?")


def _subject(alert: Alert) -> str:
    where = f" [{alert.project}]" if alert.project else ""
    return _header_text(f"churn{where}: {alert.title}")


def _email(alert: Alert, settings: EmailSettings) -> Any:
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    message = EmailMessage()
    message["Subject"] = _subject(alert)
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(idstring=alert.id)
    message["X-Churn-Alert"] = _header_text(f"{alert.event}; {alert.status}; {alert.key}")
    message.set_content(shown_lines(alert.full_text() + f"\n\n-- \n{alert.host} {alert.project}, {alert.at}\n"))
    return message


def send_emails(alerts: list[Alert], settings: EmailSettings, *, timeout: float, progress: Progress) -> None:
    """Send each alert as one e-mail over one SMTP session, reporting each to ``progress``.

    A message that is refused (by the mail library or by the server, for its content) is reported
    and the others go on; a failure of the session raises DeliveryError.
    """
    import smtplib
    import ssl
    from email.errors import MessageError

    password = None
    if settings.user is not None:
        password = os.environ.get(settings.password_env or "")
        if password is None:
            raise DeliveryError(f"environment variable {settings.password_env} (alerts.email.password_env) is not set")
    context = ssl.create_default_context()
    where = f"SMTP {settings.host}:{settings.port}"
    try:
        if settings.security == "tls":
            session = smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout, context=context)
        else:
            session = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"{where}: {exc or type(exc).__name__}") from None
    done = 0
    try:
        if settings.security == "starttls":
            session.starttls(context=context)
        if settings.user is not None:
            session.login(settings.user, password)
        for alert in alerts:
            try:
                session.send_message(_email(alert, settings))
            except (ValueError, TypeError, MessageError) as exc:  # a header or body the mail library refuses
                progress.refused(alert.id, f"the mail library refused the message: {type(exc).__name__}: {exc}")
            except smtplib.SMTPDataError as exc:
                reply = f"{exc.smtp_code} {exc.smtp_error.decode('utf-8', 'replace')}"
                if not 500 <= exc.smtp_code < 600:
                    # A 4xx (busy, out of space, greylisted) says try later, not that this message is bad:
                    # it must not count towards being set aside. The channel stops until the next tick.
                    after = f" after {done} message(s)" if done else ""
                    raise DeliveryError(f"{where}: {reply} (a temporary failure){after}") from None
                # The server refused this message's content for good; the session goes on.
                progress.refused(alert.id, f"{where} refused the message: {reply}")
            else:
                progress.sent(alert.id)
            done += 1
    except (OSError, smtplib.SMTPException) as exc:
        after = f" after {done} message(s)" if done else ""
        raise DeliveryError(f"{where}: {exc or type(exc).__name__}{after}") from None
    finally:
        try:
            session.quit()
        except (OSError, smtplib.SMTPException):
            session.close()


def _webhook_host(url: str) -> str:
    """Return the URL without its path: a Slack webhook's path is its secret, and logs must not hold it."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number: shown as given
        port = f":{parts.netloc.rpartition(':')[2]}"
    # Never the user name or password either (config.py refuses them; a redirect may carry some).
    return shown_name(f"{parts.scheme}://{host}{port}/...")


def _no_redirects_opener() -> Any:
    import urllib.request

    class RefuseRedirects(urllib.request.HTTPRedirectHandler):
        # urllib would follow a 301/302/303 with a GET without the body: the alert would be lost
        # and counted as sent. A redirect is a failed delivery (an HTTPError) instead.
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ARG002 (urllib's signature)
            return None

    return urllib.request.build_opener(RefuseRedirects)


def send_webhooks(alerts: list[Alert], settings: WebhookSettings, *, timeout: float, progress: Progress) -> None:
    """POST each alert as JSON to the webhook, reporting each to ``progress``; raise DeliveryError at the first failure."""
    import urllib.error
    import urllib.request
    from urllib.parse import urljoin

    opener = _no_redirects_opener()
    where = f"webhook {_webhook_host(settings.url)}"
    for done, alert in enumerate(alerts):
        body = json.dumps(alert.webhook_body()).encode("utf-8")
        request = urllib.request.Request(settings.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "churn-cron"})
        try:
            with opener.open(request, timeout=timeout) as reply:
                reply.read(65536)
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code} {exc.reason}"
            if exc.code in PAYLOAD_REFUSED:  # this alert's body, not the receiver, is the problem: the others go on
                progress.refused(alert.id, f"{where}: {shown_name(problem)}")
                continue
            location = exc.headers.get("Location") if 300 <= exc.code < 400 else None
            if location:
                problem += (f": the receiver redirects to {_webhook_host(urljoin(settings.url, location))}; "
                            "an alert is not sent on to a redirect: put the new address in alerts.webhook.url")
        except (OSError, ValueError) as exc:  # refused, timed out, TLS, a bad URL
            problem = str(getattr(exc, "reason", None) or exc or type(exc).__name__)
        else:
            progress.sent(alert.id)
            continue
        after = f" after {done} alert(s)" if done else ""
        raise DeliveryError(f"{where}: {shown_name(problem)}{after}")


@dataclass
class Delivery:
    """What one delivery did: the (alert id, channel) pairs sent, per channel that failed why, and per
    (alert id, channel) refused on its own (the channel worked) why."""

    sent: set[tuple[str, str]] = field(default_factory=set)
    problems: dict[str, str] = field(default_factory=dict)
    refused: dict[tuple[str, str], str] = field(default_factory=dict)


def deliver(items: list[dict[str, Any]], settings: AlertSettings) -> Delivery:
    """Send the outbox items, each channel in its own thread, all within ``settings.timeout_seconds``.

    A channel still busy at the deadline is abandoned (a daemon thread, which cannot hold up the
    tick's exit); what it had sent by then counts as sent, what it sends after is sent again by a
    later tick rather than lost.
    """
    senders = {"email": send_emails, "webhook": send_webhooks}
    by_channel: dict[str, list[Alert]] = {}
    for item in items:
        by_channel.setdefault(item["channel"], []).append(Alert(**item["alert"]))
    lock = threading.Lock()
    result = Delivery()
    deadline = time.monotonic() + settings.timeout_seconds

    def run(channel: str, alerts: list[Alert]) -> None:
        progress = Progress(channel, lock, result.sent, result.refused)
        try:
            senders[channel](alerts, getattr(settings, channel), timeout=settings.timeout_seconds, progress=progress)
        except DeliveryError as exc:
            problem = str(exc)
        except Exception as exc:  # never let a channel's surprise reach the tick
            problem = shown_name(f"{type(exc).__name__}: {exc}")
        else:
            return
        with lock:
            result.problems[channel] = problem

    threads = [threading.Thread(target=run, args=(channel, alerts), name=f"alerts-{channel}", daemon=True)
               for channel, alerts in by_channel.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        for thread, channel in zip(threads, by_channel):
            if thread.is_alive():
                result.problems[channel] = f"no answer within alerts.timeout_seconds={settings.timeout_seconds}"
        return Delivery(set(result.sent), dict(result.problems), dict(result.refused))


# --- the outbox and the state ------------------------------------------------------------------


def read_outbox(log_folder: Path) -> list[dict[str, Any]]:
    try:
        outbox = read_json(log_folder / OUTBOX_FILE) or {}
    except ValueError:
        logger.error("%s: not valid JSON; its alerts cannot be sent (moved aside)", log_folder / OUTBOX_FILE)
        os.replace(log_folder / OUTBOX_FILE, log_folder / f"{OUTBOX_FILE}.broken")
        return []
    return list(outbox.get("items", []))


def _listed(items: list[dict[str, Any]], limit: int = 5) -> str:
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(f"{item['channel']}: {shown_name(item['alert']['title'])}" for item in items[:limit]) + more


def write_outbox(log_folder: Path, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write the outbox, the newest MAX_OUTBOX_ITEMS items at most (dropping the oldest, with a warning);
    return the items kept."""
    path = log_folder / OUTBOX_FILE
    if not items:
        path.unlink(missing_ok=True)
        return []
    if len(items) > MAX_OUTBOX_ITEMS:
        dropped = items[: len(items) - MAX_OUTBOX_ITEMS]
        items = items[-MAX_OUTBOX_ITEMS:]
        logger.warning("alert outbox over %d items: dropped the %d oldest, %d kept (%s)", MAX_OUTBOX_ITEMS,
                       len(dropped), len(items), _listed(dropped))
    atomic_write_json(path, {"items": items, "updated_at": utc_now()})
    return items


def set_aside(log_folder: Path, items: list[dict[str, Any]]) -> None:
    """Add items that can never be sent to logs/alerts_undeliverable.json (the newest MAX_OUTBOX_ITEMS kept)."""
    path = log_folder / UNDELIVERABLE_FILE
    try:
        kept = list((read_json(path) or {}).get("items", []))
    except ValueError:
        kept = []
    atomic_write_json(path, {"items": (kept + items)[-MAX_OUTBOX_ITEMS:], "updated_at": utc_now()})


def read_state(log_folder: Path) -> dict[str, Any]:
    try:
        state = read_json(log_folder / ALERT_STATE_FILE) or {}
    except ValueError:
        logger.error("%s: not valid JSON; starting with no active conditions", log_folder / ALERT_STATE_FILE)
        state = {}
    # Keys and titles in their shown form, also those an older version wrote with a file's raw name
    # (then ``rewrite``: the history page reads the file as it is).
    raw = dict(state.get("active", {}))
    active = {shown_name(key): {**value, "title": shown_name(str(value.get("title", "")))} for key, value in raw.items()}
    return {"active": active, "api_answered": bool(state.get("api_answered")), "rewrite": active != raw}


def files_present(config: Config, active: dict[str, Any]) -> dict[str, set[str]] | None:
    """Return the shown names of the files in sourcedata/ and scoringdata/, or None when no rejected
    file's condition is active (the folders are not listed then)."""
    if not any(key.startswith(REJECTED) for key in active):
        return None
    present = {}
    for kind, folder in (("labelled", config.paths.source), ("customers", config.paths.scoring)):
        try:
            present[kind] = {shown_name(name) for name in os.listdir(folder)}
        except FileNotFoundError:
            present[kind] = set()
        except OSError:
            return None  # cannot tell: a condition is not cleared on a guess
    return present


def project_name(config: Config) -> str:
    return config.root.name


def host_name() -> str:
    import socket  # here, not at the top: an idle tick with nothing to send never needs it

    return socket.gethostname()


@dataclass
class AlertsOutcome:
    raised: list[str] = field(default_factory=list)
    sent: int = 0
    pending: int = 0
    set_aside: int = 0
    problems: dict[str, str] = field(default_factory=dict)


def process_alerts(config: Config, run: dict[str, Any]) -> AlertsOutcome:
    """Raise the alerts a tick's run line calls for and send what waits in the outbox; never raises for delivery.

    The caller holds the run lock (the state and the outbox are read and written here).
    """
    settings, logs = config.alerts, config.paths.logs
    outcome = AlertsOutcome()
    channels = settings.channels
    outbox_exists = (logs / OUTBOX_FILE).exists()
    if not channels:
        if outbox_exists:
            logger.warning("alerts: no channel configured any more; the %d alert(s) waiting in %s are dropped",
                           len(read_outbox(logs)), logs / OUTBOX_FILE)
            write_outbox(logs, [])
        return outcome
    state = read_state(logs)
    alerts, active = transitions(run, state["active"], events=settings.events,
                                 started_at=run.get("started_at") or utc_now(),
                                 project=project_name(config), host="", api_expected=state["api_answered"],
                                 present=files_present(config, state["active"]))
    if alerts:
        host = host_name()
        for alert in alerts:
            alert.host = host
    api_answered = state["api_answered"] or (isinstance(run.get("api"), dict) and run["api"].get("running") is True)
    items = read_outbox(logs) if (outbox_exists or alerts) else []
    if alerts:
        for alert in alerts:
            for channel in channels:
                items.append({"channel": channel, "alert": asdict(alert), "attempts": 0, "queued_at": utc_now()})
            logger.info("alert %s: %s", alert.status, alert.title.removeprefix(f"{CLEARED}: "))
        outcome.raised = [alert.title for alert in alerts]
        # The outbox first, then the state: a crash in between sends an alert twice, never loses one.
        items = write_outbox(logs, items)
    if active != state["active"] or api_answered != state["api_answered"] or state["rewrite"]:
        atomic_write_json(logs / ALERT_STATE_FILE, {"active": active, "api_answered": api_answered, "updated_at": utc_now()})
    if not items:
        return outcome
    unknown = [item for item in items if item["channel"] not in channels]
    for item in unknown:
        logger.warning("alerts: channel %s is no longer configured; dropped: %s", item["channel"],
                       shown_name(item["alert"]["title"]))
    items = [item for item in items if item["channel"] in channels]
    delivery = deliver(items, settings) if items else Delivery()
    remaining, hopeless = [], []
    for item in items:
        pair = (item["alert"]["id"], item["channel"])
        if pair in delivery.sent:
            continue
        item["attempts"] += 1
        item["last_attempt"] = utc_now()
        if pair in delivery.refused:
            item["last_error"] = delivery.refused[pair]
            item["refusals"] = item.get("refusals", 0) + 1
            if item["refusals"] >= MAX_ITEM_FAILURES:
                hopeless.append(item)
                continue
        else:
            item["last_error"] = delivery.problems.get(item["channel"], "not sent")
        remaining.append(item)
    if hopeless:
        set_aside(logs, hopeless)
        for item in hopeless:
            logger.error("alerts: %s: \"%s\" refused %d times (%s); moved aside to %s, not tried again",
                         item["channel"], shown_name(item["alert"]["title"]), item["refusals"], item["last_error"],
                         logs / UNDELIVERABLE_FILE)
    remaining = write_outbox(logs, remaining)
    outcome.sent, outcome.pending, outcome.set_aside = len(delivery.sent), len(remaining), len(hopeless)
    outcome.problems = dict(delivery.problems)
    if delivery.sent:
        logger.info("alerts: %d sent", len(delivery.sent))
    for item in remaining:
        pair = (item["alert"]["id"], item["channel"])
        if pair in delivery.refused:
            outcome.problems.setdefault(item["channel"], "alert(s) refused")
            logger.warning("alerts: %s: \"%s\" refused (%d of %d before it is set aside), tried again next tick: %s",
                           item["channel"], shown_name(item["alert"]["title"]), item["refusals"], MAX_ITEM_FAILURES,
                           delivery.refused[pair])
    for channel, problem in delivery.problems.items():
        waiting = sum(1 for item in remaining if item["channel"] == channel)
        logger.warning("alerts: %s: %s; %d alert(s) wait in %s for the next tick", channel, problem, waiting,
                       logs / OUTBOX_FILE)
    return outcome


def send_test_alert(config: Config) -> dict[str, str]:
    """Send one test alert through every configured channel now; return each channel's result ("sent" or why not)."""
    alert = Alert("test", "test", NOTICE, "test alert",
                  f"If you read this, alerts from {config.file} reach you.", {},
                  project=project_name(config), host=host_name())
    items = [{"channel": channel, "alert": asdict(alert)} for channel in config.alerts.channels]
    delivery = deliver(items, config.alerts)
    return {channel: "sent" if (alert.id, channel) in delivery.sent
            else delivery.refused.get((alert.id, channel)) or delivery.problems.get(channel, "not sent")
            for channel in config.alerts.channels}
