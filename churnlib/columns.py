"""Names and text, one way everywhere: column names normalised (data files, config.json, API
requests), and text from outside cut or escaped to fit one line of a log or an error message."""

from __future__ import annotations

import os
import re
import unicodedata

# A missing category is a category of its own, for the model and for the drift tests alike, and is
# shown as this in reasons, lists and statistics.
MISSING_CATEGORY = "(missing)"
_NON_WORD = re.compile(r"[\W_]+")
SHOWN_CHARS = 40
# Characters that would break a line of the logs or of the readable record.
_LINE_BREAKING = frozenset({"Cc", "Zl", "Zp"})


def normalise_column_name(name: str) -> str:
    """Return ``name`` lower-cased, every run of characters other than letters and digits
    turned into one ``_``, with no ``_`` at either end.

    ``"Call  Failure"`` -> ``"call_failure"``, ``"customerID"`` -> ``"customerid"``,
    ``"\\ufeffExited "`` -> ``"exited"``. An empty result means the name had no letters or digits.
    """
    return _NON_WORD.sub("_", name.strip().lower()).strip("_")


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """Return ``text`` cut to ``limit`` characters for a message (a hostile value may be megabytes)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown_name(name: str) -> str:
    """Return a file name fit for one line of text: undecodable bytes and line-breaking characters escaped."""
    # os.scandir hands bytes that are not UTF-8 over as lone surrogates, which no UTF-8 writer accepts.
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in _LINE_BREAKING else c for c in text)
