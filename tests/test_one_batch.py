"""One bad batch becomes neither the model nor the yardstick; a world that truly changed still does."""

import json

import numpy as np
import pytest

from helpers import base_config, batch


def noisy_batch(seed: int, count: int, share: float) -> str:
    """Return sample customers with a ``share`` of their labels, chosen at random, swapped: a world harder to
    predict (share 0.5: labels that say nothing the features could tell)."""
    lines = batch(seed, count).splitlines()
    swapped = set(np.random.default_rng(seed).choice(count, size=round(share * count), replace=False).tolist())
    out = [lines[0]]
    for index, line in enumerate(lines[1:]):
        cells = line.split(",")
        if index in swapped:
            cells[-1] = str(1 - int(cells[-1]))
        out.append(",".join(cells))
    return "\n".join(out) + "\n"


def normal_file(project, release: str) -> dict | None:
    path = project.deployment / "normal" / f"{release}.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_a_swapped_label_batch_is_held_then_ordinary_batches_pass_and_a_real_drop_alarms(deployed):
    before = deployed.pointer()["current"]
    deployed.add_source("swapped.csv", batch(501, count=1000, flip_labels=True))
    assert deployed.tick() == 0
    run = deployed.last_run()
    # Not deployed, expectation kept: held, with an alert-worthy line that names the file.
    assert run["score_drift"]["drift"] is True
    assert run["decision"] == "retrained_refused" and deployed.pointer()["current"] == before, run["reason"]
    assert run["held"]["status"] == "held" and run["held"]["files"] == ["swapped.csv"]
    assert "Check the labels of swapped.csv" in run["reason"] and "--accept-held" in run["reason"]
    comparison = run["deployed_on_test"]["comparison"]
    assert comparison["rows"] == 300 and comparison["difference_high"] < 0
    assert "significantly worse" in deployed.log() and "WARNING fullprocess: on the test data: candidate" in deployed.log()
    assert "new_normal" not in run and normal_file(deployed, before) is None
    # Ordinary batches: no alarm, no retrain, the hold dropped; the expectation is the release's own.
    deployed.add_source("ordinary1.csv", batch(502))
    assert deployed.tick() == 0
    first = deployed.last_run()
    assert first["decision"] == "no_drift" and first["held"]["status"] == "dropped", first["reason"]
    assert "is not confirmed by these rows: dropped" in first["reason"]
    assert first["score_drift"]["baseline"] > 0.55 and "new_normal_since" not in first["score_drift"]
    deployed.add_source("ordinary2.csv", batch(503))
    assert deployed.tick() == 0
    second = deployed.last_run()
    assert second["decision"] == "no_drift" and "held" not in second, second["reason"]
    # A real drop still alarms.
    deployed.add_source("drop.csv", batch(504, count=300, flip_labels=True))
    assert deployed.tick() == 0
    third = deployed.last_run()
    assert third["score_drift"]["drift"] is True and third["score_drift"]["baseline"] > 0.55, third["reason"]
    assert deployed.pointer()["current"] == before


def test_a_held_change_is_adopted_at_once_when_a_person_approves_it(deployed):
    before = deployed.pointer()["current"]
    deployed.add_source("swapped.csv", batch(501, count=1000, flip_labels=True))
    assert deployed.tick() == 0
    assert deployed.last_run()["held"]["status"] == "held"
    assert deployed.tick("--accept-held") == 0
    run = deployed.last_run()
    assert run["decision"] == "retrained_deployed" and run["deployed_release_after"] != before, run["reason"]
    assert run["held"]["status"] == "adopted" and "approved with fullprocess.py --accept-held" in run["reason"]
    # Nothing held now: approving again says so and fails.
    assert deployed.tick("--accept-held") == 1


def test_a_harder_world_is_held_once_then_adopted_and_no_longer_alarms(deployed):
    release = deployed.pointer()["current"]
    deployed.add_source("harder1.csv", noisy_batch(701, 600, 0.3))
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["score_drift"]["drift"] and run["held"]["kind"] == "expectation", run["reason"]
    assert normal_file(deployed, release) is None and deployed.pointer()["current"] == release
    # The next batch falls short again (significantly, if under max_drop on its own): confirmed, adopted
    # (here by a challenger trained on both batches that does better on the newest rows).
    deployed.add_source("harder2.csv", noisy_batch(702, 600, 0.3))
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["held"]["status"] == "adopted" and "is confirmed" in run["reason"], run["reason"]
    assert run.get("new_normal") or run.get("deployed_release_after")
    # Confirmed: the harder world no longer alarms.
    for name, seed in (("harder3.csv", 703), ("harder4.csv", 704)):
        deployed.add_source(name, noisy_batch(seed, 600, 0.3))
        assert deployed.tick() == 0
        assert deployed.last_run()["decision"] == "no_drift", deployed.last_run()["reason"]


