"""The statistics and rules behind decisions, against known values and at their boundaries."""

import pytest

from churnlib.config import DeploymentSettings, section_settings
from churnlib.decisions import policy_allows
from churnlib.drift import adjust_p_values
from churnlib.runlog import Decision
from helpers import ROOT

P_VALUES = [0.01, 0.04, 0.03, 0.005]


@pytest.mark.parametrize(
    "method, expected",
    [
        # Worked by hand, as R's p.adjust gives them.
        ("none", [0.01, 0.04, 0.03, 0.005]),
        ("bonferroni", [0.04, 0.16, 0.12, 0.02]),
        ("holm", [0.03, 0.06, 0.06, 0.02]),
        ("benjamini_hochberg", [0.02, 0.04, 0.04, 0.02]),
    ],
)
def test_adjusted_p_values_equal_the_known_values(method, expected):
    assert adjust_p_values(P_VALUES, method) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "method, expected",
    [("bonferroni", [1.0, 1.0]), ("holm", [1.0, 1.0]), ("benjamini_hochberg", [0.9, 0.9]), ("none", [0.5, 0.9])],
)
def test_adjusted_p_values_never_exceed_1_and_keep_their_order(method, expected):
    assert adjust_p_values([0.5, 0.9], method) == pytest.approx(expected, abs=1e-12)


def test_no_p_values_adjust_to_none_and_an_unknown_method_is_refused():
    assert adjust_p_values([], "holm") == []
    with pytest.raises(ValueError, match="unknown correction 'sidak'"):
        adjust_p_values([0.1], "sidak")


def settings(policy: str, tolerance: float) -> DeploymentSettings:
    return section_settings(DeploymentSettings, policy=policy, tolerance=tolerance)


@pytest.mark.parametrize("deployed, tolerance", [(0.7, 0.1), (0.75, 0.25), (0.6, 0.0), (0.3, 0.02)])
def test_not_worse_allows_a_candidate_exactly_tolerance_below_the_deployed(deployed, tolerance):
    candidate = round(deployed - tolerance, 10)  # what a person means by "tolerance below"
    assert policy_allows(candidate, deployed, settings("not_worse", tolerance))[0] is True
    assert policy_allows(candidate - 1e-6, deployed, settings("not_worse", tolerance))[0] is False


@pytest.mark.parametrize("deployed, tolerance", [(0.7, 0.1), (0.5, 0.25), (0.6, 0.0), (0.3, 0.02)])
def test_better_refuses_a_candidate_exactly_tolerance_above_the_deployed(deployed, tolerance):
    candidate = round(deployed + tolerance, 10)
    assert policy_allows(candidate, deployed, settings("better", tolerance))[0] is False
    assert policy_allows(candidate + 1e-6, deployed, settings("better", tolerance))[0] is True


def test_always_allows_and_a_first_model_needs_no_comparison():
    assert policy_allows(0.0, 0.9, settings("always", 0.0)) == (True, "policy always")
    assert policy_allows(0.1, None, settings("better", 0.5))[0] is True


def test_the_docs_list_exactly_the_decisions_a_run_line_can_hold():
    import re

    operations = (ROOT / "docs" / "operations.md").read_text()
    listed = re.search(r"^\| `runs.jsonl` \| one JSON line per tick: `decision` \(([^)]*)\)", operations, re.MULTILINE)
    assert listed, "docs/operations.md's runs.jsonl row lists the decisions in brackets"
    assert set(re.findall(r"`([a-z_]+)`", listed.group(1))) == {decision.value for decision in Decision}


def test_a_rare_category_in_a_small_batch_does_not_make_the_chi_square_test_cry_wolf():
    """Nothing changed; a 0.2% category in 30 new rows: the asymptotic chi-square p-value fell below 0.01 in
    about 6% of batches (each time the rare category showed up), the permutation one does so in about 1%."""
    import numpy as np
    import pandas as pd

    from churnlib.drift import _chi_square

    rng = np.random.default_rng(17)
    shares = [0.5, 0.3, 0.198, 0.002]
    names = np.array(["a", "b", "c", "rare"], dtype=object)
    reference = pd.Series(names[rng.choice(4, size=5000, p=shares)])
    trials = 600
    below = sum(_chi_square(reference, pd.Series(names[rng.choice(4, size=30, p=shares)]))["p_value"] < 0.01
                for _ in range(trials))
    assert below / trials <= 0.025, below


def test_the_permutation_chi_square_of_many_distinct_categories_stays_small_in_memory():
    """A small batch of 20,000 distinct new values: permuting every category would draw 2,000 x 20,000
    counts (hundreds of MB); the rarest are pooled, and the change is still found."""
    import tracemalloc

    import pandas as pd

    from churnlib.drift import CHI2_MAX_PERMUTED_CATEGORIES, _chi_square

    reference = pd.Series(["basic", "premium"] * 50)
    new = pd.Series(["basic"] * 10 + [f"plan-{i}" for i in range(20_000)], dtype=object)
    tracemalloc.start()
    try:
        result = _chi_square(reference, new)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result["p_method"] == "permutation"
    assert result["pooled_categories"] == 20_002 - CHI2_MAX_PERMUTED_CATEGORIES + 1
    assert result["p_value"] < 0.001 and result["effect"] > 0.5
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MB"


def test_a_training_window_is_described_with_its_rows_once():
    from churnlib.decisions import describe_window

    assert describe_window(("the 700 rows that were judged", 300), 1000, 300) == \
        "the 700 rows that were judged before the 300 newest, held out"
    assert describe_window(("all", 0), 1210, 180) == "all 1,210 rows before the 180 newest, held out"
    assert describe_window(("recent", 200), 1000, 0) == "recent (800 rows)"
    assert describe_window(("all", 0), 994_900, 3_000, 2_100) == \
        "all 994,900 rows before the 5,100 newest (2,100 chose the window, 3,000 held out)"
