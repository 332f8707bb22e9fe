"""The one way column names are normalised: in data files, in config.json and in API requests."""

from __future__ import annotations

import re

_NON_WORD = re.compile(r"[\W_]+")


def normalise_column_name(name: str) -> str:
    """Return ``name`` lower-cased, every run of characters other than letters and digits
    turned into one ``_``, with no ``_`` at either end.

    ``"Call  Failure"`` -> ``"call_failure"``, ``"customerID"`` -> ``"customerid"``,
    ``"\\ufeffExited "`` -> ``"exited"``. An empty result means the name had no letters or digits.
    """
    return _NON_WORD.sub("_", name.strip().lower()).strip("_")
