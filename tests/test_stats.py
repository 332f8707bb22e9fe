"""The statistics behind the score decisions: known values, and error rates measured by simulation."""

import os

import numpy as np
import pytest

from churnlib.stats import (
    Calibration,
    compare,
    confusion_counts,
    drop_test,
    estimate,
    calibration_check,
    expected_score_of,
    metric_from_rates,
    paired_counts,
    wilson_interval,
)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _logit(p):
    return np.log(p) - np.log1p(-p)


def test_confusion_counts_and_metrics_match_their_definitions():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    predicted = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    assert confusion_counts(labels, predicted) == [3, 1, 2, 2]  # tn, fp, fn, tp
    cells = np.array([3.0, 1.0, 2.0, 2.0])
    assert metric_from_rates(cells, "f1") == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert metric_from_rates(cells, "precision") == pytest.approx(2 / 3)
    assert metric_from_rates(cells, "recall") == pytest.approx(0.5)
    assert metric_from_rates(cells, "accuracy") == pytest.approx(5 / 8)
    assert metric_from_rates(np.array([5.0, 0.0, 0.0, 0.0]), "f1") == 0.0  # undefined -> 0


def test_an_estimate_holds_its_value_inside_its_interval_which_narrows_with_rows():
    small, large = estimate([30, 5, 5, 10], "f1"), estimate([3000, 500, 500, 1000], "f1")
    for one in (small, large):
        assert one.low < one.value < one.high
    assert large.high - large.low < (small.high - small.low) / 5
    assert estimate([0, 0, 0, 0], "f1").value is None


def test_the_wilson_interval_equals_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_a_learnt_calibration_recovers_a_known_map_and_the_check_says_when_a_model_is_off():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0.02, 0.98, 40_000)
    truth = _sigmoid(0.7 * _logit(raw) + 0.3)
    learnt, check = Calibration.learnt(rng.random(len(raw)) < truth, raw)
    se = np.sqrt(np.diag(learnt.covariance))
    assert abs(learnt.slope - 0.7) < 4 * 0.7 * se[0] and abs(learnt.intercept - 0.3) < 0.05
    assert check["checked"] and check["passed"] is False
    assert np.allclose(learnt.apply(raw), truth, atol=0.02)
    _, calibrated = Calibration.learnt(rng.random(len(raw)) < raw, raw)
    assert calibrated["passed"] is True
    assert Calibration.from_dict(learnt.to_dict()) == learnt
    assert Calibration.learnt(np.ones(50), raw[:50])[0] == Calibration(rows=50)  # one class: nothing to learn


def test_a_calibration_stored_before_the_format_marker_draws_the_same_maps():
    # New-normal files written before "covariance_of" held the covariance of (slope, intercept)
    # themselves: read back, their draws spread as that covariance says, not slope times wider.
    absolute = np.array([[0.04, 0.01], [0.01, 0.09]])
    old = {"slope": 2.0, "intercept": 0.5, "covariance": absolute.tolist(), "rows": 300}
    draws = Calibration.from_dict(old).draws(40_000, np.random.default_rng(3))
    assert np.allclose(draws.mean(axis=0), [2.0, 0.5], atol=0.01)
    assert np.allclose(np.cov(draws.T), absolute, atol=0.004)
    again = Calibration.from_dict(Calibration.from_dict(old).to_dict())
    assert again == Calibration.from_dict(old)


def test_calibration_draws_compose_the_map_with_its_uncertainty():
    calibration = Calibration(slope=2.0, intercept=0.5, covariance=((0.01, 0.0), (0.0, 0.0)))
    draws = calibration.draws(20_000, np.random.default_rng(2))
    assert np.mean(draws[:, 0]) == pytest.approx(2.0, abs=0.01) and np.std(draws[:, 0]) == pytest.approx(0.2, abs=0.01)
    assert np.allclose(draws[:, 1], 0.5 * draws[:, 0] / 2.0)  # the correction scales the whole map
    assert (Calibration().draws(3, np.random.default_rng(0)) == [[1.0, 0.0]] * 3).all()


