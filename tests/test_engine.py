"""compute.engine dask: the config section, the engine's life in a tick, and ticks on a real
``distributed.LocalCluster`` reaching the decisions the local engine reaches.

The cluster tests share one in-process cluster (2 workers, 1 thread and 1 GB each; in-process
workers start in a fraction of a second); the worker-killing test and the per-tick local cluster
start real worker processes, as cron's ticks do.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from churnlib.config import ConfigError, load_config
from helpers import ROOT, base_config, batch, free_port, make_project

pytestmark = pytest.mark.slow  # a real Dask cluster


def load(tmp_path, compute):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"compute": compute}))
    return load_config(path)


# --- the config section ---------------------------------------------------------------------------


def test_the_compute_section_defaults_to_the_local_engine(tmp_path):
    compute = load(tmp_path, {}).compute
    assert compute.engine == "local" and compute.scheduler is None
    assert compute.workers == 2 and compute.max_sample_rows == 2_000_000


@pytest.mark.parametrize("compute, message", [
    ({"engine": "spark"}, "compute.engine: must be one of local, dask; got 'spark'"),
    ({"engine": "dask", "scheduler": "host:8786"}, "compute.scheduler: must be a scheduler address like tcp://host:8786"),
    ({"engine": "dask", "scheduler": "tcp://host:99999"}, "compute.scheduler: must be a scheduler address"),
    ({"scheduler": "tcp://host:8786"}, "compute.scheduler: set to tcp://host:8786, but compute.engine is local"),
    ({"engine": "dask", "memory_per_worker_gb": 0}, "compute.memory_per_worker_gb: must be a number in [0.25, 4096]"),
    ({"engine": "dask", "workers": 0}, "compute.workers: must be between 1 and 256, got 0"),
])
def test_a_compute_section_that_cannot_work_is_refused_naming_the_key(tmp_path, compute, message):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, compute)
    assert message in str(caught.value)


def test_the_dask_engine_without_dask_installed_is_refused_with_how_to_install_it(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name, *a))
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, {"engine": "dask"})
    assert "compute.engine: dask needs the package(s) distributed" in str(caught.value)
    assert "requirements-dask.txt" in str(caught.value)


# --- the engine's life in a tick -------------------------------------------------------------------


def unreachable_scheduler() -> dict:
    return {"engine": "dask", "scheduler": f"tcp://127.0.0.1:{free_port()}", "connect_timeout_seconds": 1}


def test_an_unreachable_scheduler_fails_the_tick_before_anything_changes(tmp_path):
    project = make_project(tmp_path / "project", config=base_config(compute=unreachable_scheduler()))
    address = project.config().compute.scheduler
    assert project.tick() == 1
    run = project.last_run()
    assert run["decision"] == "failed"
    assert f"compute.scheduler: cannot reach the Dask scheduler at {address} within 1 s" in run["reason"]
    assert f"tick failed: {run['reason']}" in project.log()
    assert not (project.ingested / "ingestion_record.json").exists()  # nothing ingested
    assert project.pointer() is None  # nothing deployed
    assert not any(project.models.glob("*")) if project.models.exists() else True


def test_a_tick_with_nothing_new_on_the_dask_engine_imports_no_dask_pyarrow_or_pandas(deployed):
    config = json.loads(deployed.config_path.read_text())
    deployed.write_config({**config, "compute": unreachable_scheduler()})  # never asked: nothing to do
    code = (
        "import sys, fullprocess\n"
        f"status = fullprocess.main(['--config', {str(deployed.config_path)!r}, '--no-api'])\n"
        "print(sorted(m for m in ('dask', 'distributed', 'pyarrow', 'pandas', 'sklearn', 'xgboost', 'numpy',\n"
        "                         'churnlib.engine') if m in sys.modules))\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert deployed.last_run()["decision"] == "nothing_new"
