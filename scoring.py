"""Scoring: what a model's predictions are worth, with labels and without.

1. The model on the labelled test data (testdata/) -> ``models/latestscore.txt`` (F1 as a bare
   number, the classic format other tools read) and ``latestscore.json`` (F1, precision, recall,
   accuracy, ROC AUC, the confusion matrix and the row counts). A customer is predicted to churn
   when its churn probability is above the release's threshold (``model.threshold``, 0.5 by
   default), the same rule the API and the risk lists use.

2. Risk lists: files of current customers (no churn label yet) -> ranked lists of who is most
   likely to leave, how likely, the top reasons for each, and whether a retention call is worth its
   cost (``write_risk_list``). The cron job scores every new or changed file in ``scoringdata/``
   into ``predictions/<name>.risk.csv`` (and a summary, ``<name>.risk.json``), and scores them all
   again after a redeploy (``churnlib.risklists.find_customer_files``, ``score_customer_files``); ``python scoring.py
   --customers FILE --output PATH`` scores one file on demand. A file is read in chunks, so memory
   stays bounded whatever its size; the list is sorted on disk (sorted runs, merged) when it is
   larger than a chunk. The input is only read.

   Each list's summary carries a label-free estimate of the model's performance on that file
   (``estimate_performance``): from the probabilities alone, the expected confusion matrix and hence
   the expected F1, precision and recall, with intervals for what the labels, once known, will show.
   It relies on the probabilities being calibrated (checked at deploy time on held-out labelled
   rows, ``churnlib.stats.calibration_check``) and on the relation between features and churn
   being the one the model learnt: it follows covariate drift, and cannot see concept drift.

Heavy libraries (pandas, scikit-learn) are imported inside the functions that need them. The cron
job's no-new-data tick looks for customer files through ``churnlib.risklists``, not this module.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnlib.cli import run_script, script_parser
from churnlib.clock import utc_now
from churnlib.columns import MISSING_CATEGORY, shown, shown_name
from churnlib.config import Config, OutreachSettings, SchemaSettings
from churnlib.engine import EngineError, using
from churnlib.errors import ChurnError, StorageError
from churnlib.fsutil import atomic_write_json, atomic_write_text, atomic_writer, temporary_path_for
from churnlib.modelstore import SCORE_DETAILS_FILE, SCORE_FILE, LoadedModel, load_deployed, load_model
from churnlib.errors import in_step
from churnlib.risklists import (
    LIST_SUFFIX,
    SUMMARY_SUFFIX,
    CustomerWork,
    find_customer_files,
    list_path,
    list_settings,
    load_scoring_record,
    save_scoring_record,
)
from churnlib.sourcefiles import open_regular

logger = logging.getLogger(Path(__file__).stem)

CHUNK_ROWS = 100_000
ESTIMATE_SIMULATIONS = 2000
ESTIMATE_CONFIDENCE = 0.95
EXACT_SIMULATION_ROWS = 2_000  # up to this many rows the labels are simulated one by one (cheaply)


# --- 1. the model on labelled test data -------------------------------------------------------


def metrics_from_predictions(labels, probabilities, *, threshold: float = 0.5) -> dict[str, Any]:
    """Return F1, precision, recall, accuracy, ROC AUC and the confusion matrix for these predictions.

    The same figures as scikit-learn's metrics (undefined ratios are 0, ROC AUC counts ties half),
    computed from the confusion counts in one pass: a million rows cost milliseconds, not seconds.
    """
    import numpy as np

    from churnlib.pipeline import predicted_classes
    from churnlib.stats import confusion_counts, metric_from_rates, roc_auc

    labels = np.asarray(labels)
    tn, fp, fn, tp = confusion_counts(labels, predicted_classes(probabilities, threshold))
    cells = np.array([tn, fp, fn, tp], dtype=float)
    auc = roc_auc(labels, probabilities)
    return {
        "f1": float(metric_from_rates(cells, "f1")),
        "precision": float(metric_from_rates(cells, "precision")),
        "recall": float(metric_from_rates(cells, "recall")),
        "accuracy": float(metric_from_rates(cells, "accuracy")) if len(labels) else 0.0,
        # ROC AUC needs both classes; with one it is undefined, and None says so.
        "roc_auc": auc,
        "confusion_matrix": {
            "labels": [0, 1],
            "rows_are": "actual",
            "columns_are": "predicted",
            "matrix": [[tn, fp], [fn, tp]],
        },
        "rows": int(len(labels)),
        "positives": int(np.count_nonzero(labels == 1)),
        "both_classes": auc is not None,
        "threshold": threshold,
    }


def score_model(pipeline: Any, frame, schema, *, threshold: float = 0.5) -> dict[str, Any]:
    """Return the metrics of ``pipeline`` on the labelled rows of ``frame`` (churn above ``threshold``)."""
    from churnlib.pipeline import churn_probabilities

    probabilities = churn_probabilities(pipeline, frame, schema)
    return metrics_from_predictions(frame[schema.target].to_numpy(), probabilities, threshold=threshold)


def read_test_data(test_folder: Path, *, settings: SchemaSettings, schema):
    """Return the labelled test rows of every CSV file in ``test_folder``, validated against the schema."""
    from churnlib.dataset import read_labelled_folder

    return read_labelled_folder(test_folder, settings=settings, schema=schema)


@in_step("scoring")
def write_scores(scores: dict[str, Any], folder: Path, *, release_id: str) -> None:
    """Write latestscore.json, then latestscore.txt (F1 as a bare number), to ``folder``."""
    atomic_write_json(folder / SCORE_DETAILS_FILE, {"release_id": release_id, **scores})
    atomic_write_text(folder / SCORE_FILE, f"{scores['f1']}\n")


def format_scores(scores: dict[str, Any]) -> str:
    """Return the scores as one readable line."""
    auc = "n/a" if scores["roc_auc"] is None else f"{scores['roc_auc']:.3f}"
    return (
        f"F1 {scores['f1']:.3f}, precision {scores['precision']:.3f}, recall {scores['recall']:.3f}, "
        f"accuracy {scores['accuracy']:.3f}, ROC AUC {auc} on {scores['rows']} rows"
    )


# --- 2. the label-free estimate -----------------------------------------------------------------


LOG_ODDS_RANGE = 30.0  # log-odds beyond are counted at the edge: probabilities within 1e-13 of 0 or 1
LOG_ODDS_STEP = 0.01


@dataclass
class ConfusionInputs:
    """What the estimate needs from a file's probabilities, gathered chunk by chunk in bounded memory.

    For the rows predicted to stay (index 0) and to churn (1, probability above the threshold):
    how many, the sum of their probabilities and of p(1 - p), a histogram of their log-odds (steps
    of 0.01) and, while the file has at most EXACT_SIMULATION_ROWS rows, the log-odds themselves.
    """

    threshold: float
    counts: list[int] = field(default_factory=lambda: [0, 0])
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0])
    variances: list[float] = field(default_factory=lambda: [0.0, 0.0])
    histograms: list[Any] = field(default_factory=lambda: [None, None])
    kept: list[Any] | None = field(default_factory=list)

    def add(self, probabilities) -> None:
        import numpy as np

        churn = probabilities > self.threshold
        with np.errstate(divide="ignore"):
            log_odds = np.clip(np.log(probabilities) - np.log1p(-probabilities), -LOG_ODDS_RANGE, LOG_ODDS_RANGE)
        bins = int(round(2 * LOG_ODDS_RANGE / LOG_ODDS_STEP)) + 1
        for group, rows in ((0, ~churn), (1, churn)):
            chosen = probabilities[rows]
            self.counts[group] += int(len(chosen))
            self.sums[group] += float(chosen.sum())
            self.variances[group] += float((chosen * (1.0 - chosen)).sum())
            positions = np.rint((log_odds[rows] + LOG_ODDS_RANGE) / LOG_ODDS_STEP).astype(np.int64)
            counts = np.bincount(positions, minlength=bins)
            self.histograms[group] = counts if self.histograms[group] is None else self.histograms[group] + counts
        if self.kept is not None:
            self.kept.append((log_odds, churn))
            if sum(self.counts) > EXACT_SIMULATION_ROWS:
                self.kept = None


def release_calibration(model: LoadedModel, deployment_folder: Path | None = None):
    """Return what a release's served probabilities mean (a churnlib.stats.Calibration): its deploy-time
    check, or the new normal a later tick learnt for it (when ``deployment_folder`` is given) -- the
    same calibration the score check uses."""
    from churnlib.decisions import lowered_expectation
    from churnlib.modelstore import read_normal
    from churnlib.stats import Calibration

    normal = read_normal(deployment_folder, model.release_id) if deployment_folder is not None else None
    lowered = lowered_expectation(normal)  # None for a calibration no better than chance: never inherited
    if lowered is not None:
        return lowered
    return Calibration.from_check(model.metadata.get("calibration"))


def estimate_performance(inputs: ConfusionInputs, *, calibration=None, simulations: int = ESTIMATE_SIMULATIONS,
                         confidence: float = ESTIMATE_CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """Return the expected confusion matrix, F1, precision, recall and accuracy of the predictions,
    with intervals, from the probabilities alone (confidence-based performance estimation).

    If the probabilities are calibrated, row i churns with probability p_i: the expected true
    positives are the sum of p over the rows predicted to churn, the expected false negatives the
    sum of p over the others, and so on. The metrics are those of the expected confusion matrix.
    With a ``calibration`` (a churnlib.stats.Calibration: the release's, ``release_calibration``),
    the probabilities are first mapped through it. The intervals hold the middle ``confidence`` of
    the metrics of ``simulations`` draws, each of which first draws how far off the calibration may
    be (its slope and intercept, from its uncertainty; without one, calibration is taken as exact)
    and then the labels (each row's label drawn with its probability: exactly, row
    by row, up to EXACT_SIMULATION_ROWS rows; beyond, the two counts that matter drawn from their
    normal approximations, the probabilities summed over a histogram of log-odds). So the interval
    is where the realised metric should land, given the labels' sampling error and what the held-out
    rows could tell of the calibration. It cannot see concept drift.
    """
    import numpy as np

    from churnlib.stats import Calibration

    calibration = calibration or Calibration()
    stay, churn = inputs.counts
    rows = stay + churn
    if (calibration.slope, calibration.intercept) == (1.0, 0.0):
        expected_tp, expected_fn = inputs.sums[1], inputs.sums[0]
    else:  # the probabilities mean something else than they say (a new normal): the expectation follows
        expected_tp, expected_fn = _mapped_sums(inputs, calibration.slope, calibration.intercept)
    expected_fp, expected_tn = churn - expected_tp, stay - expected_fn
    rng = np.random.default_rng(seed)
    slopes, shifts = calibration.draws(simulations, rng).T
    covariance = calibration.covariance if np.asarray(calibration.covariance).any() else None
    true_positives = np.zeros(simulations)
    false_negatives = np.zeros(simulations)
    if inputs.kept is not None and rows:
        log_odds = np.concatenate([part for part, _ in inputs.kept])
        predicted = np.concatenate([part for _, part in inputs.kept])
        batch = max(1, 4_000_000 // rows)
        for start in range(0, simulations, batch):
            end = min(simulations, start + batch)
            with np.errstate(over="ignore"):
                probabilities = 1.0 / (1.0 + np.exp(-(slopes[start:end, None] * log_odds + shifts[start:end, None])))
            labels = rng.random(probabilities.shape) < probabilities
            true_positives[start:end] = labels[:, predicted].sum(axis=1)
            false_negatives[start:end] = labels[:, ~predicted].sum(axis=1)
        method = "labels simulated row by row"
    elif rows:
        centres = np.arange(len(inputs.histograms[0])) * LOG_ODDS_STEP - LOG_ODDS_RANGE
        for group, target in ((1, true_positives), (0, false_negatives)):
            occupied = np.flatnonzero(inputs.histograms[group])
            counts = inputs.histograms[group][occupied].astype(float)
            with np.errstate(over="ignore"):
                probabilities = 1.0 / (1.0 + np.exp(-(slopes[:, None] * centres[occupied] + shifts[:, None])))
            mean = probabilities @ counts
            spread = np.sqrt((probabilities * (1 - probabilities)) @ counts)
            target[:] = np.clip(np.rint(rng.normal(mean, spread)), 0, inputs.counts[group])
        method = "label counts drawn from their normal approximation"
    else:
        method = "no rows"
    with np.errstate(invalid="ignore", divide="ignore"):
        simulated = {
            "f1": 2 * true_positives / (churn + true_positives + false_negatives),
            "precision": true_positives / churn if churn else np.full(simulations, np.nan),
            "recall": true_positives / (true_positives + false_negatives),
            "accuracy": (true_positives + stay - false_negatives) / rows if rows else np.full(simulations, np.nan),
        }
    point = {
        "f1": _ratio(2 * expected_tp, 2 * expected_tp + expected_fp + expected_fn),
        "precision": _ratio(expected_tp, churn),
        "recall": _ratio(expected_tp, expected_tp + expected_fn),
        "accuracy": _ratio(expected_tp + expected_tn, rows),
    }
    tail = (1 - confidence) / 2 * 100
    estimate: dict[str, Any] = {}
    for metric, value in point.items():
        draws = simulated[metric][np.isfinite(simulated[metric])]
        estimate[metric] = None if value is None else round(value, 4)
        estimate[f"{metric}_ci"] = ([round(float(np.percentile(draws, tail)), 4),
                                     round(float(np.percentile(draws, 100 - tail)), 4)] if len(draws) else None)
    estimate.update(
        rows=rows, predicted_churners=churn, expected_churners=round(expected_tp + expected_fn, 2),
        confusion_matrix={"labels": [0, 1], "rows_are": "actual (expected)", "columns_are": "predicted",
                          "matrix": [[round(expected_tn, 2), round(expected_fp, 2)],
                                     [round(expected_fn, 2), round(expected_tp, 2)]]},
        threshold=inputs.threshold, confidence=confidence, simulations=simulations,
        calibration_uncertainty=f"included (learnt on {calibration.rows} labelled rows)" if covariance is not None else
        "not known (the release has no calibration check): the intervals hold the labels' sampling error only",
        method=f"confidence-based performance estimation (expected confusion matrix; {method})",
    )
    return estimate


def _mapped_sums(inputs: ConfusionInputs, slope: float, intercept: float) -> tuple[float, float]:
    """Return the expected churners among the predicted churners and among the others, with the
    probabilities mapped through a calibration (from the kept log-odds, else their histograms)."""
    import numpy as np

    from churnlib.stats import sigmoid

    if inputs.kept is not None:
        log_odds = np.concatenate([part for part, _ in inputs.kept]) if inputs.kept else np.empty(0)
        predicted = np.concatenate([part for _, part in inputs.kept]) if inputs.kept else np.empty(0, dtype=bool)
        q = sigmoid(slope * log_odds + intercept)
        return float(q[predicted].sum()), float(q[~predicted].sum())
    centres = np.arange(len(inputs.histograms[0])) * LOG_ODDS_STEP - LOG_ODDS_RANGE
    q = sigmoid(slope * centres + intercept)
    return tuple(float(q @ inputs.histograms[group]) if inputs.histograms[group] is not None else 0.0
                 for group in (1, 0))


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator <= 0 else numerator / denominator


# --- 2. risk lists --------------------------------------------------------------------------------


class ScoringError(ChurnError):
    """A customer file that cannot be scored; the message says why (it names the file)."""


@dataclass
class ScoringModel:
    """What scores customers: the deployed model, its checked predictor, schema and threshold."""

    model: LoadedModel
    predictor: Any
    schema: Any
    threshold: float
    calibration: Any  # churnlib.stats.Calibration: what its probabilities mean, for the estimate

    @property
    def release_id(self) -> str:
        return self.model.release_id

    @classmethod
    def of(cls, model: LoadedModel, deployment_folder: Path | None = None) -> "ScoringModel":
        from churnlib.dataset import FrozenSchema
        from churnlib.pipeline import checked_predictor, model_threshold

        schema = FrozenSchema.from_dict(model.metadata["schema"])
        return cls(model=model, predictor=checked_predictor(model, schema), schema=schema,
                   threshold=model_threshold(model.metadata),
                   calibration=release_calibration(model, deployment_folder))


@dataclass
class Outreach:
    """When a retention call is worth it: expected value p * success_rate * customer_value - contact_cost > 0.

    Without an ``outreach`` section in config.json (None), the model's decision applies: call the
    customers predicted to churn.
    """

    settings: OutreachSettings | None

    def values(self, probabilities):
        """Return each customer's expected value of a call (None without the outreach section)."""
        if self.settings is None:
            return None
        settings = self.settings
        return probabilities * settings.success_rate * settings.customer_value - settings.contact_cost

    def describe(self, threshold: float) -> str:
        if self.settings is None:
            return f"customers predicted to churn (probability above {threshold:g})"
        s = self.settings
        return (f"customers whose call is worth more than it costs (probability x {s.success_rate:g} x "
                f"{s.customer_value:g} > {s.contact_cost:g})")


def list_columns(id_names: dict[str, str], reasons: int, *, outreach: bool) -> list[str]:
    """Return the header of a risk list: rank, the id columns as the file spells them, then the rest."""
    ours = ["rank", "input_row", "churn_probability", "contact", *(["expected_value"] if outreach else []),
            *[f"reason_{n}" for n in range(1, reasons + 1)], "release_id", "scored_at"]
    ids = [name if name not in ours else f"{name}_id" for name in id_names.values()]
    return [ours[0], *ids, *ours[1:]]


def _csv_fields(texts: list[str]) -> list[str]:
    """Return text cells as CSV fields: quoted where they need it."""
    joined = "\x00".join(texts)
    if not any(special in joined for special in ',"\n\r'):
        return texts
    return ['"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text for text in texts]


# OWASP's CSV injection guidance: a cell starting with one of these is a formula to Excel or
# LibreOffice. Such a text cell gets a single quote in front (shown, not evaluated); dropping the
# first character of a cell that starts with "'" followed by one of them gives the id back.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def neutralised(texts: list[str]) -> list[str]:
    """Return text cells with a ``'`` in front of each that a spreadsheet would read as a formula.

    A plain number (``-5``, ``+3.5``, ``-1e3``) is left as it is: a spreadsheet reads it as that
    number, never as a formula, and an id such as ``-5`` stays the id.
    """
    if not any(map(str.startswith, texts, itertools.repeat(FORMULA_STARTS))):  # most lists: one pass in C
        return texts
    return ["'" + text if text.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text) else text
            for text in texts]


def _fixed(values, digits: int) -> list[str]:
    """Return numbers in [0, 1] as text with ``digits`` decimals (built from integers, in numpy: fast)."""
    import numpy as np

    whole, fraction = np.divmod(np.rint(values * 10**digits).astype(np.int64), 10**digits)
    return np.strings.add(np.strings.add(whole.astype(str), "."), np.strings.zfill(fraction.astype(str), digits)).tolist()


def _money(values) -> list[str]:
    return list(map("{:.2f}".format, values.tolist()))


@dataclass
class ScoredLines:
    """Rows of a risk list without their rank; once ``sorted``, by risk (probability down, input row up)."""

    lines: Any  # object array of text, each line ending with a newline
    keys: Any   # uint64: the probability's bits reversed, so that ascending keys are descending risk
    rows: Any   # int64: the input row numbers, which break ties

    @classmethod
    def of(cls, lines: list[str], probabilities, rows) -> "ScoredLines":
        import numpy as np

        # Non-negative floats sort as their bits.
        keys = np.uint64(0xFFFFFFFFFFFFFFFF) - np.ascontiguousarray(probabilities, dtype=np.float64).view(np.uint64)
        return cls(lines=np.array(lines, dtype=object), keys=keys, rows=rows)

    @classmethod
    def sorted(cls, parts: list["ScoredLines"]) -> "ScoredLines":
        """Return the parts as one, sorted by risk."""
        import numpy as np

        keys = np.concatenate([part.keys for part in parts])
        rows = np.concatenate([part.rows for part in parts])
        order = np.lexsort((rows, keys))
        return cls(lines=np.concatenate([part.lines for part in parts])[order], keys=keys[order], rows=rows[order])


UNSEEN_SHOWN = 20  # unseen values per column in a summary and a run line: the most frequent
UNSEEN_TRACKED = 1_000  # unseen values per column counted while a file is read (memory stays bounded)
UNSEEN_CHARS = 100  # a longer value is counted cut to this many characters (ending "...")


class UnseenTally:
    """Categories never seen in training, per column: the most frequent values and a count of the rest.

    Memory and output stay bounded whatever a file holds (a million distinct plan values once made
    a 17 MB run line): counts are exact while a column has at most UNSEEN_TRACKED distinct unseen
    values; past that only the most frequent are kept after each chunk, their counts are lower
    bounds and the number of other values is an estimate (a value dropped and seen again counts
    twice). The rows with an unseen value are always counted exactly.
    """

    def __init__(self, known: dict[str, set[str]] | None = None):
        self.counts: dict[str, dict[str, int]] = {}
        self.rows: dict[str, int] = {}
        self.dropped: dict[str, int] = {}  # distinct values pruned from the count (a lower bound)
        self.known = known or {}

    def add(self, unseen: list[tuple[int, str, str | None]]) -> None:
        """Count one chunk's unseen values: (row, column, value) as predictors return them."""
        import heapq
        from collections import Counter

        chunk: dict[str, Counter] = {}
        for _row, column, value in unseen:
            chunk.setdefault(column, Counter())[MISSING_CATEGORY if value is None else shown(str(value), UNSEEN_CHARS)] += 1
        for column, values in chunk.items():
            counts = self.counts.setdefault(column, {})
            for value, count in values.items():
                counts[value] = counts.get(value, 0) + count
            self.rows[column] = self.rows.get(column, 0) + values.total()
            if len(counts) > UNSEEN_TRACKED:
                kept = heapq.nlargest(UNSEEN_TRACKED, counts.items(), key=lambda item: item[1])
                self.dropped[column] = self.dropped.get(column, 0) + len(counts) - len(kept)
                self.counts[column] = dict(kept)

    def most_frequent(self) -> dict[str, dict[str, int]]:
        """Return each column's UNSEEN_SHOWN most frequent unseen values with their counts (ties by value)."""
        return {column: dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:UNSEEN_SHOWN])
                for column, counts in self.counts.items()}

    def rest(self) -> dict[str, dict[str, Any]]:
        """Return, per column with more unseen values than shown, how many other values and rows there are."""
        rest = {}
        for column, shown in self.most_frequent().items():
            other_values = len(self.counts[column]) - len(shown) + self.dropped.get(column, 0)
            if other_values:
                rest[column] = {"values": other_values, "rows": self.rows[column] - sum(shown.values()),
                                "values_counted": "about" if self.dropped.get(column) else "exactly"}
        return rest

    def near_matches(self) -> dict[str, dict[str, str]]:
        """Return the shown unseen values that equal a category seen in training but for case and spacing.

        Categories are compared exactly, as the model learnt them ("Basic" is not "basic"), unlike
        column names and labels: two spellings may be two categories in a user's data. A near match
        is named so that a typo in a file is seen.
        """
        from churnlib.pipeline import near_category

        matches: dict[str, dict[str, str]] = {}
        for column, shown in self.most_frequent().items():
            for value in shown:
                near = near_category(value, self.known.get(column, ())) if value != MISSING_CATEGORY else None
                if near is not None:
                    matches.setdefault(column, {})[value] = near
        return matches