def test_a_significant_rise_back_to_the_old_level_ends_a_lowered_expectation(deployed):
    import pandas as pd

    from churnlib.dataset import FrozenSchema
    from churnlib.decisions import accept_new_normal
    from churnlib.modelstore import load_deployed
    from churnlib.pipeline import checked_predictor
    from churnlib.runlog import RetrainReason

    release = deployed.pointer()["current"]
    # A harder world made the release's new normal (as a confirmed hold makes it), from rows kept aside.
    harder = deployed.root / "harder.csv"
    harder.write_text(noisy_batch(711, 1200, 0.3))
    model = load_deployed(deployed.deployment)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    rows = pd.read_csv(harder)
    lowered = accept_new_normal(deployed.config(), model, schema, rows, reasons=[RetrainReason.SCORE_DROP],
                                predictor=checked_predictor(model, schema))
    assert lowered["calibration"]["slope"] < 0.9 and "calibration_refused" not in lowered
    deployed.add_source("ordinary.csv", batch(712, count=600))
    assert deployed.tick() == 0
    run = deployed.last_run()
    ended = run["score_drift"]["lowered_expectation_ended"]
    assert "a significant rise of" in ended["rise"] and "no drop" not in ended["rise"]
    assert "ends: against it, " in run["score_drift"]["reason"]
    assert run["decision"] == "no_drift" and run["score_drift"]["baseline"] > 0.55, run["reason"]
    assert (normal_file(deployed, release) or {}).get("calibration") is None


def test_labels_no_better_than_chance_are_an_alarm_never_a_new_normal(deployed):
    release = deployed.pointer()["current"]
    for name, seed in (("random1.csv", 801), ("random2.csv", 802)):
        deployed.add_source(name, noisy_batch(seed, 600, 0.5))
        assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["held"]["status"] == "adopted", run["reason"]
    refused = run["new_normal"]["calibration_refused"]
    assert refused["slope"] < 0.1 or refused["slope_z"] < 1.96, refused
    assert "no better than chance" in run["reason"], run["reason"]
    assert (normal_file(deployed, release) or {}).get("calibration") is None
    deployed.add_source("random3.csv", noisy_batch(803, 600, 0.5))
    assert deployed.tick() == 0
    assert deployed.last_run()["score_drift"]["drift"] is True


def test_a_poisoned_calibration_written_before_is_inherited_by_neither_the_check_nor_the_lists(deployed):
    from churnlib.modelstore import load_deployed
    from scoring import release_calibration

    release = deployed.pointer()["current"]
    folder = deployed.deployment / "normal"
    folder.mkdir(exist_ok=True)
    # As an older version wrote it after a swapped batch: slope 0.017, known to about +-0.05.
    (folder / f"{release}.json").write_text(json.dumps({
        "release_id": release, "at": "2026-01-01T00:00:00Z", "reasons": ["score_drop"], "rows": 1000,
        "calibration": {"slope": 0.017, "intercept": -0.4, "covariance": [[8.6, 0.0], [0.0, 0.004]],
                        "covariance_of": "correction", "rows": 1000},
        "expected": {"rows": 1000, "counts": [500, 200, 200, 100], "f1": 0.3}}))
    calibration = release_calibration(load_deployed(deployed.deployment), deployed.deployment)
    assert calibration.slope == 1.0 and calibration.rows == 300
    deployed.add_source("ordinary.csv", batch(901))
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["decision"] == "no_drift" and run["score_drift"]["baseline"] > 0.55, run["reason"]
    assert "no better than chance" in deployed.log()


@pytest.mark.parametrize("better", [True, False])
def test_a_rise_is_written_as_a_rise(better):
    from churnlib.stats import Calibration, drop_test

    rng = np.random.default_rng(5)
    probabilities = rng.uniform(0.05, 0.95, 400)
    # Labels that follow the probabilities better than they say (a significant rise), or as they say.
    labels = (probabilities > 0.5) if better else (rng.random(400) < probabilities)
    test = drop_test(labels.astype(int), probabilities, probabilities > 0.5, "f1", Calibration(), alpha=0.025,
                     max_drop=0.05)
    assert "no drop" not in test.verdict()
    if better:
        assert test.significant_rise and test.verdict().startswith("a significant rise of")
    else:
        assert not test.significant_rise


def test_the_challenger_log_line_says_which_rows_it_was_trained_on(deployed):
    deployed.add_source("flipped.csv", batch(301, count=600, flip_labels=True))
    assert deployed.tick() == 0
    run = deployed.last_run()
    held_out = run["challenge"]["held_out_rows"]
    assert f"before the {held_out} newest, held out: challenger f1" in deployed.log()
    assert "challenger trained on all:" not in deployed.log()


