"""Reporting: plots and one self-contained HTML report of a model release.

- ``confusionmatrix.png``: the confusion matrix of the model on the test data;
- ``roc_curve.png``, ``pr_curve.png`` and ``calibration.png``: ROC and precision-recall curves and
  the reliability diagram on the test data;
- ``report.html``, one self-contained file (plots embedded; under 1 MB): the decision that produced
  the release; the metrics with 95% intervals (the posterior of the confusion counts for F1,
  precision, recall and accuracy, Hanley and McNeil's standard error for ROC AUC) and a plain warning when the test data is too small for them to say much; the plots;
  the training data's class balance; the model's coefficients or importances; the reference and
  new distributions of the drifted and the most important features side by side; the drift table;
  the ingested data's statistics (categories with churn rates). Library versions are in the
  release's diagnostics.json, not here.

``fullprocess.py`` builds a report into every release it deploys. Run by hand, this script reports on
the deployed release (or, with ``--trained``, on the latest trained model) and writes the files to
the model folder.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from churnlib.cli import run_script, script_parser
from churnlib.config import Config
from churnlib.columns import MISSING_CATEGORY
from churnlib.display import html_text, number
from churnlib.dataset import FrozenSchema, read_canonical_csv, read_labelled_folder
from churnlib.fsutil import atomic_write_bytes, read_json
from churnlib.modelstore import MANIFEST_FILE, checked_reference_sample, load_deployed, load_model
from churnlib.errors import in_step
from churnlib.pipeline import churn_probabilities, model_threshold
from churnlib.runlog import RetrainReason

logger = logging.getLogger(Path(__file__).stem)

REPORT_FILE = "report.html"
CONFUSION_MATRIX_FILE = "confusionmatrix.png"
ROC_FILE = "roc_curve.png"
PR_FILE = "pr_curve.png"
CALIBRATION_FILE = "calibration.png"


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # Fixed metadata keeps the bytes the same for the same figure; bbox "tight" keeps axis labels in.
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.12)
    return buffer.getvalue()


# Text from the data (category values, feature names, release ids) is drawn as given: "$x^$" is a
# legal category value, and matplotlib would read it as mathtext (and raise on it). Ours has none.
LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False, "axes.formatter.use_mathtext": False}


def _literal_text(plot: Any) -> Any:
    """Decorate a plot function so that every text of its figure (drawn when it is saved) is literal."""

    @functools.wraps(plot)
    def wrapper(*args: Any, **kwargs: Any) -> bytes:
        with matplotlib.rc_context(LITERAL_TEXT):
            return plot(*args, **kwargs)

    return wrapper


PLOT_SIZE = (5.0, 4.0)  # inches at 100 dpi: two plots side by side fill the page's width


# --- metrics with intervals ----------------------------------------------------------------------

SMALL_TEST_ROWS = 100
SMALL_CLASS_ROWS = 20
WIDE_INTERVAL = 0.2
# Hanley and McNeil's standard error collapses to nothing at an AUC of 0 or 1; with a handful of rows
# of a class that is where a small test set lands, and an interval of width 0 would be a lie.
AUC_MIN_CLASS_ROWS = 10


def metric_intervals(scores: dict[str, Any]) -> dict[str, tuple[float, float] | None]:
    """Return a 95% interval for each metric of ``scores`` (``scoring.metrics_from_predictions``), as
    the score check computes them (``churnlib.stats``): the equal-tailed posterior of the scores' own
    confusion counts (at the release's threshold) for F1, precision, recall and accuracy; Hanley and
    McNeil's standard error for ROC AUC (none below AUC_MIN_CLASS_ROWS rows of a class)."""
    from churnlib.stats import CONFUSION_METRICS, auc_estimate, estimate

    (tn, fp), (fn, tp) = scores["confusion_matrix"]["matrix"]
    counts = [tn, fp, fn, tp]
    intervals: dict[str, tuple[float, float] | None] = {}
    for metric in CONFUSION_METRICS:
        found = estimate(counts, metric)
        intervals[metric] = None if found.low is None else (found.low, found.high)
    positives, negatives = fn + tp, tn + fp
    intervals["roc_auc"] = None
    if scores.get("roc_auc") is not None and min(positives, negatives) >= AUC_MIN_CLASS_ROWS:
        found = auc_estimate(scores["roc_auc"], positives, negatives)
        intervals["roc_auc"] = (found.low, found.high)
    return intervals


def small_data_warning(scores: dict[str, Any], intervals: dict[str, Any]) -> str | None:
    """Return a plain warning when the test data is too small for its scores to say much, else None."""
    rows, positives = scores["rows"], scores["positives"]
    widths = {key: high - low for key, value in intervals.items() if value for low, high in [value]}
    widest = 1.0 if None in intervals.values() else max(widths.values(), default=1.0)
    if rows >= SMALL_TEST_ROWS and min(positives, rows - positives) >= SMALL_CLASS_ROWS and widest <= WIDE_INTERVAL:
        return None
    uncertain = ("Some scores cannot be given an interval at all, and the others" if None in intervals.values()
                 else "The scores below")
    return (f"The test data holds {rows} rows ({positives} churners, {rows - positives} stayers): too few to say much. "
            f"{uncertain} are uncertain by up to ±{max(widths.values(), default=1.0) / 2:.2f} (95% intervals up to "
            f"{max(widths.values(), default=1.0):.2f} wide); a difference between two models smaller than that is noise, "
            f"and a score like ROC AUC 0.000 on a handful of rows is no verdict on the model. Add labelled rows to the test "
            f"data: a few hundred with at least {SMALL_CLASS_ROWS} of each class give intervals about ±0.05-0.1 wide.")


# --- plots ---------------------------------------------------------------------------------------


@_literal_text
def plot_confusion_matrix(matrix: list[list[int]], *, title: str) -> bytes:
    """Return a PNG of the 2 x 2 confusion matrix (rows actual, columns predicted)."""
    values = np.asarray(matrix)
    figure = Figure(figsize=PLOT_SIZE)
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    labels = ["stays (0)", "churns (1)"]
    axes.set_xticks([0, 1], labels=labels)
    axes.set_yticks([0, 1], labels=labels, rotation=90, va="center")
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title(title, fontsize=10)
    threshold = values.max() / 2 if values.size else 0
    for (row, column), count in np.ndenumerate(values):
        axes.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > threshold else "black", fontsize=14)
    figure.tight_layout()
    return _png(figure)