@dataclass
class ScoredChunk:
    """One chunk of a customer file scored: its list lines (not yet ranked) and what the summary needs."""

    lines: ScoredLines
    probabilities: Any
    unseen: list[tuple[int, str, str | None]]
    to_contact: int
    expected_value: float
    reasons_unavailable: str | None = None


@dataclass
class ChunkScorer:
    """Scores the chunks of one customer file into list lines with the release's predictor (the one
    the API serves): the same object in this process and, for a large file on the dask engine, on
    the workers. It changes nothing outside the chunk; the file's totals are kept by ``_add_to``."""

    predictor: Any
    schema: Any
    threshold: float
    id_names: dict[str, str]
    reasons: int
    outreach: Outreach
    suffix: str  # ",<release id>,<scored at>\n": the end of every line

    @property
    def worth_a_cluster(self) -> bool:
        """Return whether scoring is worth sending to workers: with an xgboost release's reasons (tree
        SHAP, about 0.2 ms a row) it is most of a list's cost. Otherwise reading and checking the file,
        which this process does, is about 90% of it (measured: bench/README.md), and workers cannot help."""
        return bool(self.reasons) and not getattr(self.predictor, "linear", True)

    def __call__(self, chunk) -> ScoredChunk:
        import numpy as np

        from churnlib.pipeline import (
            ReasonsUnavailable,
            batch_from_frame,
            predicted_classes,
            reason_texts,
            shown_values,
            top_reasons,
        )

        frame = chunk.frame
        rows = len(frame)
        batch = batch_from_frame(frame, self.schema)
        probabilities = self.predictor.probabilities(batch)
        unseen = self.predictor.unseen_categories(batch)
        values = self.outreach.values(probabilities)
        contact = values > 0 if values is not None else predicted_classes(probabilities, self.threshold).astype(bool)
        numbers = np.arange(chunk.first_row, chunk.first_row + rows)
        columns = []
        for column in self.id_names:
            columns.append(_csv_fields(neutralised(frame[column].fillna("").tolist())))
        columns += [list(map(str, numbers.tolist())), _fixed(probabilities, 6),
                    list(map({True: "yes", False: "no"}.__getitem__, contact.tolist()))]
        if values is not None:
            columns.append(_money(values))
        missing_reasons = None
        if self.reasons:
            try:
                contributions = self.predictor.explain(batch)
            except ReasonsUnavailable as exc:  # a release served through predict_proba: the list, without reasons
                missing_reasons = str(exc)
                texts = []
            else:
                texts = reason_texts(contributions, shown_values(batch, self.schema, chunk.texts),
                                     top_reasons(contributions, self.reasons), quoted=True)
            columns += texts + [[""] * rows] * (self.reasons - len(texts))  # fewer features than reasons asked for
        columns.append([self.suffix] * rows)
        return ScoredChunk(lines=ScoredLines.of(list(map(",".join, zip(*columns))), probabilities, numbers),
                           probabilities=probabilities, unseen=unseen, to_contact=int(contact.sum()),
                           expected_value=float(values[contact].sum()) if values is not None else 0.0,
                           reasons_unavailable=missing_reasons)


