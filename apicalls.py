"""Call every endpoint of the running API and keep the replies in one file.

    python apicalls.py                       # the URL from config.json (api.url)
    python apicalls.py --url http://127.0.0.1:8001

Writes ``apireturns.txt`` in the model folder: for each call, the request, the HTTP status and the
reply. Exits 1 when a call failed, and says plainly when the API is not running, or when the API
at ``api.url`` serves another deployment (``churnlib.identity``; ``--url`` asks any API). Uses only the
standard library, so ``fullprocess.py`` can call it after a deploy at no import cost.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from churnlib.cli import run_script, script_parser
from churnlib.config import Config, api_token
from churnlib.fsutil import atomic_write_text
from churnlib.identity import IDENTITY_FILE, ensure_deployment_id

OUTPUT_FILE = "apireturns.txt"


class ApiNotRunning(ConnectionError):
    """Nothing answers at the API's URL."""

    def __init__(self, base_url: str, reason: object):
        super().__init__(f"no API answering at {base_url} ({reason})")
        self.reason = str(reason)


def endpoint_calls(prediction_path: str) -> list[tuple[str, str, dict | None]]:
    """Return (method, route, JSON body) for every endpoint, in the order they are called."""
    return [
        ("GET", "/health", None),
        ("POST", "/prediction", {"path": prediction_path}),
        ("GET", "/scoring", None),
        ("GET", "/summarystats", None),
        ("GET", "/diagnostics", None),
        ("GET", "/metrics", None),
    ]


