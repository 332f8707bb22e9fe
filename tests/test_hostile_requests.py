"""Hostile requests: the API never answers 5xx and never reads a file outside the data folders.

Every refusal is ``{"error": "..."}`` (one key, a non-empty string) with the right 4xx. Each request
goes through ``Hostile.ask``, which checks that, parses the reply strictly (a NaN or Infinity in a
reply is a failure), looks for the content of sentinel files placed outside the data folders, and
records every file the process opens while the request runs (a ``sys.addaudithook`` "open" hook,
which sees builtins.open, io.open, os.open and pathlib alike): none may lie outside sourcedata/,
ingesteddata/ and testdata/ once symlinks are followed.

HOSTILE_KINDS below lists the 60 kinds of hostile request covered; the last test fails when a kind
is listed but never sent, or when this count is out of date. The property-based tests at the end
(hypothesis, derandomized) send arbitrary JSON values, records with the real feature names and
arbitrary values, arbitrary bytes and arbitrary CSV text.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import re
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from churnlib import pipeline as model_module
from app import create_app
from churnlib.dataset import DatasetError, parse_numeric
from helpers import Project, base_config

# --- the kinds of hostile request, counted ------------------------------------------------------

HOSTILE_KINDS: dict[str, str] = {
    # malformed JSON
    "truncated-json": "a valid body cut short, at every one of its bytes",
    "trailing-garbage": "valid JSON followed by more text, a second document, a stray brace",
    "single-quotes": "Python-style single quotes, comments, bare words, raw control characters",
    "nan-infinity": "NaN, Infinity and -Infinity literals, as values and as the whole body",
    "deep-nesting": "100,000 levels of [[[...]]] and {{...}}, at the top and inside a value",
    "invalid-utf8": "bytes that are not UTF-8: 0xff, overlong forms, encoded surrogates, lone continuation bytes",
    "utf16-utf32": "UTF-16 and UTF-32 bodies, with and without a byte order mark, and gzip-compressed bodies",
    "empty-body": "an empty or whitespace-only body",
    "giant-integers": "integer literals of more digits than Python converts (over 4,300)",
    "giant-query-numbers": "?reasons= with more digits than Python converts (4,301 and 100,000)",
    "lone-surrogates": "JSON escapes of lone surrogates (\\ud800) in keys and values",
    # wrong types and shapes
    "body-not-object": "a number, a string, null, true, an empty list as the whole body",
    "records-wrong-type": "'records' / 'dataframe_records' as a number, a string, null, an object",
    "record-not-object": "records that are numbers, strings, null, lists",
    "numeric-wrong-type": "objects, lists, booleans where a number belongs",
    "category-wrong-type": "objects and lists where a category belongs",
    "numeric-column-names": "column names that are numbers, null, booleans, objects (dataframe_split)",
    "deep-column-names": "dataframe_split columns nested 1,000 and 100,000 deep, and deep values in every form",
    "nested-objects": "records wrapped in objects, values wrapped in objects, envelopes inside envelopes",
    "bad-dataframe-split": "dataframe_split without columns or data, rows of the wrong length or type",
    "out-of-range-numbers": "1e400, 10**400, '1e400', 'inf' and the like in numeric columns",
    "python-only-numbers": "'1_000', Arabic-Indic digits, '-nan', hex, '1,5': numbers float() reads, data files may not hold",
    "overflowing-numbers": "finite numbers whose scaled value or model term overflows float64",
    "extreme-finite-numbers": "+-1e308 in every numeric column: probabilities of exactly 0 or 1, no warnings",
    # column names
    "repeated-keys": "one key twice in a record, a CSV header or dataframe_split columns, or an envelope key twice",
    "normalised-collisions": "names that normalise to the same column: 'plan' and 'PLAN', ' plan ', 'Plan'",
    "unicode-names": "unicode, empty, punctuation-only, NUL and emoji column names; lookalikes of feature names",
    "huge-names": "column names of 100,000 characters, many of them (the name cache must stay small)",
    # sizes
    "over-limit-with-length": "a body one byte over api.max_request_bytes, with its Content-Length",
    "lying-content-length": "a Content-Length far over the limit on a small body",
    "over-limit-chunked": "a chunked body over the limit with no Content-Length (the server de-chunks, as gunicorn does)",
    "unterminated-body": "a body with neither Content-Length nor chunking the server can end",
    "at-the-limits": "a body of exactly max_request_bytes; 10,000 records in every form",
    "over-record-limit": "10,001 records in every form, including a dataset file; 10,001 non-records",
    "records-past-the-limit": "200,000 records in every form: refused before any record is built (bounded memory)",
    # HTTP
    "wrong-methods": "every method (PUT, DELETE, PATCH, TRACE, CONNECT, PROPFIND, BREW, ...) on every route",
    "random-methods": "hundreds of random method names, with and without a token: /metrics keeps a bounded label set",
    "unknown-routes": "unknown routes, trailing slashes, /static/..., traversal in the URL itself",
    "content-type": "missing, wrong, listed, wildcard and malformed Content-Types; forms and multipart uploads",
    "charset-parameter": "charset parameters that lie about the body (charset=utf-16 on UTF-8, latin-1 CSV)",
    "bad-csv": "CSV bodies: not UTF-8, ragged rows, fields over the csv module's limit, bare CR, header only, empty",
    # {"path": ...}
    "path-dotdot": "../ out of the project folder, and further out",
    "path-absolute": "absolute paths outside (/etc/passwd, /proc/self/environ, /dev/zero) and inside the data folders",
    "path-dotdot-inside": ".. segments inside the data folders, leading out or staying in",
    "path-url-encoded": "%2e%2e%2f, double-encoded %252e, overlong %c0%af: taken literally, never decoded",
    "path-backslashes": "backslashes, drive letters, UNC paths",
    "path-symlink-file": "a symlink in testdata/ to a file outside, dangling symlinks, a symlink loop",
    "path-symlink-dir": "a symlinked directory in testdata/ leading outside, and one staying inside",
    "path-nul": "NUL bytes anywhere in the path",
    "path-too-long": "a name over NAME_MAX, a path over PATH_MAX, thousands of ../ and ./",
    "path-tilde": "~, ~/x, ~root/x: never expanded",
    "path-not-csv": "files in the data folders that are not CSV: JSON, binary, text, a directory, a FIFO, a latin-1 CSV",
    "path-wrong-type": "'path' as a number, null, a list, an object; 'path' with other keys",
    "path-surrogates": "lone surrogates in the path (no file name can hold them)",
    "path-unreadable": "a CSV file in a data folder the server may not read",
    "query-and-headers": "?path=../secret.csv and paths in X-Original-URL, Referer, Cookie and other headers",
    # property-based
    "any-json": "hypothesis: arbitrary JSON values (None, bools, huge ints, floats with NaN/inf, unicode, lists, dicts)",
    "feature-records": "hypothesis: records with the real feature names (in several spellings) and arbitrary values",
    "any-bytes": "hypothesis: arbitrary bytes as a JSON body and arbitrary text as a CSV body",
    "numeric-text": "hypothesis: any text in a numeric column is accepted exactly when a data file's would be",
}

_SENT: set[str] = set()


def hostile(kind: str, *values: Any, id: str) -> Any:
    """Return a pytest.param of ``values`` that sends hostile request kind ``kind``."""
    assert kind in HOSTILE_KINDS, kind
    _SENT.add(kind)
    return pytest.param(*values, id=f"{kind}:{id}")


def covers(*kinds: str):
    """Mark a test as sending hostile request kinds ``kinds``."""
    for kind in kinds:
        assert kind in HOSTILE_KINDS, kind
        _SENT.add(kind)
    return lambda test: test


# --- what every reply must satisfy ---------------------------------------------------------------

SENTINEL = "SENTINEL-7c1e93"  # the id of the one row of every secret.csv: echoed if that row were predicted
RECORD = {"corporation": "abcd", "lastmonth_activity": 120, "lastyear_activity": 1500,
          "number_of_employees": 40, "plan": "basic"}
NUMERIC = ("lastmonth_activity", "lastyear_activity", "number_of_employees")
ROUTES = {"/prediction": {"POST"}, "/scoring": {"GET"}, "/summarystats": {"GET"}, "/diagnostics": {"GET"},
          "/health": {"GET"}, "/metrics": {"GET"}}

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    # Every file the process opens while a request runs (builtins.open, io.open, os.open, pathlib).
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # process-wide and permanent: a no-op unless _OPENED is a list


def _strict_constant(name: str) -> None:
    raise ValueError(f"{name} in a reply")


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


@dataclass
class Hostile:
    project: Project
    app: Any
    data_folders: tuple[Path, ...]

    def ask(self, method: str = "POST", url: str = "/prediction", **kwargs: Any) -> Reply:
        """Send one request (``kwargs`` as for Flask's test client); check what every reply must satisfy."""
        return self.ask_environ(EnvironBuilder(path=url, method=method, **kwargs).get_environ())

    def ask_environ(self, environ: dict[str, Any]) -> Reply:
        """Send a WSGI environ as it is (so Content-Length and chunking can be what a client makes them)."""
        global _OPENED
        method = environ["REQUEST_METHOD"]
        opened: list[str] = []
        _OPENED = opened  # only while the app runs: building the request may read /etc/mime.types
        try:
            app_iter, status_line, headers = run_wsgi_app(self.app, environ, buffered=True)
            reply = self.app.response_class(b"".join(app_iter), status=status_line, headers=headers)
        finally:
            _OPENED = None
        status = reply.status_code
        assert status < 500, reply.data[:500]
        outside = [path for path in opened if not self._inside_data(path)]
        assert not outside, f"opened outside the data folders: {outside}"
        everything = reply.data + str(reply.headers).encode()
        assert SENTINEL.encode() not in everything
        if method == "HEAD" or (method == "OPTIONS" and status == 200):
            # HEAD has no body; OPTIONS is answered by Flask (200, an Allow header, no body).
            assert reply.data == b""
            return Reply(status, None, reply.headers)
        if environ["PATH_INFO"] == "/metrics" and status == 200:  # Prometheus's text format, not JSON
            assert reply.headers["Content-Type"].startswith("text/plain; version="), reply.headers
            return Reply(status, reply.data.decode(), reply.headers)
        assert reply.mimetype == "application/json", (status, reply.mimetype, reply.data[:200])
        body = json.loads(reply.data, parse_constant=_strict_constant)
        if status >= 400:
            assert isinstance(body, dict) and list(body) == ["error"], body
            assert isinstance(body["error"], str) and body["error"].strip(), body
        return Reply(status, body, reply.headers)

    @classmethod
    def started(cls, project: Project, app: Any, headers: dict[str, str] | None = None) -> "Hostile":
        """Return the API of ``project``, warmed up outside the recording: the release is loaded
        (from production_deployment/) on the first request, the statistics and diagnostics cached."""
        client = app.test_client()
        assert client.get("/health").status_code == 200
        for route in ("/scoring", "/summarystats", "/diagnostics", "/metrics"):
            assert client.get(route, headers=headers).status_code == 200
        folders = ("sourcedata", "ingesteddata", "testdata")
        return cls(project, app, tuple(Path(os.path.realpath(project.root / name)) for name in folders))

    def _inside_data(self, path: str) -> bool:
        real = Path(os.path.realpath(path))
        return any(real.is_relative_to(folder) for folder in self.data_folders)

    def refused(self, status: int, message: str | None = None, **kwargs: Any) -> str:
        """Send a POST /prediction that must be refused with ``status``; return the error message."""
        reply = self.ask(**kwargs)
        assert reply.status == status, (reply.status, reply.body)
        if message is not None:
            assert message in reply.body["error"], reply.body["error"]
        return reply.body["error"]

    def predicted(self, count: int | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        """Send a POST /prediction that must succeed; return its predictions, checked."""
        reply = self.ask(**kwargs)
        assert reply.status == 200, reply.body
        predictions = reply.body["predictions"]
        assert reply.body["count"] == len(predictions)
        if count is not None:
            assert len(predictions) == count
        for item in predictions:
            assert 0.0 <= item["probability"] <= 1.0
            assert item["churn"] == int(item["probability"] > 0.5)
        return predictions


def _secret_csv(corporation: str = SENTINEL) -> str:
    return ("corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan\n"
            f"{corporation},918273645,1,1,basic\n")


@pytest.fixture
def hostile_api(deployed, tmp_path) -> Hostile:
    """The deployed project, with sentinel files outside the data folders and traps inside them."""
    root = deployed.root
    testdata = root / "testdata"
    outside = tmp_path / "outside"
    outside.mkdir()
    for folder in (root, outside, deployed.models, deployed.logs):
        (folder / "secret.csv").write_text(_secret_csv())
    (outside / "testdata").mkdir()
    (outside / "testdata" / "testdata.csv").write_text(_secret_csv())
    (testdata / "sub").mkdir()
    (testdata / "sub" / "copy.csv").write_text((testdata / "testdata.csv").read_text())
    os.symlink(root / "secret.csv", testdata / "link_out.csv")
    os.symlink(testdata / "testdata.csv", testdata / "link_in.csv")
    os.symlink(outside, testdata / "linked_dir")
    os.symlink(testdata / "sub", testdata / "inner_dir")
    os.symlink(root / "nothing.csv", testdata / "dangling.csv")
    os.symlink(testdata / "nothing.csv", testdata / "dangling_in.csv")
    os.symlink(testdata / "loop.csv", testdata / "loop.csv")
    os.symlink(deployed.models / "secret.csv", deployed.source / "models_link.csv")
    (testdata / "notes.txt").write_text(_secret_csv())
    (testdata / "dir.csv").mkdir()
    os.mkfifo(testdata / "pipe.csv")  # opening it would block the worker for ever
    (testdata / "latin1.csv").write_bytes(_secret_csv("café").encode("latin-1"))
    app = create_app(deployed.config_path)
    return Hostile.started(deployed, app)


def _post_json(body: bytes | str, **kwargs: Any) -> dict[str, Any]:
    return {"data": body, "content_type": "application/json", **kwargs}


VALID = json.dumps({"records": [RECORD]}).encode()


# --- malformed JSON ------------------------------------------------------------------------------


@covers("truncated-json")
def test_a_body_cut_at_any_byte_is_a_400(hostile_api):
    for end in range(len(VALID)):
        message = hostile_api.refused(400, **_post_json(VALID[:end]))
        assert "not valid JSON" in message or "empty" in message, (end, message)


MALFORMED_JSON = [
    hostile("trailing-garbage", VALID + b" xyz", "not valid JSON: Extra data", id="words"),
    hostile("trailing-garbage", VALID + VALID, "not valid JSON: Extra data", id="two-documents"),
    hostile("trailing-garbage", VALID + b"}", "not valid JSON: Extra data", id="stray-brace"),
    hostile("trailing-garbage", VALID + b"\x00", "not valid JSON: Extra data", id="nul"),
    hostile("single-quotes", b"{'plan': 'basic'}", "not valid JSON", id="single-quotes"),
    hostile("single-quotes", b'{"plan": "basic" /* c */}', "not valid JSON", id="comment"),
    hostile("single-quotes", b"{plan: basic}", "not valid JSON", id="bare-words"),
    hostile("single-quotes", b'{"plan": "ba\x01sic"}', "not valid JSON: Invalid control character", id="control-char"),
    hostile("single-quotes", b'{"records": [1, 2,]}', "not valid JSON", id="trailing-comma"),
    hostile("nan-infinity", json.dumps(dict(RECORD, lastmonth_activity=math.nan)).encode(), "NaN is not JSON", id="NaN"),
    hostile("nan-infinity", json.dumps(dict(RECORD, lastmonth_activity=math.inf)).encode(), "Infinity is not JSON", id="Infinity"),
    hostile("nan-infinity", json.dumps(dict(RECORD, lastyear_activity=-math.inf)).encode(), "-Infinity is not JSON", id="-Infinity"),
    hostile("nan-infinity", json.dumps(dict(RECORD, corporation=math.nan)).encode(), "NaN is not JSON", id="NaN-id"),
    hostile("nan-infinity", json.dumps(dict(RECORD, plan=math.nan)).encode(), "NaN is not JSON", id="NaN-category"),
    hostile("nan-infinity", b"NaN", "NaN is not JSON", id="NaN-body"),
    hostile("nan-infinity", b"[Infinity]", "Infinity is not JSON", id="Infinity-record"),
    hostile("deep-nesting", b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="arrays"),
    hostile("deep-nesting", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply", id="objects"),
    hostile("deep-nesting", b'{"records": [{"plan": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}", "nested too deeply",
            id="inside-a-value"),
    hostile("deep-nesting", b"[" * 100_000, "nested too deeply", id="unclosed"),
    hostile("deep-nesting", json.dumps(dict(RECORD, plan=json.loads("[" * 500 + "]" * 500))).encode(),
            "column 'plan': expected a category, got a list", id="500-levels-parsed"),
    hostile("invalid-utf8", b'{"plan": "\xff"}', "not UTF-8", id="0xff"),
    hostile("invalid-utf8", b'{"plan": "\xc0\xaf"}', "not UTF-8", id="overlong-slash"),
    hostile("invalid-utf8", b'{"plan": "\xed\xa0\x80"}', "not UTF-8", id="encoded-surrogate"),
    hostile("invalid-utf8", b'{"plan": "\x80"}', "not UTF-8", id="lone-continuation"),
    hostile("invalid-utf8", b'{"plan": "\xe2\x82"}', "not UTF-8", id="cut-sequence"),
    hostile("invalid-utf8", b'{"pl\xffan": "basic"}', "not UTF-8", id="in-a-key"),
    hostile("utf16-utf32", json.dumps(RECORD).encode("utf-16"), "not UTF-8", id="utf-16-bom"),
    hostile("utf16-utf32", b"\xfe\xff" + json.dumps(RECORD).encode("utf-16-be"), "not UTF-8", id="utf-16-be-bom"),
    hostile("utf16-utf32", json.dumps(RECORD).encode("utf-16-le"), "not valid JSON", id="utf-16-le-no-bom"),
    hostile("utf16-utf32", json.dumps(RECORD).encode("utf-16-be"), "not valid JSON", id="utf-16-be-no-bom"),
    hostile("utf16-utf32", json.dumps(RECORD).encode("utf-32"), "not UTF-8", id="utf-32"),
    hostile("utf16-utf32", gzip.compress(VALID), "not UTF-8", id="gzip"),
    hostile("empty-body", b"", "the request body is empty", id="empty"),
    hostile("empty-body", b" \n\t\r ", "the request body is empty", id="whitespace"),
    hostile("giant-integers", b'{"records": [{"lastmonth_activity": ' + b"9" * 5000 + b"}]}", "not valid JSON",
            id="5000-digits"),
    hostile("giant-integers", b"9" * 100_000, "not valid JSON", id="100000-digit-body"),
]


@pytest.mark.parametrize("body, message", MALFORMED_JSON)
def test_malformed_json_is_a_400_that_says_why(hostile_api, body, message):
    hostile_api.refused(400, message, **_post_json(body))


@covers("utf16-utf32")
def test_a_utf8_byte_order_mark_is_accepted_as_for_csv(hostile_api):
    hostile_api.predicted(1, **_post_json(b"\xef\xbb\xbf" + VALID))
    # Content-Encoding is not honoured: a gzip body (a gzip bomb, say) is never decompressed.
    bomb = gzip.compress(b"[" + b"0," * 5_000_000 + b"0]")
    hostile_api.refused(400, "not UTF-8", **_post_json(bomb), headers={"Content-Encoding": "gzip"})


@covers("lone-surrogates")
def test_lone_surrogate_escapes_are_ordinary_text(hostile_api):
    body = b'{"\\ud800": 1, "corporation": "\\udc00x", "plan": "\\ud800", "lastmonth_activity": 1, ' \
           b'"lastyear_activity": 2, "number_of_employees": 3}'
    [prediction] = hostile_api.predicted(1, **_post_json(body))
    assert prediction["corporation"] == "\udc00x"  # echoed escaped: the reply is still valid JSON
    hostile_api.refused(400, "'\\ud800' is not a number", **_post_json(body.replace(b'"number_of_employees": 3',
                                                                                  b'"number_of_employees": "\\ud800"')))


# --- wrong types and shapes ----------------------------------------------------------------------

WRONG_SHAPES = [
    hostile("body-not-object", 5, "the JSON body must be an object", id="number"),
    hostile("body-not-object", "records", "the JSON body must be an object", id="string"),
    hostile("body-not-object", None, "the JSON body must be an object", id="null"),
    hostile("body-not-object", True, "the JSON body must be an object", id="true"),
    hostile("body-not-object", [], "no records to predict", id="empty-list"),
    hostile("body-not-object", {}, "record 0: feature 'lastmonth_activity' missing", id="empty-object"),
    hostile("records-wrong-type", {"records": 5}, "'records' must be a list of objects", id="records-number"),
    hostile("records-wrong-type", {"records": "x"}, "'records' must be a list of objects", id="records-string"),
    hostile("records-wrong-type", {"records": None}, "'records' must be a list of objects", id="records-null"),
    hostile("records-wrong-type", {"records": RECORD}, "'records' must be a list of objects", id="records-object"),
    hostile("records-wrong-type", {"records": []}, "no records to predict", id="records-empty"),
    hostile("records-wrong-type", {"dataframe_records": None}, "'dataframe_records' must be a list", id="df-records-null"),
    hostile("records-wrong-type", {"dataframe_records": 7}, "'dataframe_records' must be a list", id="df-records-number"),
    hostile("record-not-object", {"records": [5]}, "record 0: expected an object", id="number"),
    hostile("record-not-object", {"records": ["x"]}, "record 0: expected an object", id="string"),
    hostile("record-not-object", {"records": [RECORD, None]}, "record 1: expected an object", id="null-second"),
    hostile("record-not-object", [RECORD, [RECORD]], "record 1: expected an object", id="list"),
    hostile("record-not-object", [True], "record 0: expected an object", id="bool"),
    hostile("numeric-wrong-type", dict(RECORD, lastmonth_activity={"value": 120}),
            "record 0: column 'lastmonth_activity': expected a number, got an object", id="object"),
    hostile("numeric-wrong-type", dict(RECORD, lastyear_activity=[1500]),
            "record 0: column 'lastyear_activity': expected a number, got a list", id="list"),
    hostile("numeric-wrong-type", dict(RECORD, number_of_employees=True),
            "record 0: column 'number_of_employees': expected a number, got true/false", id="true"),
    hostile("numeric-wrong-type", dict(RECORD, number_of_employees=False),
            "record 0: column 'number_of_employees': expected a number, got true/false", id="false"),
    hostile("numeric-wrong-type", dict(RECORD, lastmonth_activity="lots"),
            "record 0: column 'lastmonth_activity': 'lots' is not a number", id="word"),
    hostile("numeric-wrong-type", dict(RECORD, lastmonth_activity="x" * 10_000),
            "record 0: column 'lastmonth_activity': 'xxxxxxxx", id="long-word-shortened"),
    hostile("category-wrong-type", dict(RECORD, plan={"name": "basic"}),
            "record 0: column 'plan': expected a category, got an object", id="object"),
    hostile("category-wrong-type", dict(RECORD, plan=["basic"]),
            "record 0: column 'plan': expected a category, got a list", id="list"),
    hostile("numeric-column-names", {"dataframe_split": {"columns": [1, 2, 3, 4, 5], "data": [[1, 2, 3, 4, 5]]}},
            "record 0: feature 'lastmonth_activity' missing", id="ints"),
    hostile("numeric-column-names", {"dataframe_split": {"columns": [None, True, 1.5, {"a": 1}, [1]],
                                                         "data": [[1, 2, 3, 4, 5]]}},
            "column 0: a column name must be a string or a number, got null", id="mixed"),
    hostile("numeric-column-names", {"1": 120, "2": 1500, "3": 40, "4": "basic"},
            "record 0: feature 'lastmonth_activity' missing", id="digit-keys"),
    hostile("nested-objects", {"records": [{"record": RECORD}]}, "record 0: feature 'lastmonth_activity' missing",
            id="record-in-record"),
    hostile("nested-objects", {"records": {"0": RECORD}}, "'records' must be a list", id="records-by-index"),
    hostile("nested-objects", {"dataframe_records": [[RECORD]]}, "record 0: expected an object", id="list-in-list"),
    hostile("nested-objects", {"records": {"records": [RECORD]}}, "'records' must be a list", id="envelope-in-envelope"),
    hostile("nested-objects", {"records": [RECORD], "meta": {"x": 1}}, "record 0: feature 'lastmonth_activity' missing",
            id="envelope-with-extras"),
    hostile("nested-objects", {"dataframe_split": {"columns": list(RECORD), "data": [[{"a": 1}] * 5]}},
            "record 0: column 'lastmonth_activity': expected a number, got an object", id="objects-in-split"),
    hostile("bad-dataframe-split", {"dataframe_split": None}, "'dataframe_split' must hold", id="null"),
    hostile("bad-dataframe-split", {"dataframe_split": [[1]]}, "'dataframe_split' must hold", id="list"),
    hostile("bad-dataframe-split", {"dataframe_split": {"columns": "abc", "data": []}}, "'dataframe_split' must hold",
            id="columns-string"),
    hostile("bad-dataframe-split", {"dataframe_split": {"columns": list(RECORD)}}, "'dataframe_split' must hold",
            id="no-data"),
    hostile("bad-dataframe-split", {"dataframe_split": {"columns": list(RECORD), "data": [list(RECORD.values())[:4]]}},
            "record 0: dataframe_split row must be a list of 5 values", id="short-row"),
    hostile("bad-dataframe-split", {"dataframe_split": {"columns": list(RECORD), "data": [RECORD]}},
            "record 0: dataframe_split row must be a list of 5 values", id="object-row"),
    hostile("bad-dataframe-split", {"dataframe_split": {"columns": list(RECORD), "data": []}}, "no records to predict",
            id="no-rows"),
    hostile("out-of-range-numbers", dict(RECORD, lastyear_activity=10**400),
            "record 0: column 'lastyear_activity': number too large", id="10**400"),
    hostile("out-of-range-numbers", dict(RECORD, lastyear_activity=-(10**4000)),
            "record 0: column 'lastyear_activity': number too large", id="-10**4000"),
    hostile("out-of-range-numbers", dict(RECORD, lastmonth_activity="1e400"),
            "record 0: column 'lastmonth_activity': not a finite number", id="'1e400'"),
    hostile("out-of-range-numbers", dict(RECORD, lastmonth_activity="-inf"),
            "record 0: column 'lastmonth_activity': not a finite number", id="'-inf'"),
    hostile("out-of-range-numbers", dict(RECORD, lastmonth_activity="Infinity"),
            "record 0: column 'lastmonth_activity': not a finite number", id="'Infinity'"),
    hostile("python-only-numbers", dict(RECORD, lastmonth_activity="1_000"), "'1_000' is not a number", id="underscore"),
    hostile("python-only-numbers", dict(RECORD, lastmonth_activity="١٢٣"), "'١٢٣' is not a number",
            id="arabic-indic-digits"),
    hostile("python-only-numbers", dict(RECORD, lastmonth_activity="１２"), "'１２' is not a number", id="fullwidth-digits"),
    hostile("python-only-numbers", dict(RECORD, lastmonth_activity="-nan"), "'-nan' is not a number", id="-nan"),
    hostile("python-only-numbers", dict(RECORD, lastmonth_activity="ınf"), "'ınf' is not a number", id="dotless-i-inf"),
    hostile("python-only-numbers", dict(RECORD, lastmonth_activity="0x10"), "'0x10' is not a number", id="hex"),
    hostile("python-only-numbers", dict(RECORD, lastmonth_activity="1,5"), "'1,5' is not a number", id="decimal-comma"),
    hostile("python-only-numbers", dict(RECORD, lastmonth_activity="½"), "'½' is not a number", id="vulgar-fraction"),
]


@pytest.mark.parametrize("body, message", WRONG_SHAPES)
def test_wrong_types_and_shapes_are_a_400_naming_record_and_column(hostile_api, body, message):
    hostile_api.refused(400, message, **_post_json(json.dumps(body)))


def _nested(depth: int, inner: Any) -> str:
    """Return the JSON text of ``inner`` inside ``depth`` lists (json.dumps itself gives up near 1,000)."""
    return "[" * depth + json.dumps(inner) + "]" * depth


def _with(body: Any, deep: str) -> str:
    """Return the JSON text of ``body`` with its string "DEEP" replaced by the text ``deep``."""
    return json.dumps(body).replace('"DEEP"', deep)


@covers("deep-column-names")
def test_column_names_must_be_strings_or_numbers_however_deep_they_nest(hostile_api):
    data = [list(RECORD.values())]
    split = {"dataframe_split": {"columns": [*list(RECORD)[:4], "DEEP"], "data": data}}
    # 1,000 deep: orjson parses it (str() of it was a RecursionError); 100,000: the standard library gives up first.
    for depth, message in ((1, "got a list"), (1_000, "got a list"), (100_000, "nested too deeply")):
        hostile_api.refused(400, message, **_post_json(_with(split, _nested(depth, "plan"))))
    assert "column 4: a column name must be a string or a number, got a list" in \
        hostile_api.refused(400, **_post_json(_with(split, _nested(1_000, "plan"))))
    for name, kind in ((None, "null"), (True, "true/false"), ({"a": 1}, "an object")):
        hostile_api.refused(400, f"column 4: a column name must be a string or a number, got {kind}",
                            json={"dataframe_split": {"columns": [*list(RECORD)[:4], name], "data": data}})
    # Values nested as deep, in every form, are refused as values (and an id that deep is not echoed).
    deep = _nested(1_000, 1)
    for body in ({"records": [dict(RECORD, plan="DEEP")]}, {"dataframe_records": [dict(RECORD, lastmonth_activity="DEEP")]},
                 {"instances": [dict(RECORD, plan="DEEP")]},
                 {"inputs": {column: ["DEEP" if column == "plan" else value] for column, value in RECORD.items()}},
                 {"dataframe_split": {"columns": list(RECORD), "data": [[*list(RECORD.values())[:4], "DEEP"]]}}):
        hostile_api.refused(400, "expected a", **_post_json(_with(body, deep)))
    [prediction] = hostile_api.predicted(1, **_post_json(_with(dict(RECORD, corporation="DEEP"), deep)))
    assert "corporation" not in prediction


@covers("giant-query-numbers")
def test_a_reasons_number_of_thousands_of_digits_is_a_400(hostile_api):
    for digits in ("9" * 4_301, "1" + "0" * 99_999, "0" * 5_000 + "101"):
        error = hostile_api.refused(400, "must be a whole number from 0 to 100", json=RECORD,
                                    query_string={"reasons": digits})
        assert len(error) < 300, error  # the value is shown shortened
    # Leading zeros are still a number in range.
    [prediction] = hostile_api.predicted(1, json=RECORD, query_string={"reasons": "0" * 5_000 + "2"})
    assert len(prediction["reasons"]) == 2


@covers("numeric-wrong-type", "category-wrong-type")
def test_types_a_data_file_could_hold_are_accepted(hostile_api):
    # A boolean category reads as its text, as "true" in a CSV file would; an id that is an object
    # is not echoed; plain numbers in text form are numbers.
    [prediction] = hostile_api.predicted(1, json=dict(RECORD, plan=True, corporation={"a": [1]},
                                                     lastmonth_activity=" 1.5e2 ", number_of_employees="+.5"))
    assert "corporation" not in prediction


@covers("extreme-finite-numbers")
def test_extreme_finite_numbers_give_certain_probabilities_without_warnings(hostile_api):
    # pytest turns warnings into errors here (pyproject.toml): an overflow warning would be a 500.
    records = [dict(RECORD, **{c: sign * 1.7976931348623157e308 for c in NUMERIC}) for sign in (1, -1)]
    records += [dict(RECORD, lastmonth_activity=1e308, lastyear_activity=-1e308), dict(RECORD, lastmonth_activity=5e-324)]
    probabilities = [p["probability"] for p in hostile_api.predicted(4, json=records)]
    assert probabilities[0] in (0.0, 1.0) and probabilities[1] in (0.0, 1.0)


def _synthetic_project(root: Path, algorithm: str) -> Project:
    """A project whose two features have a scale below 1 and strong coefficients of opposite sign."""
    rng = np.random.default_rng(5)
    project = Project(root)
    for folder in (project.source, root / "testdata"):
        folder.mkdir(parents=True)
    for path, rows in ((project.source / "train.csv", 600), (root / "testdata" / "test.csv", 200)):
        x = rng.uniform(0, 3, size=(rows, 2))
        exited = (rng.uniform(size=rows) < 1 / (1 + np.exp(-4 * (x[:, 0] - x[:, 1])))).astype(int)
        path.write_text("x1,x2,exited\n" + "".join(f"{a:.6f},{b:.6f},{y}\n" for (a, b), y in zip(x, exited)))
    project.write_config(base_config(schema={"target": "exited", "id_columns": []}, model={"algorithm": algorithm}))
    return project


@covers("overflowing-numbers")
@pytest.mark.parametrize("algorithm", ["logistic_regression", "xgboost"])
def test_numbers_that_overflow_the_model_are_a_400_naming_record_and_column(tmp_path, algorithm):
    project = _synthetic_project(tmp_path / algorithm, algorithm)
    assert project.tick() == 0
    application = create_app(project.config_path)
    api = Hostile.started(project, application)
    ordinary = {"x1": 1.0, "x2": 2.0}
    scaled_overflow = {"x1": 1.79e308, "x2": 0.0}  # finite, but (x - mean) / scale is not
    opposite_terms = {"x1": 1e308, "x2": 1e308}    # finite once scaled; model terms of +inf and -inf
    one_term = {"x1": 0.0, "x2": 1e308}           # one infinite model term
    if algorithm == "xgboost":  # trees compare values; nothing overflows
        for record in (scaled_overflow, opposite_terms, one_term):
            api.predicted(2, json=[ordinary, record])
        return
    predictor = application.extensions["churn"].watcher.current().predictor
    assert (predictor.scale < 1).all()  # the premises of this test
    with np.errstate(over="ignore"):
        scaled = (np.array([1e308, 1e308]) - predictor.mean) / predictor.scale
        assert np.isfinite(scaled).all() and not np.isfinite(scaled * predictor.coef[:2]).any()
    assert np.sign(predictor.coef[0]) != np.sign(predictor.coef[1])
    api.refused(400, "record 1: column 'x1': number too large for the model", json=[ordinary, scaled_overflow])
    # Refused whatever the BLAS: with fused multiply-add inf + -inf never happens and the sum is a
    # certain 0 or 1; without it the sum is NaN (scikit-learn's pipeline answers NaN here).
    api.refused(400, "record 1: column 'x1': number too large for the model", json=[ordinary, opposite_terms])
    api.refused(400, "record 2: column 'x2': number too large for the model", json=[ordinary, ordinary, one_term])
    for record, column in ((scaled_overflow, "x1"), (opposite_terms, "x1"), (one_term, "x2")):  # one record alone
        api.refused(400, f"record 0: column '{column}': number too large for the model", json=record)
    many = [ordinary] * 20  # past the few rows computed row by row
    api.refused(400, "record 20: column 'x1': number too large for the model", json=[*many, scaled_overflow])
    api.refused(400, "record 20: column 'x2': number too large for the model", json=[*many, one_term])
    api.predicted(2, json=[ordinary, {"x1": 1e300, "x2": -1e300}])  # huge but finite terms: certain probabilities


# --- column names --------------------------------------------------------------------------------

FULL = {"lastmonth_activity": 1, "lastyear_activity": 2, "number_of_employees": 3, "plan": "basic"}
CSV_ROW = "1,2,3,basic"

NAME_CASES = [
    hostile("repeated-keys", _post_json(b'{"plan": "basic", "plan": "premium", "lastmonth_activity": 1, '
                                        b'"lastyear_activity": 2, "number_of_employees": 3}'),
            "record 0: two keys name column 'plan'", id="json-record"),
    hostile("repeated-keys", _post_json(b'{"records": [{"plan": "a"}], "records": [' + json.dumps(FULL).encode() + b"]}"),
            "the JSON body names 'records' twice", id="json-envelope"),
    hostile("repeated-keys", _post_json(b'{"path": "testdata/testdata.csv", "path": "../secret.csv"}'),
            "the JSON body names 'path' twice", id="json-path"),
    hostile("repeated-keys", {"data": "plan,lastmonth_activity,lastyear_activity,number_of_employees,plan\n"
                                      "basic,1,2,3,premium\n", "content_type": "text/csv"},
            "record 0: two keys name column 'plan'", id="csv-header"),
    hostile("repeated-keys", {"json": {"dataframe_split": {"columns": [*FULL, "plan"],
                                                           "data": [[*FULL.values(), "premium"]]}}},
            "record 0: two keys name column 'plan'", id="dataframe-split"),
    hostile("normalised-collisions", {"json": dict(FULL, PLAN="premium")}, "record 0: two keys name column 'plan'",
            id="upper-case"),
    hostile("normalised-collisions", {"json": dict(FULL, **{" plan ": "premium"})},
            "record 0: two keys name column 'plan'", id="spaces"),
    hostile("normalised-collisions", {"json": dict(FULL, **{"LastMonth Activity": 5})},
            "record 0: two keys name column 'lastmonth_activity'", id="spelling"),
    hostile("normalised-collisions", {"json": [FULL, dict(FULL, **{"Plan!": "x"})]},
            "record 1: two keys name column 'plan'", id="second-record"),
    hostile("normalised-collisions", {"data": "Plan,lastmonth_activity,lastyear_activity,number_of_employees,PLAN\n"
                                              "basic,1,2,3,premium\n", "content_type": "text/csv"},
            "record 0: two keys name column 'plan'", id="csv-header"),
    hostile("unicode-names", {"json": {**{k.upper().replace("A", "А"): v for k, v in FULL.items()}}},
            "record 0: feature 'lastmonth_activity' missing", id="cyrillic-lookalikes"),
    hostile("unicode-names", {"json": {"ｐｌａｎ": "basic", **{k: v for k, v in FULL.items() if k != "plan"}}},
            "record 0: feature 'plan' missing", id="fullwidth-lookalike"),
]


@pytest.mark.parametrize("request_kwargs, message", NAME_CASES)
def test_ambiguous_and_lookalike_names_are_a_400_naming_the_column(hostile_api, request_kwargs, message):
    hostile_api.refused(400, message, **request_kwargs)


@covers("repeated-keys", "unicode-names")
def test_unicode_empty_and_repeated_names_of_other_columns_are_ignored(hostile_api):
    odd = {"": 1, "日本": 2, "\u0000": 3, "😀": 4, "___": 5, "!!!": 6, "Ünïcödé": 7, "\ufeff": 8}
    hostile_api.predicted(1, json=dict(FULL, **odd))
    hostile_api.predicted(1, **_post_json(b'{"x": 1, "x": 2, ' + json.dumps(FULL).encode()[1:]))
    # A zero-width space or a byte order mark is not a letter: "plan\u200b" is "plan".
    hostile_api.predicted(1, json={"\ufeffplan\u200b": "basic", **{k: v for k, v in FULL.items() if k != "plan"}})
    header = ",".join(["", "日本", *FULL, "😀"])
    hostile_api.predicted(1, data=f"{header}\nx,y,{CSV_ROW},z\n", content_type="text/csv")


@covers("huge-names")
def test_huge_column_names_do_not_grow_the_name_cache(hostile_api):
    before = sum(map(len, model_module._NAME_CACHE))
    for request in range(20):
        names = {f"{request}-{i}-" + "n" * 100_000: 1 for i in range(5)}
        hostile_api.predicted(1, json=dict(FULL, **names))
    # 10 million characters of names were sent; the cache may keep at most 4096 short ones.
    assert sum(map(len, model_module._NAME_CACHE)) - before <= 4096 * 256


# --- sizes ---------------------------------------------------------------------------------------


def _environ(body: bytes, *, content_type: str = "application/json", **changes: Any) -> dict[str, Any]:
    """A POST /prediction environ with ``body``; ``changes`` set (or, when None, remove) its keys."""
    environ = EnvironBuilder(path="/prediction", method="POST", data=body, content_type=content_type).get_environ()
    for key, value in changes.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return environ


def _padded(body: bytes, size: int) -> bytes:
    """Return JSON ``body`` grown to ``size`` bytes with trailing spaces."""
    assert len(body) <= size
    return body + b" " * (size - len(body))


def _padded_csv(body: bytes, size: int) -> bytes:
    """Return CSV ``body`` grown to ``size`` bytes with blank lines (of spaces: fewer lines to parse)."""
    line = b" " * 65_535 + b"\n"
    padding = line * ((size - len(body)) // len(line))
    return body + padding + b"\n" * (size - len(body) - len(padding))


@covers("over-limit-with-length", "at-the-limits")
def test_a_body_over_the_limit_is_a_413_and_one_at_the_limit_is_read(hostile_api):
    limit = hostile_api.project.config().api.max_request_bytes
    message = f"request body larger than the limit of {limit} bytes"
    hostile_api.predicted(1, **_post_json(_padded(VALID, limit)))
    hostile_api.refused(413, message, **_post_json(_padded(VALID, limit + 1)))
    csv_body = (",".join(FULL) + "\n" + CSV_ROW + "\n").encode()
    hostile_api.predicted(1, data=_padded_csv(csv_body, limit), content_type="text/csv")
    hostile_api.refused(413, message, data=_padded_csv(csv_body, limit + 1), content_type="text/csv")
    hostile_api.refused(413, message, data=b"{" * (limit + 1), content_type="application/json")
    # The Content-Type is checked first: a body of the wrong type is refused without being read.
    hostile_api.refused(415, "send application/json or text/csv", data=_padded(VALID, limit + 1),
                        content_type="text/plain")


@covers("lying-content-length", "over-limit-chunked", "unterminated-body")
def test_content_length_and_chunking_cannot_get_round_the_limit(hostile_api):
    limit = hostile_api.project.config().api.max_request_bytes
    message = f"request body larger than the limit of {limit} bytes"
    over = _padded(VALID, limit + 1)

    def status(environ: dict[str, Any]) -> tuple[int, str | None]:
        reply = hostile_api.ask_environ(environ)
        return reply.status, reply.body.get("error")

    # A Content-Length over the limit is refused before a byte is read, whatever the body.
    assert status(_environ(VALID, CONTENT_LENGTH=str(10**12))) == (413, message)
    assert status(_environ(VALID, CONTENT_LENGTH=str(limit + 1))) == (413, message)
    # Chunked, no Content-Length, the server ends the stream (gunicorn sets wsgi.input_terminated):
    # read up to the limit, then 413.
    for body in (over, b"[" * (limit * 2)):
        assert status(_environ(body, CONTENT_LENGTH=None, HTTP_TRANSFER_ENCODING="chunked",
                               **{"wsgi.input_terminated": True})) == (413, message)
    assert status(_environ(VALID, CONTENT_LENGTH=None, HTTP_TRANSFER_ENCODING="chunked",
                           **{"wsgi.input_terminated": True}))[0] == 200
    # A Content-Length smaller than the body: only that many bytes are read.
    assert status(_environ(over, CONTENT_LENGTH="10"))[0] == 400
    # Neither a length nor a server that ends the stream: nothing is read, rather than read for ever.
    for changes in ({"CONTENT_LENGTH": None}, {"CONTENT_LENGTH": None, "HTTP_TRANSFER_ENCODING": "chunked"},
                    {"CONTENT_LENGTH": "-5"}, {"CONTENT_LENGTH": "many"}):
        assert status(_environ(over, **changes)) == (400, "the request body is empty"), changes


def _records(count: int) -> list[dict[str, Any]]:
    plans = ("basic", "premium", "enterprise", None)
    return [{"corporation": f"c{i}", "lastmonth_activity": i % 500, "lastyear_activity": (i * 7) % 4000,
             "number_of_employees": None if i % 11 == 0 else i % 90, "plan": plans[i % 4]} for i in range(count)]


def _forms(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    columns = list(records[0])
    csv_text = io.StringIO()
    writer = csv.writer(csv_text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if r[c] is None else r[c] for c in columns] for r in records])
    return {
        "records": {"json": {"records": records}},
        "list": {"json": records},
        "dataframe_records": {"json": {"dataframe_records": records}},
        "dataframe_split": {"json": {"dataframe_split": {"columns": columns,
                                                         "data": [[r[c] for c in columns] for r in records]}}},
        "csv": {"data": csv_text.getvalue(), "content_type": "text/csv"},
    }


@covers("at-the-limits", "over-record-limit")
def test_ten_thousand_records_are_predicted_and_one_more_is_a_413(hostile_api):
    limit = hostile_api.project.config().api.max_records
    assert limit == 10_000  # the default
    records = _records(limit + 1)
    for name, request in _forms(records[:limit]).items():
        predictions = hostile_api.predicted(limit, **request)
        assert predictions[-1]["corporation"] == f"c{limit - 1}", name
    for name, request in _forms(records).items():
        hostile_api.refused(413, f"{limit + 1} records; at most {limit} per request", **request)
    # Counted before anything is validated: 10,001 non-records are a 413 too.
    hostile_api.refused(413, "at most 10000 per request", json=[0] * (limit + 1))
    # A dataset file in a data folder is held to the same limit.
    header, *rows = _forms(records)["csv"]["data"].splitlines(keepends=True)
    testdata = hostile_api.project.root / "testdata"
    (testdata / "big.csv").write_text(header + "".join(rows[:limit]))
    (testdata / "bigger.csv").write_text(header + "".join(rows))
    hostile_api.predicted(limit, json={"path": "testdata/big.csv"})
    hostile_api.refused(413, f"more than {limit} records; at most {limit} per request", json={"path": "testdata/bigger.csv"})


def _traced_peak(action) -> int:
    """Return the most memory Python held (tracemalloc) while ``action()`` ran, above what it held before."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@covers("records-past-the-limit")
def test_records_past_the_limit_are_refused_before_any_is_built(deployed):
    # Issue 16: a 9.6 MB {"inputs": {"a": [0, ...]}} body took a worker to 1.68 GB before its 413,
    # every record built first. Counted first, a request over the limit holds no more memory than
    # parsing its body does, plus copies of the body (and the few records a CSV body has up to the limit).
    count, limit = 200_000, 100
    deployed.write_config(base_config(api={"max_records": limit}))
    hostile_api = Hostile.started(deployed, create_app(deployed.config_path))
    bodies = {
        "inputs, one column": (json.dumps({"inputs": {"a": [0] * count}}), "application/json"),
        "inputs, every column": (json.dumps({"inputs": {c: [v] * count for c, v in RECORD.items()}}), "application/json"),
        "dataframe_split": (json.dumps({"dataframe_split": {"columns": ["a"], "data": [[0]] * count}}), "application/json"),
        "records": (json.dumps({"records": [{}] * count}), "application/json"),
        "list": (json.dumps([{}] * count), "application/json"),
        "dataframe_records": (json.dumps({"dataframe_records": [{}] * count}), "application/json"),
        "instances": (json.dumps({"instances": [{}] * count}), "application/json"),
        "csv": ("a\n" + "0\n" * count, "text/csv"),
    }
    for form, (body, content_type) in bodies.items():
        parsing = _traced_peak(lambda: orjson.loads(body)) if content_type == "application/json" else 0  # as the API parses
        reply: list[Reply] = []
        answering = _traced_peak(lambda: reply.append(hostile_api.ask(data=body, content_type=content_type)))
        assert reply[0].status == 413, (form, reply[0].body)
        assert reply[0].body["error"] == f"{count} records; at most {limit} per request", form
        assert answering <= 1.5 * parsing + 4 * len(body) + 2**20, (form, answering, parsing, len(body))


# --- HTTP: methods, routes, Content-Types, CSV bodies ---------------------------------------------

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "BREW")


@covers("wrong-methods")
@pytest.mark.parametrize("route", list(ROUTES))
def test_every_method_on_every_route_is_answered_in_json_without_a_5xx(hostile_api, route):
    allowed = ROUTES[route] | ({"HEAD"} if "GET" in ROUTES[route] else set()) | {"OPTIONS"}
    for method in METHODS:
        reply = hostile_api.ask(method, route, json=RECORD if method != "GET" else None)
        if method not in allowed:
            assert reply.status == 405, (method, reply.status)
            assert set(reply.headers["Allow"].split(", ")) == allowed
            if method != "HEAD":
                assert reply.body["error"] == f"{method} is not allowed on {route}"
        elif method == "OPTIONS":
            assert reply.status == 200 and set(reply.headers["Allow"].split(", ")) == allowed
        else:
            assert reply.status == 200, (method, route, reply.body)


def _request_series(metrics_text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in metrics_text.splitlines() if line.startswith("churn_api_requests_total{")}


@covers("random-methods")
@pytest.mark.parametrize("with_token", [False, True])
def test_random_method_names_do_not_grow_the_metrics(deployed, monkeypatch, with_token):
    # Issue 16: 2,300 requests with random method names grew /metrics from 51 series to 39,168.
    if with_token:
        monkeypatch.setenv("CHURN_TEST_TOKEN", "s3cret-token")
        deployed.write_config(base_config(api={"token_env": "CHURN_TEST_TOKEN"}))
    headers = {"Authorization": "Bearer s3cret-token"} if with_token else {}
    api = Hostile.started(deployed, create_app(deployed.config_path), headers)
    random = np.random.default_rng(16)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    for _ in range(300):
        method = "".join(random.choice(letters, size=int(random.integers(3, 12))))
        for route in ("/prediction", "/health", "/nope"):
            api.ask(method, route, headers=headers)
        api.ask(method, "/metrics")  # without the token: a 401 when one is needed
    reply = api.ask("GET", "/metrics", headers=headers)
    series = _request_series(reply.body)
    methods = {re.search(r'method="([^"]*)"', line).group(1) for line in series}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "<other>"}, methods
    assert "<other>" in methods
    assert len(series) <= 30, sorted(series)


@covers("unknown-routes")
def test_unknown_routes_are_a_json_404_and_there_is_no_static_route(hostile_api):
    rules = {rule.rule for rule in hostile_api.app.url_map.iter_rules()}
    assert rules == set(ROUTES)  # in particular no /static/<path>, which would serve files next to app.py
    for url in ("/", "/nope", "/prediction/", "/static/app.py", "/static/../config.json", "/%2e%2e/secret.csv",
                "/prediction/..%2fsecret.csv", "/prediction%2f..%2fsecret.csv", "/../secret.csv",
                "//etc/passwd", "/testdata/testdata.csv", "/secret.csv", "/" + "a" * 10_000):
        for method in ("GET", "POST"):
            reply = hostile_api.ask(method, url, json=RECORD)
            assert reply.status == 404, (url, reply.body)
            assert "routes: /prediction" in reply.body["error"]


CONTENT_TYPES = [
    hostile("content-type", None, 415, "Content-Type missing", id="missing"),
    hostile("content-type", "", 415, "Content-Type missing", id="empty"),
    hostile("content-type", "text/plain", 415, "Content-Type text/plain", id="text-plain"),
    hostile("content-type", "application/xml", 415, "Content-Type application/xml", id="xml"),
    hostile("content-type", "application/x-json", 415, "Content-Type application/x-json", id="x-json"),
    hostile("content-type", "application/ld+json", 415, "Content-Type application/ld+json", id="ld-json"),
    hostile("content-type", "*/*", 415, "Content-Type */*", id="wildcard"),
    hostile("content-type", "application/json, text/csv", 415, "send application/json or text/csv", id="listed"),
    hostile("content-type", "garbage;;;=", 415, "send application/json or text/csv", id="garbage"),
    hostile("content-type", "application/x-www-form-urlencoded", 415, "send application/json or text/csv", id="form"),
    hostile("content-type", "multipart/form-data; boundary=x", 415, "send application/json or text/csv", id="multipart"),
    hostile("content-type", "APPLICATION/JSON", 200, None, id="upper-case"),
    hostile("content-type", "application/json;charset=utf-8;x=y", 200, None, id="parameters"),
    hostile("charset-parameter", "application/json; charset=utf-16", 200, None, id="json-says-utf16"),
    hostile("charset-parameter", "application/json; charset=latin-1", 200, None, id="json-says-latin1"),
    hostile("content-type", "text/csv", 400, "no records to predict", id="json-sent-as-csv"),
]


@pytest.mark.parametrize("content_type, status, message", CONTENT_TYPES)
def test_the_content_type_decides_and_a_wrong_one_is_a_415(hostile_api, content_type, status, message):
    headers = {} if content_type is None else {"Content-Type": content_type}
    reply = hostile_api.ask(data=VALID, headers=headers)
    assert reply.status == status, reply.body
    if message:
        assert message in reply.body["error"]


@covers("content-type", "charset-parameter")
def test_forms_uploads_and_lying_charsets_are_refused_unread(hostile_api):
    secret = (hostile_api.project.root / "secret.csv").read_bytes()
    hostile_api.refused(415, "multipart/form-data", data={"file": (io.BytesIO(secret), "secret.csv")})
    hostile_api.refused(415, "application/x-www-form-urlencoded", data={"path": "../secret.csv"})
    # A charset parameter changes nothing: JSON and CSV bodies are UTF-8.
    hostile_api.refused(400, "not UTF-8", data=json.dumps(RECORD).encode("utf-16"),
                        content_type="application/json; charset=utf-16")
    latin1 = (",".join(FULL) + "\n1,2,3,café\n").encode("latin-1")
    hostile_api.refused(400, "the CSV body is not UTF-8 text", data=latin1, content_type="text/csv; charset=latin-1")


BAD_CSV = [
    hostile("bad-csv", b"", "the CSV body is empty", id="empty"),
    hostile("bad-csv", b"\n\n , ,\n", "the CSV body is empty", id="blank-lines"),
    hostile("bad-csv", (",".join(FULL) + "\n").encode(), "no records to predict", id="header-only"),
    hostile("bad-csv", b"\xff\xfe" + (",".join(FULL) + "\n").encode("utf-16-le"), "not UTF-8", id="utf-16"),
    hostile("bad-csv", (",".join(FULL) + "\n1,2\n").encode(), "record 0: 2 fields, the header has 4", id="short-row"),
    hostile("bad-csv", (",".join(FULL) + "\n" + CSV_ROW + ",extra\n").encode(), "record 0: 5 fields", id="long-row"),
    hostile("bad-csv", (",".join(FULL) + "\n1,2,3,\"" + "x" * 200_000 + "\"\n").encode(), "not a well-formed CSV body",
            id="field-over-limit"),
    hostile("bad-csv", (",".join(FULL) + "\r1,2,3,basic\r").encode(), "not a well-formed CSV body", id="bare-cr"),
    hostile("bad-csv", (",".join(FULL) + "\n1,2\x00,3,basic\n").encode(), "'2\\x00' is not a number", id="nul"),
    hostile("bad-csv", (",".join(FULL) + "\n1,\"2,3,basic\n").encode(), "record 0: 2 fields", id="unclosed-quote"),
]


@pytest.mark.parametrize("body, message", BAD_CSV)
def test_bad_csv_bodies_are_a_400_that_says_why(hostile_api, body, message):
    hostile_api.refused(400, message, data=body, content_type="text/csv")


# --- {"path": ...}: every way out of the data folders ---------------------------------------------

PATHS = [
    hostile("path-dotdot", "../secret.csv", 403, id="parent"),
    hostile("path-dotdot", "../outside/secret.csv", 403, id="sibling"),
    hostile("path-dotdot", "../../../../../../../../etc/passwd", 403, id="root"),
    hostile("path-dotdot", "./../secret.csv", 403, id="dot-parent"),
    hostile("path-dotdot", "..", 403, id="bare"),
    hostile("path-dotdot", "config.json", 403, id="project-file"),
    hostile("path-dotdot", "models/secret.csv", 403, id="other-project-folder"),
    hostile("path-absolute", "/etc/passwd", 403, id="etc-passwd"),
    hostile("path-absolute", "//etc/passwd", 403, id="double-slash"),
    hostile("path-absolute", "/proc/self/environ", 403, id="proc-environ"),
    hostile("path-absolute", "/dev/zero", 403, id="dev-zero"),
    hostile("path-absolute", "/dev/stdin", 403, id="dev-stdin"),
    hostile("path-absolute", "/", 403, id="root"),
    hostile("path-absolute", "{root}/secret.csv", 403, id="project-secret"),
    hostile("path-absolute", "{root}/logs/secret.csv", 403, id="logs-secret"),
    hostile("path-absolute", "{root}/testdata/testdata.csv", 200, id="inside-is-fine"),
    hostile("path-absolute", "file:///etc/passwd", 403, id="file-url"),
    hostile("path-dotdot-inside", "testdata/../secret.csv", 403, id="out-of-testdata"),
    hostile("path-dotdot-inside", "testdata/../../outside/secret.csv", 403, id="two-up"),
    hostile("path-dotdot-inside", "sourcedata/../models/secret.csv", 403, id="to-models"),
    hostile("path-dotdot-inside", "testdata/./../secret.csv", 403, id="dot-dotdot"),
    hostile("path-dotdot-inside", "testdata//..//secret.csv", 403, id="double-slashes"),
    hostile("path-dotdot-inside", "testdata/sub/../../secret.csv", 403, id="from-subfolder"),
    hostile("path-dotdot-inside", "testdata/testdata.csv/../../secret.csv", 403, id="through-a-file"),
    hostile("path-dotdot-inside", "sourcedata/../testdata/testdata.csv", 200, id="between-data-folders"),
    hostile("path-dotdot-inside", "testdata/sub/../testdata.csv", 200, id="staying-inside"),
    hostile("path-url-encoded", "%2e%2e%2fsecret.csv", 403, id="encoded"),
    hostile("path-url-encoded", "%2e%2e/secret.csv", 403, id="encoded-dots"),
    hostile("path-url-encoded", "..%2fsecret.csv", 403, id="encoded-slash"),
    hostile("path-url-encoded", "%252e%252e%252fsecret.csv", 403, id="double-encoded"),
    hostile("path-url-encoded", "..%c0%afsecret.csv", 403, id="overlong"),
    hostile("path-url-encoded", "testdata/%2e%2e%2fsecret.csv", 404, id="encoded-inside"),
    hostile("path-url-encoded", "testdata/%252e%252e%252fsecret.csv", 404, id="double-encoded-inside"),
    hostile("path-url-encoded", "testdata%2ftestdata.csv", 403, id="encoded-separator"),
    hostile("path-backslashes", "..\\secret.csv", 403, id="parent"),
    hostile("path-backslashes", "testdata\\..\\secret.csv", 403, id="inside"),
    hostile("path-backslashes", "testdata\\..\\..\\outside\\secret.csv", 403, id="two-up"),
    hostile("path-backslashes", "testdata/..\\..\\secret.csv", 404, id="mixed"),
    hostile("path-backslashes", "C:\\Windows\\win.ini", 403, id="drive"),
    hostile("path-backslashes", "\\\\server\\share\\secret.csv", 403, id="unc"),
    hostile("path-symlink-file", "testdata/link_out.csv", 403, id="link-out"),
    hostile("path-symlink-file", "testdata/dangling.csv", 403, id="dangling-out"),
    hostile("path-symlink-file", "testdata/dangling_in.csv", 404, id="dangling-in"),
    hostile("path-symlink-file", "testdata/loop.csv", 400, id="loop"),
    hostile("path-symlink-file", "sourcedata/models_link.csv", 403, id="to-models"),
    hostile("path-symlink-file", "testdata/link_in.csv", 200, id="link-in-is-fine"),
    hostile("path-symlink-dir", "testdata/linked_dir/secret.csv", 403, id="dir-out"),
    hostile("path-symlink-dir", "testdata/linked_dir/testdata/testdata.csv", 403, id="dir-out-lookalike"),
    hostile("path-symlink-dir", "testdata/linked_dir", 403, id="the-dir"),
    hostile("path-symlink-dir", "testdata/linked_dir/../secret.csv", 403, id="dotdot-after-link"),
    hostile("path-symlink-dir", "testdata/inner_dir/copy.csv", 200, id="dir-in-is-fine"),
    hostile("path-nul", "testdata/testdata.csv\x00", 400, id="end"),
    hostile("path-nul", "\x00", 400, id="only"),
    hostile("path-nul", "../secret.csv\x00.csv", 400, id="extension-trick"),
    hostile("path-nul", "testdata/\x00/../../secret.csv", 400, id="middle"),
    hostile("path-too-long", "testdata/" + "a" * 300 + ".csv", 400, id="over-NAME_MAX"),
    hostile("path-too-long", "testdata/" + "/".join(["a" * 200] * 25) + ".csv", 400, id="over-PATH_MAX"),
    hostile("path-too-long", "../" * 3000 + "etc/passwd", 403, id="3000-parents"),
    hostile("path-too-long", "testdata/" + "./" * 3000 + "testdata.csv", 200, id="3000-dots-inside"),
    hostile("path-too-long", "testdata/" + "sub/../" * 1000 + "testdata.csv", 200, id="1000-round-trips"),
    hostile("path-too-long", "x" * 1_000_000, 403, id="a-megabyte"),
    hostile("path-too-long", "testdata/" + "x" * 1_000_000, 400, id="a-megabyte-inside"),
    hostile("path-tilde", "~", 403, id="home"),
    hostile("path-tilde", "~/secret.csv", 403, id="in-home"),
    hostile("path-tilde", "~root/.ssh/id_rsa", 403, id="other-user"),
    hostile("path-tilde", "testdata/~", 404, id="inside"),
    hostile("path-not-csv", "testdata/notes.txt", 400, id="text"),
    hostile("path-not-csv", "ingesteddata/ingestion_record.json", 400, id="json"),
    hostile("path-not-csv", "ingesteddata/rowhashes.bin", 400, id="binary"),
    hostile("path-not-csv", "ingesteddata/.run.lock", 400, id="lock-file"),
    hostile("path-not-csv", "testdata", 400, id="folder"),
    hostile("path-not-csv", "testdata/", 400, id="folder-slash"),
    hostile("path-not-csv", "testdata/dir.csv", 400, id="folder-named-csv"),
    hostile("path-not-csv", "testdata/pipe.csv", 400, id="fifo"),
    hostile("path-not-csv", "testdata/latin1.csv", 400, id="latin-1-csv"),
    hostile("path-not-csv", "testdata/nope.csv", 404, id="missing"),
    hostile("path-not-csv", "", 400, id="empty"),
    hostile("path-not-csv", "   ", 400, id="blank"),
    hostile("path-surrogates", "testdata/\ud800.csv", 400, id="high"),
    hostile("path-surrogates", "../\udfff.csv", 400, id="low-outside"),
    hostile("path-surrogates", "testdata/\udcff.csv", 404, id="surrogate-escape-byte"),
]


@pytest.mark.parametrize("path, status", PATHS)
def test_a_path_outside_the_data_folders_is_never_read(hostile_api, path, status):
    path = path.replace("{root}", str(hostile_api.project.root))
    reply = hostile_api.ask(json={"path": path})
    assert reply.status == status, reply.body
    if status == 200:
        assert reply.body["count"] == 300  # testdata.csv (or its copy), never a secret
        return
    error = reply.body["error"]
    assert {403: "outside the data folders", 404: "no dataset", 400: ""}[status] in error, error
    assert len(error) < 400  # a megabyte path is not echoed back


PATH_TYPES = [
    hostile("path-wrong-type", {"path": 5}, "'path' must be a string", id="number"),
    hostile("path-wrong-type", {"path": None}, "'path' must be a string", id="null"),
    hostile("path-wrong-type", {"path": ["testdata/testdata.csv"]}, "'path' must be a string", id="list"),
    hostile("path-wrong-type", {"path": {"path": "testdata/testdata.csv"}}, "'path' must be a string", id="object"),
    hostile("path-wrong-type", {"path": True}, "'path' must be a string", id="bool"),
    hostile("path-wrong-type", {"path": "../secret.csv", "records": [RECORD]}, "feature 'lastmonth_activity' missing",
            id="with-records"),
]


@pytest.mark.parametrize("body, message", PATH_TYPES)
def test_a_path_that_is_not_a_string_is_a_400(hostile_api, body, message):
    hostile_api.refused(400, message, json=body)


@covers("path-unreadable")
def test_an_unreadable_dataset_is_a_403_not_a_500(hostile_api, monkeypatch):
    target = hostile_api.project.root / "testdata" / "locked.csv"
    target.write_text((hostile_api.project.root / "testdata" / "testdata.csv").read_text())
    if os.geteuid() == 0:  # root reads any file: make this one fail as it would for the server's user
        import builtins

        real_open = builtins.open

        def guarded_open(file, *args, **kwargs):
            if os.path.basename(os.fspath(file)) == "locked.csv":
                raise PermissionError(13, "Permission denied", os.fspath(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded_open)
    else:
        target.chmod(0)
    hostile_api.refused(403, "dataset locked.csv cannot be read: Permission denied", json={"path": "testdata/locked.csv"})


@covers("query-and-headers")
def test_the_query_string_and_headers_are_ignored(hostile_api):
    expected = hostile_api.predicted(1, json=RECORD)
    traps = ["path=../secret.csv", "path=/etc/passwd&records=x", "path=%2e%2e%2fsecret.csv",
             "dataframe_split=1&path=testdata/link_out.csv"]
    headers = {"X-Path": "../secret.csv", "Path": "../secret.csv", "X-Original-URL": "/../secret.csv",
               "X-Rewrite-URL": "/../secret.csv", "X-Forwarded-Prefix": "/..", "Referer": "../secret.csv",
               "Cookie": "path=../secret.csv", "Content-Location": "../secret.csv", "X-HTTP-Method-Override": "GET",
               "X-Forwarded-Host": "evil", "Forwarded": "for=1.2.3.4;path=/..", "Range": "bytes=0-10"}
    for query in traps:
        assert hostile_api.predicted(1, json=RECORD, query_string=query, headers=headers) == expected
        hostile_api.refused(400, "no records to predict", json={"records": []}, query_string=query, headers=headers)
        csv_body = ",".join(RECORD) + "\n" + ",".join(str(v) for v in RECORD.values()) + "\n"
        assert hostile_api.predicted(1, data=csv_body, content_type="text/csv", query_string=query) == expected
        assert hostile_api.ask("GET", "/prediction", query_string=query, headers=headers).status == 405
        for route in ("/scoring", "/summarystats", "/diagnostics", "/health"):
            assert hostile_api.ask("GET", route, query_string=query, headers=headers).status == 200


# --- property-based: arbitrary bodies --------------------------------------------------------------


def property_settings(max_examples: int) -> settings:
    """Deterministic in CI (derandomized, no example database), no deadline: a request is not a microbenchmark."""
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**600), max_value=10**600)
           | st.floats() | st.text() | st.sampled_from(["", "NA", "null", "nan", "inf", "1e400", "basic", " 5 "]))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.sampled_from([*RECORD, "records", "path", "dataframe_split"]),
                      children, max_size=5),
    max_leaves=12,
)
SPELLINGS = {name: [name, name.upper(), f" {name} ", name.replace("_", " ").title(), name.replace("_", "-")]
             for name in RECORD}
NUMBERS = (st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6)
           | st.floats(allow_nan=False).map(str) | st.integers().map(str)
           | st.sampled_from(["", "NA", "n/a", "-", "null", "1e5", "-0", ".5", "5.", "1_000", "١٢", "0x1"]))
CATEGORIES = st.sampled_from(["basic", "premium", "enterprise", " Basic ", "", "NA"]) | st.text(max_size=8) | st.booleans()


@st.composite
def feature_records(draw) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name in RECORD:
        if draw(st.integers(0, 24)) == 0:
            continue  # sometimes a feature is missing
        key = draw(st.sampled_from(SPELLINGS[name]))
        if name in NUMERIC:
            value = draw(NUMBERS | JSON_VALUES) if draw(st.integers(0, 4)) == 0 else draw(NUMBERS)
        else:
            value = draw(CATEGORIES | JSON_VALUES) if draw(st.integers(0, 4)) == 0 else draw(CATEGORIES)
        record[key] = value
    record.update(draw(st.dictionaries(st.text(max_size=6), SCALARS, max_size=2)))
    return record


@st.composite
def feature_bodies(draw) -> tuple[Any, int]:
    """Return a JSON body of records with the real feature names, in one of the accepted envelopes."""
    records = draw(st.lists(feature_records(), min_size=1, max_size=6))
    form = draw(st.sampled_from(["record", "records", "list", "dataframe_records", "dataframe_split"]))
    if form == "record":
        return records[0], 1
    if form == "dataframe_split":
        columns = list(dict.fromkeys(key for record in records for key in record))
        return {"dataframe_split": {"columns": columns,
                                    "data": [[record.get(c) for c in columns] for record in records]}}, len(records)
    return ({"records": records} if form == "records" else records if form == "list"
            else {"dataframe_records": records}), len(records)


def _check_property_reply(reply: Reply, expected_count: int | None) -> None:
    assert reply.status in (200, 400, 403, 404, 413), reply.body
    if reply.status == 200:
        assert expected_count is None or reply.body["count"] == expected_count
        assert len(reply.body["predictions"]) == reply.body["count"]
        for item in reply.body["predictions"]:
            assert 0.0 <= item["probability"] <= 1.0


@covers("any-json")
def test_any_json_value_is_answered_without_a_5xx(hostile_api):
    @property_settings(300)
    @given(body=JSON_VALUES)
    def check(body):
        reply = hostile_api.ask(data=json.dumps(body), content_type="application/json")
        _check_property_reply(reply, None)

    check()


@covers("feature-records")
def test_records_with_the_real_names_and_any_values_are_predicted_or_refused_cleanly(hostile_api):
    seen = set()

    @property_settings(400)
    @given(case=feature_bodies())
    def check(case):
        body, count = case
        reply = hostile_api.ask(data=json.dumps(body), content_type="application/json")
        _check_property_reply(reply, count)
        seen.add(reply.status)

    check()
    assert seen >= {200, 400}  # the generator reaches both outcomes


@covers("any-bytes")
def test_any_bytes_or_csv_text_is_answered_without_a_5xx(hostile_api):
    @property_settings(200)
    @given(body=st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()).flatmap(
        lambda b: st.integers(0, len(b)).map(lambda n: b[:n] + b[n + 1:])))
    def check_json(body):
        _check_property_reply(hostile_api.ask(data=body, content_type="application/json"), None)

    rows = st.lists(st.lists(st.text(max_size=6) | NUMBERS.map(str), min_size=0, max_size=6), max_size=5)

    @property_settings(200)
    @given(header=st.lists(st.sampled_from([*RECORD, "", "PLAN", "x"]) | st.text(max_size=5), max_size=7),
           rows=rows, raw=st.text(max_size=60), use_raw=st.booleans())
    def check_csv(header, rows, raw, use_raw):
        if use_raw:
            text = raw
        else:
            out = io.StringIO()
            csv.writer(out).writerows([header, *rows])
            text = out.getvalue()
        _check_property_reply(hostile_api.ask(data=text.encode("utf-8", "surrogatepass"), content_type="text/csv"), None)

    check_json()
    check_csv()


def _data_file_reads(text: str) -> bool:
    """True when a data file may hold ``text`` in a numeric column (the ingestion's own parser)."""
    try:
        parse_numeric(np.array([text.strip()], dtype=object), label="x")
    except DatasetError:
        return False
    return True


NUMERIC_TEXT = (st.text(st.sampled_from(list("0123456789+-.eE_ ,xinfatyINFATY") + ["١", "٫", "０", "\u00a0", "ı"]),
                        max_size=10)
                | st.floats().map(repr) | st.floats().map(lambda f: f"{f:e}") | st.integers().map(str) | st.text(max_size=6))


@covers("numeric-text")
def test_a_numeric_text_is_accepted_exactly_when_a_data_file_could_hold_it(hostile_api):
    @property_settings(300)
    @given(text=NUMERIC_TEXT)
    def check(text):
        reply = hostile_api.ask(json=dict(RECORD, lastmonth_activity=text))
        if _data_file_reads(text):
            assert reply.status == 200, (text, reply.body)
        else:
            assert reply.status == 400, (text, reply.body)
            assert reply.body["error"].startswith("record 0: column 'lastmonth_activity': ")

    check()


# --- the count ------------------------------------------------------------------------------------


def test_every_hostile_kind_listed_is_sent_and_the_count_is_current():
    assert set(HOSTILE_KINDS) == _SENT, set(HOSTILE_KINDS) ^ _SENT
    stated = re.search(r"lists the (\d+) kinds of hostile request", __doc__)
    assert stated and int(stated.group(1)) == len(HOSTILE_KINDS), len(HOSTILE_KINDS)