def _add_to(scored: ScoredChunk, *, unseen: UnseenTally, inputs: ConfusionInputs, totals: dict[str, Any]) -> None:
    """Add a scored chunk to its file's totals (in the file's order: the sums are the same whoever scored it)."""
    unseen.add(scored.unseen)
    inputs.add(scored.probabilities)
    totals["to_contact"] += scored.to_contact
    totals["expected_value"] += scored.expected_value
    if scored.reasons_unavailable:
        totals["reasons_unavailable"] = scored.reasons_unavailable


def _scored_chunks(chunk_scorer: ChunkScorer, chunks, *, name: str):
    """Yield the chunks of a customer file scored, in the file's order: in this process, or on the
    workers of the dask engine when the file has at least ``compute.cluster_min_rows`` rows and the
    work is worth it (``ChunkScorer.worth_a_cluster``). The first chunks, up to that many rows, are
    read before it is decided: a small file stays here."""
    from churnlib.engine import active_engine, map_in_order

    engine = active_engine()
    if engine is None or not chunk_scorer.worth_a_cluster:
        yield from map(chunk_scorer, chunks)
        return
    first, rows = [], 0
    for chunk in chunks:
        first.append(chunk)
        rows += len(chunk.frame)
        if engine.handles(rows):
            break
    else:
        yield from map(chunk_scorer, first)
        return
    from churnlib.pipeline import with_threads

    logger.info("%s: at least %d rows (compute.cluster_min_rows %d): scored on %s", shown_name(name), rows,
                engine.settings.cluster_min_rows, engine.where)
    on_workers = dataclasses.replace(chunk_scorer, predictor=with_threads(chunk_scorer.predictor,
                                                                          engine.settings.threads_per_worker))
    yield from map_in_order(engine, on_workers, itertools.chain(first, chunks), what=f"scoring {shown_name(name)}")


