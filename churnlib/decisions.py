"""The decision rules of a tick: the score check, the training window, challenger against champion,
the deployment policy and the new normal.

``fullprocess.py`` orchestrates a tick and calls these; the statistics they rest on are in
``churnlib.stats`` (the score check's test, the paired comparison) and ``churnlib.drift`` (the
feature tests). Nothing heavy is imported at module level: ``fullprocess.py`` imports this module
on the no-new-data tick. The functions that train or score import ``training`` and ``scoring``
when called, as ``fullprocess.py`` did.
"""

from __future__ import annotations

import logging
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churnlib.clock import utc_now
from churnlib.config import Config, DeploymentSettings, ModelSettings, ScoreDriftSettings
from churnlib.errors import ChurnError
from churnlib.fsutil import atomic_write_json, atomic_write_text, read_json, sha256_bytes, sha256_file
from churnlib.modelstore import NORMAL_FOLDER, SCORE_DETAILS_FILE, read_normal
from churnlib.runlog import DRIFT_REASONS, RetrainReason


logger = logging.getLogger(__name__)


class DecisionError(ChurnError):
    """A decision that cannot be made on this data; the message says why."""


def lowered_expectation(normal: dict[str, Any] | None):
    """Return the calibration a new normal lowered the release's expectation to (a churnlib.stats.Calibration),
    or None: no new normal, none after a score drop, or one no better than chance (a poisoned yardstick,
    written before such a calibration was refused: ignored, with a warning)."""
    if not normal or not normal.get("calibration"):
        return None
    from churnlib.stats import Calibration

    calibration = Calibration.from_dict(normal["calibration"])
    if not calibration.informative:
        logger.warning("the new normal of release %s (%s) holds a calibration no better than chance (slope %.3f, "
                       "%.1f standard errors above 0): ignored; the release's own expectation is used",
                       normal.get("release_id"), normal.get("at"), calibration.slope, calibration.slope_z or 0.0)
        return None
    return calibration


def rows_needed(config: Config) -> int:
    """Return how many new rows the score and drift checks need before either runs."""
    return max(config.score_drift.min_rows, config.drift.min_rows)


def release_expectations(deployment_folder: Path, deployed, schema):
    """Return what the deployed release is expected to show: the calibration of its probabilities (a
    churnlib.stats.Calibration) and its expected scores, its drift reference sample, and the new
    normal that replaced them when a shift was accepted (or None)."""
    from churnlib.dataset import read_canonical_csv
    from churnlib.modelstore import checked_reference_sample
    from scoring import release_calibration

    normal = read_normal(deployment_folder, deployed.release_id)
    calibration = release_calibration(deployed, deployment_folder)
    expected = deployed.metadata.get("expected") or legacy_expected(deployed.folder)
    reference_path = checked_reference_sample(deployed.folder, deployed.metadata)
    if normal:
        if lowered_expectation(normal) is not None:
            expected = normal.get("expected") or expected
        if normal.get("reference"):
            reference_path = deployment_folder / NORMAL_FOLDER / normal["reference"]["file"]
            try:
                actual = sha256_file(reference_path)
            except FileNotFoundError:
                actual = None
            if actual != normal["reference"]["sha256"]:
                raise DecisionError(f"{reference_path}: missing or its SHA-256 does not match {deployed.release_id}.json; "
                                    "delete both files to go back to the release's own drift reference")
    return calibration, expected, read_canonical_csv(reference_path, schema), normal


def legacy_expected(folder: Path) -> dict[str, Any] | None:
    """Return the expectation of a release made before expected scores were kept: its test-data scores."""
    from churnlib.stats import pool_sources

    scores = read_json(folder / SCORE_DETAILS_FILE) or {}
    matrix = (scores.get("confusion_matrix") or {}).get("matrix")
    if not matrix:
        return None
    (tn, fp), (fn, tp) = matrix
    return pool_sources([{"source": "testdata", "rows": tn + fp + fn + tp, "counts": [tn, fp, fn, tp],
                          "roc_auc": scores.get("roc_auc"), "positives": fn + tp, "negatives": tn + fp}])


