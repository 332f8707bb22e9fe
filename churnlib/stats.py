"""The statistics behind the score decisions: each figure with its uncertainty, each rule a test.

The score check asks whether the deployed model does worse on the new rows than it should. What it
should score on those very rows follows from its own probabilities, once they are calibrated: a
row with churn probability q is a churner with probability q, so the expected confusion matrix of
a batch, and the spread of its metric from label noise alone, are known before any label is read
(confidence-based performance estimation). The calibration (a logistic map of the model's log-odds,
``Calibration``) is fitted at deploy time on out-of-sample predictions, and its own uncertainty is
carried into the expected score. Comparing the realised score with the score expected on the same
rows removes what makes two independent scores so noisy: which customers happened to be in the
batch, and how far the model's score on other rows strayed from its true one. Under no drift the
rule alarms in fewer than alpha of batches (bench/bench_decisions.py measures it); a covariate shift
that leaves the model right about each customer does not alarm it (the feature tests see those),
a changed rule does.

A score on a set of labelled rows is an estimate: the rows' four outcomes (true negative, false
positive, false negative, true positive) are a multinomial sample, and the counts' Dirichlet
posterior (Jeffreys prior) gives its 95% interval. For two models on the same rows (champion and
challenger) each row has one of eight outcomes (label x champion's class x challenger's class),
and the same sampling on those counts gives the paired difference. ROC AUC is not a function of
the counts; it gets the Hanley-McNeil normal approximation against an expected AUC.

Random draws come from generators seeded from the data, so the same data always gives the same
figures and the same decision. numpy and scipy only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CONFUSION_METRICS = ("f1", "precision", "recall", "accuracy")
DRAWS = 10_000
PRIOR = 0.5  # Jeffreys


def confusion_counts(labels: np.ndarray, predicted: np.ndarray) -> list[int]:
    """Return [true negatives, false positives, false negatives, true positives]."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    tp = int(np.count_nonzero(labels & predicted))
    fn = int(np.count_nonzero(labels & ~predicted))
    fp = int(np.count_nonzero(~labels & predicted))
    return [len(labels) - tp - fn - fp, fp, fn, tp]


