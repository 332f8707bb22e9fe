"""The history page, ``logs/dashboard.html``: how the model and the data moved, tick after tick.

One self-contained file (inline SVG, no script, no external file), rewritten by every tick that
did work, from what the pipeline already wrote and nothing else:

- ``logs/runs.jsonl``, read backwards from its end until the last ``MAX_TICKS`` ticks that did
  work are found (idle ticks are skipped without being parsed), so the page costs the same after a
  year of ticks as after a week;
- the releases kept in the deployment folder (their scores and training data);
- ``logs/alert_state.json`` (the conditions active now).

Plots, on one time axis: the deployed model's metric on each checked batch with its interval and
the alarm threshold; each feature's drift effect (a heat map); decisions and releases with their
scores; the estimated performance of scored unlabelled files, where the run line has it; rows
ingested per file. Standard library only, so a tick pays no import of numpy or matplotlib for it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from churnlib.clock import stamp_seconds, utc_now
from churnlib.columns import shown_lines
from churnlib.config import Config
from churnlib.display import html_text, number
from churnlib.fsutil import atomic_write_text, read_json, read_json_or_none
from churnlib.modelstore import METADATA_FILE, RELEASES_FOLDER, SCORE_DETAILS_FILE, read_pointer
from churnlib.runlog import ALERT_STATE_FILE, DASHBOARD_FILE, RUNS_FILE

MAX_TICKS = 500  # ticks that did work, newest first; older ones stay in runs.jsonl
IDLE_DECISIONS = ("nothing_new", "lock_held")
BLOCK = 64 * 1024
MAX_HEATMAP_FEATURES = 40
RECENT_ROWS = 25

WIDTH, LEFT, RIGHT = 1040, 150, 20
PLOT_WIDTH = WIDTH - LEFT - RIGHT

DECISION_COLOURS = {
    "cold_start": "#2f6fd6", "retrained_deployed": "#1a9850", "retrained_refused": "#d73027",
    "schema_changed": "#7b3294", "no_drift": "#9aa5b1", "waiting_for_rows": "#fdae61",
    "no_new_rows": "#c7ccd3", "no_data": "#c7ccd3", "failed": "#000000",
}


# --- reading what the pipeline wrote -------------------------------------------------------------


@dataclass
class History:
    ticks: list[dict[str, Any]]          # ticks that did work, oldest first
    last_tick: dict[str, Any] | None     # the newest line, whatever it decided
    idle_ticks_skipped: int
    complete: bool                       # True when the whole runs.jsonl was read
    releases: list[dict[str, Any]]
    current_release: str | None
    active_alerts: dict[str, Any]


def _is_idle(line: bytes) -> bool:
    # An otherwise idle tick that scored customer files did work: its line has a "scoring" key.
    return any(f'"decision":"{decision}"'.encode() in line for decision in IDLE_DECISIONS) and b'"scoring":' not in line


def read_recent_runs(path: Path, *, limit: int = MAX_TICKS) -> tuple[list[dict[str, Any]], dict[str, Any] | None, int, bool]:
    """Return the last ``limit`` work ticks (oldest first), the newest line, the idle lines skipped, and
    whether the file was read to its start. Reads backwards in blocks; idle lines are never parsed."""
    ticks: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    skipped = 0
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return [], None, 0, True
    with handle:
        position = handle.seek(0, os.SEEK_END)
        carry = b""
        while position > 0 and len(ticks) < limit:
            step = min(BLOCK, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + carry
            lines = data.split(b"\n")
            carry = lines.pop(0) if position > 0 else b""
            for raw in reversed(lines):
                if not raw.strip():
                    continue
                idle = _is_idle(raw)
                if last is None:
                    last = _parse(raw)
                if idle:
                    skipped += 1
                    continue
                parsed = _parse(raw)
                if parsed is not None:
                    ticks.append(parsed)
                    if len(ticks) >= limit:
                        break
        complete = position == 0 and len(ticks) < limit
    ticks.reverse()
    return ticks, last, skipped, complete


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:  # a torn last line of a killed writer, say
        return None
    return value if isinstance(value, dict) else None


def read_releases(deployment_folder: Path) -> tuple[list[dict[str, Any]], str | None]:
    """Return the kept releases (id, trained at, algorithm, training rows, test scores), oldest first."""
    try:
        pointer = read_pointer(deployment_folder)
    except Exception:  # a broken pointer is the pipeline's and the API's business; the page shows none
        pointer = None
    if pointer is None:
        return [], None
    releases = []
    for release_id in [pointer["current"], *pointer.get("previous", [])]:
        folder = deployment_folder / RELEASES_FOLDER / release_id
        try:
            metadata = read_json(folder / METADATA_FILE) or {}
            scores = read_json(folder / SCORE_DETAILS_FILE) or {}
        except (OSError, ValueError):
            continue
        releases.append({"release_id": release_id, "trained_at": metadata.get("trained_at"),
                         "algorithm": metadata.get("algorithm"),
                         "training_rows": (metadata.get("training_data") or {}).get("rows"), "scores": scores})
    releases.sort(key=lambda r: r["trained_at"] or "")
    return releases, pointer["current"]


def read_history(config: Config, *, limit: int = MAX_TICKS) -> History:
    ticks, last, skipped, complete = read_recent_runs(config.paths.logs / RUNS_FILE, limit=limit)
    releases, current = read_releases(config.paths.deployment)
    active = (read_json_or_none(config.paths.logs / ALERT_STATE_FILE) or {}).get("active", {})
    return History(ticks=ticks, last_tick=last, idle_ticks_skipped=skipped, complete=complete,
                   releases=releases, current_release=current, active_alerts=active)


# --- SVG helpers ----------------------------------------------------------------------------------


def _e(value: Any) -> str:
    # shown_lines: a file name's undecodable bytes (in a run line an older version wrote) never stop the page
    return html_text(shown_lines("" if value is None else str(value)))


# Steps of the time axis, in seconds: round clock times whatever the span.
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
              2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400, 91 * 86400, 182 * 86400, 364 * 86400)
MIN_TIME_PAD = 30.0  # seconds either side of the ticks: one tick, or a burst of ticks, sits inside an axis


class TimeAxis:
    """Maps times to x positions; every plot of the page shares one, so they line up."""

    def __init__(self, times: Iterable[float]):
        times = [t for t in times if t is not None]
        low, high = (min(times), max(times)) if times else (0.0, 1.0)
        pad = max((high - low) * 0.04, MIN_TIME_PAD)
        self.low, self.high = low - pad, high + pad

    def x(self, t: float) -> float:
        return LEFT + (t - self.low) / (self.high - self.low) * PLOT_WIDTH

    def labels(self, count: int = 8) -> list[tuple[float, str]]:
        """Return (x, label) at round UTC times (every 10 s, 5 min, 2 h, 1 day, ...), about ``count`` of them."""
        span = self.high - self.low
        step = next((s for s in TIME_STEPS if span / s <= count), TIME_STEPS[-1])
        first = -(-self.low // step) * step  # the first multiple of the step inside the axis
        times = [first + i * step for i in range(int((self.high - first) // step) + 1)]
        one_day = time.gmtime(self.low)[:3] == time.gmtime(self.high)[:3]
        fmt = ("%H:%M:%S" if step < 60 else "%H:%M" if one_day and step < 86400
               else "%m-%d %H:%M" if step < 86400 else "%Y-%m-%d")
        return [(self.x(t), time.strftime(fmt, time.gmtime(t))) for t in times]


def _svg(height: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
            f'role="img" aria-label="{_e(label)}" font-family="system-ui,sans-serif" font-size="12">'
            + "".join(body) + "</svg>")


def _time_grid(axis: TimeAxis, top: float, bottom: float) -> list[str]:
    parts = []
    for x, text in axis.labels():
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#eef1f5"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#5a6475">{_e(text)}</text>')
    parts.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{LEFT + PLOT_WIDTH}" y2="{bottom}" stroke="#9aa5b1"/>')
    return parts


def nice_ticks(low: float, high: float, count: int = 5) -> tuple[float, float, list[float]]:
    """Return a range widened to round numbers around [low, high] and the round values in it."""
    import math

    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start, end = math.floor(low / step) * step, math.ceil(high / step) * step
    values = [start + i * step for i in range(int(round((end - start) / step)) + 1)]
    return start, end, values


def _value_axis(low: float, high: float, top: float, bottom: float, *, fmt: str | None = None,
                title: str = "") -> tuple[list[str], Any]:
    low, high, values = nice_ticks(low, high)
    if fmt is None:  # as many decimals as the round values need: 0.625 is not shown as 0.63
        step = values[1] - values[0] if len(values) > 1 else 1.0
        decimals = next((d for d in range(6) if all(abs(round(v, d) - v) < step * 1e-6 for v in values)), 6)
        fmt = f".{decimals}f"

    def y(value: float) -> float:
        return bottom - (value - low) / ((high - low) or 1.0) * (bottom - top)

    parts = [f'<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}" stroke="#9aa5b1"/>']
    for value in values:
        parts.append(f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{LEFT + PLOT_WIDTH}" y2="{y(value):.1f}" stroke="#eef1f5"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end" fill="#5a6475">{format(value, fmt)}</text>')
    if title:
        middle = (top + bottom) / 2
        parts.append(f'<text x="{LEFT - 52}" y="{middle:.1f}" text-anchor="middle" fill="#1d2430" '
                     f'transform="rotate(-90 {LEFT - 52} {middle:.1f})">{_e(title)}</text>')
    return parts, y


def _legend(items: list[tuple[str, str]], y: float = 14, *, heading: str = "") -> tuple[list[str], float]:
    """Return a legend (a marker drawn at 0,0 and a label per item) wrapped into rows from ``y`` down,
    under ``heading`` put left of its first row, and the y at which the plot under it may start."""
    rows: list[list[tuple[float, str, str]]] = [[]]
    x = LEFT
    for marker, label in items:
        width = 28 + 7.0 * len(label)
        if x + width > WIDTH - RIGHT and rows[-1]:
            rows.append([])
            x = LEFT
        rows[-1].append((x, marker, label))
        x += width
    parts = [f'<text x="{LEFT - 6}" y="{y + 4}" text-anchor="end" fill="#5a6475">{_e(heading)}</text>'] if heading else []
    for index, row in enumerate(rows):
        for x, marker, label in row:
            parts.append(f'<g transform="translate({x:.1f},{y + index * 17})">{marker}</g>')
            parts.append(f'<text x="{x + 14:.1f}" y="{y + index * 17 + 4}" fill="#1d2430">{_e(label)}</text>')
    return parts, y + len(rows) * 17 + 4


def _when(tick: dict[str, Any]) -> float | None:
    return stamp_seconds(tick.get("started_at"))


# --- the plots --------------------------------------------------------------------------------------


def _interval_text(interval: Any) -> str:
    if isinstance(interval, list) and len(interval) == 2 and all(isinstance(v, (int, float)) for v in interval):
        return f" (95% interval {number(interval[0])}-{number(interval[1])})"
    return ""


def plot_scores(ticks: list[dict[str, Any]], axis: TimeAxis) -> str | None:
    """The deployed model's metric on each checked batch, its interval, the expected score and the alarm threshold."""
    checked = [(t, t["score_drift"]) for t in ticks if isinstance(t.get("score_drift"), dict)
               and t["score_drift"].get("checked") and t["score_drift"].get("new_score") is not None and _when(t)]
    if not checked:
        return None
    def alarm(check: dict[str, Any]) -> tuple[float | None, str]:
        if check.get("alarm_below") is not None:
            return check["alarm_below"], "alarm_below"
        if check.get("baseline") is not None and check.get("max_drop") is not None:
            return check["baseline"] - check["max_drop"], "baseline - max_drop"
        return None, ""

    values = []
    for _tick, check in checked:
        values += [v for v in (check.get("new_score"), check.get("baseline"), alarm(check)[0]) if v is not None]
        for key in ("new_score_ci", "baseline_ci"):
            if isinstance(check.get(key), list):
                values += [v for v in check[key] if v is not None]
    low, high = max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05)
    _, alarm_name = alarm(checked[-1][1])
    legend = [('<circle r="4.5" fill="#1d2430"/>', "score on the new rows"),
              ('<circle r="4.5" fill="#d73027"/>', "flagged as a drop"),
              ('<line x1="-7" x2="7" stroke="#1d2430" stroke-width="1.5" transform="rotate(90)"/>', "95% interval"),
              ('<line x1="-7" x2="7" stroke="#2f6fd6" stroke-width="2"/>', "expected score on those rows"),
              ('<line x1="-7" x2="7" stroke="#d73027" stroke-width="2" stroke-dasharray="3 2"/>', f"alarm threshold ({alarm_name})")]
    parts, top = _legend(legend)
    bottom = top + 200
    grid, y = _value_axis(low, high, top, bottom, title=checked[0][1].get("metric", "score"))
    parts += grid + _time_grid(axis, top, bottom)

    half = 7
    for tick, check in checked:
        x = axis.x(_when(tick))
        band = check.get("baseline_ci")
        if isinstance(band, list) and None not in band:
            parts.append(f'<rect x="{x - half:.1f}" y="{y(band[1]):.1f}" width="{2 * half}" '
                         f'height="{max(1.0, y(band[0]) - y(band[1])):.1f}" fill="#2f6fd6" fill-opacity="0.15"/>')
        if check.get("baseline") is not None:
            parts.append(f'<line x1="{x - half:.1f}" x2="{x + half:.1f}" y1="{y(check["baseline"]):.1f}" '
                         f'y2="{y(check["baseline"]):.1f}" stroke="#2f6fd6" stroke-width="2"/>')
        threshold, _ = alarm(check)
        if threshold is not None:
            parts.append(f'<line x1="{x - half:.1f}" x2="{x + half:.1f}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                         f'stroke="#d73027" stroke-width="2" stroke-dasharray="3 2"/>')
        interval = check.get("new_score_ci")
        if isinstance(interval, list) and None not in interval:
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(interval[0]):.1f}" y2="{y(interval[1]):.1f}" '
                         f'stroke="#1d2430" stroke-width="1.5"/>')
        colour = "#d73027" if check.get("drift") else "#1d2430"
        tip = (f"{tick.get('started_at')}: {check.get('metric')} {number(check['new_score'])}"
               f"{_interval_text(check.get('new_score_ci'))} on {check.get('rows')} new rows; expected "
               f"{number(check.get('baseline'))}{_interval_text(check.get('baseline_ci'))}"
               + (f", alarm below {number(threshold)}" if threshold is not None else "") + f"; {check.get('reason', '')}")
        parts.append(f'<circle cx="{x:.1f}" cy="{y(check["new_score"]):.1f}" r="4.5" fill="{colour}"><title>{_e(tip)}</title></circle>')
    return _svg(bottom + 30, parts, "score on each checked batch")


