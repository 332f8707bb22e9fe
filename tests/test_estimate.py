"""The label-free estimate of a scored file and the calibration check it relies on.

The estimate is validated the way its users will meet it: on labelled files whose labels are hidden,
the realised F1 must land inside the estimate's interval about as often as its confidence says,
without drift and under covariate drift (the customers change, what drives churn does not). Under
concept drift it cannot, and a test shows that too: docs/risk-lists.md says so.
"""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, chi2
from sklearn.metrics import f1_score

from churnlib.dataset import FrozenSchema
from churnlib.modelstore import load_deployed
from churnlib.pipeline import batch_from_frame, checked_predictor, model_threshold, predicted_classes
from churnlib.stats import calibration_check
from helpers import base_config, make_project
from samples.generate import HEADER, make_customers
from churnlib.stats import Calibration
from scoring import EXACT_SIMULATION_ROWS, ConfusionInputs, estimate_performance, release_calibration

NUMERIC = ("lastmonth_activity", "lastyear_activity", "number_of_employees")


def test_the_estimate_is_the_expected_confusion_matrix_of_the_probabilities():
    inputs = ConfusionInputs(threshold=0.5)
    inputs.add(np.array([0.9] * 10 + [0.2] * 10))
    estimate = estimate_performance(inputs)
    # Expected: 9 true positives, 1 false positive, 2 false negatives, 8 true negatives.
    assert estimate["confusion_matrix"]["matrix"] == [[8.0, 1.0], [2.0, 9.0]]
    assert estimate["f1"] == pytest.approx(18 / 21, abs=1e-4)
    assert estimate["precision"] == pytest.approx(0.9) and estimate["recall"] == pytest.approx(9 / 11, abs=1e-4)
    assert estimate["expected_churners"] == 11 and estimate["predicted_churners"] == 10
    low, high = estimate["f1_ci"]
    assert low < estimate["f1"] < high


def test_certain_probabilities_leave_no_doubt():
    inputs = ConfusionInputs(threshold=0.5)
    inputs.add(np.array([1.0] * 30 + [0.0] * 70))
    estimate = estimate_performance(inputs)
    assert estimate["f1"] == 1.0 and estimate["f1_ci"] == [1.0, 1.0] and estimate["accuracy"] == 1.0


def test_large_files_are_estimated_from_a_histogram_like_small_ones_row_by_row():
    rng = np.random.default_rng(3)
    probabilities = 1 / (1 + np.exp(-rng.normal(-0.5, 1.5, EXACT_SIMULATION_ROWS)))
    calibration = Calibration(covariance=((0.01, 0.0), (0.0, 0.01)))
    exact = ConfusionInputs(threshold=0.5)
    exact.add(probabilities)
    approximate = ConfusionInputs(threshold=0.5)
    for part in np.array_split(np.concatenate([probabilities, probabilities]), 7):  # twice the rows, in chunks
        approximate.add(part)
    assert exact.kept is not None and approximate.kept is None
    one, other = estimate_performance(exact, calibration=calibration), estimate_performance(approximate, calibration=calibration)
    assert "row by row" in one["method"] and "normal approximation" in other["method"]
    assert other["f1"] == pytest.approx(one["f1"], abs=1e-9)
    # The same probabilities twice over: the calibration's share of the interval dominates both.
    assert other["f1_ci"] == pytest.approx(one["f1_ci"], abs=0.01)


def _labelled(seed: int, rows: int, *, drift: str) -> pd.DataFrame:
    frame = pd.DataFrame(make_customers(np.random.default_rng(seed), rows, drifted=drift == "covariate"), columns=HEADER)
    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column].replace("", np.nan))
    frame["exited"] = frame["exited"].astype(int)
    if drift == "concept":  # what drives churn changed: premium customers now leave
        frame.loc[frame["plan"] == "premium", "exited"] = 1
    return frame


def coverage(project, drift: str, trials: int = 40, rows: int = 500) -> tuple[int, float]:
    """Return in how many of ``trials`` hidden-label files the realised F1 lay inside the interval, and the mean error."""
    model = load_deployed(project.deployment)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    predictor = checked_predictor(model, schema)
    threshold, calibration = model_threshold(model.metadata), release_calibration(model, project.deployment)
    inside, errors = 0, []
    for trial in range(trials):
        frame = _labelled(5000 + trial, rows, drift=drift)
        probabilities = predictor.probabilities(batch_from_frame(frame, schema))
        inputs = ConfusionInputs(threshold=threshold)
        inputs.add(probabilities)
        estimate = estimate_performance(inputs, calibration=calibration)  # the labels stay hidden
        realised = f1_score(frame["exited"], predicted_classes(probabilities, threshold))
        inside += estimate["f1_ci"][0] <= realised <= estimate["f1_ci"][1]
        errors.append(estimate["f1"] - realised)
    return inside, float(np.mean(errors))


# At 95 % confidence, 40 files: fewer than 34 inside has probability under 2 % (binom.cdf(33, 40, 0.95) = 0.014).
ENOUGH = 34