def metric_from_rates(cells: np.ndarray, metric: str) -> np.ndarray:
    """Return the metric of confusion cells (last axis tn, fp, fn, tp: counts or shares); 0 where undefined."""
    tn, fp, fn, tp = (cells[..., i] for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "f1":
            value = 2 * tp / (2 * tp + fp + fn)
        elif metric == "precision":
            value = tp / (tp + fp)
        elif metric == "recall":
            value = tp / (tp + fn)
        elif metric == "accuracy":
            value = (tp + tn) / (tn + fp + fn + tp)
        else:
            raise ValueError(f"{metric!r} is not a confusion-matrix metric")
    return np.nan_to_num(value, nan=0.0)


def _rng(*parts: Any) -> np.random.Generator:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class Estimate:
    """A score with its 95% interval, on ``rows`` rows."""

    metric: str
    value: float | None
    low: float | None
    high: float | None
    rows: int

    def text(self) -> str:
        if self.value is None:
            return f"{self.metric} undefined on {self.rows} rows"
        return f"{self.value:.3f} (95% CI {self.low:.2f}-{self.high:.2f})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _posterior_draws(counts: list[int], metric: str, draws: int = DRAWS) -> np.ndarray:
    shares = _rng("one", tuple(counts)).dirichlet(np.asarray(counts, dtype=float) + PRIOR, size=draws)
    return metric_from_rates(shares, metric)


def estimate(counts: list[int], metric: str) -> Estimate:
    """Return the metric of these confusion counts with its 95% interval (equal-tailed, posterior)."""
    rows = int(sum(counts))
    if rows == 0:
        return Estimate(metric, None, None, None, 0)
    value = float(metric_from_rates(np.asarray(counts, dtype=float), metric))
    low, high = np.quantile(_posterior_draws(counts, metric), [0.025, 0.975])
    return Estimate(metric, value, float(low), float(high), rows)


# --- ROC AUC: not a function of the counts; Hanley & McNeil (1982) standard error --------------


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Return the Hanley-McNeil standard error of an ROC AUC measured on these class counts."""
    if positives == 0 or negatives == 0:
        return math.inf
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc))
    return math.sqrt(max(variance, 1e-12) / (positives * negatives))


def auc_estimate(auc: float, positives: int, negatives: int) -> Estimate:
    se = auc_standard_error(auc, positives, negatives)
    low, high = (max(0.0, auc - 1.96 * se), min(1.0, auc + 1.96 * se)) if math.isfinite(se) else (0.0, 1.0)
    return Estimate("roc_auc", auc, low, high, positives + negatives)


# --- calibration: what the model's probabilities mean ------------------------------------------


def log_odds(probabilities: np.ndarray) -> np.ndarray:
    """Return log(p / (1 - p)), probabilities of exactly 0 or 1 held 1e-12 inside."""
    p = np.clip(np.asarray(probabilities, dtype=float), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Return 1 / (1 + exp(-z)), without overflow warnings (exp(-z) is inf below -709: 0.0 is right)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


CHANCE_Z = 1.959964  # a calibration slope fewer standard errors than this above 0 is no better than chance
# An effect floor, as the other rules have: probabilities whose log-odds keep less than this share of
# their spread (slope) tell the labels too little to be a yardstick, however many rows show it.
MIN_INFORMATIVE_SLOPE = 0.1


@dataclass(frozen=True)
class Calibration:
    """What a model's probabilities mean: P(churn) = sigmoid(slope * log-odds + intercept), and how sure
    that is.

    ``covariance`` is the uncertainty of a correction (slope', intercept') around (1, 0) applied after
    that map (the check's covariance, ``calibration_check``): draws compose the two. The identity
    (slope 1, intercept 0, no uncertainty) means "take the model at its word".
    """

    slope: float = 1.0
    intercept: float = 0.0
    covariance: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))
    rows: int = 0

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        return sigmoid(self.slope * log_odds(probabilities) + self.intercept)

    def draws(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Return ``count`` (slope, intercept) pairs of the map, drawn from its uncertainty."""
        covariance = np.asarray(self.covariance, dtype=float)
        if not covariance.any():
            return np.tile([self.slope, self.intercept], (count, 1))
        correction = rng.multivariate_normal([1.0, 0.0], covariance, size=count, method="eigh")
        return np.column_stack([correction[:, 0] * self.slope, correction[:, 0] * self.intercept + correction[:, 1]])

    def to_dict(self) -> dict[str, Any]:
        return {"slope": self.slope, "intercept": self.intercept, "covariance": [list(r) for r in self.covariance],
                "covariance_of": "correction", "rows": self.rows}

    @property
    def slope_z(self) -> float | None:
        """How many standard errors the slope lies above 0 (None when taken at its word: no uncertainty).

        The slope is ``correction * slope`` with the correction's variance ``covariance[0][0]`` around
        1, so slope 0 lies 1 / sqrt(variance) standard errors below it."""
        variance = self.covariance[0][0]
        if variance <= 0:
            return None
        return (1.0 if self.slope > 0 else -1.0) / math.sqrt(variance)

    @property
    def informative(self) -> bool:
        """Whether the probabilities, so calibrated, say more about the labels than chance: the slope is
        significantly above 0 (one-sided 2.5%) and at least MIN_INFORMATIVE_SLOPE. A calibration that
        fails this is an alarm, never a yardstick."""
        z = self.slope_z
        return z is None or (self.slope >= MIN_INFORMATIVE_SLOPE and z > CHANCE_Z)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Calibration":
        if not data:
            return cls()
        slope, intercept = float(data["slope"]), float(data["intercept"])
        covariance = np.asarray(data["covariance"], dtype=float)
        if data.get("covariance_of") != "correction" and covariance.any() and slope != 0:
            # Written before the marker: the covariance of (slope, intercept) themselves. A correction
            # (c0, c1) maps to (c0 * slope, c0 * intercept + c1), so its covariance is J^-1 C J^-T.
            inverse = np.linalg.inv(np.array([[slope, 0.0], [intercept, 1.0]]))
            covariance = inverse @ covariance @ inverse.T
        return cls(slope=slope, intercept=intercept,
                   covariance=tuple(tuple(float(v) for v in row) for row in covariance), rows=int(data.get("rows", 0)))

    @classmethod
    def from_check(cls, check: dict[str, Any] | None) -> "Calibration":
        """Return the calibration of a release's served probabilities from its deploy-time check
        (``calibration_check``): taken at their word (they passed the check, or were recalibrated
        until they did), as sure as the check's rows could make it (its covariance)."""
        if not check or not check.get("checked") or not check.get("covariance"):
            return cls(rows=int((check or {}).get("rows", 0)))
        return cls(covariance=tuple(tuple(float(v) for v in row) for row in check["covariance"]), rows=int(check["rows"]))

    @classmethod
    def learnt(cls, labels: np.ndarray, probabilities: np.ndarray) -> tuple["Calibration", dict[str, Any]]:
        """Return the calibration that the labels show for these probabilities (the check's fit, as sure
        as its rows make it), and the check itself; the identity when the check could not be made."""
        z = log_odds(probabilities)
        check = calibration_check(z, labels)
        if not check["checked"]:
            return cls(rows=int(len(labels))), check
        after = calibration_check(check["slope"] * z + check["intercept"], labels)
        covariance = after.get("covariance") or ((0.0, 0.0), (0.0, 0.0))
        return cls(slope=check["slope"], intercept=check["intercept"],
                   covariance=tuple(tuple(float(v) for v in row) for row in covariance), rows=int(len(labels))), check


# --- the calibration check: Cox's test on labelled rows the model was not trained on ---------------

CALIBRATION_ALPHA = 0.05
CALIBRATION_MIN_ROWS = 30


def _logistic_fit(log_odds: np.ndarray, labels: np.ndarray) -> tuple[float, float, float] | None:
    """Return (slope, intercept, log-likelihood) of the logistic regression of labels on log-odds,
    by Newton's method; None when it does not converge (the classes are separated)."""
    design = np.column_stack([log_odds, np.ones_like(log_odds)])
    params = np.array([1.0, 0.0])

    def log_likelihood(p: np.ndarray) -> float:
        eta = design @ p
        return float(np.sum(labels * eta - np.logaddexp(0.0, eta)))

    current = log_likelihood(params)
    for _ in range(100):
        probabilities = sigmoid(design @ params)
        gradient = design.T @ (labels - probabilities)
        hessian = (design * (probabilities * (1 - probabilities))[:, None]).T @ design
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            return None
        scale = 1.0
        while scale > 1e-6:  # halve the step until the likelihood does not fall
            candidate = params + scale * step
            value = log_likelihood(candidate)
            if value >= current - 1e-12:
                break
            scale /= 2
        else:
            return None
        params, previous, current = candidate, current, value
        if abs(current - previous) < 1e-10 and np.max(np.abs(scale * step)) < 1e-8:
            break
    if not np.all(np.isfinite(params)) or np.max(np.abs(params)) > 1e3:
        return None
    return float(params[0]), float(params[1]), current


def calibration_check(log_odds: np.ndarray, labels: np.ndarray, *, alpha: float = CALIBRATION_ALPHA) -> dict[str, Any]:
    """Return whether the probabilities sigmoid(log_odds) are calibrated on these labelled rows.

    Cox's test: the logistic regression of the labels on the log-odds, P(y=1) = sigmoid(slope * z +
    intercept), against slope 1 and intercept 0 (a likelihood-ratio test, chi-square with 2 degrees
    of freedom). ``passed`` is False when the p-value is below ``alpha``: the probabilities are off
    (too confident, too timid, or shifted), and ``slope``/``intercept`` are the fix. Under calibrated
    probabilities the check fails with probability ``alpha`` (tests/test_estimate.py measures it).
    """
    from scipy.stats import chi2

    log_odds = np.asarray(log_odds, dtype=float)
    labels = np.asarray(labels, dtype=float)
    probabilities = sigmoid(log_odds)
    check: dict[str, Any] = {
        "method": "Cox: logistic fit of the labels on the log-odds, likelihood-ratio test of slope 1, intercept 0",
        "rows": int(len(labels)), "positives": int(labels.sum()),
        "expected_positives": round(float(probabilities.sum()), 4), "alpha": alpha, "checked": False,
        "passed": True,
    }
    if len(labels) < CALIBRATION_MIN_ROWS or labels.min() == labels.max():
        check["reason"] = (f"{len(labels)} labelled rows{'' if len(labels) < CALIBRATION_MIN_ROWS else ' of one class'}: "
                           f"calibration not checked (needs {CALIBRATION_MIN_ROWS} rows of both classes)")
        return check
    fit = _logistic_fit(log_odds, labels)
    if fit is None:
        check["reason"] = "the labels are separated by the log-odds: calibration cannot be fitted, not checked"
        return check
    slope, intercept, fitted = fit
    null = float(np.sum(labels * log_odds - np.logaddexp(0.0, log_odds)))
    statistic = max(0.0, 2.0 * (fitted - null))
    p_value = float(chi2.sf(statistic, 2))
    # How well these rows pin the calibration down: the covariance of (slope, intercept) were the
    # probabilities calibrated (the inverse Fisher information at slope 1, intercept 0).
    design = np.column_stack([log_odds, np.ones_like(log_odds)])
    information = (design * (probabilities * (1 - probabilities))[:, None]).T @ design
    try:
        covariance = np.linalg.inv(information).tolist()
    except np.linalg.LinAlgError:
        covariance = None
    check.update(checked=True, slope=slope, intercept=intercept, statistic=round(statistic, 4),
                 p_value=p_value, passed=bool(p_value >= alpha), covariance=covariance)
    check["reason"] = (f"slope {slope:.3f}, intercept {intercept:+.3f} on {len(labels)} rows "
                       f"({check['positives']} churned, {check['expected_positives']:.1f} expected): p={p_value:.2g} "
                       f"{'>=' if check['passed'] else '<'} alpha {alpha}")
    return check



# --- what a batch should score, before any label is read --------------------------------------

CALIBRATION_DRAWS = 100
LABEL_DRAWS = 40
EXACT_SIMULATION_ROWS = 5_000  # up to this many rows labels are drawn one by one; beyond, the sums are normal


@dataclass(frozen=True)
class ExpectedScore:
    """The metric a batch is expected to score under the calibrated probabilities.

    ``value`` with its 95% interval (``low``, ``high``: how sure the calibration is), and draws of
    the metric the batch could realise with labels drawn from those probabilities (``predictive``).
    """

    metric: str
    value: float
    low: float
    high: float
    rows: int
    predictive: np.ndarray


def expected_score_of(probabilities: np.ndarray, predicted: np.ndarray, metric: str, calibration: Calibration,
                      *, labels: np.ndarray | None = None, seed: Any = None) -> tuple[ExpectedScore, float | None]:
    """Return the score a batch is expected to reach, from its probabilities alone (no labels needed).

    With ``labels``, also the one-sided p-value of their fit: the share of label draws that fit the
    calibrated probabilities no better than the real labels do, each compared under the same
    calibration draw, so that how sure the calibration is counts too. (The fit is the
    log-likelihood less its expectation, which is sum((label - q) * z) over the rows, with z the
    calibrated log-odds.)
    """
    probabilities = np.asarray(probabilities, dtype=float)
    predicted = np.asarray(predicted).astype(bool)
    rng = _rng("expected", seed if seed is not None else (len(probabilities), float(probabilities.sum())))
    positives, negatives = int(predicted.sum()), int((~predicted).sum())
    order = np.concatenate([np.flatnonzero(predicted), np.flatnonzero(~predicted)])
    z_raw = log_odds(probabilities)[order]  # predicted churners first: the first ``positives`` rows
    observed = None if labels is None else np.asarray(labels, dtype=float)[order]
    exact = len(probabilities) <= EXACT_SIMULATION_ROWS
    # Large batches: fewer calibration draws (each costs a pass over every row; and with many rows
    # the calibration's uncertainty, not the labels', sets the spread); the label draws are then
    # normal, and 1,200 of them still place a p-value of 0.025 to about +-0.005.
    calibration_draws = CALIBRATION_DRAWS if exact else (CALIBRATION_DRAWS // 3 if len(probabilities) <= 100_000
                                                         else CALIBRATION_DRAWS // 10)
    label_draws = LABEL_DRAWS if exact else 1_200 // calibration_draws
    means, predictive, beaten = [], [], 0
    for slope, intercept in calibration.draws(calibration_draws, rng):
        z = slope * z_raw + intercept
        q = sigmoid(z)
        tp_mean, fn_mean = float(q[:positives].sum()), float(q[positives:].sum())
        means.append(float(metric_from_rates(np.array([negatives - fn_mean, positives - tp_mean, fn_mean, tp_mean]),
                                             metric)))
        expected_fit = float(q @ z)
        if exact:
            drawn = rng.random((label_draws, len(q))) < q
            tp, fn = drawn[:, :positives].sum(axis=1), drawn[:, positives:].sum(axis=1)
            draws = drawn @ z - expected_fit
        else:
            variance = q * (1 - q)
            tp = np.clip(np.round(rng.normal(tp_mean, np.sqrt(variance[:positives].sum()), label_draws)), 0, positives)
            fn = np.clip(np.round(rng.normal(fn_mean, np.sqrt(variance[positives:].sum()), label_draws)), 0, negatives)
            draws = rng.normal(0.0, np.sqrt(float(variance @ (z * z))), label_draws)
        if observed is not None:
            beaten += int(np.count_nonzero(draws <= float(observed @ z) - expected_fit))
        cells = np.column_stack([negatives - fn, positives - tp, fn, tp]).astype(float)
        predictive.append(metric_from_rates(cells, metric))
    low, high = np.quantile(means, [0.025, 0.975])
    expected = ExpectedScore(metric=metric, value=float(np.mean(means)), low=float(low), high=float(high),
                             rows=len(probabilities), predictive=np.concatenate(predictive))
    total = calibration_draws * label_draws
    return expected, (None if observed is None else float((beaten + 1) / (total + 1)))


# --- the score check: has the deployed model's score dropped? ------------------------------------


@dataclass(frozen=True)
class DropTest:
    """The deployed model's score on new rows against what it was expected to score."""

    new: Estimate
    expected: Estimate    # its interval: how sure the expectation is (the rows: what it was learnt from)
    drop: float           # expected - new (negative: a rise)
    drop_low: float       # 95% range of the drop that label noise alone gives
    drop_high: float
    p_value: float        # one-sided: how likely a drop this clear is with nothing changed
    alpha: float
    max_drop: float
    alarm: bool
    alarm_below: float    # new scores below this raise the alarm (when the drop is significant)
    p_metric: float | None = None  # the metric's own one-sided p-value, where it is computed
    p_fit: float | None = None     # the labels' fit (log-likelihood) one-sided p-value, where it is computed
    p_rise: float | None = None    # one-sided: how likely a rise this clear is with nothing changed

    @property
    def significant_rise(self) -> bool:
        return self.drop < 0 and self.p_rise is not None and self.p_rise < self.alpha

    def verdict(self) -> str:
        if self.alarm:
            return f"significant drop of {self.drop:.3f} (p={self.p_value:.2g}) >= max_drop {self.max_drop}"
        if self.drop <= 0:
            # A rise is told by its own p-value: "no drop (p=0.0005)" read as a contradiction.
            if self.p_rise is None:
                return f"a rise of {-self.drop:.3f}"
            if self.significant_rise:
                return f"a significant rise of {-self.drop:.3f} (p={self.p_rise:.2g})"
            return f"a rise of {-self.drop:.3f}, not significant (p={self.p_rise:.2g})"
        if self.p_value >= self.alpha:
            return f"no significant drop (p={self.p_value:.2g})"
        return f"a significant drop of {self.drop:.3f} (p={self.p_value:.2g}), under max_drop {self.max_drop}"


def drop_test(labels: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray, metric: str,
              calibration: Calibration, *, alpha: float, max_drop: float) -> DropTest:
    """Test whether the new rows score lower than the model's calibrated probabilities say they should.

    Two questions, both on the same rows. Is the drop at least ``max_drop`` (the metric realised
    against the metric expected)? And is it real? That is asked two ways, each one-sided against
    label draws from the calibrated probabilities: of the metric itself (``p_metric``), and of the
    labels' log-likelihood (``p_fit``), which uses every row's probability and so sees a changed
    rule in far fewer rows than the thresholded metric, but not a drop that comes from fewer
    churners (their labels fit low probabilities better). The drop is significant when the smaller
    of the two, doubled (Bonferroni), is below alpha. ``alarm_below`` is the realised score under
    which this batch would alarm, given a significant drop.
    """
    counts = confusion_counts(labels, predicted)
    new = estimate(counts, metric)
    expected, p_fit = expected_score_of(probabilities, predicted, metric, calibration, labels=labels,
                                        seed=("batch", tuple(counts)))
    p_metric = float((np.count_nonzero(expected.predictive <= new.value) + 1) / (len(expected.predictive) + 1))
    p_rise = float((np.count_nonzero(expected.predictive >= new.value) + 1) / (len(expected.predictive) + 1))
    p_value = min(1.0, 2 * min(p_fit, p_metric))
    drop = expected.value - new.value
    low, high = np.quantile(expected.value - expected.predictive, [0.025, 0.975])
    alarm = bool(p_value < alpha and drop >= max_drop)
    alarm_below = float(expected.value - max_drop)
    return DropTest(new=new, expected=Estimate(metric, expected.value, expected.low, expected.high, calibration.rows),
                    drop=float(drop), drop_low=float(low), drop_high=float(high), p_value=p_value, alpha=alpha,
                    max_drop=max_drop, alarm=alarm, alarm_below=alarm_below, p_metric=p_metric, p_fit=p_fit,
                    p_rise=p_rise)


def auc_drop_test(new_auc: float, new_classes: tuple[int, int], expected_auc: float,
                  expected_classes: tuple[int, int], *, alpha: float, max_drop: float) -> DropTest:
    """The score check for ROC AUC, with normal approximations (classes: positives, negatives)."""
    from scipy.stats import norm

    new, expected = auc_estimate(new_auc, *new_classes), auc_estimate(expected_auc, *expected_classes)
    spread = math.hypot(auc_standard_error(new_auc, *new_classes), auc_standard_error(expected_auc, *expected_classes))
    drop = expected_auc - new_auc
    p_value = float(norm.sf(drop / spread)) if math.isfinite(spread) and spread > 0 else 0.5
    alarm = bool(p_value < alpha and drop >= max_drop)
    p_rise = float(norm.sf(-drop / spread)) if math.isfinite(spread) and spread > 0 else 0.5
    return DropTest(new=new, expected=expected, drop=drop, drop_low=drop - 1.96 * spread,
                    drop_high=drop + 1.96 * spread, p_value=p_value, alpha=alpha, max_drop=max_drop,
                    alarm=alarm, alarm_below=expected_auc - max(max_drop, norm.ppf(1 - alpha) * spread),
                    p_rise=p_rise)


# --- champion against challenger on the same rows -----------------------------------------------


def paired_counts(labels: np.ndarray, champion: np.ndarray, challenger: np.ndarray) -> list[int]:
    """Return the counts of the eight (label, champion's class, challenger's class) outcomes."""
    code = (np.asarray(labels).astype(np.int64) * 4 + np.asarray(champion).astype(np.int64) * 2
            + np.asarray(challenger).astype(np.int64))
    return np.bincount(code, minlength=8).tolist()


def _marginal(cells: np.ndarray, which: int) -> np.ndarray:
    """Return (tn, fp, fn, tp) of one model from paired cells indexed label*4 + champion*2 + challenger."""
    index = np.arange(8)
    label = index // 4
    predicted = (index // 2) % 2 if which == 0 else index % 2
    out = []
    for actual, guess in ((0, 0), (0, 1), (1, 0), (1, 1)):
        out.append(cells[..., (label == actual) & (predicted == guess)].sum(axis=-1))
    return np.stack(out, axis=-1)


@dataclass(frozen=True)
class Comparison:
    """Champion and challenger scored on the same held-out rows."""

    metric: str
    rows: int
    champion: float
    challenger: float
    difference: float     # challenger - champion
    difference_low: float
    difference_high: float
    p_value: float        # one-sided: the probability the challenger is not better

    @property
    def significantly_worse(self) -> bool:
        """Whether the challenger is worse beyond chance: the difference's 95% interval lies below 0."""
        return self.difference_high < 0

    def text(self, rows: str = "held-out rows", challenger: str = "challenger", champion: str = "champion") -> str:
        verdict = (f"p={self.p_value:.2g} that it is no better" if not self.significantly_worse
                   else f"significantly worse, p={max(1 - self.p_value, 1 / (DRAWS + 1)):.2g} that it is no worse")
        return (f"{challenger} {self.metric} {self.challenger:.3f} vs {champion} {self.champion:.3f} on {self.rows} "
                f"{rows}: difference {self.difference:+.3f} (95% CI {self.difference_low:+.2f} to "
                f"{self.difference_high:+.2f}, {verdict})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(counts8: list[int], metric: str) -> Comparison:
    """Return the paired comparison of two models from their eight outcome counts (paired_counts)."""
    cells = np.asarray(counts8, dtype=float)
    champion = float(metric_from_rates(_marginal(cells, 0), metric))
    challenger = float(metric_from_rates(_marginal(cells, 1), metric))
    shares = _rng("paired", tuple(counts8)).dirichlet(cells + PRIOR / 2, size=DRAWS)
    differences = metric_from_rates(_marginal(shares, 1), metric) - metric_from_rates(_marginal(shares, 0), metric)
    low, high = np.quantile(differences, [0.025, 0.975])
    p_value = float((np.count_nonzero(differences <= 0) + 1) / (len(differences) + 1))
    return Comparison(metric=metric, rows=int(cells.sum()), champion=champion, challenger=challenger,
                      difference=challenger - champion, difference_low=float(low), difference_high=float(high),
                      p_value=p_value)


def compare_auc(labels: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, resamples: int = 400) -> Comparison:
    """Return the paired comparison of two models' ROC AUC on the same rows (paired bootstrap)."""
    labels = np.asarray(labels).astype(bool)
    champion_auc, challenger_auc = roc_auc(labels, champion), roc_auc(labels, challenger)
    if champion_auc is None or challenger_auc is None:
        return Comparison("roc_auc", len(labels), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    rng = _rng("auc", len(labels), float(np.sum(champion)), float(np.sum(challenger)))
    differences = []
    for _ in range(resamples):
        rows = rng.integers(0, len(labels), len(labels))
        a, b = roc_auc(labels[rows], np.asarray(champion)[rows]), roc_auc(labels[rows], np.asarray(challenger)[rows])
        if a is not None and b is not None:
            differences.append(b - a)
    differences = np.asarray(differences)
    low, high = np.quantile(differences, [0.025, 0.975])
    p_value = float((np.count_nonzero(differences <= 0) + 1) / (len(differences) + 1))
    return Comparison("roc_auc", int(len(labels)), champion_auc, challenger_auc, challenger_auc - champion_auc,
                      float(low), float(high), p_value)


def paired_comparison(labels: np.ndarray, champion: np.ndarray, challenger: np.ndarray, metric: str,
                      champion_threshold: float, challenger_threshold: float | None = None) -> Comparison:
    """Return champion against challenger on the same rows, from their churn probabilities (each model's
    classes above its own threshold)."""
    if metric == "roc_auc":
        return compare_auc(labels, champion, challenger)
    challenger_threshold = champion_threshold if challenger_threshold is None else challenger_threshold
    return compare(paired_counts(labels, np.asarray(champion) > champion_threshold,
                                 np.asarray(challenger) > challenger_threshold), metric)


# --- rates measured by simulation (the benchmark) -----------------------------------------------


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Return the 95% Wilson score interval of a proportion."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


# --- what a model is expected to score: out-of-sample predictions, pooled ------------------------


def roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Return the ROC AUC (Mann-Whitney, ties counted half), or None with one class only."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(probabilities)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def score_source(name: str, labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, Any]:
    """Return one source of a model's expected score: its confusion counts, ROC AUC and class counts."""
    labels = np.asarray(labels)
    predicted = np.asarray(probabilities) > threshold
    return {"source": name, "rows": int(len(labels)), "counts": confusion_counts(labels, predicted),
            "roc_auc": roc_auc(labels, probabilities), "positives": int(np.count_nonzero(labels == 1)),
            "negatives": int(np.count_nonzero(labels == 0))}


def pool_sources(sources: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the pooled expectation of several sources (counts added, ROC AUC weighted by rows)."""
    sources = [source for source in sources if source["rows"]]
    counts = [sum(source["counts"][i] for source in sources) for i in range(4)]
    with_auc = [source for source in sources if source["roc_auc"] is not None]
    weight = sum(source["rows"] for source in with_auc)
    auc = sum(source["roc_auc"] * source["rows"] for source in with_auc) / weight if weight else None
    return {"sources": sources, "counts": counts, "rows": int(sum(counts)), "roc_auc": auc,
            "positives": sum(source["positives"] for source in sources),
            "negatives": sum(source["negatives"] for source in sources)}
