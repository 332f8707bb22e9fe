"""compute.engine dask: the config section, the engine's life in a tick, and ticks on a real
``distributed.LocalCluster`` reaching the decisions the local engine reaches.

The cluster tests share one LocalCluster (2 worker processes, 1 thread and 1 GB each; in-process
workers would share the test process's memory, which a 1 GB limit then counts against each of
them); the worker-killing test lets the tick start its own, as cron's ticks do.
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


def test_an_unreachable_scheduler_is_asked_once_a_tick_and_a_large_list_waits_for_the_next(tmp_path, monkeypatch):
    """The tick's connection fails; the xgboost list that would go to the cluster fails with the same
    error without a second wait for the scheduler, and the file is tried again next tick."""
    import distributed

    config = base_config(model={"algorithm": "xgboost", "params": {"n_estimators": 20}})
    project = make_project(tmp_path / "project", config=config)
    assert project.tick() == 0
    (project.root / "scoringdata").mkdir(exist_ok=True)
    customer_file(project.root / "scoringdata" / "customers.csv")
    project.add_source("more.csv", batch(seed=5))
    project.write_config({**config, "compute": {**unreachable_scheduler(), "cluster_min_rows": 0}})
    attempts = []
    real_client = distributed.Client

    def counted_client(*args, **kwargs):
        attempts.append(args[0] if args else kwargs.get("address"))
        return real_client(*args, **kwargs)

    monkeypatch.setattr(distributed, "Client", counted_client)
    assert project.tick() == 1
    run = project.last_run()
    assert len(attempts) == 1, attempts
    assert run["decision"] == "failed" and "cannot reach the Dask scheduler" in run["reason"]
    assert "customers.csv failed: compute.scheduler: cannot reach the Dask scheduler" in project.log()
    assert "tried again next tick" in project.log()
    predictions = project.root / "predictions"
    assert not (predictions / "customers.risk.csv").exists()
    assert json.loads((predictions / "scoring_record.json").read_text())["rejected"] == []


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


# --- ticks on a real cluster -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scheduler():
    """The address of a LocalCluster of 2 worker processes (1 thread, 1 GB each), for this module's ticks."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GB", host="127.0.0.1", dashboard_address=None,
                      scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}) as cluster:
        yield cluster.scheduler_address


def dask_config(address, **model):
    return base_config(model=model, compute={"engine": "dask", "scheduler": address, "cluster_min_rows": 0})


def decisions(project):
    return [(run["decision"], run.get("retrain_reason"), (run.get("challenge") or {}).get("window"))
            for run in project.runs()]


def released(project):
    from churnlib.modelstore import load_deployed

    return load_deployed(project.deployment)


def test_a_tick_on_the_cluster_decides_as_a_local_tick(tmp_path, scheduler):
    """Cold start, a drift retrain and a risk list, logistic regression: the same decisions, the same
    model (under compute.max_sample_rows every row is fitted), the same list."""
    import numpy as np

    from helpers import SAMPLE_LATER
    from test_risk_lists import drop_customers

    local = make_project(tmp_path / "local")
    cluster = make_project(tmp_path / "cluster", config=dask_config(scheduler))
    for project in (local, cluster):
        assert project.tick() == 0
        project.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
        drop_customers(project)
        assert project.tick() == 0
    assert [d[0] for d in decisions(cluster)] == ["cold_start", "retrained_deployed"]
    assert decisions(cluster) == decisions(local)
    here, there = released(local), released(cluster)
    assert there.metadata["compute"]["engine"] == "dask"
    assert there.metadata["compute"]["sample_rows"] == there.metadata["training_data"]["rows"]
    assert "compute" not in here.metadata
    coefficients = [model.pipeline.steps[-1][1] for model in (here, there)]
    coefficients = [getattr(c, "classifier", c).coef_ for c in coefficients]
    np.testing.assert_array_equal(coefficients[0], coefficients[1])
    lists = [(p.root / "predictions" / "customers.risk.csv").read_text().splitlines() for p in (local, cluster)]
    strip = [[",".join(line.split(",")[:-2]) for line in rows] for rows in lists]  # release id and time differ
    assert strip[0] == strip[1] and len(strip[0]) == 501
    assert "logistic regression on all" in cluster.log()