HEAT_STOPS = ((0.0, (255, 255, 255)), (0.1, (254, 224, 144)), (0.25, (253, 141, 60)), (0.5, (165, 15, 21)))


def _heat_colour(effect: float | None) -> str:
    """White at no effect, yellow at the default floor (0.1), orange, dark red from 0.5 on."""
    if effect is None:
        return "#f3f5f8"
    effect = max(0.0, min(0.5, effect))
    for (low, low_colour), (high, high_colour) in zip(HEAT_STOPS, HEAT_STOPS[1:]):
        if effect <= high:
            share = (effect - low) / (high - low)
            red, green, blue = (a + (b - a) * share for a, b in zip(low_colour, high_colour))
            return f"rgb({red:.0f},{green:.0f},{blue:.0f})"
    return "rgb(165,15,21)"


def column_labels(stamps: list[Any]) -> list[str]:
    """Return a label per column (batch) from its tick's stamp: to the minute, to the second where two
    columns would read the same, and numbered where two ticks share a second; each label unique."""
    def cut(stamp: Any, end: int) -> str:
        return str(stamp or "?")[5:end].replace("T", " ")

    minutes = [cut(stamp, 16) for stamp in stamps]
    per_minute: dict[str, int] = {}
    for minute in minutes:
        per_minute[minute] = per_minute.get(minute, 0) + 1
    labels = [cut(stamp, 19) if per_minute[minute] > 1 else minute for stamp, minute in zip(stamps, minutes)]
    total: dict[str, int] = {}
    for label in labels:
        total[label] = total.get(label, 0) + 1
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if total[label] == 1 else f"{label} #{seen[label]}")
    return unique