@pytest.fixture(scope="module")
def xgboost_project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("estimate") / "xgboost", config=base_config(model={"algorithm": "xgboost"}))
    assert project.tick() == 0
    from churnlib.logsetup import close_logging

    close_logging()
    return project


@pytest.mark.parametrize("drift", ["none", "covariate"])
def test_the_estimate_lands_within_its_interval_without_drift_and_under_covariate_drift(xgboost_project, drift):
    inside, error = coverage(xgboost_project, drift)
    assert inside >= ENOUGH, (inside, error)
    assert abs(error) < 0.03


def test_the_linear_model_is_estimated_within_its_interval_without_drift(deployed):
    inside, error = coverage(deployed, "none")
    assert inside >= ENOUGH, (inside, error)


def test_the_estimate_cannot_see_concept_drift(xgboost_project):
    inside, error = coverage(xgboost_project, "concept")
    assert inside <= 10 and error > 0.05  # it still believes the old relation: too optimistic


# --- the calibration check ---------------------------------------------------------------------


def hosmer_lemeshow_p(log_odds: np.ndarray, labels: np.ndarray, groups: int = 10) -> float:
    """The classic calibration test: deciles of risk, chi-square with ``groups`` degrees of freedom (the
    probabilities come from a model fitted elsewhere: groups - 2 is for the rows it was fitted on)."""
    probabilities = 1 / (1 + np.exp(-log_odds))
    order = np.argsort(probabilities)
    statistic = 0.0
    for part in np.array_split(order, groups):
        expected, observed, size = probabilities[part].sum(), labels[part].sum(), len(part)
        mean = expected / size
        statistic += (observed - expected) ** 2 / (size * mean * (1 - mean))
    return float(chi2.sf(statistic, groups))


def test_the_calibration_check_false_alarm_rate_is_alpha_like_the_classic_test():
    """Seeded trials of perfectly calibrated probabilities on 300 held-out rows: Cox's test refuses them
    about alpha of the time, as Hosmer-Lemeshow does (both measured in the same run)."""
    rng = np.random.default_rng(11)
    trials, rows = 600, 300
    ours = classic = 0
    for _ in range(trials):
        log_odds = rng.normal(-0.3, 1.6, rows)
        labels = (rng.random(rows) < 1 / (1 + np.exp(-log_odds))).astype(float)
        ours += not calibration_check(log_odds, labels)["passed"]
        classic += hosmer_lemeshow_p(log_odds, labels) < 0.05
    low, high = binom.ppf([0.0005, 0.9995], trials, 0.05)  # a 99.9 % band around alpha = 0.05
    assert low <= ours <= high, ours
    assert low <= classic <= high, classic


def test_the_calibration_check_finds_overconfidence_and_its_fix_undoes_it():
    rng = np.random.default_rng(12)
    true_log_odds = rng.normal(-0.3, 1.2, 300)
    labels = (rng.random(300) < 1 / (1 + np.exp(-true_log_odds))).astype(float)
    overconfident = 2.0 * true_log_odds + 0.5  # what an overfitted model gives
    check = calibration_check(overconfident, labels)
    assert check["checked"] and not check["passed"] and check["p_value"] < 1e-6
    assert check["slope"] == pytest.approx(0.5, abs=0.1) and check["intercept"] == pytest.approx(-0.25, abs=0.2)
    fixed = check["slope"] * overconfident + check["intercept"]
    again = calibration_check(fixed, labels)
    assert again["passed"] and again["slope"] == pytest.approx(1.0, abs=1e-6)
    assert again["intercept"] == pytest.approx(0.0, abs=1e-6)


def test_too_few_or_one_class_rows_are_not_checked():
    assert calibration_check(np.zeros(10), np.ones(10))["checked"] is False
    check = calibration_check(np.zeros(100), np.ones(100))
    assert check["checked"] is False and check["passed"] is True and "of one class" in check["reason"]


def test_a_recalibrated_release_keeps_its_decisions_and_exact_reasons(xgboost_project):
    model = load_deployed(xgboost_project.deployment)
    calibration = model.metadata["calibration"]
    assert calibration["checked"] and calibration["recalibrated"], calibration  # xgboost is overconfident here
    assert calibration["after"]["passed"] and model.metadata["decision_threshold"] != 0.5
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    frame = _labelled(77, 400, drift="none")
    inner = model.pipeline.steps[-1][1].classifier
    raw = inner.predict_proba(model.pipeline[:-1].transform(frame[list(schema.feature_columns)]))[:, 1]
    served = model.pipeline.predict_proba(frame[list(schema.feature_columns)])[:, 1]
    assert np.array_equal(predicted_classes(raw, 0.5), predicted_classes(served, model_threshold(model.metadata)))
    contributions = checked_predictor(model, schema).explain(batch_from_frame(frame, schema))
    assert np.max(np.abs(1 / (1 + np.exp(-contributions.log_odds)) - served)) <= 2e-6
