"""Names and text, one way everywhere: column names normalised (data files, config.json, API
requests), and text from outside cut or escaped to fit one line of a log or an error message."""

from __future__ import annotations

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


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as os.scandir hands it over: shown as the byte
        return f"\\x{code - 0xDC00:02x}"
    return repr(char)[1:-1]  # \n, \r, \x1b, \u2028, a lone \ud800


def _breaks_lines(char: str) -> bool:
    return unicodedata.category(char) in _LINE_BREAKING or "\ud800" <= char <= "\udfff"


def shown_name(name: str) -> str:
    """Return a file name (or any text) fit for one line of text: undecodable bytes and line-breaking
    characters escaped. The one display form of a user's file name in logs, alerts, keys and pages."""
    # os.scandir hands bytes that are not UTF-8 over as lone surrogates, which no UTF-8 writer accepts.
    if name.isprintable():
        return name
    return "".join(_escaped(c) if _breaks_lines(c) else c for c in name)


def shown_lines(text: str, *, indent: str = "") -> str:
    """Return ``text`` as ``shown_name`` would, but keeping its line feeds, each followed by ``indent``.

    For text of several lines (a log record with a traceback, an alert's body): no character in it
    can fail a UTF-8 writer or start a line that looks like a line of its own (given an ``indent``).
    """
    if text.isprintable():
        return text
    return ("\n" + indent).join(shown_name(line) for line in text.split("\n"))