def _write_run_lines(handle, lines: list[str]) -> bool:
    """Write lines to a run file, one per physical line; return whether line breaks inside a quoted
    cell (an id or a category spelt with one) had to be written as NUL, which no accepted file holds."""
    text = "".join(lines)
    escaped = text.count("\n") != len(lines)
    if escaped:
        text = "".join(line[:-1].replace("\n", "\0") + "\n" for line in lines)
    handle.write(text)
    return escaped


def _read_run_lines(handle, count: int, escaped: bool) -> list[str]:
    """Read ``count`` lines written by _write_run_lines (the handle opened with newline="\n")."""
    import itertools

    lines = list(itertools.islice(handle, count))
    return [line.replace("\0", "\n") for line in lines] if escaped else lines


@dataclass
class Run:
    """A sorted run of a risk list on disk: its lines, and its keys and row numbers (binary)."""

    lines: Path
    keys: Path
    count: int
    escaped: bool = False  # line breaks inside cells written as NUL (_write_run_lines)

    @classmethod
    def write(cls, folder: Path, part: ScoredLines) -> "Run":
        name = f"run-{os.urandom(8).hex()}"
        run = cls(lines=folder / f"{name}.csv", keys=folder / f"{name}.keys", count=len(part.lines))
        with open(run.lines, "w", encoding="utf-8", newline="") as handle:
            run.escaped = _write_run_lines(handle, part.lines.tolist())
        with open(run.keys, "wb") as handle:
            part.keys.tofile(handle)
            part.rows.tofile(handle)
        return run

    def block(self, start: int, size: int):
        """Return the keys and row numbers of rows [start, start + size)."""
        import numpy as np

        size = max(0, min(size, self.count - start))
        keys = np.fromfile(self.keys, dtype=np.uint64, count=size, offset=start * 8)
        rows = np.fromfile(self.keys, dtype=np.int64, count=size, offset=(self.count + start) * 8)
        return keys, rows

    def remove(self) -> None:
        self.lines.unlink(missing_ok=True)
        self.keys.unlink(missing_ok=True)