@_literal_text
def plot_roc(labels: np.ndarray, probabilities: np.ndarray, *, auc: float | None) -> bytes:
    """Return a PNG of the ROC curve."""
    figure = Figure(figsize=PLOT_SIZE)
    axes = figure.add_subplot()
    if len(np.unique(labels)) == 2:
        false_positive, true_positive, _ = roc_curve(labels, probabilities)
        axes.plot(false_positive, true_positive, color="#1f77b4", label=f"model (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC curve on the test data", fontsize=10)
    axes.legend(loc="lower right")
    figure.tight_layout()
    return _png(figure)


@_literal_text
def plot_precision_recall(labels: np.ndarray, probabilities: np.ndarray) -> bytes:
    """Return a PNG of the precision-recall curve, with the base rate for reference."""
    figure = Figure(figsize=PLOT_SIZE)
    axes = figure.add_subplot()
    if labels.sum() > 0:
        precision, recall, _ = precision_recall_curve(labels, probabilities)
        axes.plot(recall, precision, color="#d62728", label="model")
    base_rate = float(labels.mean()) if len(labels) else 0.0
    axes.axhline(base_rate, color="grey", linestyle="--", label=f"base rate {base_rate:.2f}")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_ylim(0, 1.02)
    axes.set_title("Precision-recall curve on the test data", fontsize=10)
    axes.legend(loc="lower left")
    figure.tight_layout()
    return _png(figure)


