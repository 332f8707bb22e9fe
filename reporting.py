"""Reporting: plots and one self-contained HTML report of a model release.

- ``confusionmatrix.png``: the confusion matrix of the model on the test data;
- ``roc_curve.png`` and ``pr_curve.png``: ROC and precision-recall curves on the test data;
- ``report.html``: metrics, the plots (embedded, so the file can be mailed or archived alone), the
  drift table, summary statistics, diagnostics, and the decision that produced the release.

``fullprocess.py`` builds a report into every release it deploys. Run by hand, this script reports on
the deployed release (or, with ``--trained``, on the latest trained model) and writes the files to
the model folder.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from churnlib.cli import run_script, script_parser
from churnlib.config import Config
from churnlib.dataset import FrozenSchema, read_labelled_folder
from churnlib.fsutil import atomic_write_bytes, read_json
from churnlib.modelstore import MANIFEST_FILE, load_deployed, load_model
from churnlib.errors import in_step
from churnlib.pipeline import churn_probabilities, model_threshold

logger = logging.getLogger(Path(__file__).stem)

REPORT_FILE = "report.html"
CONFUSION_MATRIX_FILE = "confusionmatrix.png"
ROC_FILE = "roc_curve.png"
PR_FILE = "pr_curve.png"


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # Fixed metadata keeps the bytes the same for the same figure.
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def plot_confusion_matrix(matrix: list[list[int]], *, title: str) -> bytes:
    """Return a PNG of the 2 x 2 confusion matrix (rows actual, columns predicted)."""
    values = np.asarray(matrix)
    figure = Figure(figsize=(4.6, 4.0))
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    labels = ["stays (0)", "churns (1)"]
    axes.set_xticks([0, 1], labels=labels)
    axes.set_yticks([0, 1], labels=labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title(title, fontsize=10)
    threshold = values.max() / 2 if values.size else 0
    for (row, column), count in np.ndenumerate(values):
        axes.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > threshold else "black", fontsize=14)
    figure.tight_layout()
    return _png(figure)


def plot_roc(labels: np.ndarray, probabilities: np.ndarray, *, auc: float | None) -> bytes:
    """Return a PNG of the ROC curve."""
    figure = Figure(figsize=(4.6, 4.0))
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


def plot_precision_recall(labels: np.ndarray, probabilities: np.ndarray) -> bytes:
    """Return a PNG of the precision-recall curve, with the base rate for reference."""
    figure = Figure(figsize=(4.6, 4.0))
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


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return _e(value)


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
.decision.refused{border-color:#c0392b}.metrics{display:flex;gap:1em;flex-wrap:wrap}
.metric{background:#f7f8fa;border:1px solid #e3e7ee;border-radius:6px;padding:.5em 1em;min-width:7em}
.metric b{display:block;font-size:1.4em}.metric span{color:#5a6475;font-size:.85em}
.plots{display:flex;gap:1em;flex-wrap:wrap}.plots img{border:1px solid #e3e7ee;border-radius:4px;max-width:100%}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}th,td{border:1px solid #dde2ea;padding:.3em .6em;text-align:left}
th{background:#f3f5f8}.n{text-align:right;font-variant-numeric:tabular-nums}tr.drifted td{background:#fdecea}
code{font-size:.9em;background:#f3f5f8;padding:0 .25em}.muted{color:#5a6475}
"""


