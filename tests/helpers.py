"""What tests share besides fixtures: the throw-away project, the sample data, running scripts.

A plain module (fixtures are in conftest.py), so that tests import it by name like any other.

Tests are hermetic: they build every project from data the project owns (``samples/``), never
from the checkout's ``config.json``, ``sourcedata/`` or ``testdata/`` (the user's, adapted to their
own data), and run with the environment scrubbed of every variable the product reads
(``scrub_environment``, run by autouse fixtures in conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The shipped sample set-up, as samples/generate.py keeps it (sourcedata/, testdata/ and
# config.json at the top are working copies that a user replaces with their own).
SAMPLE_SOURCE = ROOT / "samples" / "sourcedata"
SAMPLE_TEST = ROOT / "samples" / "testdata"
SAMPLE_CONFIG = ROOT / "samples" / "config.json"
SAMPLE_LATER = ROOT / "samples" / "later"
IRANIAN = ROOT / "examples" / "iranian"
# The shared data sets sit beside the checkout (CI lays shared/ next to its clone); a worktree
# under /work/wt/ finds them at /work/shared. Read from there, never copied into the project.
SHARED_DATASETS = next((folder for folder in (ROOT.parent / "shared" / "datasets", ROOT.parent.parent / "shared" / "datasets")
                        if folder.is_dir()), ROOT.parent / "shared" / "datasets")
# A closed port on loopback: the dependency check's PyPI look-ups fail at once, no test needs the network.
OFFLINE_PYPI = "http://127.0.0.1:9"
RECORD = {"lastmonth_activity": 12, "lastyear_activity": 300, "number_of_employees": 9, "plan": "basic"}
SAMPLE_HEADER = ["corporation", "lastmonth_activity", "lastyear_activity", "number_of_employees", "plan", "exited"]


# Environment variables the product reads (grep os.environ, getenv in *.py and churnlib/), none of which
# a test may inherit from the user's shell: CHURN_CONFIG, CHURN_PYPI_URL, CHURN_API_BIND and the other
# CHURN_API_* settings of gunicorn.conf.py; PROMETHEUS_MULTIPROC_DIR (churnlib/metrics.py); dask's
# DASK_* settings (the dask engine); the proxy variables urllib obeys (a proxy would take the tests'
# calls to 127.0.0.1 elsewhere). The variables a config names (api.token_env,
# alerts.email.password_env) are the config's: tests never load the user's config, and every config a
# test writes names a CHURN_* variable (test_hermetic.py checks that), so these are scrubbed too.
SCRUBBED_PREFIXES = ("CHURN_", "DASK_")
SCRUBBED_NAMES = frozenset({"PROMETHEUS_MULTIPROC_DIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"})


def is_scrubbed(name: str) -> bool:
    """Return whether tests run without the environment variable ``name``."""
    upper = name.upper()
    return upper.startswith(SCRUBBED_PREFIXES) or upper in SCRUBBED_NAMES


def scrub_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every variable tests must not inherit (undone with ``monkeypatch``); PyPI look-ups go offline.

    Subprocesses that tests start inherit the scrubbed environment.
    """
    for name in [name for name in os.environ if is_scrubbed(name)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CHURN_PYPI_URL", OFFLINE_PYPI)


def shared_dataset(name: str, *, datasets: Path = SHARED_DATASETS) -> Path:
    """Return the folder of the shared data set ``name``; skip the test when it is missing, fail under CI.

    The shared data sets are not shipped (no licence): a user's clone has none, so the tests that
    read them skip there with a one-line reason. CI lays them beside its clone and sets CI=true:
    missing there, they fail, so the figures they check are never quietly left unchecked.
    """
    folder = datasets / name
    if folder.is_dir():
        return folder
    reason = f"shared data set {name} not found at {folder} (not shipped; CI lays it beside the clone)"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{reason}, and CI is set: CI must check it", pytrace=False)
    pytest.skip(reason)


def base_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """Return a config for the classic sample schema, with ``sections`` merged over it."""
    config: dict[str, Any] = {
        "schema": {"target": "exited", "id_columns": ["corporation"]},
        "model": {"algorithm": "logistic_regression", "random_seed": 7},
        "api": {"url": OFFLINE_PYPI},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


@dataclass
class Project:
    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def source(self) -> Path:
        return self.root / "sourcedata"

    @property
    def ingested(self) -> Path:
        return self.root / "ingesteddata"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def deployment(self) -> Path:
        return self.root / "production_deployment"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(json.dumps(config, indent=2))

    def config(self):
        from churnlib.config import load_config

        return load_config(self.config_path)

    def add_source(self, name: str, content: str | bytes) -> Path:
        path = self.source / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return path

    def tick(self, *args: str) -> int:
        """Run one fullprocess tick in this process; return its exit status."""
        import fullprocess

        return fullprocess.main(["--config", str(self.config_path), "--no-api", *args])

    def tick_subprocess(self, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return run_script("fullprocess.py", "--config", str(self.config_path), "--no-api", *args, env=env, timeout=timeout)

    def runs(self) -> list[dict[str, Any]]:
        path = self.logs / "runs.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def last_run(self) -> dict[str, Any]:
        return self.runs()[-1]

    def record(self) -> dict[str, Any]:
        return json.loads((self.ingested / "ingestion_record.json").read_text())

    def pointer(self) -> dict[str, Any] | None:
        path = self.deployment / "current.json"
        return json.loads(path.read_text()) if path.exists() else None

    def log(self, name: str = "fullprocess") -> str:
        path = self.logs / f"{name}.log"
        return path.read_text() if path.exists() else ""


def run_script(script: str, *args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None):
    """Run one of the project's scripts with this interpreter; return the completed process."""
    full_env = {**os.environ, "CHURN_PYPI_URL": OFFLINE_PYPI, **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd or ROOT)


def make_project(root: Path, *, sources: tuple[str, ...] = ("dataset1.csv", "dataset2.csv"),
                 config: dict[str, Any] | None = None) -> Project:
    """Build a project under ``root`` with the shipped sample data."""
    project = Project(root)
    project.source.mkdir(parents=True)
    (root / "testdata").mkdir()
    for name in sources:
        shutil.copy(SAMPLE_SOURCE / name, project.source / name)
    shutil.copy(SAMPLE_TEST / "testdata.csv", root / "testdata" / "testdata.csv")
    project.write_config(config or base_config())
    return project


def copy_project(template: Path, destination: Path) -> Project:
    shutil.copytree(template, destination, symlinks=True)
    return Project(destination)


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    return "\n".join(",".join(str(c) for c in row) for row in [header, *rows]) + "\n"


def batch(seed: int, count: int = 300, *, drifted: bool = False, flip_labels: bool = False) -> str:
    """Return CSV text of ``count`` sample customers drawn with ``seed`` (labels flipped: a score drop)."""
    import numpy as np

    from samples.generate import HEADER, make_customers

    rows = make_customers(np.random.default_rng(seed), count, drifted=drifted)
    if flip_labels:
        for row in rows:
            row[-1] = str(1 - int(row[-1]))
    return "\n".join(",".join(r) for r in [HEADER, *rows]) + "\n"


# --- real gunicorn on a free 127.0.0.1 port -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url, body=None, timeout=10, headers=None):
    """Return the status and JSON reply of a GET (or, with a body, a JSON POST) to ``url``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={**({"Content-Type": "application/json"} if data else {}),
                                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@contextlib.contextmanager
def serving_in_a_thread(app):
    """Serve the WSGI ``app`` on a free 127.0.0.1 port from a thread of this process; yield its URL, then stop it."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def start_gunicorn(config_path, port, workers=2, env=None):
    """Start the API under gunicorn (gunicorn.conf.py) on 127.0.0.1:``port``; return the process once /health answers."""
    env = {**os.environ, "CHURN_CONFIG": str(config_path), "CHURN_API_BIND": f"127.0.0.1:{port}",
           "CHURN_API_WORKERS": str(workers), **(env or {})}
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            status, _body = request(url + "/health", timeout=1)
            if status == 200:
                return process, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("gunicorn did not answer /health within 60 s")


def release_with_an_extra_step(project):
    """Replace the deployed release's model by one with log1p inserted before the scaler; return
    that model's predict_proba on the test data, and the test data."""
    import numpy as np
    from sklearn.preprocessing import FunctionTransformer

    from churnlib.dataset import FrozenSchema
    from churnlib.ingested import read_ingested_data
    from churnlib.modelstore import load_deployed, save_model
    from churnlib.pipeline import NUMERIC, PREPROCESS, build_pipeline
    from scoring import read_test_data

    config = project.config()
    model = load_deployed(project.deployment)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    pipeline = build_pipeline(schema, config.model)
    numeric = dict((name, steps) for name, steps, _ in pipeline.named_steps[PREPROCESS].transformers)[NUMERIC]
    numeric.steps.insert(1, ("log", FunctionTransformer(np.log1p)))
    frame, _, _ = read_ingested_data(project.ingested)
    pipeline.fit(frame[list(schema.feature_columns)], frame[schema.target].to_numpy())
    save_model(pipeline, model.metadata, model.folder)
    test = read_test_data(project.root / "testdata", settings=config.schema, schema=schema)
    return pipeline.predict_proba(test[list(schema.feature_columns)])[:, 1], test
