"""The model search (model.search): off by default, deterministic, held to its budget as a number of
trials, blind to the rows that judge champion against challenger, and able to beat a bad default."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import SAMPLE_LATER, base_config, make_project

from churnlib.config import ConfigError, ModelSettings, config_from_dict, model_fingerprint, section_settings
from churnlib.dataset import FrozenSchema

SEARCH = {"budget_s": 60, "trials": 4}


def release_metadata(project) -> dict:
    return json.loads((project.deployment / "releases" / project.pointer()["current"] / "trainedmodel.json").read_text())


def made_up_frame(seed: int, rows: int = 1200) -> tuple[pd.DataFrame, FrozenSchema]:
    """Return rows where about 15% churn, driven by ``signal``: a model that predicts churn above
    0.5 with its probabilities squeezed towards the base rate (a tiny C) predicts nobody."""
    rng = np.random.default_rng(seed)
    signal, noise = rng.normal(size=rows), rng.normal(size=rows)
    plan = rng.choice(["basic", "pro"], size=rows)
    churn = (rng.random(rows) < 1 / (1 + np.exp(-(-2.6 + 2.0 * signal + 0.5 * (plan == "basic"))))).astype(int)
    frame = pd.DataFrame({"signal": signal, "noise": noise, "plan": plan, "exited": churn})
    return frame, FrozenSchema(target="exited", id_columns=(), feature_columns=("signal", "noise", "plan"),
                               categorical_columns=("plan",))


def test_the_search_is_off_by_default_and_leaves_the_model_and_its_fingerprint_as_they_were(project):
    config = project.config()
    assert config.model.search is None
    assert config.model.fingerprint() == model_fingerprint("logistic_regression", {"max_iter": 1000}, 7, True)
    assert project.tick() == 0
    assert "search" not in project.last_run()
    metadata = release_metadata(project)
    assert "search" not in metadata and metadata["params"] == {"max_iter": 1000}
    assert "model search" not in project.log()


@pytest.mark.parametrize("search, error", [
    ({"algorithms": ["svm"]}, "model.search.algorithms: unknown algorithm 'svm'"),
    ({"algorithms": []}, "model.search.algorithms: must be a non-empty list"),
    ({"budget_s": 0}, "model.search.budget_s: must be a number in [1, 86400], got 0"),
    ({"metric": "precision"}, "model.search.metric: must be one of f1, accuracy, roc_auc, log_loss; got 'precision'"),
    ({"trials": 0}, "model.search.trials: must be between 1 and 10000, got 0"),
    ({"budget": 60}, "unknown key 'model.search.budget'"),
])
def test_a_bad_search_setting_is_refused_naming_the_key(tmp_path, search, error):
    with pytest.raises(ConfigError) as raised:
        config_from_dict(base_config(model={"search": search}), file=tmp_path / "config.json")
    assert error in str(raised.value)


def test_turning_the_search_on_changes_the_model_settings_fingerprint():
    plain = section_settings(ModelSettings)
    searched = section_settings(ModelSettings, search={"budget_s": 60})
    assert plain.fingerprint() != searched.fingerprint()
    assert searched.fingerprint() != section_settings(ModelSettings, search={"budget_s": 61}).fingerprint()


def test_the_same_data_seed_and_settings_give_the_same_trials_and_the_same_model(tmp_path):
    hashes, trials = [], []
    for name in ("first", "second"):
        project = make_project(tmp_path / name, config=base_config(model={"search": SEARCH}))
        assert project.tick() == 0, project.log()
        metadata = release_metadata(project)
        hashes.append(metadata["model_sha256"])
        trials.append([{k: t[k] for k in ("number", "state", "algorithm", "suggested", "params", "threshold", "value")}
                       for t in metadata["search"]["trials"]])
    assert len(trials[0]) == 4
    assert trials[0] == trials[1]
    assert hashes[0] == hashes[1]


def test_the_budget_becomes_a_number_of_trials_before_the_search_and_the_search_runs_exactly_those():
    from churnlib import search

    frame, schema = made_up_frame(1, rows=800)
    model = section_settings(ModelSettings, random_seed=3, search={"budget_s": 4})
    plan = search.plan_trials(model.search, rows=len(frame), columns=search.encoded_columns(frame, schema),
                              baseline_algorithm=model.algorithm)
    assert plan.trials >= 2 and not plan.fixed
    baseline = search.trial_seconds("logistic_regression", plan.rows, plan.columns)
    assert baseline + plan.trials * plan.seconds_per_trial <= model.search.budget_s
    assert baseline + (plan.trials + 1) * plan.seconds_per_trial > model.search.budget_s
    _settings, result = search.search(model, frame, schema)
    assert len(result.trials) == plan.trials == result.plan.trials
    assert f"budget 4 s -> {plan.trials} trials" in plan.text()


def test_a_search_that_overruns_its_budget_fails_the_tick_and_deploys_nothing(tmp_path, monkeypatch):
    from churnlib import search

    project = make_project(tmp_path / "project", config=base_config(model={"search": {"budget_s": 10, "trials": 5}}))
    readings = iter(np.arange(0.0, 1000.0, 4.0))  # each reading of the clock 4 s after the one before
    monkeypatch.setattr(search, "_clock", lambda: float(next(readings)))
    assert project.tick() == 1
    run = project.last_run()
    assert run["decision"] == "failed" and project.pointer() is None
    assert "past its budget of 10 s plus 10%" in run["reason"] and "nothing half-searched is deployed" in run["reason"]
    monkeypatch.undo()
    assert project.tick() == 0  # the rows were left pending: the next tick trains and deploys
    assert project.last_run()["decision"] == "cold_start" and project.pointer() is not None


def test_the_rows_held_out_to_judge_the_challenger_are_never_seen_by_the_search(deployed, monkeypatch):
    from churnlib import search

    seen = []
    real_split = search.split_rows

    def watched_split(frame, target, share):
        seen.append(frame.index.to_numpy().copy())
        return real_split(frame, target, share)

    monkeypatch.setattr(search, "split_rows", watched_split)
    deployed.write_config(base_config(model={"search": SEARCH}))
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0, deployed.log()
    run = deployed.last_run()
    assert run["decision"] == "retrained_deployed", run["reason"]
    total, held = deployed.record()["rows"], run["challenge"]["held_out_rows"]
    held_out_rows = set(range(total - held, total))
    assert len(seen) == 1 and held >= 100
    assert held_out_rows.isdisjoint(seen[0]) and seen[0].max() == total - held - 1
    metadata = release_metadata(deployed)
    assert metadata["search"]["rows"]["validate"][1] == total - held - 1
    assert run["search"]["trials"]["complete"] + run["search"]["trials"]["pruned"] == 4
    assert "model search: 4 trials" in deployed.log()
    # the searched release keeps the config's fingerprint: the next tick sees no changed settings
    import fullprocess

    assert fullprocess.due_retrains(deployed.config(), metadata, deployed.record(), None) == []
    report = (deployed.deployment / "releases" / run["deployed_release_after"] / "report.html").read_text()
    assert "<h2>Model search</h2>" in report and metadata["search"]["summary"].split(":")[0] in report


def test_the_search_finds_a_better_setting_than_a_deliberately_bad_default():
    from churnlib import search

    frame, schema = made_up_frame(2)
    model = section_settings(ModelSettings, params={"C": 1e-5}, random_seed=5,
                             search={"budget_s": 60, "trials": 6, "algorithms": ["logistic_regression"]})
    chosen, result = search.search(model, frame, schema)
    assert result.defaults["value"] == 0.0  # C=1e-5 squeezes every probability below 0.5: nobody predicted
    assert result.winner["trial"] is not None and result.gain() > 0.3
    assert chosen.algorithm == "logistic_regression" and chosen.params["C"] > 1e-3
    assert 0.01 <= chosen.threshold <= 0.99 and chosen.search is None


def test_a_search_without_optuna_installed_says_what_to_install(tmp_path, monkeypatch):
    project = make_project(tmp_path / "project", config=base_config(model={"search": SEARCH}))
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    assert project.tick() == 2
    reason = project.last_run()["reason"]
    assert "model.search: needs Optuna" in reason and "requirements-search.txt" in reason
    assert project.pointer() is None


def test_with_the_search_on_the_nothing_new_tick_imports_neither_optuna_nor_the_search(tmp_path):
    import subprocess

    from helpers import ROOT

    project = make_project(tmp_path / "project", config=base_config(model={"search": {"budget_s": 60, "trials": 2}}))
    assert project.tick() == 0 and project.last_run()["decision"] == "cold_start"
    code = (
        "import sys, fullprocess\n"
        f"status = fullprocess.main(['--config', {str(project.config_path)!r}, '--no-api'])\n"
        "print(sorted(m for m in ('optuna', 'churnlib.search', 'pandas', 'sklearn', 'numpy') if m in sys.modules))\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert project.last_run()["decision"] == "nothing_new"


def test_the_trials_do_not_depend_on_how_fast_the_clock_runs():
    """A loaded machine (a clock that runs on between readings) runs the same trials: the clock only stops a search."""
    from churnlib import search

    frame, schema = made_up_frame(3, rows=700)
    model = section_settings(ModelSettings, random_seed=11, search={"budget_s": 1000, "trials": 4})
    rng = np.random.default_rng(0)
    readings = iter(np.cumsum(rng.uniform(0.0, 5.0, size=100_000)))  # up to 5 s between two readings
    _chosen, busy = search.search(model, frame, schema, clock=lambda: float(next(readings)))
    _chosen, quiet = search.search(model, frame, schema)
    shown = lambda result: [{k: t[k] for k in ("state", "suggested", "params", "threshold", "value")}  # noqa: E731
                            for t in result.trials]
    assert shown(busy) == shown(quiet) and len(quiet.trials) == 4
    assert busy.winner == quiet.winner


@pytest.mark.parametrize("metric", ["f1", "accuracy"])
def test_the_threshold_scores_are_scikit_learns(metric):
    from sklearn.metrics import accuracy_score, f1_score

    from churnlib.search import best_threshold, threshold_scores

    rng = np.random.default_rng(4)
    labels = (rng.random(300) < 0.3).astype(int)
    probabilities = np.round(np.clip(0.3 * labels + rng.random(300) * 0.7, 0, 1), 2)  # ties on purpose
    thresholds = np.array([0.0, 0.1, 0.25, 0.3, 0.5, 0.71, 0.99])
    score = f1_score if metric == "f1" else accuracy_score
    expected = [score(labels, (probabilities > t).astype(int)) for t in thresholds]
    assert threshold_scores(metric, labels, probabilities, thresholds) == pytest.approx(expected)
    best = best_threshold(metric, labels, probabilities)
    assert score(labels, (probabilities > best).astype(int)) == pytest.approx(
        max(score(labels, (probabilities > t).astype(int)) for t in np.unique(probabilities)))