def render_html(
    *,
    metadata: dict[str, Any],
    scores: dict[str, Any],
    images: dict[str, bytes],
    drift: dict[str, Any] | None,
    diagnostics: dict[str, Any] | None,
    decision: dict[str, Any] | None,
    previous_scores: dict[str, Any] | None = None,
) -> str:
    """Return the self-contained HTML report (images embedded as data URIs, no external files)."""
    release = metadata["release_id"]
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
    parts.append("<h2>Scores on the test data</h2><div class='metrics'>")
    for key, label in (("f1", "F1"), ("precision", "precision"), ("recall", "recall"),
                       ("accuracy", "accuracy"), ("roc_auc", "ROC AUC")):
        before = ""
        if previous_scores and previous_scores.get(key) is not None:
            before = f"<span>previous release {_fmt(previous_scores[key], '.3f')}</span>"
        parts.append(f"<div class='metric'><span>{label}</span><b>{_fmt(scores.get(key), '.3f')}</b>{before}</div>")
    parts.append(f"</div><p class='muted'>{_e(scores['rows'])} test rows, {_e(scores['positives'])} churners; "
                 "a customer is predicted to churn when its probability is above 0.5.</p>")
    parts.append("<div class='plots'>")
    for name, alt in ((CONFUSION_MATRIX_FILE, "confusion matrix"), (ROC_FILE, "ROC curve"), (PR_FILE, "precision-recall curve")):
        if name in images:
            parts.append(_img(images[name], alt))
    parts.append("</div>")

    parts.append("<h2>Drift of the data that led here</h2>")
    if not drift:
        parts.append("<p class='muted'>No drift test: this release was trained at cold start or by hand.</p>")
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
            stats_rows.append([_e(column), _fmt(stats["mean"]), _fmt(stats["median"]), _fmt(stats["std"]),
                               _fmt(missing.get(column), ".2%")])
        parts.append(_table(["numeric column", "mean", "median", "std", "missing"], stats_rows, numeric={1, 2, 3, 4}))
        other_missing = [[_e(c), _fmt(s, ".2%")] for c, s in missing.items() if c not in diagnostics.get("summary_statistics", {})]
        if other_missing:
            parts.append(_table(["other column", "missing"], other_missing, numeric={1}))
        timings = diagnostics.get("timings", {})
        parts.append("<h2>Diagnostics</h2>")
        parts.append(
            f"<p>Last ingestion took {_fmt(timings.get('ingestion_seconds'), '.3f')} s; training this model took "
            f"{_fmt(timings.get('training_seconds'), '.3f')} s.</p>"
        )
        dep_rows = [[_e(d["package"]), _e(d["required"] or "-"), _e(d["installed"] or "missing"), _e(d["latest"]),
                     "yes" if d["outdated"] else ("no" if d["outdated"] is False else "?")]
                    for d in diagnostics.get("dependencies", [])]
        parts.append(_table(["package", "required", "installed", "latest", "outdated"], dep_rows))

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
) -> dict[str, bytes]:
    """Return the report's files (name -> bytes): the three plots and report.html."""
    images = {
        CONFUSION_MATRIX_FILE: plot_confusion_matrix(
            scores["confusion_matrix"]["matrix"], title=f"Release {metadata['release_id']} on the test data"
        ),
        ROC_FILE: plot_roc(labels, probabilities, auc=scores["roc_auc"]),
        PR_FILE: plot_precision_recall(labels, probabilities),
    }
    page = render_html(metadata=metadata, scores=scores, images=images, drift=drift, diagnostics=diagnostics,
                       decision=decision, previous_scores=previous_scores)
    return {**images, REPORT_FILE: page.encode("utf-8")}


def _main(config: Config, args) -> int:
    from diagnostics import DIAGNOSTICS_FILE
    from scoring import metrics_from_predictions

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
    files = build_report(
        metadata=model.metadata, scores=scores, labels=labels, probabilities=probabilities,
        drift=(manifest.get("decision") or {}).get("data_drift"), diagnostics=diagnostics,
        decision=manifest.get("decision"),
    )
    for name, data in files.items():
        atomic_write_bytes(config.paths.models / name, data)
    logger.info("report of release %s written to %s", model.release_id, config.paths.models / REPORT_FILE)
    print(f"wrote {', '.join(files)} to {config.paths.models}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        "Plot the confusion matrix, ROC and precision-recall curves of the deployed model on the "
        "test data and write them, with an HTML report, to the model folder."
    )
    parser.add_argument("--trained", action="store_true", help="report on the latest trained model instead of the deployed one")
    return run_script(parser, argv, "reporting", _main)


if __name__ == "__main__":
    sys.exit(main())
