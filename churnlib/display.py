"""Values shown to people, one way everywhere: text escaped for HTML, numbers rounded for reading.

The history page, the release report and the alerts show the same figures; these two helpers are
the only place that decides how. Imports nothing (not even ``html``, which imports ``re``): a tick
with nothing new may use it.
"""

from __future__ import annotations

from typing import Any

MISSING = "n/a"


def html_text(value: Any) -> str:
    """Return ``value`` as text safe inside HTML or SVG, in an element or a quoted attribute (None: empty);
    the same as ``html.escape(text, quote=True)``."""
    text = "" if value is None else str(value)
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
            .replace("'", "&#x27;"))


def number(value: Any, spec: str = ".3f", *, missing: str = MISSING) -> str:
    """Return a number formatted by ``spec`` (0.7472899222005991 -> "0.747"), ``missing`` for None,
    and any other value as its text (a figure a run line holds as a string, say)."""
    if value is None:
        return missing
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)