def test_xgboost_trained_on_the_cluster_is_served_with_its_reasons_like_a_local_one(tmp_path, scheduler):
    import numpy as np

    from churnlib.dataset import FrozenSchema
    from churnlib.pipeline import FastPredictor, batch_from_frame, checked_predictor
    from scoring import read_test_data

    local = make_project(tmp_path / "local", config=base_config(model={"algorithm": "xgboost"}))
    cluster = make_project(tmp_path / "cluster", config=dask_config(scheduler, algorithm="xgboost"))
    for project in (local, cluster):
        assert project.tick() == 0
    assert decisions(cluster) == decisions(local) == [("cold_start", ["cold_start"], None)]
    here, there = released(local), released(cluster)
    assert there.metadata["compute"]["algorithm"] == "xgboost" and there.metadata["compute"]["partitions"] == 2
    schema = FrozenSchema.from_dict(there.metadata["schema"])
    predictor = checked_predictor(there, schema)
    assert isinstance(predictor, FastPredictor)  # the API's fast path, checked against predict_proba
    test = read_test_data(cluster.root / "testdata", settings=cluster.config().schema, schema=schema)
    batch = batch_from_frame(test, schema)
    contributions = predictor.explain(batch)
    np.testing.assert_allclose(contributions.log_odds, np.log(predictor.probabilities(batch))
                               - np.log1p(-predictor.probabilities(batch)), atol=1e-5)
    # Trees grown on two partitions differ a little from one process's: by how much, measured here.
    difference = np.abs(checked_predictor(here, schema).probabilities(batch) - predictor.probabilities(batch))
    assert difference.mean() < 0.05, difference.mean()


def test_a_worker_killed_during_training_fails_the_tick_cleanly_and_the_next_tick_succeeds(deployed):
    """Real worker processes (the LocalCluster a tick starts): one is SIGKILLed while xgboost trains."""
    import os
    import signal
    import threading
    import time

    import psutil

    before = deployed.pointer()
    config = json.loads(deployed.config_path.read_text())
    config["model"] = {**config["model"], "algorithm": "xgboost", "params": {"n_estimators": 3000, "max_depth": 6}}
    config["compute"] = {"engine": "dask", "workers": 2, "memory_per_worker_gb": 1, "cluster_min_rows": 0}
    config["deployment"] = {"policy": "always"}
    deployed.write_config(config)
    killed = []

    def kill_a_worker_once_training_runs():
        # Once the trees grow (the log says so), a worker that has burnt 3 s more is growing them: before,
        # the workers read the parts, a lost worker's share of which Dask reads again elsewhere.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "xgboost: growing the trees" not in deployed.log():
            time.sleep(0.1)

        def workers():
            return [child for child in psutil.Process().children(recursive=True)
                    if "spawn_main" in " ".join(child.cmdline())]

        def cpu(process):
            times = process.cpu_times()
            return times.user + times.system

        start = {worker.pid: cpu(worker) for worker in workers()}
        while time.monotonic() < deadline and not killed:
            for worker in workers():
                if worker.pid in start and cpu(worker) - start[worker.pid] > 3.0:
                    os.kill(worker.pid, signal.SIGKILL)
                    killed.append(worker.pid)
                    break
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_worker_once_training_runs)
    killer.start()
    status = deployed.tick()
    killer.join()
    assert killed
    run = deployed.last_run()
    assert status == 1 and run["decision"] == "failed", run
    assert "xgboost training on a local Dask cluster of 2 worker(s)" in run["reason"]
    assert "failed (a worker lost, or out of memory?)" in run["reason"] and "nothing was deployed" in run["reason"]
    assert deployed.pointer() == before  # nothing deployed
    config["model"]["params"]["n_estimators"] = 100  # a smaller model, only to keep the test short
    deployed.write_config(config)
    assert deployed.tick() == 0
    assert deployed.last_run()["decision"] == "retrained_deployed"
    assert deployed.pointer()["current"] != before["current"]


