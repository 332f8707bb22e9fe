"""Training, scoring and deployment, each on a throw-away project."""

import json
import pickle

import numpy as np
import pytest

import deployment
import ingestion
import scoring
import training
from churnlib.dataset import FrozenSchema
from churnlib.ingested import read_ingested_data
from churnlib.modelstore import ModelLoadError, load_deployed, load_model
from helpers import base_config, run_script


@pytest.fixture
def ingested(project):
    ingestion.run_ingestion(project.config())
    return project


def train(project, **model):
    config = project.config()
    if model:
        project.write_config(base_config(model=model))
        config = project.config()
    frame, schema, fingerprint = read_ingested_data(config.paths.ingested)
    return training.train_and_save(frame, schema, fingerprint, model_settings=config.model,
                                   reference_size=config.drift.reference_sample_size, model_folder=config.paths.models)


def test_training_writes_model_metadata_and_a_bounded_reference_sample(ingested):
    project = ingested
    project.write_config(base_config(drift={"reference_sample_size": 100}))
    metadata = train(project)
    assert {"release_id", "trained_at", "algorithm", "params", "schema", "training_data", "model_sha256"} <= set(metadata)
    assert metadata["training_data"]["rows"] == 790
    assert metadata["schema"]["categorical_columns"] == ["plan"]
    assert metadata["reference_sample"]["rows"] == 100
    reference = (project.models / "reference_sample.csv").read_text().splitlines()
    assert len(reference) == 101
    on_disk = json.loads((project.models / "trainedmodel.json").read_text())
    assert on_disk == metadata
    assert load_model(project.models).release_id == metadata["release_id"]


def test_training_by_hand_keeps_to_a_recent_training_window(ingested):
    ingested.write_config(base_config(model={"algorithm": "logistic_regression", "training_window": "recent",
                                             "recent_rows": 200}))
    result = run_script("training.py", "--config", str(ingested.config_path))
    assert result.returncode == 0, result.stderr
    metadata = json.loads((ingested.models / "trainedmodel.json").read_text())
    assert metadata["window"] == {"kind": "newest 200 rows", "first_row": 590, "last_row": 790}
    assert metadata["training_data"]["rows"] == 200 and sum(metadata["training_data"]["class_counts"].values()) == 200


@pytest.mark.parametrize("algorithm", ["logistic_regression", "xgboost"])
def test_the_same_data_gives_the_same_model(ingested, algorithm):
    first = train(ingested, algorithm=algorithm, random_seed=3)
    first_bytes = (ingested.models / "trainedmodel.pkl").read_bytes()
    second = train(ingested, algorithm=algorithm, random_seed=3)
    second_bytes = (ingested.models / "trainedmodel.pkl").read_bytes()
    if algorithm == "logistic_regression":
        assert first["model_sha256"] == second["model_sha256"] and first_bytes == second_bytes
    schema = FrozenSchema.from_dict(first["schema"])
    test = scoring.read_test_data(ingested.root / "testdata", settings=ingested.config().schema, schema=schema)
    a = pickle.loads(first_bytes).predict_proba(test[list(schema.feature_columns)])
    b = pickle.loads(second_bytes).predict_proba(test[list(schema.feature_columns)])
    assert np.array_equal(a, b)


def test_xgboost_runs_with_the_configured_thread_count(ingested):
    train(ingested, algorithm="xgboost", n_threads=1, params={"n_estimators": 20})
    model = load_model(ingested.models)
    assert model.pipeline.named_steps["classifier"].get_params()["n_jobs"] == 1
    assert model.metadata["params"]["n_estimators"] == 20


def test_an_unknown_model_parameter_is_a_config_error_naming_it(ingested):
    from churnlib.config import ConfigError

    with pytest.raises(ConfigError, match="model.params: 'depth' not a parameter of LogisticRegression"):
        train(ingested, params={"depth": 3})


def test_training_on_one_class_says_why_it_cannot(empty_project):
    from helpers import SAMPLE_HEADER, csv_text

    empty_project.add_source("a.csv", csv_text(SAMPLE_HEADER, [["a", 1, 2, 3, "basic", 0], ["b", 2, 3, 4, "basic", 0]]))
    ingestion.run_ingestion(empty_project.config())
    with pytest.raises(training.TrainingError, match="only class 0"):
        train(empty_project)