def call(base_url: str, method: str, route: str, body: dict | None = None, *, timeout: float = 10.0,
         token: str | None = None) -> dict[str, Any]:
    """Return the status and JSON reply of one call (with the API token, if any); raise ApiNotRunning when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base_url + route, data=data, method=method, headers=headers)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        # Refused, timed out, or something that is not an HTTP server on that port.
        raise ApiNotRunning(base_url, getattr(exc, "reason", None) or str(exc) or type(exc).__name__) from None
    try:
        reply_body: Any = json.loads(raw)
    except ValueError:
        reply_body = raw.decode("utf-8", "replace")
    return {"method": method, "route": route, "request": body, "status": status,
            "seconds": round(time.perf_counter() - started, 4), "reply": reply_body}


def call_all(base_url: str, prediction_path: str, *, timeout: float = 10.0, token: str | None = None) -> list[dict[str, Any]]:
    """Call every endpoint; return the results in call order."""
    return [call(base_url, method, route, body, timeout=timeout, token=token)
            for method, route, body in endpoint_calls(prediction_path)]


def format_results(base_url: str, results: list[dict[str, Any]]) -> str:
    """Return the replies as the text kept in apireturns.txt."""
    lines = [f"API replies from {base_url} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}", ""]
    for result in results:
        request = "" if result["request"] is None else " " + json.dumps(result["request"])
        lines.append(f"=== {result['method']} {result['route']}{request} -> {result['status']} ({result['seconds']} s)")
        reply = result["reply"]
        lines.append(json.dumps(reply, indent=2) if not isinstance(reply, str) else reply)
        lines.append("")
    return "\n".join(lines)


def another_deployment(health: dict[str, Any], expected: str) -> str | None:
    """Return how a /health reply shows that the API serves another deployment than ``expected``, or None."""
    reported = health["reply"].get("deployment") if isinstance(health["reply"], dict) else None
    if reported == expected:
        return None
    which = (f"its /health reports deployment {reported}" if isinstance(reported, str) else
             "its /health names none: another program, or an API started before deployments had an id")
    return f"{which}; this one is {expected}"


def default_prediction_path(config: Config) -> str:
    """Return the first test data file, relative to the project folder, for the /prediction call."""
    files = sorted(config.paths.testdata.glob("*.csv"))
    target = files[0] if files else config.paths.testdata / "testdata.csv"
    try:
        return str(target.relative_to(config.root))
    except ValueError:
        return str(target)


def call_all_if_running(base_url: str, output: Path, *, prediction_path: str, expect_release: str | None = None,
                        reload_interval: float = 1.0, token: str | None = None,
                        expect_deployment: str | None = None) -> dict[str, Any]:
    """Call every endpoint when the API runs, once it serves ``expect_release``.

    Every worker looks for a new release at most every ``reload_interval`` seconds and before the
    request that finds it; after that long, any worker answers with the new release. With
    ``expect_deployment``, an API whose /health reports another deployment (churnlib.identity) is
    asked nothing more (nor sent the token), and the summary says so with ``running`` None: no API
    serves this deployment there. Returns a summary; never raises for an API that is down or failing.
    """
    if expect_release is not None:
        time.sleep(reload_interval)
    deadline = time.monotonic() + reload_interval + 2.0
    serving = None
    try:
        while True:
            health = call(base_url, "GET", "/health", timeout=2.0)
            serving = isinstance(health["reply"], dict) and health["reply"].get("release_id")
            other = None if expect_deployment is None else another_deployment(health, expect_deployment)
            if other is not None:
                reported = health["reply"].get("deployment")
                return {"running": None, "other_deployment": reported if isinstance(reported, str) else None,
                        "summary": f"serves another deployment ({other}); its replies are not used"}
            if expect_release is None or serving == expect_release or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        results = call_all(base_url, prediction_path, token=token)
    except ApiNotRunning as exc:
        return {"running": False, "summary": f"not running ({exc.reason}); no replies saved"}
    atomic_write_text(output, format_results(base_url, results))
    failed = [f"{r['route']} {r['status']}" for r in results if r["status"] >= 400]
    summary = f"{len(results)} calls, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else "")
    return {"running": True, "serving": serving, "failed": failed, "summary": f"{summary}; replies in {output}"}


def _main(config: Config, args) -> int:
    base_url = (args.url or config.api.url).rstrip("/")
    output = Path(args.output) if args.output else config.paths.models / OUTPUT_FILE
    # --url: that API, whichever it is. Otherwise this deployment's id; a cp -r copy that has not deployed
    # yet is given its own here (it must not pass for the deployment it was copied from and send it the token).
    ours = None
    if not args.url and (config.paths.deployment / IDENTITY_FILE).exists():
        ours = ensure_deployment_id(config.paths.deployment)
    try:
        other = None if ours is None else another_deployment(call(base_url, "GET", "/health", timeout=args.timeout), ours)
        if other is not None:  # before the token goes there
            print(f"error: the API at {base_url} serves another deployment ({other}): give this set-up an api.url "
                  "of its own, or name that API with --url", file=sys.stderr)
            return 1
        results = call_all(base_url, default_prediction_path(config), timeout=args.timeout, token=api_token(config))
    except ApiNotRunning as exc:
        print(f"error: {exc}. Is the API running? Start it with 'make serve'.", file=sys.stderr)
        return 1
    atomic_write_text(output, format_results(base_url, results))
    failed = 0
    for result in results:
        ok = result["status"] < 400
        failed += not ok
        detail = "" if ok else f": {result['reply'].get('error') if isinstance(result['reply'], dict) else result['reply']}"
        print(f"{'ok  ' if ok else 'FAIL'} {result['method']:<4} {result['route']:<14} {result['status']}{detail}")
    print(f"replies written to {output}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        f"Call every API endpoint and write the replies to {OUTPUT_FILE} in the model folder, sending the API "
        "token (from the environment variable api.token_env names) when one is set. "
        "Exit 1 if a call failed, the API is not running, or the API at api.url serves another deployment "
        "(its /health names another: nothing else is asked of it, and no token is sent).",
    )
    parser.add_argument("--url", help="base URL of the API, called whichever deployment it serves "
                        "(default: api.url in config.json, called only if it serves this set-up's deployment)")
    parser.add_argument("--output", metavar="PATH", help=f"where to write the replies (default: <model folder>/{OUTPUT_FILE})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each reply (default 30)")
    return run_script(parser, argv, "apicalls", _main, needs=("paths", "api"))


if __name__ == "__main__":
    sys.exit(main())