def test_a_held_lower_expectation_is_not_confirmed_by_the_old_world_drifting_from_its_new_reference(deployed):
    # A harder world that also drifted: its drift reference is taken at once, its lower expectation held.
    harder = noisy_batch(721, 600, 0.3).splitlines()
    drifted = batch(721, 600, drifted=True).splitlines()
    # The drifted customers' features with the harder world's swapped labels.
    mixed = [drifted[0]] + [",".join(d.split(",")[:-1] + [h.split(",")[-1]]) for d, h in zip(drifted[1:], harder[1:])]
    deployed.add_source("harder_drifted.csv", "\n".join(mixed) + "\n")
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["held"]["kind"] == "expectation", run["reason"]
    assert "feature_drift" in run["new_normal"]["reasons"], run["reason"]
    # The old world again: it drifts from the new reference (the held rows), it does not confirm the drop.
    deployed.add_source("ordinary.csv", batch(722, 600))
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert not run["score_drift"]["drift"], run["reason"]
    assert run["held"]["status"] == "dropped" and "is confirmed" not in run["reason"], run["reason"]


def test_a_held_change_waits_through_a_refused_retrain_for_changed_settings(tmp_path):
    from helpers import make_project

    project = make_project(tmp_path / "project", config=base_config(deployment={"policy": "better"}))
    assert project.tick() == 0
    project.add_source("harder1.csv", noisy_batch(701, 600, 0.3))
    assert project.tick() == 0
    held = project.last_run()["held"]
    assert held["status"] == "held" and held["kind"] == "expectation", project.last_run()["reason"]
    # New settings, no new batch: retrained and refused; nothing judged the held change, so it still waits.
    config = json.loads(project.config_path.read_text())
    config["model"]["params"] = {"C": 0.5}
    project.write_config(config)
    assert project.tick() == 0
    run = project.last_run()
    assert run["decision"] == "retrained_refused" and run["retrain_reason"] == ["config_changed"], run["reason"]
    assert "held" not in run, run["held"]
    state = json.loads((project.root / "ingesteddata" / "decision_state.json").read_text())
    assert state["held"]["at"] == held["at"] and state["held"]["files"] == ["harder1.csv"]
    # And the next batch of the harder world confirms it.
    project.add_source("harder2.csv", noisy_batch(702, 600, 0.3))
    assert project.tick() == 0
    assert project.last_run()["held"]["status"] == "adopted", project.last_run()["reason"]


def test_a_held_change_against_a_release_no_longer_deployed_cannot_be_approved(deployed, capsys):
    from helpers import run_script

    before = deployed.pointer()["current"]
    deployed.add_source("swapped.csv", batch(501, count=1000, flip_labels=True))
    assert deployed.tick() == 0
    assert deployed.last_run()["held"]["status"] == "held"
    # The refused candidate deployed by hand: the hold is against a release no longer served.
    assert run_script("deployment.py", "--config", str(deployed.config_path)).returncode == 0
    assert deployed.pointer()["current"] != before
    assert deployed.tick("--accept-held") == 1
    assert f"is against release {before}" in capsys.readouterr().err


def test_a_small_drop_of_another_release_does_not_confirm_a_hold_against_the_one_before(deployed):
    from helpers import run_script

    deployed.add_source("swapped.csv", batch(501, count=1000, flip_labels=True))
    assert deployed.tick() == 0
    assert deployed.last_run()["held"]["status"] == "held"
    # The refused candidate deployed by hand; no drop alarms on its own now (max_drop 0.9).
    assert run_script("deployment.py", "--config", str(deployed.config_path)).returncode == 0
    config = json.loads(deployed.config_path.read_text())
    config.setdefault("score_drift", {})["max_drop"] = 0.9
    deployed.write_config(config)
    deployed.add_source("ordinary.csv", batch(502, count=600))
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["score_drift"]["p_value"] < run["score_drift"]["alpha"] and not run["score_drift"]["drift"]
    assert run["decision"] == "no_drift" and "again after the held one" not in run["reason"], run["reason"]


def test_a_held_drop_with_drifted_features_keeps_the_expected_score_and_says_so(deployed):
    """Only the drift reference becomes new while the drop waits for the next batch: the reason must not
    say the rows are the release's new normal (its expected score stays)."""
    release = deployed.pointer()["current"]
    lines = noisy_batch(711, 600, 0.3).splitlines()
    drifted = batch(711, 600, drifted=True).splitlines()
    deployed.add_source("harder_drifted.csv", "\n".join([drifted[0], *[
        ",".join(d.split(",")[:-1] + [n.split(",")[-1]]) for d, n in zip(drifted[1:], lines[1:])]]) + "\n")
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["held"]["kind"] == "expectation" and run["new_normal"]["reasons"] == ["feature_drift"], run["reason"]
    assert deployed.pointer()["current"] == release
    assert (f"are the new normal of release {release} (its drift reference; its expected score stays)"
            in run["reason"]), run["reason"]