def test_scoring_writes_f1_as_a_bare_number_and_all_metrics_beside_it(ingested):
    train(ingested)
    result = run_script("scoring.py", "--config", str(ingested.config_path))
    assert result.returncode == 0, result.stderr
    f1 = float((ingested.models / "latestscore.txt").read_text())
    details = json.loads((ingested.models / "latestscore.json").read_text())
    assert details["f1"] == f1 and 0.5 < f1 < 1
    assert set(details) >= {"precision", "recall", "accuracy", "roc_auc", "confusion_matrix", "release_id"}
    assert np.array(details["confusion_matrix"]["matrix"]).sum() == 300


def test_metrics_with_one_class_say_roc_auc_is_undefined():
    metrics = scoring.metrics_from_predictions(np.array([0, 0, 0]), np.array([0.1, 0.7, 0.2]))
    assert metrics["roc_auc"] is None
    assert metrics["confusion_matrix"]["matrix"] == [[2, 1], [0, 0]]


def deploy(project):
    config = project.config()
    return deployment.deploy_release(config.paths.models, config.paths.deployment,
                                     ingested_folder=config.paths.ingested,
                                     keep_releases=config.deployment.keep_releases)


def train_score(project):
    metadata = train(project)
    model = load_model(project.models)
    schema = FrozenSchema.from_dict(metadata["schema"])
    test = scoring.read_test_data(project.root / "testdata", settings=project.config().schema, schema=schema)
    scoring.write_scores(scoring.score_model(model.pipeline, test, schema), project.models,
                         release_id=metadata["release_id"])
    return metadata["release_id"]


def test_deploy_switches_one_pointer_to_a_whole_release(ingested):
    release_id = train_score(ingested)
    assert deploy(ingested) == release_id
    assert ingested.pointer()["current"] == release_id
    folder = ingested.deployment / "releases" / release_id
    assert {p.name for p in folder.iterdir()} >= {"trainedmodel.pkl", "trainedmodel.json", "latestscore.txt",
                                                 "latestscore.json", "reference_sample.csv",
                                                 "ingestion_record.json", "release.json"}
    assert load_deployed(ingested.deployment).release_id == release_id
    assert not [p for p in (ingested.deployment / "releases").iterdir() if p.name.startswith(".")]


def test_deploy_refuses_a_model_whose_score_is_not_its_own(ingested):
    train_score(ingested)
    train(ingested, random_seed=2)  # retrained but not scored
    with pytest.raises(deployment.DeploymentError, match="run scoring.py first"):
        deploy(ingested)