def test_the_expected_score_is_exact_when_the_probabilities_are_certain():
    probabilities = np.array([0.0, 0.0, 1.0, 1.0, 1.0])
    expected, _ = expected_score_of(probabilities, probabilities > 0.5, "f1", Calibration())
    assert expected.value == pytest.approx(1.0) and expected.low == pytest.approx(1.0)


@pytest.mark.parametrize("rows", [40, 200, 8_000])
def test_the_score_check_alarms_in_about_alpha_of_batches_when_nothing_changed(rows):
    """A decision rule is a test: under no change it must alarm at its stated rate (here alpha 0.1,
    no effect floor, 300 seeded batches), and a changed rule must make it alarm."""
    rng = np.random.default_rng(rows)
    # What a release keeps: the deploy-time check on 5,000 rows it was not trained on.
    fitted = rng.beta(1.2, 3.0, 5_000)
    calibration = Calibration.from_check(calibration_check(np.log(fitted / (1 - fitted)), rng.random(5_000) < fitted))
    alarms = changed = 0
    for _ in range(200):
        probabilities = rng.beta(1.2, 3.0, rows)
        labels = rng.random(rows) < probabilities
        alarms += drop_test(labels, probabilities, probabilities > 0.5, "f1", calibration,
                            alpha=0.1, max_drop=0.0).alarm
        shuffled = rng.random(rows) < rng.permutation(probabilities)  # the features no longer explain churn
        changed += drop_test(shuffled, probabilities, probabilities > 0.5, "f1", calibration,
                             alpha=0.1, max_drop=0.0).alarm
    low, high = wilson_interval(alarms, 200)
    # Never more than alpha; about alpha while the calibration's uncertainty is small against the
    # batch's (it makes the test cautious when the batch outgrows the rows it was fitted on).
    assert low <= 0.1, (alarms, low, high)
    if rows <= 200:
        assert high >= 0.05, (alarms, low, high)
    assert changed / 200 > (0.5 if rows == 40 else 0.95)


def test_the_effect_floor_stops_a_significant_but_small_drop():
    rng = np.random.default_rng(3)
    probabilities = rng.beta(1.2, 3.0, 200_000)
    labels = rng.random(len(probabilities)) < np.clip(probabilities * 0.93, 0, 1)  # slightly fewer churners
    test = drop_test(labels, probabilities, probabilities > 0.5, "f1", Calibration(), alpha=0.025, max_drop=0.05)
    assert test.p_metric < 0.01 and test.p_fit > 0.5  # fewer churners: a lower F1, labels that fit better
    assert test.p_value < 0.025 and 0 < test.drop < 0.05 and not test.alarm
    assert "under max_drop 0.05" in test.verdict()


def test_a_paired_comparison_sees_the_better_model_and_none_between_equals():
    rng = np.random.default_rng(4)
    labels = rng.random(2_000) < 0.3
    good = np.where(rng.random(2_000) < 0.85, labels, ~labels)
    poor = np.where(rng.random(2_000) < 0.65, labels, ~labels)
    better = compare(paired_counts(labels, poor, good), "f1")
    assert better.difference > 0.1 and better.p_value < 0.001 and better.difference_low > 0
    same = compare(paired_counts(labels, good, good), "f1")
    assert same.difference == 0 and same.p_value > 0.4
    assert sum(paired_counts(labels, poor, good)) == 2_000