def plot_drift_heatmap(ticks: list[dict[str, Any]]) -> str | None:
    """Each feature's drift effect (KS D or Cramér's V) on each tested batch; drifted cells are marked."""
    tested = [t for t in ticks if isinstance(t.get("data_drift"), dict) and t["data_drift"].get("tested")]
    if not tested:
        return None
    features: list[str] = []
    for tick in tested:
        for row in tick["data_drift"].get("features", []):
            if row["feature"] not in features:
                features.append(row["feature"])
    shown = features[:MAX_HEATMAP_FEATURES]
    cell_height = 18
    top = 30
    cell_width = PLOT_WIDTH / len(tested)
    parts = []
    for row_index, feature in enumerate(shown):
        y = top + row_index * cell_height
        parts.append(f'<text x="{LEFT - 6}" y="{y + 13}" text-anchor="end" fill="#1d2430">{_e(feature[:22])}</text>')
    for column, tick in enumerate(tested):
        x = LEFT + column * cell_width
        rows = {row["feature"]: row for row in tick["data_drift"].get("features", [])}
        for row_index, feature in enumerate(shown):
            row = rows.get(feature)
            y = top + row_index * cell_height
            effect = row.get("effect") if row else None
            tip = (f"{tick.get('started_at')} {feature}: "
                   + ("not tested" if row is None else
                      f"{'D' if row.get('test') == 'ks' else 'V'} = {number(effect)}, "
                      f"corrected p = {number(row.get('p_adjusted'), '.2g')}{', drifted' if row.get('drifted') else ''}"))
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{max(cell_width - 1, 1):.1f}" height="{cell_height - 1}" '
                         f'fill="{_heat_colour(effect)}"><title>{_e(tip)}</title></rect>')
            if row and row.get("drifted"):
                parts.append(f'<circle cx="{x + cell_width / 2:.1f}" cy="{y + cell_height / 2 - 0.5}" '
                             f'r="{min(4.0, cell_width / 3):.1f}" fill="#1d2430"/>')
    bottom = top + len(shown) * cell_height
    labels = column_labels([tick.get("started_at") for tick in tested])
    step = max(1, -(-(7 * max(len(label) for label in labels) + 12) // cell_width))  # no label overlaps the next
    right_edge = float("-inf")
    for column in range(0, len(tested), int(step)):
        half = 3.5 * len(labels[column])  # kept under the plot, not under the feature names
        x = min(max(LEFT + (column + 0.5) * cell_width, LEFT + half), LEFT + PLOT_WIDTH - half)
        if x - half < right_edge + 12:
            continue
        right_edge = x + half
        parts.append(f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle" fill="#5a6475">{_e(labels[column])}</text>')
    legend_y = 14
    for index, effect in enumerate((0.0, 0.1, 0.2, 0.3, 0.4, 0.5)):
        parts.append(f'<rect x="{LEFT + index * 34}" y="{legend_y - 8}" width="32" height="12" fill="{_heat_colour(effect)}" '
                     f'stroke="#dde2ea"/><text x="{LEFT + index * 34 + 16}" y="{legend_y + 1}" text-anchor="middle" '
                     f'font-size="10" fill="{"white" if effect >= 0.3 else "#1d2430"}">{effect:.1f}{"+" if effect == 0.5 else ""}</text>')
    parts.append(f'<circle cx="{LEFT + 222}" cy="{legend_y - 2}" r="4" fill="#1d2430"/>'
                 f'<text x="{LEFT + 232}" y="{legend_y + 2}">drifted (corrected p below alpha and effect above its floor)</text>')
    if len(features) > len(shown):
        parts.append(f'<text x="{LEFT}" y="{bottom + 32}" fill="#5a6475">and {len(features) - len(shown)} more features '
                     f'(logs/latest_drift.json has them all)</text>')
    return _svg(bottom + 40, parts, "feature drift heat map")


def _policy_score(tick: dict[str, Any], key: str) -> float | None:
    scores = (tick.get(key) or {}).get("scores") or {}
    metric = (tick.get("policy") or {}).get("metric", "f1")
    value = scores.get(metric)
    return value if isinstance(value, (int, float)) else None


class ReleaseLabels:
    """Places release-id labels next to their points, right or left, above or below, where a label
    overlaps no other label and no point; a label with no such place is left out (and counted)."""

    CHAR_WIDTH, HEIGHT = 6.1, 11.0  # font-size 10, digits and capitals
    BUCKET = 64.0  # boxes are kept by slices of x, so that a label is checked against its neighbours only

    def __init__(self, top: float, bottom: float, obstacles: list[tuple[float, float, float, float]]):
        self.top, self.bottom = top, bottom
        self.buckets: dict[int, list[tuple[float, float, float, float]]] = {}
        for box in obstacles:
            self._add(box)
        self.left_out = 0

    def _slices(self, box: tuple[float, float, float, float]) -> range:
        return range(int(box[0] // self.BUCKET), int(box[2] // self.BUCKET) + 1)

    def _add(self, box: tuple[float, float, float, float]) -> None:
        for index in self._slices(box):
            self.buckets.setdefault(index, []).append(box)

    def _free(self, box: tuple[float, float, float, float]) -> bool:
        return not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for index in self._slices(box) for b in self.buckets.get(index, ()))

    def place(self, x: float, y: float, text: str) -> list[str]:
        width = self.CHAR_WIDTH * len(text)
        for start in (x + 7, x - 7 - width):
            for baseline in (y - 7, y + 15):
                box = (start, baseline - self.HEIGHT + 2, start + width, baseline + 2)
                if box[0] < LEFT or box[2] > WIDTH - RIGHT or box[1] < self.top or box[3] > self.bottom:
                    continue
                if not self._free(box):
                    continue
                self._add(box)
                return [f'<text x="{start:.1f}" y="{baseline:.1f}" font-size="10" fill="#1d2430">{_e(text)}</text>']
        self.left_out += 1
        return []


def plot_timeline(ticks: list[dict[str, Any]], axis: TimeAxis) -> str:
    """Decisions on one time line, and every model trained: the candidate's and the deployed model's test scores."""
    trained = [t for t in ticks if _policy_score(t, "candidate") is not None and _when(t)]
    used = []
    for tick in ticks:
        if tick.get("decision") not in used:
            used.append(tick.get("decision"))
    # A model trained is drawn in its tick's decision colour, filled when it was deployed: the legend
    # has an entry for every colour and fill drawn (the cold start's blue included).
    kinds = []
    for tick in trained:
        kind = (tick.get("decision"), bool(tick.get("deployed_release_after")))
        if kind not in kinds:
            kinds.append(kind)
    legend = []
    for decision, deployed_now in kinds:
        colour = DECISION_COLOURS.get(decision, "#1d2430")
        fill = colour if deployed_now else "white"
        legend.append((f'<circle r="5" fill="{fill}" stroke="{colour}" stroke-width="2"/>',
                       f"model trained, {'deployed' if deployed_now else 'not deployed'} ({decision})"))
    if any(_policy_score(t, "deployed_on_test") is not None for t in trained):
        legend.append(('<rect x="-4" y="-4" width="8" height="8" fill="#9aa5b1"/>', "deployed model on the same test data"))
    parts, top = _legend(legend) if legend else ([], 14.0)
    lane_legend, top = _legend([(f'<rect x="-3" y="-7" width="6" height="14" fill="{DECISION_COLOURS.get(d, "#1d2430")}"/>',
                                 str(d)) for d in used], y=top + 4, heading="decisions:")
    parts += lane_legend
    bottom = top + 150
    lane = bottom + 30
    parts += _time_grid(axis, top, lane + 12)  # first, so that points and labels are drawn over it
    if trained:
        values = [v for t in trained for v in (_policy_score(t, "candidate"), _policy_score(t, "deployed_on_test")) if v is not None]
        low, high = max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05)
        metric = (trained[-1].get("policy") or {}).get("metric", "f1")
        grid, y = _value_axis(low, high, top, bottom, title=f"{metric} on the test data")
        parts += grid
        points = [(axis.x(_when(t)), y(_policy_score(t, "candidate")), _policy_score(t, "deployed_on_test"))
                  for t in trained]
        obstacles = [(x - 6, cy - 6, x + 6, cy + 6) for x, cy, _ in points]
        obstacles += [(x - 5, y(d) - 5, x + 5, y(d) + 5) for x, _, d in points if d is not None]
        obstacles += [(x - 1, min(cy, y(d)), x + 1, max(cy, y(d))) for x, cy, d in points if d is not None]
        labels = ReleaseLabels(top, bottom, obstacles)
        placed: list[str] = []
        for tick in reversed(trained):  # the newest releases first: they matter most when labels crowd
            if tick.get("deployed_release_after"):
                placed += labels.place(axis.x(_when(tick)), y(_policy_score(tick, "candidate")),
                                       str((tick.get("candidate") or {}).get("release_id", "")))
        for tick in trained:
            x = axis.x(_when(tick))
            candidate, deployed = _policy_score(tick, "candidate"), _policy_score(tick, "deployed_on_test")
            if deployed is not None:
                parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(deployed):.1f}" y2="{y(candidate):.1f}" stroke="#9aa5b1"/>')
                before = f"release {tick.get('deployed_release_before')} on the same test data: {number(deployed)}"
                parts.append(f'<rect x="{x - 4:.1f}" y="{y(deployed) - 4:.1f}" width="8" height="8" fill="#9aa5b1">'
                             f'<title>{_e(before)}</title></rect>')
            deployed_now = bool(tick.get("deployed_release_after"))
            colour = DECISION_COLOURS.get(tick.get("decision"), "#1d2430")
            release = (tick.get("candidate") or {}).get("release_id", "")
            tip = f"{tick.get('started_at')} {tick.get('decision')}: candidate {release} {number(candidate)}; {tick.get('reason', '')}"
            fill = colour if deployed_now else "white"
            parts.append(f'<circle cx="{x:.1f}" cy="{y(candidate):.1f}" r="5.5" fill="{fill}" stroke="{colour}" stroke-width="2">'
                         f'<title>{_e(tip)}</title></circle>')
        parts += placed
        if labels.left_out:
            parts.append(f'<text x="{LEFT + PLOT_WIDTH}" y="{bottom + 12}" text-anchor="end" font-size="10" fill="#5a6475">'
                         f'{labels.left_out} release label(s) left out where they would overlap: hover a point, or see '
                         f'the releases table</text>')
    else:
        parts.append(f'<text x="{LEFT}" y="{(top + bottom) / 2}" fill="#5a6475">no model trained in these ticks</text>')
    parts.append(f'<text x="{LEFT - 6}" y="{lane + 4}" text-anchor="end" fill="#1d2430">decisions</text>')
    for tick in ticks:
        when = _when(tick)
        if when is None:
            continue
        colour = DECISION_COLOURS.get(tick.get("decision"), "#1d2430")
        parts.append(f'<rect x="{axis.x(when) - 3:.1f}" y="{lane - 7}" width="6" height="14" fill="{colour}">'
                     f'<title>{_e(str(tick.get("started_at")) + " " + str(tick.get("decision")) + ": " + str(tick.get("reason", "")))}</title></rect>')
    return _svg(lane + 34, parts, "decisions and releases")


def _estimate_value(estimate: Any) -> tuple[float | None, list | None, str]:
    """Return (value, interval, what) of a scored file's label-free estimate (the risk lists'
    ``{"f1": 0.61, "f1_ci": [0.55, 0.66], ...}``)."""
    if not isinstance(estimate, dict) or not isinstance(estimate.get("f1"), (int, float)):
        return None, None, ""
    interval = estimate.get("f1_ci")
    return float(estimate["f1"]), interval if isinstance(interval, list) else None, "estimated f1"


def plot_scoring_estimates(ticks: list[dict[str, Any]], axis: TimeAxis) -> str | None:
    """The estimated performance of each scored unlabelled file (run line key scoring.files[].estimate)."""
    points = []
    for tick in ticks:
        scoring = tick.get("scoring")
        files = scoring.get("files") if isinstance(scoring, dict) else None
        for entry in files or []:
            if not isinstance(entry, dict):
                continue
            value, interval, what = _estimate_value(entry.get("estimate"))
            if value is not None and _when(tick):
                points.append((tick, entry, value, interval, what))
    if not points:
        return None
    values = [p[2] for p in points] + [v for p in points if p[3] for v in p[3] if isinstance(v, (int, float))]
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or 0.05
    parts, top = _legend([('<circle r="4.5" fill="#7b3294"/>', "estimate for a scored file"),
                          ('<line x1="-7" x2="7" stroke="#7b3294" transform="rotate(90)"/>', "its interval")])
    bottom = top + 150
    grid, y = _value_axis(low - pad, high + pad, top, bottom, title=points[-1][4])
    parts += grid + _time_grid(axis, top, bottom)
    for tick, entry, value, interval, what in points:
        x = axis.x(_when(tick))
        if interval and len(interval) == 2 and None not in interval:
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(interval[0]):.1f}" y2="{y(interval[1]):.1f}" stroke="#7b3294"/>')
        tip = f"{tick.get('started_at')} {entry.get('name')}: {what} {value:.3f}"
        parts.append(f'<circle cx="{x:.1f}" cy="{y(value):.1f}" r="4.5" fill="#7b3294"><title>{_e(tip)}</title></circle>')
    return _svg(bottom + 30, parts, "estimated performance of scored files")


REJECTED_MARK = ('<path d="M-4,-4L4,4M-4,4L4,-4" stroke="#d73027" stroke-width="2.2"/>'
                 '<rect x="-5" y="-5" width="10" height="10" fill="transparent"/>')


def plot_rows_ingested(ticks: list[dict[str, Any]], axis: TimeAxis) -> str | None:
    """Rows added per accepted file (duplicates stacked on top), and rejected files, on the time axis."""
    files = []
    for tick in ticks:
        ingest = tick.get("ingest") if isinstance(tick.get("ingest"), dict) else {}
        when = _when(tick)
        if when is None:
            continue
        for entry in ingest.get("accepted", []):
            duplicates = (entry.get("duplicates_in_file") or 0) + (entry.get("duplicates_of_earlier_rows") or 0)
            files.append((when, entry.get("name"), entry.get("rows_added") or 0, duplicates, None))
        for entry in ingest.get("rejected", []):
            files.append((when, entry.get("name"), 0, 0, entry.get("reason")))
    if not files:
        return None
    legend = [('<rect x="-4" y="-5" width="8" height="10" fill="#2f6fd6"/>', "rows added")]
    if any(duplicates for _, _, _, duplicates, _ in files):
        legend.append(('<rect x="-4" y="-5" width="8" height="10" fill="#9ecae1"/>', "duplicates dropped"))
    if any(rejected is not None for *_, rejected in files):
        legend.append((REJECTED_MARK, "file rejected (0 rows)"))
    parts, top = _legend(legend)
    bottom = top + 150
    high = max(max(added + duplicates for _, _, added, duplicates, _ in files), 1)
    grid, y = _value_axis(0, high * 1.05, top, bottom, fmt=",.0f", title="rows")
    parts += grid + _time_grid(axis, top, bottom)
    bar = min(8.0, max(2.0, PLOT_WIDTH / len(files) / 1.5))  # narrower bars when many files crowd the axis
    offsets: dict[float, int] = {}
    for when, name, added, duplicates, rejected in files:
        index = offsets.get(when, 0)
        offsets[when] = index + 1
        x = axis.x(when) - bar / 2 + index * (bar + 1)
        if rejected is not None:  # centred on the zero line: a rejected file added no rows
            parts.append(f'<g transform="translate({x + bar / 2:.1f},{y(0):.1f})">{REJECTED_MARK}'
                         f'<title>{_e(f"{name} rejected: {rejected}")}</title></g>')
            continue
        parts.append(f'<rect x="{x:.1f}" y="{y(added):.1f}" width="{bar:.1f}" height="{bottom - y(added):.1f}" '
                     f'fill="#2f6fd6"><title>{_e(f"{name}: {added:,} rows added, {duplicates:,} duplicates")}</title></rect>')
        if duplicates:
            parts.append(f'<rect x="{x:.1f}" y="{y(added + duplicates):.1f}" width="{bar:.1f}" '
                         f'height="{y(added) - y(added + duplicates):.1f}" fill="#9ecae1"/>')
    return _svg(bottom + 30, parts, "rows ingested per file")


# --- the page ------------------------------------------------------------------------------------


STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2430;max-width:1080px;margin:1.5em auto;padding:0 1.2em}
h1{font-size:1.45em;margin-bottom:.1em}h2{font-size:1.12em;margin:1.6em 0 .3em;border-bottom:1px solid #dde2ea;padding-bottom:.2em}
.sub,.muted{color:#5a6475}.sub{margin-top:0}.cards{display:flex;gap:.8em;flex-wrap:wrap;margin:1em 0}
.card{background:#f7f8fa;border:1px solid #e3e7ee;border-radius:6px;padding:.45em .9em;min-width:9em}
.card b{display:block;font-size:1.15em}.card span{color:#5a6475;font-size:.85em}
.alert{background:#fdecea;border-left:4px solid #d73027;padding:.5em 1em;margin:.4em 0}
.ok{background:#eaf6ee;border-left:4px solid #1a9850;padding:.5em 1em;margin:.4em 0}
table{border-collapse:collapse;font-size:.88em;width:100%}th,td{border:1px solid #dde2ea;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f5f8}td.n{text-align:right;font-variant-numeric:tabular-nums}td.when{white-space:nowrap}code{font-size:.9em}
svg{display:block;margin:.3em 0;max-width:100%;height:auto}
"""


def _card(label: str, value: Any) -> str:
    return f"<div class='card'><span>{_e(label)}</span><b>{_e(value)}</b></div>"


def render_dashboard(history: History, *, project: str, generated_at: str | None = None, alerts_on: bool = True) -> str:
    """Return the history page's HTML."""
    ticks = history.ticks
    axis = TimeAxis(_when(t) for t in ticks)
    last = history.last_tick or {}
    current = next((r for r in history.releases if r["release_id"] == history.current_release), None)
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>Churn model history: {_e(project)}</title><style>{STYLE}</style></head><body>",
             f"<h1>Churn model history: {_e(project)}</h1>",
             f"<p class='sub'>Written {_e(generated_at or utc_now())} from logs/runs.jsonl and the kept releases: "
             f"{'the last ' if not history.complete else ''}{len(ticks)} tick(s) that did work"
             f"{'' if history.complete else ' (older ones are in runs.jsonl)'}; the {history.idle_ticks_skipped} idle "
             f"tick(s) between them (nothing new) are not drawn. Times are UTC.</p>"]
    parts.append("<div class='cards'>")
    parts.append(_card("release served", history.current_release or "none yet"))
    if current:
        metric_scores = current["scores"]
        parts.append(_card("its F1 on the test data", number(metric_scores.get("f1"))))
        parts.append(_card("trained", _stamp(current.get("trained_at"))[:16]))
    # Only ticks that did work rewrite this page: the last of them is what it can promise to show.
    worked = ticks[-1] if ticks else None
    parts.append(_card("last tick that did work", _stamp(worked.get("started_at")) if worked else "none yet"))
    parts.append(_card("its decision", worked.get("decision") if worked else "-"))
    newest_idle = last and last is not worked and last.get("started_at") != (worked or {}).get("started_at")
    if newest_idle:
        parts.append(_card("newest tick when written", f"{_stamp(last.get('started_at'))} ({last.get('decision')})"))
    parts.append("</div><p class='muted'>Ticks that find nothing new do not rewrite this page; logs/fullprocess.log "
                 "(and the API's /metrics) has the newest tick.</p>")
    if history.active_alerts:
        for key, condition in sorted(history.active_alerts.items()):
            parts.append(f"<div class='alert'><b>{_e(condition.get('title', key))}</b> since {_e(condition.get('since'))} "
                         f"({_e(condition.get('ticks', 1))} tick(s))</div>")
    elif last and alerts_on:
        parts.append("<div class='ok'>No alert condition is active.</div>")
    elif last:
        parts.append("<p class='muted'>Alerts are off: no channel in the alerts section of config.json, so no "
                     "condition is tracked.</p>")

    if not ticks:
        parts.append("<p class='muted'>No tick has done any work yet: drop labelled CSV files into the source folder.</p>")
    sections = [
        ("The deployed model's score on each checked batch",
         "Each point is the deployed model's score on a batch of new labelled rows, with its 95% interval where the "
         "run line has one; the blue mark is the score expected of it and the red dashes the threshold under which "
         "the batch raises the alarm.", plot_scores(ticks, axis)),
        ("Feature drift", "Effect size of each feature's drift test on each batch: Kolmogorov-Smirnov D for numeric "
         "features, Cramér's V for categorical ones. Columns are batches, oldest left.", plot_drift_heatmap(ticks)),
        ("Decisions and releases", "Every model trained, with its score on the test data next to the deployed model's "
         "on the same rows; below, each tick that did work, coloured by its decision. Hover for the reasons.",
         plot_timeline(ticks, axis) if ticks else None),
        ("Estimated performance of scored files", "For files of current customers scored into risk lists: the "
         "performance the model is expected to have on them.", plot_scoring_estimates(ticks, axis)),
        ("Rows ingested per file", "Rows each accepted file added; duplicates dropped on top; rejected files as ×.",
         plot_rows_ingested(ticks, axis)),
    ]
    for title, caption, svg in sections:
        if svg is None:
            continue
        parts.append(f"<h2>{_e(title)}</h2><p class='muted'>{_e(caption)}</p>{svg}")
    if history.releases:
        parts.append("<h2>Releases kept</h2><table><thead><tr><th>release</th><th>trained</th><th>algorithm</th>"
                     "<th>training rows</th><th>F1</th><th>ROC AUC</th><th>test rows</th></tr></thead><tbody>")
        for release in reversed(history.releases):
            scores = release["scores"]
            mark = " (served)" if release["release_id"] == history.current_release else ""
            cells = [f"<code>{_e(release['release_id'])}</code>{mark}", _e(_stamp(release.get("trained_at"))),
                     _e(release.get("algorithm")), f"<td class=n>{_e(release.get('training_rows'))}",
                     f"<td class=n>{_fmt(scores.get('f1'))}", f"<td class=n>{_fmt(scores.get('roc_auc'))}",
                     f"<td class=n>{_e(scores.get('rows'))}"]
            parts.append("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}" for c in cells) + "</tr>")
        parts.append("</tbody></table>")
    if ticks:
        parts.append(f"<h2>The last {min(RECENT_ROWS, len(ticks))} ticks that did work</h2><table><thead><tr><th>started</th>"
                     "<th>decision</th><th>reason</th></tr></thead><tbody>")
        for tick in reversed(ticks[-RECENT_ROWS:]):
            reason = str(tick.get("reason", ""))
            parts.append(f"<tr><td class='when'>{_e(_stamp(tick.get('started_at')))}</td><td>{_e(tick.get('decision'))}</td>"
                         f"<td>{_e(reason[:400])}{'…' if len(reason) > 400 else ''}</td></tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _fmt(value: Any) -> str:
    return number(value if isinstance(value, (int, float)) else None)


def _stamp(stamp: Any) -> str:
    """Return a run line's stamp as the page shows it: 2026-12-03 06:06:24."""
    return str(stamp or "")[:19].replace("T", " ")


def write_dashboard(config: Config) -> Path:
    """Rewrite logs/dashboard.html from runs.jsonl and the releases; return its path."""
    history = read_history(config)
    path = config.paths.logs / DASHBOARD_FILE
    # A view rebuilt from state on every write: atomic, not fsynced.
    atomic_write_text(path, render_dashboard(history, project=config.root.name, alerts_on=bool(config.alerts.channels)),
                      durable=False)
    return path