def test_the_cluster_learns_the_local_pipelines_preprocessing_and_samples_uniformly(scheduler):
    """Medians and categories (missing ones included) computed on the workers are what the local
    pipeline learns; a logistic-regression sample is at most the limit, seeded, in row order."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "bench"))
    from churnsim import CATEGORICAL, NUMERIC, TARGET, World

    from churnlib.config import ComputeSettings, ModelSettings, section_settings
    from churnlib.dataset import FrozenSchema
    from churnlib.engine import _partitions, fitted_preprocessing, train_xgboost, uniform_sample, using
    from churnlib.ingested import typed_like_csv
    from churnlib.pipeline import PREPROCESS, build_pipeline

    schema = FrozenSchema(target=TARGET, id_columns=("customer_id",), feature_columns=NUMERIC + CATEGORICAL,
                          categorical_columns=CATEGORICAL)
    frame = typed_like_csv(World().frame(3000, np.random.default_rng(3)), schema)
    frame.loc[::7, "contract"] = np.nan
    settings = section_settings(ModelSettings, algorithm="xgboost")
    local = build_pipeline(schema, settings).named_steps[PREPROCESS].fit(frame[list(schema.feature_columns)])
    compute = section_settings(ComputeSettings, engine="dask", scheduler=scheduler, cluster_min_rows=0)
    with using(compute) as engine:
        remote = fitted_preprocessing(engine, _partitions(engine, frame), schema, settings)
        first = uniform_sample(engine, frame, 1000, seed=5)
        again = uniform_sample(engine, frame, 1000, seed=5)
        trees = train_xgboost(engine, frame, schema, settings)  # encodes every partition, missing categories too
    assert list(remote.get_feature_names_out()) == list(local.get_feature_names_out())
    features = frame[list(schema.feature_columns)]
    np.testing.assert_array_equal(remote.transform(features), local.transform(features))
    assert 800 < len(first) <= 1000 and first.equals(again)
    assert first.dtypes.equals(frame.dtypes) and first["contract"].isna().any()  # typed as the local frames are
    assert all(isinstance(value, str) or (isinstance(value, float) and np.isnan(value)) for value in first["contract"])
    local_trees = build_pipeline(schema, settings).fit(features, frame[TARGET].to_numpy())
    difference = np.abs(trees.predict_proba(features)[:, 1] - local_trees.predict_proba(features)[:, 1])
    assert difference.mean() < 0.05, difference.mean()
    assert first["customer_id"].tolist() == [c for c in frame["customer_id"] if c in set(first["customer_id"])]


# --- risk lists on the cluster ---------------------------------------------------------------------


def customer_file(path, copies=1):
    """Write the sample customers (``copies`` times, ids made unique) plus rows a list must keep as they
    are: a formula-like id, a line break inside a quoted id, an unseen plan, a blank number."""
    from test_risk_lists import CUSTOMERS

    header, *rows = CUSTOMERS.read_text().splitlines()
    lines = [header] + [f"{n}-{row}" if n else row for n in range(copies) for row in rows]
    lines += ["=cmd|calc,10,200,5,basic", '"two\nlines",12,300,,platinum']
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("algorithm, outreach, on_the_cluster", [
    ("xgboost", {"customer_value": 500, "contact_cost": 20}, True),
    ("logistic_regression", None, False),  # reading the file is most of its cost: it stays in the tick's process
])
def test_a_risk_list_on_the_dask_engine_is_the_local_engines_byte_for_byte(tmp_path, scheduler, caplog, algorithm,
                                                                           outreach, on_the_cluster):
    """An xgboost list in chunks of 64 rows scored on 2 workers, spilled in sorted runs of 256: the same
    list, and the same summary, as the tick's own process makes; a file under compute.cluster_min_rows,
    and a logistic-regression list, are made in the tick's own process."""
    import logging

    from churnlib.config import ComputeSettings, OutreachSettings, section_settings
    from churnlib.engine import using
    from churnlib.modelstore import load_deployed
    from scoring import Outreach, ScoringModel, write_risk_list

    project = make_project(tmp_path / "project", config=base_config(model={"algorithm": algorithm}))
    assert project.tick() == 0
    scorer = ScoringModel.of(load_deployed(project.deployment))
    customers = customer_file(tmp_path / "customers.csv")
    settings = Outreach(section_settings(OutreachSettings, **outreach) if outreach else None)

    def risk_list(name, **compute):
        with using(section_settings(ComputeSettings, **compute)):
            summary = write_risk_list(customers, tmp_path / name, scorer, target="exited", reasons=3,
                                      outreach=settings, scored_at="2026-12-03T08:00:00Z", chunk_rows=64, run_rows=256)
        summary.pop("seconds")
        return (tmp_path / name).read_bytes(), {**summary, "list": None}

    local = risk_list("local.csv")
    with caplog.at_level(logging.INFO, logger="scoring"):
        small = risk_list("small.csv", engine="dask", scheduler=scheduler, cluster_min_rows=10_000)
        assert "scored on" not in caplog.text
        cluster = risk_list("cluster.csv", engine="dask", scheduler=scheduler, cluster_min_rows=100)
    line = f"customers.csv: at least 127 rows (compute.cluster_min_rows 100): scored on the Dask cluster at {scheduler}"
    assert (line in caplog.text) is on_the_cluster
    assert cluster[0] == local[0] == small[0]
    assert cluster[1] == local[1] == small[1]
    assert local[0].count(b"\n") == 504 and b"'=cmd|calc" in local[0] and local[1]["unseen_categories"]
    assert list((tmp_path).glob("*.runs*")) == [] and sorted(p.name for p in tmp_path.glob("*.csv")) == \
        ["cluster.csv", "customers.csv", "local.csv", "small.csv"]
    if on_the_cluster:  # scoring.py --customers uses config.json's engine too
        import scoring

        project.write_config({**json.loads(project.config_path.read_text()), "outreach": outreach,
                              "compute": {"engine": "dask", "scheduler": scheduler, "cluster_min_rows": 100}})
        assert scoring.main(["--config", str(project.config_path), "--customers", str(customers),
                             "--output", str(tmp_path / "demand.csv")]) == 0
        assert "scored on the Dask cluster" in (project.logs / "scoring.log").read_text()

        def without_time(text):
            return [line.rsplit(",", 1)[0] for line in text.splitlines()]

        assert without_time((tmp_path / "demand.csv").read_text()) == without_time(local[0].decode())