def test_releases_beyond_keep_are_removed_and_rollback_returns_to_the_previous(ingested):
    ids = []
    for seed in (1, 2, 3):
        ingested.write_config(base_config(deployment={"keep_releases": 2}, model={"random_seed": seed, "params": {"C": seed}}))
        ids.append(train_score(ingested))
        deploy(ingested)
    assert sorted(p.name for p in (ingested.deployment / "releases").iterdir()) == sorted(ids[1:])
    listing = run_script("deployment.py", "--config", str(ingested.config_path), "--list")
    assert listing.returncode == 0
    assert listing.stdout.index(ids[2]) < listing.stdout.index(ids[1])
    assert f"* {ids[2]}" in listing.stdout
    rolled = run_script("deployment.py", "--config", str(ingested.config_path), "--rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert f"rolled back: {ids[2]} -> {ids[1]}" in rolled.stdout
    assert ingested.pointer()["current"] == ids[1]
    again = run_script("deployment.py", "--config", str(ingested.config_path), "--rollback")
    assert again.returncode == 1 and "nothing to roll back to" in again.stderr


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_metadata"])
def test_a_damaged_model_file_is_refused_with_the_reason(ingested, damage):
    release_id = train_score(ingested)
    deploy(ingested)
    folder = ingested.deployment / "releases" / release_id
    model = folder / "trainedmodel.pkl"
    data = bytearray(model.read_bytes())
    if damage == "flip_byte":
        data[len(data) // 2] ^= 0x01
        model.write_bytes(bytes(data))
    elif damage == "truncate":
        model.write_bytes(bytes(data[: len(data) // 2]))
    else:
        (folder / "trainedmodel.json").unlink()
    expected = "metadata file missing" if damage == "drop_metadata" else "does not match"
    with pytest.raises(ModelLoadError, match=expected):
        load_deployed(ingested.deployment)


def test_deploy_refuses_a_reference_sample_from_another_training_run(ingested):
    train_score(ingested)
    with open(ingested.models / "reference_sample.csv", "a") as handle:
        handle.write("zzzz,1,2,3,basic,1\n")  # what a training run killed between its writes leaves
    with pytest.raises(deployment.DeploymentError, match="reference_sample.csv: SHA-256 does not match"):
        deploy(ingested)


def test_rollback_works_both_ways_and_keeps_every_release_listed(ingested):
    ids = []
    for seed in (1, 2, 3):
        ingested.write_config(base_config(model={"random_seed": seed, "params": {"C": seed}}))
        ids.append(train_score(ingested))
        deploy(ingested)
    config = str(ingested.config_path)
    assert run_script("deployment.py", "--config", config, "--rollback").returncode == 0
    assert ingested.pointer()["current"] == ids[1]
    listing = run_script("deployment.py", "--config", config, "--list").stdout
    assert all(rid in listing for rid in ids), listing  # the release rolled back from is still listed
    assert f"* {ids[1]}" in listing
    forward = run_script("deployment.py", "--config", config, "--rollback", "--to", ids[2])
    assert forward.returncode == 0, forward.stderr
    assert ingested.pointer()["current"] == ids[2]
    assert run_script("deployment.py", "--config", config, "--rollback", "--to", ids[0]).returncode == 0
    ingested.write_config(base_config(model={"random_seed": 4, "params": {"C": 4}}))
    ids.append(train_score(ingested))
    deploy(ingested)  # a deploy after a rollback deletes nothing that is kept
    assert sorted(p.name for p in (ingested.deployment / "releases").iterdir()) == sorted(ids)
    # the release that was serving comes right after the new one: a rollback returns to it, not to
    # the releases the user had rolled away from
    assert ingested.pointer()["releases"] == [ids[3], ids[0], ids[2], ids[1]]
    back = run_script("deployment.py", "--config", config, "--rollback")
    assert back.returncode == 0 and f"rolled back: {ids[3]} -> {ids[0]}" in back.stdout, back.stdout + back.stderr


def test_a_deploy_after_a_rollback_keeps_the_release_that_was_serving(ingested):
    ids = []
    for seed in (1, 2):
        ingested.write_config(base_config(deployment={"keep_releases": 2}, model={"random_seed": seed, "params": {"C": seed}}))
        ids.append(train_score(ingested))
        deploy(ingested)
    config = str(ingested.config_path)
    assert run_script("deployment.py", "--config", config, "--rollback").returncode == 0  # ids[1] was bad
    ingested.write_config(base_config(deployment={"keep_releases": 2}, model={"random_seed": 3, "params": {"C": 3}}))
    ids.append(train_score(ingested))
    deploy(ingested)
    kept = sorted(p.name for p in (ingested.deployment / "releases").iterdir())
    assert kept == sorted([ids[2], ids[0]])  # the good release stays; the one rolled away from goes
    back = run_script("deployment.py", "--config", config, "--rollback")
    assert back.returncode == 0 and ingested.pointer()["current"] == ids[0], back.stderr


def test_pruning_never_deletes_the_current_release(ingested):
    ids = []
    for seed in (1, 2, 3):
        ingested.write_config(base_config(deployment={"keep_releases": 2}, model={"random_seed": seed, "params": {"C": seed}}))
        ids.append(train_score(ingested))
        deploy(ingested)
        if seed == 2:
            rolled = run_script("deployment.py", "--config", str(ingested.config_path), "--rollback")
            assert rolled.returncode == 0, rolled.stderr  # back to ids[0], the oldest
    current = ingested.pointer()["current"]
    assert current == ids[2]
    deployment.prune_releases(ingested.deployment)
    kept = sorted(p.name for p in (ingested.deployment / "releases").iterdir())
    assert current in kept and len(kept) == 2
    # the current release is kept even when it is older than every release the count keeps (the
    # deploy kept ids[0], which served before it, and let ids[1], rolled away from, go)
    assert run_script("deployment.py", "--config", str(ingested.config_path), "--rollback", "--to", ids[0]).returncode == 0
    deployment.prune_releases(ingested.deployment, keep_releases=1)
    assert (ingested.deployment / "releases" / ids[0]).exists()


def test_rollback_to_a_named_release_works_when_the_pointer_is_damaged(ingested):
    ids = []
    for seed in (1, 2):
        ingested.write_config(base_config(model={"random_seed": seed, "params": {"C": seed}}))
        ids.append(train_score(ingested))
        deploy(ingested)
    (ingested.deployment / "current.json").write_text("{damaged")
    listing = run_script("deployment.py", "--config", str(ingested.config_path), "--list")
    assert listing.returncode == 1 and "current.json: not valid JSON" in listing.stderr
    rolled = run_script("deployment.py", "--config", str(ingested.config_path), "--rollback", "--to", ids[0])
    assert rolled.returncode == 0, rolled.stderr
    assert ingested.pointer()["current"] == ids[0]
    assert ingested.pointer()["releases"] == [ids[1], ids[0]]