RUN_ROWS = 500_000  # rows held in memory before they are sorted and written as a run
MERGE_ROWS = 500_000  # rows of all the runs together in memory while merging (RUN_ROWS': the same peak)
MERGE_BLOCK = 65_536  # rows of one run in memory while merging, at most
MAX_RUNS = 200  # more are merged into one first (open files stay few)


def _merged_blocks(runs: list[Run]):
    """Yield the runs merged, a block at a time, as ScoredLines.

    Memory: a block of each run, MERGE_ROWS rows shared among the runs (at most MERGE_BLOCK a run),
    so a merge holds no more than a run does however many runs a large file made (a block of
    65,536 rows a run held 1.3 million lines for a 10-million-customer file's 20 runs).
    """
    import numpy as np

    size = max(1, min(MERGE_BLOCK, MERGE_ROWS // max(1, len(runs))))
    # Only "\n" ends a line: a "\r" inside a quoted cell stays in its line.
    handles = [open(run.lines, encoding="utf-8", newline="\n") for run in runs]
    try:
        starts = [0] * len(runs)
        heads = [run.block(0, size) for run in runs]
        while any(len(keys) for keys, _rows in heads):
            # Everything up to the smallest last key of a run with more to come is in memory now.
            pending = [(int(keys[-1]), int(rows[-1])) for run, start, (keys, rows) in zip(runs, starts, heads)
                       if len(keys) and start + len(keys) < run.count]
            bound = min(pending) if pending else None
            taken_keys, taken_rows, lines = [], [], []
            for index, (keys, rows) in enumerate(heads):
                if not len(keys):
                    continue
                if bound is None:
                    count = len(keys)
                else:
                    count = int(np.count_nonzero((keys < bound[0]) | ((keys == bound[0]) & (rows <= bound[1]))))
                if not count:
                    continue
                taken_keys.append(keys[:count])
                taken_rows.append(rows[:count])
                lines.append(np.array(_read_run_lines(handles[index], count, runs[index].escaped), dtype=object))
                starts[index] += count
                heads[index] = runs[index].block(starts[index], size)
            yield ScoredLines.sorted([ScoredLines(lines=part, keys=keys, rows=rows)
                                      for part, keys, rows in zip(lines, taken_keys, taken_rows)])
    finally:
        for handle in handles:
            handle.close()


def _spill(runs: list[Run], folder: Path, part: ScoredLines) -> None:
    """Write ``part`` as one more sorted run; merge the runs into one when there are too many."""
    runs.append(Run.write(folder, part))
    if len(runs) < MAX_RUNS:
        return
    name = f"merged-{os.urandom(8).hex()}"
    merged = Run(lines=folder / f"{name}.csv", keys=folder / f"{name}.keys", count=sum(run.count for run in runs))
    keys_parts, rows_parts = [], []
    with open(merged.lines, "w", encoding="utf-8", newline="") as handle:
        for block in _merged_blocks(runs):
            merged.escaped |= _write_run_lines(handle, block.lines.tolist())
            keys_parts.append(block.keys)
            rows_parts.append(block.rows)
    with open(merged.keys, "wb") as handle:  # keys first, then rows: written in two passes of the blocks
        for keys in keys_parts:
            keys.tofile(handle)
        for rows in rows_parts:
            rows.tofile(handle)
    for run in runs:
        run.remove()
    runs[:] = [merged]


def _write_ranked(out, blocks) -> int:
    """Write blocks of sorted lines with their rank in front; return the number of rows."""
    rank = 0
    for block in blocks:
        count = len(block.lines)
        out.write("".join(map("{},{}".format, range(rank + 1, rank + count + 1), block.lines.tolist())).encode("utf-8"))
        rank += count
    return rank


def write_risk_list(source: Path, output: Path, scorer: ScoringModel, *, target: str, reasons: int,
                    outreach: Outreach, scored_at: str, name: str | None = None,
                    chunk_rows: int = CHUNK_ROWS, run_rows: int | None = None) -> dict[str, Any]:
    """Score the customers in ``source`` into the ranked list ``output`` (replaced atomically); return its summary.

    Raises ScoringError (and writes nothing) when the file is not a valid customer file. The
    summary holds the row count, how many to contact and the expected value, the categories never
    seen in training, and the label-free estimate. The file is read ``chunk_rows`` rows at a time;
    up to ``run_rows`` scored rows are held in memory, more are sorted on disk (sorted runs, merged).
    """
    from churnlib.dataset import DatasetError, read_customer_file
    from churnlib.pipeline import known_categories

    name = name or source.name
    run_rows = run_rows or RUN_ROWS
    started = time.perf_counter()
    unseen = UnseenTally(known_categories(scorer.predictor, scorer.schema))
    inputs = ConfusionInputs(threshold=scorer.threshold)
    totals: dict[str, Any] = {"to_contact": 0, "expected_value": 0.0}
    runs: list[Run] = []
    held: list[ScoredLines] = []
    runs_folder = temporary_path_for(output)
    doing = ""  # what is being written, for an error (a full disk) to name
    try:
        with open_regular(source) as handle:
            customers = read_customer_file(handle, name=name, schema=scorer.schema, target=target,
                                           chunk_rows=min(chunk_rows, run_rows))
            chunk_scorer = ChunkScorer(predictor=scorer.predictor, schema=scorer.schema, threshold=scorer.threshold,
                                       id_names=customers.id_names, reasons=reasons, outreach=outreach,
                                       suffix=f"{scorer.release_id},{scored_at}\n")
            for scored in _scored_chunks(chunk_scorer, customers.chunks, name=name):
                _add_to(scored, unseen=unseen, inputs=inputs, totals=totals)
                held.append(scored.lines)
                if sum(len(part.lines) for part in held) >= run_rows:
                    doing = f"sorting the list on disk (more than {run_rows:,} rows) in {runs_folder}"
                    runs_folder.mkdir(parents=True, exist_ok=True)
                    _spill(runs, runs_folder, ScoredLines.sorted(held))
                    held = []
                    doing = ""
        header = ",".join(_csv_fields(neutralised(list_columns(customers.id_names, reasons,
                                                              outreach=outreach.settings is not None)))) + "\n"
        doing = f"writing the list {output}"
        with atomic_writer(output) as out:
            out.write(header.encode("utf-8"))
            if runs:
                if held:
                    _spill(runs, runs_folder, ScoredLines.sorted(held))
                    held = []  # on disk now: not held through the merge as well
                rows = _write_ranked(out, _merged_blocks(runs))
            else:
                rows = _write_ranked(out, [ScoredLines.sorted(held)] if held else [])
    except DatasetError as exc:
        raise ScoringError(str(exc)) from None
    except OSError as exc:
        if not doing or isinstance(exc, StorageError):
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        raise StorageError(f"{name}: {doing}: {exc.strerror or exc}{where}", errno=exc.errno,
                           path=exc.filename) from exc
    finally:
        if runs_folder.exists():
            for path in runs_folder.iterdir():
                path.unlink()
            runs_folder.rmdir()
    return {
        "input": name,
        "list": str(output),
        "release_id": scorer.release_id,
        "scored_at": scored_at,
        "rows": rows,
        "threshold": scorer.threshold,
        "contact_rule": outreach.describe(scorer.threshold),
        "to_contact": totals["to_contact"],
        "expected_value": round(totals["expected_value"], 2) if outreach.settings is not None else None,
        "unseen_categories": unseen.most_frequent(),
        "unseen_categories_rest": unseen.rest(),
        "unseen_near_matches": unseen.near_matches(),
        "reasons_unavailable": totals.get("reasons_unavailable"),
        "ignored_columns": customers.ignored_columns,
        "estimate": estimate_performance(inputs, calibration=scorer.calibration),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _describe_unseen(summary: dict[str, Any], shown_values: int = 5) -> str:
    """Return the unseen categories of a list's summary for its log line: the most frequent few per column."""
    unseen = summary["unseen_categories"]
    if not unseen:
        return ""
    rest = summary.get("unseen_categories_rest") or {}
    near = summary.get("unseen_near_matches") or {}
    parts = []
    for column, values in unseen.items():
        items = list(values.items())
        texts = [f"{shown(v)!r} ({n}" + (f"; did you mean {shown(near[column][v])!r}?" if v in near.get(column, {}) else "")
                 + ")" for v, n in items[:shown_values]]
        others = len(items[shown_values:]) + rest.get(column, {}).get("values", 0)
        if others:
            rows = sum(n for _v, n in items[shown_values:]) + rest.get(column, {}).get("rows", 0)
            about = "about " if rest.get(column, {}).get("values_counted") == "about" else ""
            texts.append(f"and {about}{others:,} other value(s) in {rows:,} row(s)")
        parts.append(f"{column} {', '.join(texts)}")
    return "; categories never seen in training, scored as unknown: " + ", ".join(parts)


def describe_list(summary: dict[str, Any]) -> str:
    """Return a scored file's summary in one log line."""
    estimate = summary["estimate"]
    f1 = estimate.get("f1")
    ci = estimate.get("f1_ci")
    expected = "" if f1 is None else (f"; estimated F1 {f1:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
    value = "" if summary["expected_value"] is None else f", expected value {summary['expected_value']:,.2f}"
    unseen_text = _describe_unseen(summary)
    missing = f"; without reasons: {summary['reasons_unavailable']}" if summary.get("reasons_unavailable") else ""
    return (f"scored {summary['input']}: {summary['rows']} rows with release {summary['release_id']} -> "
            f"{summary['list']}; {summary['to_contact']} to contact{value}{expected}{unseen_text}{missing}")


# --- 2. risk lists from cron ------------------------------------------------------------------------


def score_customer_files(config: Config, work: CustomerWork, model: LoadedModel) -> dict[str, Any]:
    """Score each pending customer file with the deployed ``model``; return the run line's ``scoring`` value.

    A file that is not a valid customer file is rejected with its reason (logged, in the record) and
    the others go on; it is not read again until its content or the deployed release changes.
    """
    scorer = ScoringModel.of(model, config.paths.deployment)
    outreach = Outreach(config.outreach)
    result: dict[str, Any] = {"files": [], "rejected": [{"name": r["name"], "reason": r["reason"]} for r in work.rejected]}
    record = work.record
    for source in work.pending:
        output = list_path(config.paths.predictions, source.name)
        try:
            summary = write_risk_list(source.path, output, scorer, target=config.schema.target,
                                      reasons=config.risk_lists.reasons, outreach=outreach, scored_at=utc_now(),
                                      name=source.name)
        except ScoringError as exc:
            reason = str(exc).removeprefix(f"{source.name}: ")
            record["rejected"] = [r for r in record["rejected"] if r["name"] != source.name]
            record["rejected"].append({"name": source.name, "sha256": source.sha256, "size": source.size,
                                       "reason": reason, "rejected_at": utc_now(), "release_id": scorer.release_id})
            record["scored"].pop(source.name, None)
            save_scoring_record(record, config.paths.predictions)
            logger.warning("rejected %s: %s", shown_name(source.name), reason)
            result["rejected"].append({"name": source.name, "reason": reason})
            continue
        except FileNotFoundError:
            logger.info("%s: vanished before it could be scored", source.name)
            continue
        except (StorageError, EngineError) as exc:  # a full disk, a lost worker: not the file's fault; tried again next tick
            logger.error("scoring %s failed: %s; the other files go on, this one is tried again next tick",
                         shown_name(source.name), str(exc).removeprefix(f"{source.name}: "))
            result.setdefault("failed", []).append({"name": source.name, "reason": str(exc)})
            continue
        summary["list"] = os.path.relpath(output, config.root)
        atomic_write_json(output.with_name(output.name.removesuffix(LIST_SUFFIX) + SUMMARY_SUFFIX), summary)
        record["rejected"] = [r for r in record["rejected"] if r["name"] != source.name]
        record["scored"][source.name] = {"sha256": source.sha256, "release_id": scorer.release_id,
                                         "list": summary["list"], "rows": summary["rows"],
                                         "scored_at": summary["scored_at"],
                                         "settings": list_settings(config.risk_lists, config.outreach)}
        save_scoring_record(record, config.paths.predictions)
        logger.info("%s", describe_list(summary))
        estimate = summary["estimate"]
        result["files"].append({
            "name": source.name, "rows": summary["rows"], "release_id": scorer.release_id, "list": summary["list"],
            "to_contact": summary["to_contact"], "expected_value": summary["expected_value"],
            "estimate": {key: estimate[key] for key in ("f1", "f1_ci", "precision", "precision_ci", "recall",
                                                         "recall_ci", "accuracy", "accuracy_ci", "expected_churners",
                                                         "predicted_churners")},
            "unseen_categories": summary["unseen_categories"],
            **{key: summary[key] for key in ("unseen_categories_rest", "unseen_near_matches") if summary[key]},
            "seconds": summary["seconds"],
        })
    if work.record_changed:
        save_scoring_record(record, config.paths.predictions)
    return result


# --- main -------------------------------------------------------------------------------------------


def _score_customers_on_demand(config: Config, args) -> int:
    model = load_deployed(config.paths.deployment)
    if model is None:
        logger.critical("no release is deployed yet: nothing to score customers with")
        return 1
    source, output = Path(args.customers), Path(args.output)
    if output.resolve() == source.resolve():
        logger.critical("--output %s is the customer file itself; the input is never modified", output)
        return 1
    try:
        with using(config.compute, connect_now=False):  # a large xgboost list on the cluster, as the cron job's
            summary = write_risk_list(source, output, ScoringModel.of(model, config.paths.deployment),
                                      target=config.schema.target,
                                      reasons=args.reasons if args.reasons is not None else config.risk_lists.reasons,
                                      outreach=Outreach(config.outreach), scored_at=utc_now())
    except (ScoringError, EngineError) as exc:
        logger.critical("%s", exc)
        return 1
    summary_path = output.with_name(output.name + ".summary.json")
    atomic_write_json(summary_path, summary)
    print(describe_list(summary))
    print(f"summary: {summary_path}")
    return 0


def _rescore_lists(config: Config) -> int:
    """Score every customer file in the scoring folder again with the deployed release (the lock is held)."""
    model = load_deployed(config.paths.deployment)
    if model is None:
        logger.critical("no release is deployed yet: nothing to score customers with")
        return 1
    for folder in (config.paths.scoring, config.paths.predictions):
        folder.mkdir(parents=True, exist_ok=True)
    work = find_customer_files(config.paths.scoring, load_scoring_record(config.paths.predictions), model.release_id,
                               predictions_folder=config.paths.predictions,
                               settings=list_settings(config.risk_lists, config.outreach), rescore=True)
    with using(config.compute, connect_now=False):
        result = score_customer_files(config, work, model)
    for failure in result["rejected"] + result.get("failed", []):
        print(f"not scored: {shown_name(failure['name'])}: {failure['reason']}", file=sys.stderr)
    print(f"{len(result['files'])} list(s) made again with release {model.release_id} in "
          f"{config.paths.predictions.name}/; {len(result['rejected']) + len(result.get('failed', []))} file(s) not scored")
    return 1 if result.get("failed") else 0


def _main(config: Config, args) -> int:
    if args.customers:
        return _score_customers_on_demand(config, args)
    if args.rescore_lists:
        return _rescore_lists(config)
    from churnlib.dataset import FrozenSchema
    from churnlib.pipeline import model_threshold

    model: LoadedModel | None = load_deployed(config.paths.deployment) if args.deployed else load_model(config.paths.models)
    if model is None:
        logger.critical("no release is deployed yet")
        return 1
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    test = read_test_data(config.paths.testdata, settings=config.schema, schema=schema)
    scores = score_model(model.pipeline, test, schema, threshold=model_threshold(model.metadata))
    logger.info("release %s: %s", model.release_id, format_scores(scores))
    if not args.deployed:
        write_scores(scores, config.paths.models, release_id=model.release_id)
    print(f"{model.release_id}: {format_scores(scores)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        "Score a model on the labelled test data and write latestscore.txt (F1) and latestscore.json "
        "(all metrics) to the model folder; or, with --customers FILE --output PATH, score a file of "
        "current customers (no churn label) with the deployed release into a ranked risk list with "
        "reasons (PATH, plus PATH.summary.json with the label-free performance estimate).",
    )
    parser.add_argument(
        "--deployed", action="store_true",
        help="score the deployed release instead of the latest trained model in the model folder "
        "(prints the scores; writes nothing)",
    )
    parser.add_argument("--customers", metavar="FILE",
                        help="a CSV file of current customers to score with the deployed release (read only)")
    parser.add_argument("--output", metavar="PATH", help="where --customers writes the ranked list (required with it)")
    parser.add_argument("--reasons", type=int, metavar="N", default=None,
                        help="reasons per customer in the list (default: risk_lists.reasons in the config, 3)")
    parser.add_argument("--rescore-lists", action="store_true",
                        help="make every risk list again now: score each customer file in the scoring folder "
                        "with the deployed release and the settings in the config (the cron job does it by "
                        "itself on its next tick after a redeploy or a change of risk_lists or outreach)")
    args_check = parser.parse_known_args(argv)[0]
    if args_check.customers and not args_check.output:
        parser.error("--customers needs --output PATH (where the list goes)")
    if args_check.output and not args_check.customers:
        parser.error("--output goes with --customers FILE")
    if args_check.rescore_lists and (args_check.customers or args_check.deployed):
        parser.error("--rescore-lists goes alone (it scores every file in the scoring folder)")
    if args_check.reasons is not None and not 0 <= args_check.reasons <= 100:
        parser.error("--reasons must be from 0 to 100")
    # Only a run that writes the model folder's scores takes the run lock.
    return run_script(parser, argv, "scoring", _main, lock=lambda args: not (args.deployed or args.customers))


if __name__ == "__main__":
    sys.exit(main())
