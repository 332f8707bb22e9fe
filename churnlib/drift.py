"""Feature drift between the deployed model's reference sample and newly ingested rows.

Numeric features: two-sample Kolmogorov-Smirnov; the statistic D (the largest gap between the two
cumulative distributions, 0..1) is also the effect size. Categorical features: chi-square test of
homogeneity on the 2 x k table of category counts, where categories never seen in the reference and
missing values count as categories of their own; the effect size is Cramer's V. The p-values are
corrected for testing many features at once, and a feature only counts as drifted when its corrected
p-value is below alpha *and* its effect size reaches the configured minimum, so that a huge sample
does not flag a trivial shift.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from churnlib.config import DriftSettings
from churnlib.columns import MISSING_CATEGORY, shown
from churnlib.dataset import FrozenSchema

KS_EXACT_MAX_ROWS = 300
CHI2_MIN_EXPECTED = 5  # Cochran's rule: below this expected count in a cell, permutation p-values
CHI2_PERMUTATIONS = 2000
CHI2_MAX_PERMUTED_CATEGORIES = 200  # more than this: the rarest are pooled before permuting (memory)
UNSEEN_SHOWN = 20  # categories never seen in the reference, named per feature (the most frequent)
UNSEEN_CHARS = 100  # each cut to this many characters


def adjust_p_values(p_values: list[float], method: str) -> list[float]:
    """Return p-values corrected for multiple tests by ``method`` (holm, bonferroni, benjamini_hochberg, none)."""
    count = len(p_values)
    if count == 0 or method == "none":
        return list(p_values)
    p = np.asarray(p_values, dtype=float)
    if method == "bonferroni":
        return np.minimum(1.0, p * count).tolist()
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(count)
    if method == "holm":
        running = 0.0
        for rank, index in enumerate(order):
            running = max(running, min(1.0, (count - rank) * p[index]))
            adjusted[index] = running
        return adjusted.tolist()
    if method == "benjamini_hochberg":
        return stats.false_discovery_control(p, method="bh").tolist()
    raise ValueError(f"unknown correction {method!r}")


def _ks(reference: pd.Series, new: pd.Series) -> dict[str, Any]:
    ref_values = reference.dropna().to_numpy(dtype=float)
    new_values = new.dropna().to_numpy(dtype=float)
    if len(ref_values) == 0 or len(new_values) == 0:
        return {"test": "ks", "statistic": None, "effect": None, "p_value": None, "note": "no values to compare"}
    # scipy's "auto" picks the exact distribution below 10,000 rows a side, which costs 0.5 s at that
    # size; the asymptotic one agrees with it to the second digit of the p-value from 300 rows on.
    exact = min(len(ref_values), len(new_values)) <= KS_EXACT_MAX_ROWS
    result = stats.ks_2samp(ref_values, new_values, method="exact" if exact else "asymp")
    statistic = float(result.statistic)
    return {"test": "ks", "statistic": statistic, "effect": statistic, "p_value": float(result.pvalue)}


def _chi_square(reference: pd.Series, new: pd.Series) -> dict[str, Any]:
    ref_counts = reference.fillna(MISSING_CATEGORY).astype(str).value_counts()
    new_counts = new.fillna(MISSING_CATEGORY).astype(str).value_counts()
    categories = sorted(set(ref_counts.index) | set(new_counts.index))
    unseen = [c for c in new_counts.index if c not in ref_counts.index]  # most frequent first
    table = np.array([[ref_counts.get(c, 0) for c in categories], [new_counts.get(c, 0) for c in categories]])
    # Kept in the run line: the most frequent few, and how many there are (a batch may hold a million).
    base = {"test": "chi2", "unseen_categories": sorted(shown(c, UNSEEN_CHARS) for c in unseen[:UNSEEN_SHOWN])}
    if len(unseen) > UNSEEN_SHOWN:
        base["unseen_count"] = len(unseen)
    if len(categories) < 2:
        return {**base, "statistic": 0.0, "effect": 0.0, "p_value": 1.0, "note": "one category only"}
    result = stats.chi2_contingency(table, correction=False)
    chi2 = float(result.statistic)
    cramers_v = math.sqrt(chi2 / table.sum()) if table.sum() else 0.0
    expected_counts = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    if expected_counts.min() < CHI2_MIN_EXPECTED:
        # A rare category (a new one, a few missing values) in a small batch: the chi-square distribution
        # is far off there (one customer of a 0.5% category in 30 rows reads p=0.03 where its chance is
        # 14%), so the p-value is the permutation one, given the table's margins.
        if table.shape[1] > CHI2_MAX_PERMUTED_CATEGORIES:
            # Each permutation draws a count per category: a batch of a million distinct values would
            # need gigabytes. The rarest categories are pooled into one, and the statistic, the effect
            # and the p-value are all those of the pooled table.
            table = _pooled(table, CHI2_MAX_PERMUTED_CATEGORIES)
            base["pooled_categories"] = len(categories) - CHI2_MAX_PERMUTED_CATEGORIES + 1
            chi2 = float(_chi2_statistics(table[1].astype(float), table.sum(axis=0).astype(float)))
            cramers_v = math.sqrt(chi2 / table.sum())
        return {**base, "statistic": chi2, "effect": cramers_v, "p_value": _permutation_p(table, chi2),
                "p_method": "permutation"}
    return {**base, "statistic": chi2, "effect": cramers_v, "p_value": float(result.pvalue), "p_method": "asymptotic"}


def _chi2_statistics(new_counts: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Return the chi-square statistic of 2 x k tables given the category totals and each draw's new-row counts."""
    new_rows, all_rows = new_counts.sum(axis=-1, keepdims=True), totals.sum()
    share = new_rows / all_rows
    expected_new, expected_ref = totals * share, totals * (1 - share)
    ref_counts = totals - new_counts
    with np.errstate(divide="ignore", invalid="ignore"):
        cells = np.where(expected_new > 0, (new_counts - expected_new) ** 2 / expected_new, 0.0) + \
            np.where(expected_ref > 0, (ref_counts - expected_ref) ** 2 / expected_ref, 0.0)
    return cells.sum(axis=-1)