def classic_score_check(check: dict[str, Any], deploy_time: dict[str, Any], labels, probabilities,
                        settings: ScoreDriftSettings, threshold: float) -> dict[str, Any]:
    """The classic rule (``score_drift.method: deploy_time``): the score on the new rows against the score on
    the test data at deploy time, two exact numbers; a drop of more than max_drop is drift."""
    from scoring import metrics_from_predictions

    baseline = deploy_time.get(settings.metric)
    if baseline is None:
        check["reason"] = f"the deployed release has no {settings.metric} score on the test data"
        return check
    scores = metrics_from_predictions(labels, probabilities, threshold=threshold)
    new_score = scores[settings.metric]
    if new_score is None:
        check["reason"] = f"{settings.metric} is undefined on the new rows (one class only)"
        return check
    drop = baseline - new_score
    check.update(checked=True, drift=bool(drop > settings.max_drop), method="deploy_time", new_score=new_score,
                 baseline=baseline, drop=drop, alarm_below=baseline - settings.max_drop, scores_on_new_rows=scores)
    check["reason"] = (f"{settings.metric} {new_score:.4f} on {len(labels)} new rows vs {baseline:.4f} at deploy time: "
                       f"drop {drop:+.4f} {'>' if check['drift'] else '<='} max_drop {settings.max_drop}")
    return check