def test_bench_api_interval_for_a_median_covers_it_as_often_as_it_says(monkeypatch):
    """bench_api.py's interval for the median of its rounds (order statistics, the sign test's):
    the rounds it picks, and its coverage over 4,000 seeded trials of 15 rounds (96.5% in theory)."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "bench"))
    from bench_api import median_interval

    assert median_interval([5.0, 1.0, 4.0, 2.0, 3.0]) is None  # 5 rounds: even min to max covers only 94%
    assert median_interval([float(x) for x in range(7, 0, -1)]) == (1.0, 7.0)
    assert median_interval([float(x) for x in range(1, 16)]) == (4.0, 12.0)
    rng = np.random.default_rng(11)
    trials = rng.standard_cauchy((4000, 15)) + 2.0  # heavy tails, as rounds on a busy machine; median 2
    covered = sum(low <= 2.0 <= high for low, high in map(median_interval, trials.tolist()))
    assert 0.95 <= covered / 4000 <= 0.98


def test_bench_api_paired_reasons_cost_interval_and_rate_share(monkeypatch):
    """bench_api.py's paired reasons cost: the interval for the difference of two kinds' mean CPU
    per request covers the true difference as often as it says (1,000 seeded trials of skewed,
    heavy-tailed request times); the extra is a request's own plus what it leaves the next request,
    and its share of the rate is the extra over a plain request's whole cost plus the extra."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "bench"))
    from bench_api import difference_of_means, paired_summary

    rng = np.random.default_rng(5)
    sigma = 0.8  # lognormal: mean exp(mu + sigma^2 / 2)
    true = (460e-6 - 420e-6) * np.exp(sigma**2 / 2)
    covered = 0
    for _ in range(1000):
        difference, error = difference_of_means(rng.lognormal(np.log(420e-6), sigma, 400).tolist(),
                                                 rng.lognormal(np.log(460e-6), sigma, 400).tolist())
        covered += abs(difference - true) <= 1.959964 * error
    assert 0.93 <= covered / 1000 <= 0.97

    # Plain 400 us, reasons 40 us more, and 10 us more for a request after a reasons one.
    timings = {(kind, before): (400e-6 + 40e-6 * (kind == "reasons") + 10e-6 * (before == "reasons")
                                + rng.normal(0, 20e-6, 2500)).tolist()
               for kind in ("plain", "reasons") for before in ("plain", "reasons")}
    run = {"name": "real", "timings": timings, "seconds": 20, "errors": 0, "worker_cpu": 800e-6 * 10_000}
    lines = paired_summary(run)
    assert lines[0].startswith("real: reasons cost, paired request by request (5,000 plain and 5,000 with reasons")
    own = float(lines[1].split("with reasons: ")[1].split(" us")[0])
    after = float(lines[2].split("handles (what it left in the caches): ")[1].split(" us")[0])
    assert abs(own - 40) < 2.5 and abs(after - 10) < 2.5  # 4 standard errors (0.57 us)
    # A plain request after a plain one cost the workers 800 - (40 + 10) / 2 = 775 us: 50 / 825 of the rate.
    assert "reasons take 6.1% of the rate" in lines[3] and "a plain request's 775 us" in lines[3]
    assert len(paired_summary({**run, "worker_cpu": None, "errors": 3})) == 4  # the errors line, no share
    assert paired_summary({**run, "worker_cpu": None, "errors": 3})[3] == \
        "  (3 replies were not 200: they are not among the timings)"
    assert "too few timings" in paired_summary({**run, "timings": {}})[0]


def test_bench_paired_conf_times_the_paired_requests_and_keeps_the_checkouts_hooks(tmp_path, monkeypatch):
    """bench/paired_conf.py: the checkout's gunicorn settings and hooks as they are, plus each request
    whose query holds 'paired' timed by its query, written per worker when it stops."""
    import json
    import runpy
    from pathlib import Path
    from types import SimpleNamespace

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 3\nseen = []\ndef pre_request(worker, req):\n    seen.append(req.query)\n"
                    "def worker_exit(server, worker):\n    seen.append('exit')\n")
    monkeypatch.setenv("BENCH_GUNICORN_CONF", str(conf))
    monkeypatch.setenv("BENCH_CPU_DIR", str(tmp_path))
    settings = runpy.run_path(str(Path(__file__).resolve().parent.parent / "bench" / "paired_conf.py"))
    assert settings["workers"] == 3
    for query, status in (("paired", 200), ("paired&reasons=3", 200), ("warm", 200), ("paired", 200), ("paired", 500)):
        req = SimpleNamespace(query=query)
        settings["pre_request"](None, req)
        sum(range(200_000))  # some CPU time to measure
        settings["post_request"](None, req, {}, SimpleNamespace(status_code=status))
    settings["worker_exit"](None, None)
    timings = json.loads((tmp_path / f"{os.getpid()}.json").read_text())
    # Each kept under its query and the query timed before it; the warm-up and the 500 not at all.
    assert sorted(timings) == ["paired after ", "paired after paired&reasons=3", "paired&reasons=3 after paired"]
    assert all(len(values) == 1 and values[0] > 0 for values in timings.values())
    assert settings["_product"]["seen"] == ["paired", "paired&reasons=3", "warm", "paired", "paired", "exit"]