def _pooled(table: np.ndarray, keep: int) -> np.ndarray:
    """Return the 2 x k ``table`` with its ``keep - 1`` most frequent categories and one column that pools the rest."""
    order = np.argsort(-table.sum(axis=0), kind="stable")
    kept, rest = order[:keep - 1], order[keep - 1:]
    return np.column_stack([table[:, kept], table[:, rest].sum(axis=1)])


def _permutation_p(table: np.ndarray, observed: float) -> float:
    """Return the chi-square test's p-value by permutation: the share of tables with the same margins (the
    new rows drawn without replacement from all rows) whose statistic is at least the observed one.
    Seeded from the table, so the same rows always give the same p-value."""
    totals = table.sum(axis=0)
    seed = int.from_bytes(hashlib.sha256(table.astype(np.int64).tobytes()).digest()[:8], "little")
    draws = np.random.default_rng(seed).multivariate_hypergeometric(totals.astype(np.int64), int(table[1].sum()),
                                                                     size=CHI2_PERMUTATIONS)
    statistics = _chi2_statistics(draws.astype(float), totals.astype(float))
    return float((np.count_nonzero(statistics >= observed * (1 - 1e-9)) + 1) / (CHI2_PERMUTATIONS + 1))


def drift_table(reference: pd.DataFrame, new_rows: pd.DataFrame, schema: FrozenSchema,
                settings: DriftSettings) -> dict[str, Any]:
    """Return the drift test of every feature of ``new_rows`` against ``reference``, and the verdict.

    The reply holds every figure behind the verdict.
    """
    summary: dict[str, Any] = {
        "reference_rows": int(len(reference)),
        "new_rows": int(len(new_rows)),
        "alpha": settings.alpha,
        "correction": settings.correction,
        "ks_min_statistic": settings.ks_min_statistic,
        "chi2_min_cramers_v": settings.chi2_min_cramers_v,
        "min_drifted_features": settings.min_drifted_features,
        "features": [],
        "drifted_features": [],
        "drift": False,
    }
    if len(new_rows) < settings.min_rows:
        summary["tested"] = False
        summary["reason"] = f"{len(new_rows)} new rows, fewer than drift.min_rows={settings.min_rows}"
        return summary
    rows = []
    for feature in schema.feature_columns:
        if feature in schema.categorical_columns:
            row = _chi_square(reference[feature], new_rows[feature])
            row["min_effect"] = settings.chi2_min_cramers_v
        else:
            row = _ks(reference[feature], new_rows[feature])
            row["min_effect"] = settings.ks_min_statistic
        rows.append({"feature": feature, **row})
    tested = [row for row in rows if row["p_value"] is not None]
    adjusted = adjust_p_values([row["p_value"] for row in tested], settings.correction)
    for row, p_adjusted in zip(tested, adjusted):
        row["p_adjusted"] = p_adjusted
        row["drifted"] = bool(p_adjusted < settings.alpha and row["effect"] >= row["min_effect"])
    for row in rows:
        row.setdefault("p_adjusted", None)
        row.setdefault("drifted", False)
    summary["tested"] = True
    summary["features"] = rows
    summary["drifted_features"] = [row["feature"] for row in rows if row["drifted"]]
    summary["drift"] = len(summary["drifted_features"]) >= settings.min_drifted_features
    return summary