def calibration_bins(labels: np.ndarray, probabilities: np.ndarray) -> list[dict[str, Any]]:
    """Return equal-count bins of the predicted probability: mean predicted, observed churn rate and its interval."""
    from churnlib.stats import wilson_interval

    order = np.argsort(probabilities, kind="stable")
    count = int(np.clip(len(labels) // 30, 2, 10)) if len(labels) >= 4 else 1
    bins = []
    for chunk in np.array_split(order, count):
        if len(chunk) == 0:
            continue
        churned = int(labels[chunk].sum())
        bins.append({"predicted": float(probabilities[chunk].mean()), "observed": churned / len(chunk),
                     "rows": int(len(chunk)), "interval": wilson_interval(churned, len(chunk))})
    return bins


@_literal_text
def plot_calibration(labels: np.ndarray, probabilities: np.ndarray) -> bytes:
    """Return a PNG of the reliability diagram: observed churn rate against predicted probability, per bin."""
    figure = Figure(figsize=PLOT_SIZE)
    axes = figure.add_subplot()
    bins = calibration_bins(labels, probabilities)
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    if bins:
        predicted = [b["predicted"] for b in bins]
        observed = [b["observed"] for b in bins]
        low = [b["observed"] - b["interval"][0] for b in bins]
        high = [b["interval"][1] - b["observed"] for b in bins]
        axes.errorbar(predicted, observed, yerr=[low, high], fmt="o-", color="#2f6fd6", capsize=3,
                      label=f"model ({len(bins)} bins of ~{bins[0]['rows']} rows, 95% intervals)")
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("mean predicted churn probability")
    axes.set_ylabel("observed churn rate")
    axes.set_title("Calibration on the test data", fontsize=10)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return _png(figure)


def feature_weights(pipeline: Any, schema: FrozenSchema) -> dict[str, Any] | None:
    """Return the model's coefficients (logistic regression, on scaled features) or importances (xgboost),
    per model column and summed per original feature; None for a model of another shape."""
    from churnlib.pipeline import CLASSIFIER, PREPROCESS

    try:
        names = [str(n) for n in pipeline.named_steps[PREPROCESS].get_feature_names_out()]
        classifier = pipeline.named_steps[CLASSIFIER]
    except (AttributeError, KeyError, ValueError):
        return None
    if hasattr(classifier, "coef_"):
        weights, kind = np.asarray(classifier.coef_[0], dtype=float), "coefficient"
    elif hasattr(classifier, "feature_importances_"):
        weights, kind = np.asarray(classifier.feature_importances_, dtype=float), "importance"
    else:
        return None
    if len(weights) != len(names):
        return None
    categorical = sorted(schema.categorical_columns, key=len, reverse=True)

    def original(name: str) -> str:
        if name in schema.feature_columns:
            return name
        return next((c for c in categorical if name.startswith(c + "_")), name)

    columns = [{"column": n, "feature": original(n), "weight": float(w)} for n, w in zip(names, weights)]
    per_feature: dict[str, float] = {}
    for column in columns:
        per_feature[column["feature"]] = per_feature.get(column["feature"], 0.0) + abs(column["weight"])
    ranked = sorted(per_feature, key=lambda f: -per_feature[f])
    return {"kind": kind, "columns": columns, "per_feature": per_feature, "ranked": ranked}


MAX_WEIGHTS_SHOWN = 15


@_literal_text
def plot_weights(weights: dict[str, Any]) -> bytes:
    """Return a PNG bar chart of the largest coefficients (signed) or importances."""
    columns = sorted(weights["columns"], key=lambda c: -abs(c["weight"]))[:MAX_WEIGHTS_SHOWN][::-1]
    height = 1.2 + 0.32 * len(columns)
    figure = Figure(figsize=(10.0, height))
    axes = figure.add_subplot()
    values = [c["weight"] for c in columns]
    if weights["kind"] == "coefficient":
        colours = ["#d62728" if v > 0 else "#1f77b4" for v in values]
        axes.set_xlabel("coefficient on the log-odds of churn, per standard deviation (numeric) or for the category "
                        "(red raises the risk, blue lowers it)")
        axes.axvline(0, color="grey", linewidth=0.8)
    else:
        colours = ["#2f6fd6"] * len(values)
        axes.set_xlabel("importance (xgboost's gain share)")
    axes.barh([c["column"] for c in columns], values, color=colours)
    axes.set_title(f"The model's {weights['kind']}s ({min(len(weights['columns']), MAX_WEIGHTS_SHOWN)} largest "
                   f"of {len(weights['columns'])})", fontsize=10)
    figure.tight_layout()
    return _png(figure)


MAX_DISTRIBUTIONS = 8
MAX_CATEGORIES_PLOTTED = 8
FEW_VALUES = 10  # a numeric feature with at most this many distinct values is drawn as bars, not a histogram


def tails_note(reference: np.ndarray, new: np.ndarray, low: float, high: float) -> str:
    """Return the line under a histogram cut at the 1st and 99th percentile of both samples: the range
    drawn and the share of each sample outside it."""
    def outside(values: np.ndarray) -> str:
        return f"{np.mean((values < low) | (values > high)):.1%}" if len(values) else "n/a"

    return (f"drawn: {low:,.4g} to {high:,.4g} (1st-99th percentile); beyond it: {outside(reference)} of grey, "
            f"{outside(new)} of orange")


@_literal_text
def plot_distributions(features: list[str], schema: FrozenSchema, reference: Any, new: Any, *,
                       reference_label: str, new_label: str, effects: dict[str, str]) -> bytes:
    """Return one PNG of small panels, a feature each: the reference and the new distribution side by side."""
    count = len(features)
    rows = (count + 1) // 2
    figure = Figure(figsize=(10.0, 2.6 * rows + 0.4))
    for index, feature in enumerate(features):
        axes = figure.add_subplot(rows, 2, index + 1)
        few_values = (feature not in schema.categorical_columns
                      and len(np.unique(np.concatenate([reference[feature].dropna().to_numpy(dtype=float),
                                                        new[feature].dropna().to_numpy(dtype=float)]))) <= FEW_VALUES)
        if feature in schema.categorical_columns or few_values:
            # Categories, and numbers with a handful of values (a 0/1 flag): bars of each value's share.
            def shares(column):
                values = column if not few_values else column.map(lambda v: v if v != v else f"{v:g}")
                return values.fillna(MISSING_CATEGORY).astype(str).value_counts(normalize=True)

            ref, cur = shares(reference[feature]), shares(new[feature])
            categories = list((ref.add(cur, fill_value=0)).sort_values(ascending=False).index[:MAX_CATEGORIES_PLOTTED])
            positions = np.arange(len(categories))
            axes.bar(positions - 0.2, [ref.get(c, 0.0) for c in categories], width=0.4, color="#9aa5b1", label=reference_label)
            axes.bar(positions + 0.2, [cur.get(c, 0.0) for c in categories], width=0.4, color="#f28e2b", label=new_label)
            axes.set_xticks(positions, labels=[c[:12] for c in categories], fontsize=8)
            axes.set_ylabel("share of rows", fontsize=8)
        else:
            ref = reference[feature].dropna().to_numpy(dtype=float)
            cur = new[feature].dropna().to_numpy(dtype=float)
            both = np.concatenate([ref, cur]) if len(ref) + len(cur) else np.array([0.0])
            low, high = np.percentile(both, [1, 99])
            if high <= low:
                low, high = both.min() - 0.5, both.max() + 0.5
            edges = np.linspace(low, high, 25)
            # The tails beyond the 1st and 99th percentile are left out, not piled into the edge bins
            # (which drew spikes that are not in the data), and the axis says how much was left out.
            axes.hist(ref[(ref >= low) & (ref <= high)], bins=edges, density=True, color="#9aa5b1", alpha=0.8,
                      label=reference_label)
            axes.hist(cur[(cur >= low) & (cur <= high)], bins=edges, density=True, histtype="step", linewidth=2,
                      color="#f28e2b", label=new_label)
            axes.set_ylabel("density", fontsize=8)
            axes.set_xlabel(tails_note(ref, cur, low, high), fontsize=7, color="#5a6475")
            axes.tick_params(labelsize=8)
        axes.set_title(f"{feature}  {effects.get(feature, '')}", fontsize=9)
        if index == 0:
            axes.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


# --- the page ------------------------------------------------------------------------------------


_e = html_text


def _fmt(value: Any, spec: str = ".4f") -> str:
    """Return a figure for the page: rounded by ``spec``, "n/a" when missing, escaped."""
    return html_text(number(value, spec))


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(headers: list[str], rows: list[list[str]], *, numeric: set[int] = frozenset(),
           classes: list[str] | None = None) -> str:
    """Return an HTML table; columns whose index is in ``numeric`` are right-aligned."""
    head = "".join(f"<th{' class=n' if i in numeric else ''}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = []
    for index, row in enumerate(rows):
        css = f' class="{classes[index]}"' if classes and classes[index] else ""
        cells = "".join(f"<td{' class=n' if i in numeric else ''}>{cell}</td>" for i, cell in enumerate(row))
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2430;max-width:1080px;margin:2em auto;padding:0 1.2em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #dde2ea;padding-bottom:.2em}
.sub{color:#5a6475;margin-top:0}.decision{background:#f3f6fb;border-left:4px solid #2f6fd6;padding:.7em 1em;margin:1em 0}
.decision.refused{border-color:#c0392b}.warning{background:#fff4e5;border-left:4px solid #e67e22;padding:.7em 1em;margin:1em 0}
.metrics{display:flex;gap:1em;flex-wrap:wrap}
.metric{background:#f7f8fa;border:1px solid #e3e7ee;border-radius:6px;padding:.5em 1em;min-width:8.5em}
.metric b{display:block;font-size:1.4em}.metric span{color:#5a6475;font-size:.85em;display:block}
.plots{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:1em}
.plots img,.wide img{border:1px solid #e3e7ee;border-radius:4px;max-width:100%;height:auto}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}th,td{border:1px solid #dde2ea;padding:.3em .6em;text-align:left}
th{background:#f3f5f8}.n{text-align:right;font-variant-numeric:tabular-nums}tr.drifted td{background:#fdecea}tr.winner td{background:#eaf6ea}
code{font-size:.9em;background:#f3f5f8;padding:0 .25em}.muted{color:#5a6475}
.bar{display:inline-block;height:.8em;background:#f28e2b;vertical-align:middle}
"""

METRIC_LABELS = (("f1", "F1"), ("precision", "precision"), ("recall", "recall"), ("accuracy", "accuracy"),
                 ("roc_auc", "ROC AUC"))


def render_html(
    *,
    metadata: dict[str, Any],
    scores: dict[str, Any],
    images: dict[str, bytes],
    drift: dict[str, Any] | None,
    diagnostics: dict[str, Any] | None,
    decision: dict[str, Any] | None,
    previous_scores: dict[str, Any] | None = None,
    intervals: dict[str, Any] | None = None,
    warning: str | None = None,
    extra_images: dict[str, bytes] | None = None,
    comparison: str | None = None,
) -> str:
    """Return the self-contained HTML report (images embedded as data URIs, no external files)."""
    release = metadata["release_id"]
    intervals = intervals or {}
    extra_images = extra_images or {}
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Churn model report: release {_e(release)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Churn model report: release <code>{_e(release)}</code></h1>",
        f"<p class='sub'>{_e(metadata['algorithm'])}, trained {_e(metadata['trained_at'])} on "
        f"{_e(metadata['training_data']['rows'])} rows</p>",
    ]
    if decision:
        refused = " refused" if decision.get("decision") == "retrained_refused" else ""
        parts.append(
            f"<div class='decision{refused}'><b>Decision: {_e(decision.get('decision'))}</b><br>"
            f"{_e(decision.get('reason'))}</div>"
        )
    parts.append("<h2>Scores on the test data</h2>")
    if warning:
        parts.append(f"<div class='warning'><b>Too little test data to say much.</b> {_e(warning)}</div>")
    parts.append("<div class='metrics'>")
    for key, label in METRIC_LABELS:
        interval = intervals.get(key)
        span = (f"<span>95% CI {interval[0]:.3f}-{interval[1]:.3f}</span>" if interval
                else "<span>no interval: too few rows</span>")
        before = ""
        if previous_scores and previous_scores.get(key) is not None:
            before = f"<span>previous release {_fmt(previous_scores[key], '.3f')}</span>"
        parts.append(f"<div class='metric'><span>{label}</span><b>{_fmt(scores.get(key), '.3f')}</b>{span}{before}</div>")
    parts.append(f"</div><p class='muted'>{_e(scores['rows'])} test rows, {_e(scores['positives'])} churners; "
                 f"a customer is predicted to churn when its probability is above {scores.get('threshold', 0.5):g}. "
                 "Intervals as the score check "
                 "computes them: the 95% posterior of the confusion counts for F1, precision, recall and accuracy, "
                 "Hanley and McNeil's standard error for ROC AUC.</p>")
    parts.append("<div class='plots'>")
    for name, alt in ((CONFUSION_MATRIX_FILE, "confusion matrix"), (ROC_FILE, "ROC curve"), (PR_FILE, "precision-recall curve"),
                      (CALIBRATION_FILE, "calibration plot")):
        if name in images:
            parts.append(_img(images[name], alt))
    parts.append("</div><p class='muted'>Calibration: customers are put in bins of equal size by their predicted "
                 "probability; a well calibrated model's bins lie on the diagonal (of customers given 30%, about 30% "
                 "churn), which matters when the probabilities are used as such (expected losses, who to call).</p>")

    counts = metadata["training_data"].get("class_counts") or {}
    if counts:
        total = sum(counts.values()) or 1
        rows = [[_e({"0": "stays (0)", "1": "churns (1)"}.get(label, label)), f"{count:,}", f"{count / total:.1%}",
                 f"<span class='bar' style='width:{200 * count / total:.0f}px'></span>"]
                for label, count in sorted(counts.items())]
        parts.append("<h2>Training data: class balance</h2>")
        parts.append(_table(["class", "rows", "share", ""], rows, numeric={1, 2}))
        churn_share = counts.get("1", 0) / total
        if churn_share < 0.1 or churn_share > 0.9:
            parts.append(f"<p class='muted'>One class is rare ({churn_share:.1%} churners): accuracy says little here; "
                         "read precision, recall and the precision-recall curve.</p>")

    if "weights.png" in extra_images:
        parts.append("<h2>What the model leans on</h2><div class='wide'>" + _img(extra_images["weights.png"], "model weights")
                     + "</div>")
    if "distributions.png" in extra_images:
        parts.append("<h2>Distributions: drifted and most important features</h2>"
                     f"<p class='muted'>{_e(comparison)}</p><div class='wide'>"
                     + _img(extra_images["distributions.png"], "feature distributions") + "</div>")

    parts.append("<h2>Drift of the data that led here</h2>")
    if not drift:
        why = {RetrainReason.COLD_START: "at the cold start", RetrainReason.SCHEMA_CHANGED: "because the data's columns changed",
               RetrainReason.CONFIG_CHANGED: "because the model settings in config.json changed",
               RetrainReason.SCHEDULE: "on the schedule"}
        reasons = [why[r] for r in metadata.get("retrain_reason") or [] if r in why]
        said = " and ".join(reasons) if reasons else "at the cold start or by hand"
        parts.append(f"<p class='muted'>No drift test led here: this release was trained {_e(said)}.</p>")
    elif not drift.get("tested"):
        parts.append(f"<p class='muted'>Not tested: {_e(drift.get('reason'))}</p>")
    else:
        rows, classes = [], []
        for row in drift["features"]:
            rows.append([
                _e(row["feature"]),
                "Kolmogorov-Smirnov" if row["test"] == "ks" else "chi-square",
                _fmt(row["statistic"]),
                _fmt(row["effect"], ".3f") + (" (D)" if row["test"] == "ks" else " (V)"),
                _fmt(row["p_value"], ".2e"),
                _fmt(row["p_adjusted"], ".2e"),
                "<b>drifted</b>" if row["drifted"] else "no",
            ])
            classes.append("drifted" if row["drifted"] else "")
        parts.append(
            f"<p>{_e(drift['new_rows'])} new rows against {_e(drift['reference_rows'])} reference rows; "
            f"{_e(drift['correction'])} correction, alpha {_e(drift['alpha'])}; a feature drifts when its corrected "
            f"p-value is below alpha and its effect reaches D &ge; {_e(drift['ks_min_statistic'])} (numeric) or "
            f"Cramér's V &ge; {_e(drift['chi2_min_cramers_v'])} (categorical).</p>"
        )
        parts.append(_table(["feature", "test", "statistic", "effect", "p-value", "p adjusted", "drifted"], rows,
                            numeric={2, 3, 4, 5}, classes=classes))

    if diagnostics:
        parts.append(f"<h2>Ingested data ({_e(diagnostics.get('ingested_rows'))} rows)</h2>")
        stats_rows = []
        missing = diagnostics.get("missing_data", {})
        for column, stats in diagnostics.get("summary_statistics", {}).items():
            median = _fmt(stats["median"]) + ("" if stats.get("median_exact", True) else " ≈")
            stats_rows.append([_e(column), _fmt(stats["mean"]), median, _fmt(stats["std"]),
                               _fmt(missing.get(column), ".2%")])
        parts.append(_table(["numeric column", "mean", "median", "std", "missing"], stats_rows, numeric={1, 2, 3, 4}))
        for column, stats in (diagnostics.get("categorical") or {}).items():
            category_rows = [[_e(c["value"]), f"{c['count']:,}", _fmt(c["share"], ".1%"), _fmt(c["churn_rate"], ".1%")]
                             for c in stats["categories"][:12]]
            parts.append(f"<p><b>{_e(column)}</b> (categorical, {stats['distinct']} values"
                         f"{', the 12 most frequent' if stats['distinct'] > 12 else ''})</p>")
            parts.append(_table(["category", "rows", "share", "churn rate"], category_rows, numeric={1, 2, 3}))
        timings = diagnostics.get("timings", {})
        parts.append(
            f"<p class='muted'>Last ingestion took {_fmt(timings.get('ingestion_seconds'), '.3f')} s; training this model "
            f"took {_fmt(timings.get('training_seconds'), '.3f')} s. Library versions, installed and latest: "
            "<code>diagnostics.json</code> in this release's folder.</p>"
        )

    if metadata.get("search"):
        parts.append(search_section(metadata["search"]))

    parts.append("<h2>Model</h2>")
    data = metadata["training_data"]
    model_rows = [
        ["algorithm", _e(metadata["algorithm"])],
        ["parameters", f"<code>{_e(metadata['params'])}</code>"],
        ["random seed", _e(metadata["random_seed"])],
        ["numeric features", _e(", ".join(metadata["schema"]["numeric_columns"]) or "none")],
        ["categorical features", _e(", ".join(metadata["schema"]["categorical_columns"]) or "none")],
        ["training data", f"{_e(data['rows'])} rows, sha256 <code>{_e(data['sha256'][:16])}</code>"],
        ["model file sha256", f"<code>{_e(metadata['model_sha256'])}</code>"],
    ]
    parts.append(_table(["property", "value"], model_rows))
    parts.append("</body></html>\n")
    return "".join(parts)


def search_section(search: dict[str, Any]) -> str:
    """Return the report's section on the model search (model.search): its plan, the winner against
    the configured defaults, and every trial with its settings and score."""
    from churnlib.search import short_params

    parts = ["<h2>Model search</h2>", f"<p>{_e(search.get('summary'))}</p>"]
    if search.get("skipped"):
        return "".join(parts)
    plan = search.get("plan") or {}
    rows = search.get("rows") or {}
    parts.append(
        f"<p class='muted'>Budget {_fmt(plan.get('budget_s'), 'g')} s, turned into {_e(plan.get('trials'))} trials before the "
        f"search started; it took {_fmt(search.get('seconds'), '.1f')} s. Trials were fitted on rows "
        f"{_e(rows.get('fit'))}, chose xgboost's number of trees and the decision threshold on rows "
        f"{_e(rows.get('tune'))}, and were scored ({_e(search.get('metric'))}) on rows {_e(rows.get('validate'))}, "
        "all older than the rows held out to judge this model against the deployed one.</p>")
    defaults, winner = search.get("defaults") or {}, search.get("winner") or {}
    parts.append(_table(["", "algorithm", "settings", "threshold", search.get("metric", "score")], [
        ["configured defaults", _e(defaults.get("algorithm")), f"<code>{_e(short_params(defaults.get('params') or {}))}</code>",
         _fmt(defaults.get("threshold"), ".3f"), _fmt(defaults.get("value"))],
        ["winner" + ("" if winner.get("trial") is None else f" (trial {_e(winner['trial'])})"), _e(winner.get("algorithm")),
         f"<code>{_e(short_params(winner.get('params') or {}))}</code>", _fmt(winner.get("threshold"), ".3f"),
         _fmt(winner.get("value"))],
    ], numeric={3, 4}))
    trial_rows, classes = [], []
    for trial in search.get("trials") or []:
        trial_rows.append([_e(trial["number"]), _e(trial["algorithm"]), _e(trial["state"]),
                           f"<code>{_e(short_params(trial.get('params') or trial.get('suggested') or {}))}</code>",
                           _fmt(trial.get("threshold"), ".3f"), _fmt(trial.get("value")), _fmt(trial.get("seconds"), ".2f")])
        classes.append("winner" if trial["number"] == winner.get("trial") else "")
    parts.append(_table(["trial", "algorithm", "state", "settings", "threshold", search.get("metric", "score"), "s"],
                        trial_rows, numeric={4, 5, 6}, classes=classes))
    return "".join(parts)


def _effects(drift: dict[str, Any] | None) -> dict[str, str]:
    if not drift or not drift.get("tested"):
        return {}
    return {row["feature"]: f"({'D' if row['test'] == 'ks' else 'V'} = {row['effect']:.3f}"
            f"{', drifted' if row['drifted'] else ''})" for row in drift["features"] if row.get("effect") is not None}


def distribution_features(drift: dict[str, Any] | None, weights: dict[str, Any] | None, schema: FrozenSchema) -> list[str]:
    """Return the features to plot: the drifted ones (largest effect first), then the most important ones."""
    chosen: list[str] = []
    if drift and drift.get("tested"):
        drifted = sorted((r for r in drift["features"] if r["drifted"]), key=lambda r: -(r["effect"] or 0))
        chosen += [r["feature"] for r in drifted]
    for feature in (weights or {}).get("ranked", list(schema.feature_columns)):
        if len(chosen) >= MAX_DISTRIBUTIONS:
            break
        if feature not in chosen and feature in schema.feature_columns:
            chosen.append(feature)
        if len(chosen) >= 4 and not (drift and drift.get("tested")):
            break
    return chosen[:MAX_DISTRIBUTIONS]


@in_step("reporting")
def build_report(
    *,
    metadata: dict[str, Any],
    scores: dict[str, Any],
    labels: np.ndarray,
    probabilities: np.ndarray,
    drift: dict[str, Any] | None = None,
    diagnostics: dict[str, Any] | None = None,
    decision: dict[str, Any] | None = None,
    previous_scores: dict[str, Any] | None = None,
    pipeline: Any = None,
    comparison: tuple[str, Any, str, Any] | None = None,
) -> dict[str, bytes]:
    """Return the report's files (name -> bytes): the plots and report.html.

    ``pipeline`` (the model) adds its coefficients or importances; ``comparison`` (reference label,
    reference rows, new label, new rows) adds the distributions of the drifted and most important
    features side by side.
    """
    labels = np.asarray(labels)
    images = {
        CONFUSION_MATRIX_FILE: plot_confusion_matrix(
            scores["confusion_matrix"]["matrix"], title=f"Release {metadata['release_id']} on the test data"
        ),
        ROC_FILE: plot_roc(labels, probabilities, auc=scores["roc_auc"]),
        PR_FILE: plot_precision_recall(labels, probabilities),
        CALIBRATION_FILE: plot_calibration(labels, probabilities),
    }
    intervals = metric_intervals(scores)
    extra: dict[str, bytes] = {}
    schema = FrozenSchema.from_dict(metadata["schema"]) if pipeline is not None or comparison is not None else None
    weights = feature_weights(pipeline, schema) if pipeline is not None else None
    if weights is not None:
        extra["weights.png"] = plot_weights(weights)
    comparison_text = None
    if comparison is not None:
        reference_label, reference, new_label, new = comparison
        features = distribution_features(drift, weights, schema)
        if features and len(reference) and len(new):
            extra["distributions.png"] = plot_distributions(features, schema, reference, new,
                                                            reference_label=reference_label, new_label=new_label,
                                                            effects=_effects(drift))
            comparison_text = (f"{reference_label} ({len(reference):,} rows, grey) against {new_label} ({len(new):,} rows, "
                               "orange), for the drifted features and then the ones the model leans on most.")
    page = render_html(metadata=metadata, scores=scores, images=images, drift=drift, diagnostics=diagnostics,
                       decision=decision, previous_scores=previous_scores, intervals=intervals,
                       warning=small_data_warning(scores, intervals), extra_images=extra, comparison=comparison_text)
    return {**images, REPORT_FILE: page.encode("utf-8")}


def _main(config: Config, args) -> int:
    from churnlib.runlog import DIAGNOSTICS_FILE
    from scoring import metrics_from_predictions

    if args.history:
        from churnlib.history import write_dashboard

        print(f"wrote {write_dashboard(config)}")
        return 0

    model = load_model(config.paths.models) if args.trained else load_deployed(config.paths.deployment)
    if model is None:
        logger.critical("no release is deployed yet; run fullprocess.py first")
        return 1
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    test = read_labelled_folder(config.paths.testdata, settings=config.schema, schema=schema)
    probabilities = churn_probabilities(model.pipeline, test, schema)
    labels = test[schema.target].to_numpy()
    scores = metrics_from_predictions(labels, probabilities, threshold=model_threshold(model.metadata))
    manifest = read_json(model.folder / MANIFEST_FILE, {}) or {}
    diagnostics = read_json(config.paths.logs / DIAGNOSTICS_FILE)
    if diagnostics and diagnostics.get("release_id") != model.release_id:
        diagnostics = None
    reference = read_canonical_csv(checked_reference_sample(model.folder, model.metadata), schema)
    files = build_report(
        metadata=model.metadata, scores=scores, labels=labels, probabilities=probabilities,
        drift=(manifest.get("decision") or {}).get("data_drift"), diagnostics=diagnostics,
        decision=manifest.get("decision"), pipeline=model.pipeline,
        comparison=("a sample of the training data", reference, "the test data", test),
    )
    for name, data in files.items():
        atomic_write_bytes(config.paths.models / name, data)
    logger.info("report of release %s written to %s", model.release_id, config.paths.models / REPORT_FILE)
    print(f"wrote {', '.join(files)} to {config.paths.models}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        "Plot the confusion matrix, ROC, precision-recall and calibration curves of the deployed model on the "
        "test data and write them, with an HTML report, to the model folder."
    )
    parser.add_argument("--trained", action="store_true", help="report on the latest trained model instead of the deployed one")
    parser.add_argument("--history", action="store_true",
                        help="only rewrite the history page, logs/dashboard.html, from logs/runs.jsonl and the releases")
    return run_script(parser, argv, "reporting", _main)


if __name__ == "__main__":
    sys.exit(main())