def check_score(calibration, expected: dict[str, Any] | None, labels, probabilities, settings: ScoreDriftSettings,
                *, threshold: float = 0.5, deploy_time: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the score check: the deployed model's score on the new rows against the score its calibrated
    probabilities (``calibration``, a churnlib.stats.Calibration) say these rows should reach, both with
    their uncertainty; a drift (alarm) only for a significant drop of at least max_drop. A customer is
    predicted to churn above ``threshold``, the release's."""
    from churnlib.pipeline import predicted_classes
    from churnlib.stats import auc_drop_test, drop_test, roc_auc
    from scoring import metrics_from_predictions

    metric = settings.metric
    check: dict[str, Any] = {"metric": metric, "rows": int(len(labels)), "alpha": settings.alpha,
                             "max_drop": settings.max_drop, "checked": False, "drift": False}
    if len(labels) < settings.min_rows:
        check["reason"] = f"{len(labels)} new rows, fewer than score_drift.min_rows={settings.min_rows}"
        return check
    if settings.method == "deploy_time":
        return classic_score_check(check, deploy_time or {}, labels, probabilities, settings, threshold)
    if metric == "roc_auc":
        if len(set(labels.tolist())) < 2:
            check["reason"] = "the new rows hold one class only; ROC AUC is not defined"
            return check
        if not expected or expected.get("roc_auc") is None:
            check["reason"] = "the deployed release has no expected ROC AUC to compare with"
            return check
        positives = int(labels.sum())
        test = auc_drop_test(roc_auc(labels, probabilities), (positives, len(labels) - positives),
                             expected["roc_auc"], (expected["positives"], expected["negatives"]),
                             alpha=settings.alpha, max_drop=settings.max_drop)
        check["method"] = "against the expected ROC AUC of out-of-sample predictions (Hanley-McNeil)"
    else:
        test = drop_test(labels, probabilities, predicted_classes(probabilities, threshold), metric, calibration,
                         alpha=settings.alpha, max_drop=settings.max_drop)
        check["method"] = ("against the score the calibrated probabilities expect on the same rows"
                           + ("" if calibration.rows else " (no calibration check kept: taken at their word)"))
    check.update(
        checked=True, drift=test.alarm, new_score=test.new.value, new_score_ci=[test.new.low, test.new.high],
        baseline=test.expected.value, baseline_ci=[test.expected.low, test.expected.high],
        baseline_rows=test.expected.rows, drop=test.drop, drop_ci=[test.drop_low, test.drop_high],
        p_value=test.p_value, p_metric=test.p_metric, p_fit=test.p_fit, p_rise=test.p_rise,
        significant_rise=test.significant_rise, alarm_below=test.alarm_below,
        scores_on_new_rows=metrics_from_predictions(labels, probabilities, threshold=threshold),
    )
    check["reason"] = (f"{metric} {test.new.text()} on {len(labels)} new rows vs expected "
                       f"{test.expected.value:.3f} ({test.expected.low:.2f}-{test.expected.high:.2f}): {test.verdict()}")
    return check


# --- the training window, challenger against champion, the policy, the new normal ---------

# The smallest training window tried: fewer rows than this fit noise.
MIN_WINDOW_ROWS = 100


def candidate_windows(rows: int, judged_rows: int, settings: ModelSettings) -> list[tuple[str, int]]:
    """Return the training windows to try, as (name, first row), largest first, over ``rows`` rows.

    ``judged_rows`` are the newest of them: the rows whose check called for the retrain.
    """
    if settings.training_window == "all":
        return [("all", 0)]
    if settings.training_window == "recent":
        return [(f"newest {min(settings.recent_rows, rows)} rows", max(0, rows - settings.recent_rows))]
    windows = [("all", 0)]
    if MIN_WINDOW_ROWS <= settings.recent_rows < rows:
        windows.append((f"newest {settings.recent_rows} rows", rows - settings.recent_rows))
    if MIN_WINDOW_ROWS <= judged_rows < min(rows, settings.recent_rows):
        windows.append((f"the {judged_rows} rows that were judged", rows - judged_rows))
    return windows



# Scores and tolerances are decimals that floats hold inexactly (0.7 - 0.1 < 0.6): a candidate
# exactly at the boundary is judged as a person reading the log would judge it.
POLICY_SLACK = 1e-9
# A smaller (more recent) training window is chosen over a larger one only when it does
# significantly better on the held-out rows: more data wins unless the world changed.
WINDOW_ALPHA = 0.05
# The window choice fits each window on its rows before the selection slice. The chosen window's fit
# is the challenger itself when the slice is at most this share of the window's rows: refitting with
# them would fit the whole window a second time (1.9x the training time of one fit at 3 million rows
# with xgboost) for under 1% more rows. On a smaller share's worth of rows the fit is cheap and is made
# again with the slice, so small histories train exactly as before.
REUSE_MAX_SHARE = 0.01


def policy_allows(candidate: float, deployed: float | None, settings: DeploymentSettings, *,
                  judged_on: str | None = None) -> tuple[bool, str]:
    """Return whether the deployment policy lets the candidate replace the deployed model, and why.

    ``judged_on`` ("held_out" or "testdata") is where both were scored; by default what
    ``deployment.evaluate_on`` asks for.
    """
    where = "held-out" if (judged_on or settings.evaluate_on) == "held_out" else "test-data"
    if deployed is None:
        return True, "no deployed model to compare with"
    if settings.policy == "always":
        return True, "policy always"
    if settings.policy == "not_worse":
        allowed = candidate >= deployed - settings.tolerance - POLICY_SLACK
        relation = ">=" if allowed else "<"
        return allowed, (f"policy not_worse on {where} rows: candidate {settings.metric} {candidate:.4f} {relation} "
                         f"deployed {deployed:.4f} - tolerance {settings.tolerance}")
    allowed = candidate > deployed + settings.tolerance + POLICY_SLACK
    relation = ">" if allowed else "<="
    return allowed, (f"policy better on {where} rows: candidate {settings.metric} {candidate:.4f} {relation} "
                     f"deployed {deployed:.4f} + tolerance {settings.tolerance}")


def hold_out_size(total_rows: int, judged_rows: int, settings: DeploymentSettings) -> int:
    """Return how many of the newest rows are held out to judge champion and challenger on."""
    size = max(settings.holdout_min_rows, round(settings.holdout_share * judged_rows))
    return min(size, total_rows // 2)


@dataclass
class Challenge:
    """Champion and challenger on the newest rows, and the challenger's training window."""

    held_out: int
    window: tuple[str, int]
    windows: list[dict[str, Any]]
    challenger: Any  # the fitted pipeline
    challenger_seconds: float
    challenger_probabilities: Any
    comparison: Any  # churnlib.stats.Comparison
    model_settings: ModelSettings | None = None  # what the challenger was trained with (model.search's winner)
    search: Any = None  # churnlib.search.SearchResult, when model.search is on
    last_row: int = 0  # where the challenger's training rows end: the held-out rows' first, or the selection slice's
    selection_rows: int = 0  # rows between the two, that chose the window: not trained on (a reused window fit)

    def to_json(self) -> dict[str, Any]:
        return {"held_out_rows": self.held_out, "window": self.window[0], "windows_tried": self.windows,
                "challenger_rows": self.last_row - self.window[1], "selection_rows_not_trained_on": self.selection_rows,
                **self.comparison.to_dict()}


def describe_window(window: tuple[str, int], last_row: int, held_out: int, selection: int = 0) -> str:
    """Return a training window in words with its rows: ("all", 0) is not "all" when rows were held out.

    ``selection`` rows between ``last_row`` and the ``held_out`` newest chose the window and were not
    trained on (the window choice's fit, reused).
    """
    name, first = window
    rows = last_row - first
    # A name that counts its rows already ("the 700 rows that were judged") is not counted twice.
    counted = name.endswith(" rows") or f"{rows:,} rows" in name or f"{rows} rows" in name
    what = f"all {rows:,} rows" if name == "all" else (name if counted else f"{name} ({rows:,} rows)")
    if selection:
        return (f"{what} before the {selection + held_out:,} newest ({selection:,} chose the window, "
                f"{held_out:,} held out)")
    return f"{what} before the {held_out:,} newest, held out" if held_out else what


def trained_until(metadata: dict[str, Any]) -> int:
    """Return the row of the ingested data where a release's training window ends (rows after it, it never saw)."""
    window = metadata.get("window") or {}
    return int(window.get("last_row", (metadata.get("training_data") or {}).get("rows", 0)))


@dataclass
class WindowFit:
    """A window's fit from the window choice: trained on its rows up to ``last_row`` (the selection slice's first)."""

    model: Any
    seconds: float
    last_row: int


def _pick_window(config: Config, history, schema, windows: list[tuple[str, int]], train_rows: int,
                 judged_rows: int) -> tuple[tuple[str, int], list[dict[str, Any]], WindowFit | None]:
    """Return the training window to use, chosen on the newest rows before ``train_rows`` (a selection
    slice the held-out rows never take part in), what each window scored there, and the chosen
    window's fit (on its rows before the slice; None when nothing was fitted)."""
    from churnlib.pipeline import churn_probabilities
    from churnlib.stats import paired_comparison
    from training import train_model

    if len(windows) == 1:
        return windows[0], [], None
    select = hold_out_size(train_rows, judged_rows, config.deployment)
    end = train_rows - select
    chosen_rows = history.pandas(end, train_rows)
    labels = chosen_rows[schema.target].to_numpy()
    fitted, fits = [], {}
    for window in windows:
        rows = history.rows(window[1], end)
        if len(rows) >= MIN_WINDOW_ROWS and history.both_classes(window[1], end, schema.target):
            started = time.perf_counter()
            model = train_model(rows, schema, config.model)
            fits[window] = WindowFit(model, time.perf_counter() - started, end)
            fitted.append((window, churn_probabilities(model, chosen_rows, schema)))
    if not fitted:
        return windows[0], [], None
    largest = fitted[0][1]  # all of it: the window every other is measured against
    chosen, best, tried = fitted[0][0], None, []
    for window, probabilities in fitted:
        versus = paired_comparison(labels, largest, probabilities, config.deployment.metric, config.model.threshold)
        best = versus.champion if best is None else best
        row = {"window": window[0], "first_row": window[1], "selection_rows": int(select), "score": versus.challenger}
        if probabilities is not largest:
            row.update(versus_largest=versus.difference, p_value=versus.p_value)
            # A smaller, more recent window wins only when it does significantly better than all of it.
            if versus.p_value < WINDOW_ALPHA and versus.challenger > best:
                chosen, best = window, versus.challenger
        tried.append(row)
    return chosen, tried, fits[chosen]


def challenge(config: Config, history, schema, *, judged_rows: int, champion, champion_threshold: float,
              champion_last_row: int) -> Challenge | None:
    """Train a challenger without the newest rows and compare it with the champion (a predictor, churn
    above ``champion_threshold``) on those held-out rows, paired; None when there are too few rows the
    champion was not trained on (after ``champion_last_row``) to judge it fairly.

    The training window is chosen first, on the newest rows before the held-out ones, so that the
    held-out rows judge (and later calibrate) a model that was not picked for doing well on them.
    ``history`` is the ingested rows: a ``churnlib.ingested.FrameHistory`` (the local engine) or a
    ``churnlib.engine.ClusterHistory`` (the dask engine: the rows stay with its workers).
    """
    from churnlib.pipeline import churn_probabilities, frame_probabilities
    from churnlib.search import settings_for_retrain
    from churnlib.stats import paired_comparison
    from training import train_model

    total = len(history)
    unseen = total - champion_last_row
    # At least as many rows as a check needs (``holdout_min_rows`` may be set lower), at most the
    # rows the champion never saw and half of all rows.
    held = min(max(hold_out_size(total, judged_rows, config.deployment), rows_needed(config)),
               unseen, total // 2)
    if held < rows_needed(config):
        return None
    train_rows = total - held
    judged_before = max(0, judged_rows - held)
    windows = [w for w in candidate_windows(train_rows, judged_before, config.model)
               if history.both_classes(w[1], train_rows, schema.target)]
    if not windows:
        raise DecisionError(f"no training window before the {held} held-out rows holds both classes")
    # model.search: the settings are searched on the largest window's rows, before the held-out ones.
    search_rows = (history.for_search(windows[0][1], train_rows, config.model.random_seed)
                   if config.model.search is not None else None)
    model_settings, searched = settings_for_retrain(config.model, search_rows, schema)
    config = dataclasses.replace(config, model=model_settings)
    window, tried, window_fit = _pick_window(config, history, schema, windows, train_rows, judged_before)
    held_out = history.pandas(train_rows, total)
    if window_fit is not None and train_rows - window_fit.last_row <= REUSE_MAX_SHARE * (train_rows - window[1]):
        challenger, seconds, last_row = window_fit.model, window_fit.seconds, window_fit.last_row
    else:
        started = time.perf_counter()
        challenger = train_model(history.rows(window[1], train_rows), schema, config.model)
        seconds, last_row = time.perf_counter() - started, train_rows
    probabilities = churn_probabilities(challenger, held_out, schema)
    comparison = paired_comparison(held_out[schema.target].to_numpy(), frame_probabilities(champion, held_out, schema),
                                   probabilities, config.deployment.metric, champion_threshold, config.model.threshold)
    return Challenge(held_out=held, window=window, windows=tried, challenger=challenger, challenger_seconds=seconds,
                     challenger_probabilities=probabilities, comparison=comparison, model_settings=model_settings,
                     search=searched, last_row=last_row, selection_rows=train_rows - last_row)


def accept_new_normal(config: Config, deployed, schema, judged, *, reasons: list[str], predictor) -> dict[str, Any]:
    """Make the judged rows the deployed release's new normal: its drift reference (after feature drift)
    and its expected score (after a score drop), because a retrain could not do better on them."""
    from churnlib.dataset import canonical_lines, header_line
    from churnlib.pipeline import frame_probabilities, model_threshold
    from churnlib.stats import CHANCE_Z, MIN_INFORMATIVE_SLOPE, Calibration, pool_sources, score_source
    from training import reference_sample

    folder = config.paths.deployment / NORMAL_FOLDER
    path = folder / f"{deployed.release_id}.json"
    normal = read_normal(config.paths.deployment, deployed.release_id) or {"release_id": deployed.release_id}
    normal.update(at=utc_now(), reasons=[str(r) for r in reasons], rows=int(len(judged)))
    if RetrainReason.FEATURE_DRIFT in reasons:
        sample = reference_sample(judged, config.drift.reference_sample_size, config.model.random_seed)
        text = header_line(schema) + "\n" + "".join(f"{line}\n" for line in canonical_lines(sample, schema))
        name = f"{deployed.release_id}.reference.csv"
        atomic_write_text(folder / name, text)
        normal["reference"] = {"file": name, "rows": int(len(sample)), "sha256": sha256_bytes(text.encode())}
    refused = None
    if RetrainReason.SCORE_DROP in reasons:
        labels = judged[schema.target].to_numpy()
        probabilities = frame_probabilities(predictor, judged, schema)
        calibration, check = Calibration.learnt(labels, probabilities)
        if calibration.informative:
            normal["calibration"] = {**calibration.to_dict(), "sources": [{"source": "new_normal", "rows": len(labels)}],
                                     "check": check}
            normal["expected"] = pool_sources([score_source("new_normal", labels, probabilities,
                                                            model_threshold(deployed.metadata))])
        else:
            # Labels the model's probabilities say nothing about (slope near 0: swapped or random labels,
            # or a world the model cannot see at all) are an alarm, never a yardstick.
            refused = {"slope": calibration.slope, "slope_z": calibration.slope_z, "rows": int(len(labels)),
                       "reason": (f"the release's probabilities are no better than chance on these {len(labels)} rows "
                                  f"(calibration slope {calibration.slope:.3f}, {calibration.slope_z or 0.0:.1f} "
                                  f"standard errors above 0; a yardstick needs at least {MIN_INFORMATIVE_SLOPE} and "
                                  f"{CHANCE_Z:.2f})")}
            reasons = [r for r in reasons if r != RetrainReason.SCORE_DROP]
            normal["reasons"] = [str(r) for r in reasons]
    if reasons:
        atomic_write_json(path, normal)
    summary = {"release_id": deployed.release_id, "rows": int(len(judged)), "reasons": normal["reasons"],
               "reference_rows": (normal.get("reference") or {}).get("rows")}
    if refused:
        summary["calibration_refused"] = refused
    if normal.get("calibration"):
        summary["calibration"] = {k: normal["calibration"][k] for k in ("slope", "intercept", "rows")}
    return summary


# --- one batch is not enough: a change that rests on it alone waits for the next one ----------------

HOLD_MODEL = "model"              # a candidate that the newest rows favour but the test data condemns
HOLD_EXPECTATION = "expectation"  # an expectation lowered by a score drop the challenger could not beat
ACCEPT_HELD_COMMAND = "fullprocess.py --accept-held"


def hold_change(kind: str, *, release_id: str, reasons: list[str], files: list[str], first_row: int,
                first_byte: int, last_row: int, why: str, candidate: str | None = None) -> dict[str, Any]:
    """Return the record of a change held back until the next batch confirms it (or a person approves it):
    which release it would change, how, on which rows (``first_row``-``last_row``, ``first_byte`` where
    they start in the ingested data) from which files, and why it was held."""
    return {"kind": kind, "release_id": release_id, "candidate": candidate, "reasons": [str(r) for r in reasons],
            "files": list(files), "first_row": int(first_row), "first_byte": int(first_byte),
            "last_row": int(last_row), "rows": int(last_row - first_row), "at": utc_now(), "why": why}


def confirmation(held: dict[str, Any] | None, release_id: str | None, reasons: list[str]) -> str | None:
    """Return how a held change stands confirmed on this tick, in words, or None: a person approved it, or
    the next batch alarmed the same check (score drop, feature drift) against the same release."""
    if not held or held.get("release_id") != release_id:
        return None
    files = ", ".join(held.get("files") or []) or f"{held.get('rows')} rows"
    if held.get("approved"):
        return f"the change held since {held.get('at')} ({files}) was approved with {ACCEPT_HELD_COMMAND}"
    again = sorted(set(held.get("reasons") or []) & {str(r) for r in reasons if r in DRIFT_REASONS})
    if again:
        return (f"the change held since {held.get('at')} ({files}) is confirmed: the next batch shows the "
                f"same {' and '.join(a.replace('_', ' ') for a in again)}")
    return None


def drop_confirms(score: dict[str, Any]) -> bool:
    """Return whether a score check confirms a held drop: a significant drop (p < alpha), of any size. As
    likely on an ordinary batch as a false alarm (alpha); a harder world shows it batch after batch even
    where a batch's drop alone stays under max_drop."""
    return bool(score.get("checked") and (score.get("drop") or 0) > 0
                and (score.get("p_value") if score.get("p_value") is not None else 1.0) < score.get("alpha", 0.0))


def held_message(held: dict[str, Any]) -> str:
    """Return what a held change means for the user, in a sentence: what happened, which files, what to do."""
    files = ", ".join(held.get("files") or []) or "the pending rows"
    change = ("a model trained on them" if held["kind"] == HOLD_MODEL else
              "a lower expected score for release " + held["release_id"])
    return (f"held: {held['why']}; one batch that contradicts everything before it is not enough for "
            f"{change}. Check the labels of {files}; the change is adopted if the next batch confirms it, "
            f"or now with {ACCEPT_HELD_COMMAND}")


def end_lowered_expectation(deployment_folder: Path, release_id: str) -> dict[str, Any] | None:
    """Take a new normal's lowered expectation (calibration and expected score) away, keeping its drift
    reference: the scores rose back to what the release itself expects. Return what was ended."""
    normal = read_normal(deployment_folder, release_id)
    if not normal or not normal.get("calibration"):
        return None
    ended = {"since": normal.get("at"), "calibration": {k: normal["calibration"].get(k) for k in ("slope", "intercept", "rows")}}
    kept = {k: v for k, v in normal.items() if k not in ("calibration", "expected")}
    kept["reasons"] = [r for r in kept.get("reasons", []) if r != str(RetrainReason.SCORE_DROP)]
    path = deployment_folder / NORMAL_FOLDER / f"{release_id}.json"
    if kept.get("reference"):
        atomic_write_json(path, kept)
    else:
        path.unlink(missing_ok=True)
    return ended


def rise_back(deployment_folder: Path, deployed, labels, probabilities, score: dict[str, Any],
              settings: ScoreDriftSettings) -> dict[str, Any]:
    """Return the score check after a significant rise above a lowered expectation: against the release's
    own expectation; when the new rows do not fall short of that either, the lowered expectation ends."""
    from churnlib.pipeline import model_threshold
    from churnlib.stats import Calibration

    own = check_score(Calibration.from_check(deployed.metadata.get("calibration")),
                      deployed.metadata.get("expected") or legacy_expected(deployed.folder), labels, probabilities,
                      settings, threshold=model_threshold(deployed.metadata),
                      deploy_time=read_json(deployed.folder / SCORE_DETAILS_FILE) or {})
    if not own.get("checked") or own["drift"]:
        return score
    ended = end_lowered_expectation(deployment_folder, deployed.release_id)
    own["lowered_expectation_ended"] = {**(ended or {}), "rise": score["reason"]}
    own["reason"] += (f"; the expectation lowered on {(ended or {}).get('since')} ends: against it, "
                      f"{score['reason']}")
    logger.info("the score rose back (%s): the expectation lowered on %s ends; against release %s's own: %s",
                score["reason"], (ended or {}).get("since"), deployed.release_id, own["reason"])
    return own