def test_a_worker_killed_during_a_risk_list_fails_that_list_cleanly_and_the_next_tick_makes_it(tmp_path):
    """Real worker processes (the LocalCluster a tick starts for a large file): both are SIGKILLed
    while they score; the chunks they held are lost, the list is not written, the file is not
    rejected, and the next tick makes the list."""
    import os
    import signal
    import threading
    import time

    import psutil

    config = base_config(model={"algorithm": "xgboost", "params": {"n_estimators": 400, "max_depth": 6}})
    project = make_project(tmp_path / "project", config=config)
    assert project.tick() == 0
    (project.root / "scoringdata").mkdir(exist_ok=True)
    customer_file(project.root / "scoringdata" / "customers.csv", copies=20)
    config["compute"] = {"engine": "dask", "workers": 2, "memory_per_worker_gb": 1, "cluster_min_rows": 0}
    project.write_config(config)
    killed = []

    def kill_the_workers_once_they_score():
        # Unpickling the model takes a worker under a second of CPU; past 2 s, one is scoring (about 5 s of work).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "compute engine:" not in project.log():
            time.sleep(0.05)
        workers = [child for child in psutil.Process().children(recursive=True)
                   if "spawn_main" in " ".join(child.cmdline())]
        start = {worker.pid: sum(worker.cpu_times()[:2]) for worker in workers}
        while time.monotonic() < deadline and not killed:
            if any(sum(worker.cpu_times()[:2]) - start[worker.pid] > 2.0 for worker in workers):
                for worker in workers:
                    os.kill(worker.pid, signal.SIGKILL)
                    killed.append(worker.pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_workers_once_they_score)
    killer.start()
    status = project.tick()
    killer.join()
    assert killed
    run = project.last_run()
    assert status == 1 and run["decision"] == "failed", run
    assert "scoring customers.csv on a local Dask cluster of 2 worker(s)" in run["reason"]
    assert "failed (a worker lost, or out of memory?)" in run["reason"]
    assert "customers.csv failed" in project.log() and "tried again next tick" in project.log()
    predictions = project.root / "predictions"
    assert not (predictions / "customers.risk.csv").exists()
    assert [p.name for p in predictions.iterdir()] == ["scoring_record.json"]  # no temporary file left
    assert json.loads((predictions / "scoring_record.json").read_text())["rejected"] == []
    done = project.tick_subprocess()  # a fresh process: importing distributed there sets its loggers to INFO
    assert done.returncode == 0, done.stderr
    assert project.last_run()["scoring"]["files"][0]["rows"] == 10002
    assert "INFO    distributed." not in project.log()  # the local scheduler's routine lines stay out of the log
    assert (predictions / "customers.risk.csv").read_text().count("\n") == 10004  # header, and a line break in an id

def test_on_the_cluster_the_history_stays_with_the_workers_and_only_small_ranges_reach_the_tick(
        tmp_path, scheduler, monkeypatch):
    """A cold start and a drift retrain with xgboost on the dask engine never read the whole history
    in the tick's process: the workers read it from the Parquet parts, and what comes back (held-out
    rows, the judged batch, the drift reference sample) is never more than the judged batch's rows."""
    import churnlib.engine
    import churnlib.ingested
    from helpers import SAMPLE_LATER

    def refuse(*args, **kwargs):
        raise AssertionError("the whole history was read into the tick's process")

    monkeypatch.setattr(churnlib.ingested, "read_ingested_data", refuse)
    monkeypatch.setattr(churnlib.ingested, "read_parts", refuse)
    came_back = []
    to_driver = churnlib.engine.to_driver

    def counted(collection, engine):
        frame = to_driver(collection, engine)
        came_back.append(len(frame))
        return frame

    monkeypatch.setattr(churnlib.engine, "to_driver", counted)
    config = dask_config(scheduler, algorithm="xgboost")
    config["drift"] = {"reference_sample_size": 300}
    config["deployment"] = {"policy": "always"}
    project = make_project(tmp_path / "cluster", config=config)
    assert project.tick() == 0
    project.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert project.tick() == 0
    runs = project.runs()
    assert [run["decision"] for run in runs] == ["cold_start", "retrained_deployed"]
    assert "history: 1190 rows in 3 Parquet part(s), read by the workers" in project.log()
    trained_on = released(project).metadata["training_data"]["rows"]
    assert came_back and max(came_back) <= 400 < trained_on, (came_back, trained_on)
    assert released(project).metadata["compute"]["algorithm"] == "xgboost"


def test_the_workers_read_any_range_of_the_history_as_the_local_engine_holds_it(tmp_path, scheduler, monkeypatch):
    """Ranges across Parquet parts and partitions, samples and class counts read on the workers are the
    local engine's rows, row for row (its reference sample drawn the same)."""
    import churnlib.engine
    from churnlib.config import ComputeSettings, section_settings
    from churnlib.engine import ClusterHistory, using
    from churnlib.ingested import FrameHistory, load_record, read_ingested_data
    from training import reference_sample

    project = make_project(tmp_path / "project")
    assert project.tick() == 0
    record = load_record(project.ingested)
    frame, schema, _ = read_ingested_data(project.ingested, record)
    local = FrameHistory(frame)
    assert [part["rows"] for part in record["parts"]] == [400, 390]
    monkeypatch.setattr(churnlib.engine, "ROWS_PER_PARTITION", 150)  # several partitions in one row group
    compute = section_settings(ComputeSettings, engine="dask", scheduler=scheduler, cluster_min_rows=0)
    with using(compute) as engine:
        history = ClusterHistory(engine, project.ingested, record, schema)
        assert len(history) == 790 and history.rows(0, 790).lazy().npartitions == 6
        for first, last in [(0, 790), (395, 405), (100, 250), (400, 790), (789, 790), (5, 5)]:
            assert history.pandas(first, last).equals(frame.iloc[first:last].reset_index(drop=True)), (first, last)
            assert history.class_counts(first, last, schema.target) == local.class_counts(first, last, schema.target)
        assert history.sample(10, 700, 100, seed=3).equals(reference_sample(frame.iloc[10:700], 100, 3))
        assert history.sample(0, 790, 100, seed=3)["corporation"].is_unique
