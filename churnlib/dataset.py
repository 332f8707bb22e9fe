"""Reading and validating labelled CSV data against the schema, one way for every step.

A file is read as UTF-8 text, every cell as a string, and only then typed column by column, so that
each problem is reported with the column and row it is in. Column names go through
``normalise_column_name``. The typed frame always has the columns of the frozen schema in its order:
id columns, features, target.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from churnlib.columns import normalise_column_name, shown
from churnlib.config import SchemaSettings
from churnlib.errors import ChurnError, SourceReadError

# Cells that mean "missing" in a numeric column (compared lower-cased, after stripping).
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "-"})
MAX_CELL_CHARS = 10_000
# Column names are copied into the record and the logs, and every column costs pandas time even
# when it is ignored: a header past these limits is a broken or hostile file, not a wide table.
MAX_NAME_CHARS = 1_000
MAX_COLUMNS = 10_000
MAX_EXAMPLES = 3
# UTF-32 first: its little-endian mark starts with UTF-16's.
_BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                     (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
_DELIMITERS = ((";", "';'"), ("\t", "tab"), ("|", "'|'"))


class DatasetError(ChurnError, ValueError):
    """A dataset that does not fit the schema; the message names the file, column and row."""


@dataclass(frozen=True)
class FrozenSchema:
    """The columns of the ingested data, fixed when the first file is accepted."""

    target: str
    id_columns: tuple[str, ...]
    feature_columns: tuple[str, ...]
    categorical_columns: tuple[str, ...]

    @cached_property  # read on every API request; the schema never changes
    def numeric_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.feature_columns if c not in self.categorical_columns)

    @cached_property
    def feature_places(self) -> dict[str, tuple[bool, int]]:
        """Each feature's place in a Batch: (True, its index among the numeric columns) or (False,
        its index among the categorical ones). Read on every API request that asks for reasons."""
        places = {c: (True, j) for j, c in enumerate(self.numeric_columns)}
        places.update((c, (False, j)) for j, c in enumerate(self.categorical_columns))
        return places

    @property
    def columns(self) -> tuple[str, ...]:
        return self.id_columns + self.feature_columns + (self.target,)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "id_columns": list(self.id_columns),
            "feature_columns": list(self.feature_columns),
            "categorical_columns": list(self.categorical_columns),
            "numeric_columns": list(self.numeric_columns),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FrozenSchema":
        return cls(
            target=data["target"],
            id_columns=tuple(data["id_columns"]),
            feature_columns=tuple(data["feature_columns"]),
            categorical_columns=tuple(data["categorical_columns"]),
        )

    def describe(self) -> str:
        """Return a one-line human description of the schema."""
        numeric = ", ".join(self.numeric_columns) or "none"
        categorical = ", ".join(self.categorical_columns) or "none"
        ids = ", ".join(self.id_columns) or "none"
        return f"target {self.target}; numeric: {numeric}; categorical: {categorical}; ids: {ids}"


@dataclass
class ParsedFile:
    """A validated file: its typed rows in schema order, and what was noticed while reading it."""

    frame: pd.DataFrame
    schema: FrozenSchema
    rows_read: int
    ignored_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _line_number(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _refuse_other_encodings(start: bytes, name: str) -> None:
    for mark, encoding in _BYTE_ORDER_MARKS:
        # Excel's "Unicode text" is UTF-16: full of NUL bytes, but text, and the fix is the encoding.
        if start.startswith(mark):
            raise DatasetError(f"{name}: {encoding} text (it starts with a {encoding} byte-order mark); "
                               "save the file as UTF-8")


def _binary(name: str, line: int, offset: int) -> DatasetError:
    return DatasetError(f"{name}: binary data (a NUL byte on line {line}, offset {offset}), not a CSV text file")


def _not_utf8(name: str, byte: int, line: int, offset: int) -> DatasetError:
    return DatasetError(f"{name}: not UTF-8 text (byte 0x{byte:02x} on line {line}, offset {offset}); "
                        "save the file as UTF-8")


def decode_text(data: bytes, name: str) -> str:
    """Return the file's bytes as text, or raise DatasetError saying why they are not CSV text."""
    if not data.strip():
        raise DatasetError(f"{name}: empty file")
    _refuse_other_encodings(data, name)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _binary(name, _line_number(data, nul), nul)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(name, data[exc.start], _line_number(data, exc.start), exc.start) from None


def _first_line(text: str) -> str:
    """Return the first line that is not blank (the header, unless a quoted name spans lines)."""
    for line in io.StringIO(text, newline=""):
        if line.strip():
            return line.strip()
    return ""


def _delimiter_hint(header: str) -> str | None:
    """Return the delimiter a header without commas seems to use (as shown to people), or None."""
    if "," in header:
        return None
    for delimiter, label in _DELIMITERS:
        if delimiter in header:
            return label
    return None


def _header_width(text: str) -> int:
    """Return the number of fields in the header record, or 0 when the csv module cannot tell."""
    try:
        for row in csv.reader(io.StringIO(text, newline="")):
            if any(cell.strip() for cell in row) or len(row) > 1:
                return len(row)
    except csv.Error:  # a name past the csv module's field limit: _header names it
        return 0
    return 0


class RecordWidths:
    """The number of fields of each record of CSV text, counted as the text goes by.

    pandas' reader pads a row with fewer fields than the header with empty cells, silently: a row
    cut short (``shortrow,10,200`` under a 6-column header, a file cut off mid-write) would read as
    missing values. Rows are numbered as everywhere else: data rows from 1, blank rows not counted.
    Text is handed over with ``feed`` (a block at a time; an empty block is the end) and ``check``
    counts every complete record fed so far. Lines without a quote are counted by their commas, a
    batch at a time; a quoted record (it may hold commas and line breaks) by the csv module, whose
    rules are pandas' for well-formed files.
    """

    # Quotes that do not pair up within this many lines are quotes inside unquoted cells (O"Brien, 5"),
    # plain characters to pandas and the csv module: the lines so far are counted as the csv module
    # reads them, and counting goes on (a quoted cell this long is refused for its length anyway).
    MAX_QUOTED_LINES = 10_000

    def __init__(self, name: str):
        self.name = name
        self.header_fields: int | None = None  # the first record that is not blank is the header
        self.lines: list[str] = []  # complete lines not counted yet
        self.partial = ""  # the text after the last line break
        self.ended = False
        self.rows = 0
        self.broken = False  # could not follow (a cell past the csv module's limit)

    def feed(self, text: str) -> None:
        if not text:
            self.ended = True
            if self.partial:
                self.lines.append(self.partial)
                self.partial = ""
            return
        lines = io.StringIO(self.partial + text, newline="").readlines()  # splits at \n, \r and \r\n only
        self.partial = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        self.lines.extend(lines)

    def check(self) -> None:
        """Count the records fed so far; raise DatasetError for the first whose number of fields is not the header's."""
        lines, self.lines = self.lines, []
        quoted_lines = np.flatnonzero(np.fromiter(map(str.__contains__, lines, itertools.repeat('"')), dtype=bool,
                                                  count=len(lines)))
        start = 0
        while start < len(lines) and not self.broken:
            if self.header_fields is None or '"' in lines[start]:
                end = self._quoted_end(lines, start) if '"' in lines[start] else start + 1
                if end is None:  # a quoted record that goes on past the text fed so far
                    self.lines = lines[start:] + self.lines
                    return
                try:
                    records = list(csv.reader(lines[start:end]))
                except csv.Error:  # a cell past the csv module's size limit
                    self.broken = True
                    return
                for record in records:
                    self._count(len(record), not any(cell.strip() for cell in record))
                start = end
                continue
            following = np.searchsorted(quoted_lines, start)  # the first line from start with a quote
            quoted = int(quoted_lines[following]) if following < len(quoted_lines) else len(lines)
            self._count_plain(lines[start:quoted])
            start = quoted

    def _quoted_end(self, lines: list[str], start: int) -> int | None:
        """Return the end of the lines that make whole records from ``start`` (no quoted cell left open), or None."""
        inside = False
        for end in range(start, min(len(lines), start + self.MAX_QUOTED_LINES)):
            line = lines[end]
            if not inside and _WHOLE_CELLS.fullmatch(line):
                return end + 1  # whole cells only (every cell quoted: the common case), at C speed
            inside = _inside_quotes_after(line, inside)
            if not inside:
                return end + 1
        if len(lines) - start >= self.MAX_QUOTED_LINES:
            return len(lines)
        return len(lines) if self.ended else None

    def _count(self, fields: int, blank: bool) -> None:
        if blank and (fields < 2 or self.header_fields is not None):
            return
        if self.header_fields is None:
            self.header_fields = fields
            return
        self.rows += 1
        if fields != self.header_fields:
            raise DatasetError(f"{self.name}: row {self.rows} has {fields} fields, the header has {self.header_fields}")

    def _count_plain(self, lines: list[str]) -> None:
        """Count lines without a quote, by their commas, all at once."""
        commas = np.fromiter(map(str.count, lines, itertools.repeat(",")), dtype=np.int64, count=len(lines))
        blank = np.fromiter(map(len, map(str.strip, lines, itertools.repeat(_BLANK_LINE_CHARACTERS))),
                            dtype=np.int64, count=len(lines)) == 0
        wrong = np.flatnonzero((commas + 1 != self.header_fields) & ~blank)
        if len(wrong):
            first = int(wrong[0])
            self.rows += first - int(blank[:first].sum())
            self._count(int(commas[first]) + 1, False)
        self.rows += len(lines) - int(blank.sum())


def _inside_quotes_after(line: str, inside: bool) -> bool:
    """Return whether a quoted cell is still open at the end of ``line`` (``inside``: open at its start).

    The csv module's and pandas' rule: a quote opens a quoted cell only at the start of a cell; inside
    one, ``""`` is a quote and a lone quote closes it; any other quote (``O"Brien``, ``5"``) is text.
    """
    position = 0
    while True:
        if inside:
            close = line.find('"', position)
            while close != -1 and line.startswith('"', close + 1):  # "" inside a quoted cell
                close = line.find('"', close + 2)
            if close == -1:
                return True
            inside = False
            position = line.find(",", close + 1)  # the rest of the cell is text
            if position == -1:
                return False
        opening = _QUOTED_CELL_START.search(line, position)
        if opening is None:
            return False
        inside, position = True, opening.end()


_QUOTED_CELL_START = re.compile(r'(?:^|,)"')
_WHOLE_CELLS = re.compile(r'(?:"(?:[^"]|"")*"|[^,"]*)(?:,(?:"(?:[^"]|"")*"|[^,"]*))*[\r\n]*')
_BLANK_LINE_CHARACTERS = ", \t\r\n\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004" \
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # str.strip()'s whitespace, and commas


def _check_record_widths(text: str, name: str) -> None:
    """Raise DatasetError for the first row of ``text`` whose number of fields is not the header's."""
    if '"' not in text and "\r" not in text:
        # pandas has refused rows with more fields than the header: when the commas add up to the
        # header's on every line, no line has fewer (a thousand times faster than counting each line).
        lines = text.count("\n") + (not text.endswith("\n"))
        if text.count(",") == text[:text.find("\n") % (len(text) + 1)].count(",") * lines:
            return
    widths = RecordWidths(name)
    widths.feed(text)
    widths.feed("")
    widths.check()


def _read_cells(text: str, name: str) -> list[np.ndarray]:
    """Return the CSV text's columns as arrays of stripped strings (item 0 is the header); blank lines dropped."""
    width = _header_width(text)
    if width > MAX_COLUMNS:
        raise DatasetError(f"{name}: the header has {width:,} columns (at most {MAX_COLUMNS:,} are read)")
    try:
        cells = pd.read_csv(io.StringIO(text), header=None, dtype=object, na_filter=False,
                            skip_blank_lines=True, engine="c")
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{name}: empty file") from None
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{name}: not a well-formed CSV file: {_parser_problem(exc, text)}") from None
    _check_record_widths(text, name)
    # Plain comprehensions: pandas' .str methods cost ten times more per cell.
    columns = [np.array([value.strip() for value in column.tolist()], dtype=object)
               for _label, column in cells.items()]
    blank = np.logical_and.reduce([column == "" for column in columns])
    if len(blank):
        blank[0] = False  # a header of only commas is a header without names, not a blank line to skip
    if blank.any():
        columns = [column[~blank] for column in columns]
    return columns


def _parser_problem(exc: Exception, text: str) -> str:
    """Return pandas' tokenizer error in words, with lines counted from 1 and a delimiter hint."""
    message = str(exc).strip().splitlines()[-1].replace("Error tokenizing data. C error: ", "")
    match = re.fullmatch(r"EOF inside string starting at row (\d+)", message)
    if match:  # pandas counts this one from 0, unlike its "Expected n fields in line m"
        message = f"a quoted field starting on line {int(match.group(1)) + 1} is never closed (unmatched '\"')"
    label = _delimiter_hint(_first_line(text))
    if label:
        message += f"; the header has no ',', the file seems to use {label} as delimiter (only ',' is read)"
    return message


def _header(raw_names: list[str], name: str) -> list[str]:
    for position, raw in enumerate(raw_names, start=1):
        if len(raw) > MAX_NAME_CHARS:
            raise DatasetError(f"{name}: header column {position}: a name of {len(raw):,} characters "
                               f"(at most {MAX_NAME_CHARS:,} are read)")
    names = [normalise_column_name(str(raw)) for raw in raw_names]
    if not any(names):
        raise DatasetError(f"{name}: the header (first line) has no column names: {shown(','.join(raw_names))!r}")
    for position, (raw, normal) in enumerate(zip(raw_names, names), start=1):
        if not normal:
            raise DatasetError(f"{name}: header column {position} ({shown(raw)!r}) has no name")
    seen: dict[str, str] = {}
    for raw, normal in zip(raw_names, names):
        if normal in seen:
            raise DatasetError(
                f"{name}: duplicate column name {shown(normal)!r} "
                f"(header has {shown(seen[normal])!r} and {shown(raw)!r})"
            )
        seen[normal] = raw
    return names


def _missing_target_message(name: str, target: str, raw_names: list[str]) -> str:
    message = f"{name}: target column {target!r} missing"
    if len(raw_names) == 1:
        label = _delimiter_hint(raw_names[0])
        if label:
            return f"{message}; the header is one column, the file seems to use {label} as delimiter (only ',' is read)"
    numbers = [cell for cell in raw_names if _is_number(cell) and np.isfinite(float(cell))]
    if numbers:  # column names are not numbers: the first line is a data row
        return (f"{message}; the first line looks like data (it holds the number {shown(numbers[0])!r}), "
                "the file seems to have no header")
    names = ", ".join(repr(shown(c)) for c in raw_names[:8]) + (", ..." if len(raw_names) > 8 else "")
    return f"{message}; header has {names}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _examples(rows: Iterable[int], values: Iterable[str]) -> str:
    examples = []
    for row, value in zip(rows, values):
        examples.append(f"row {row}: {shown(value)!r}")
        if len(examples) == MAX_EXAMPLES:
            break
    return ", ".join(examples)


def _missing(values: np.ndarray) -> np.ndarray:
    return np.array([value.lower() in MISSING_TOKENS for value in values.tolist()], dtype=bool)


_PLAIN_NUMBER_CHARACTERS = str.maketrans("", "", "0123456789+-.eE\n")


def _plain_numbers(values: np.ndarray) -> np.ndarray | None:
    """Return a column of plain decimal numbers (no blanks, words or missing tokens) as float64, fast; else None.

    Within these characters Python's float() reads exactly what pandas.to_numeric reads; anything
    else (a blank, "NA", "inf", "1_000", Arabic digits) goes to parse_numeric's careful path.
    """
    text = "\n".join(values.tolist())
    if not text.isascii() or text.translate(_PLAIN_NUMBER_CHARACTERS):
        return None
    try:
        return values.astype(np.float64)
    except ValueError:  # "", "1e", "1.2.3": the careful path names them
        return None


def parse_numeric(values: np.ndarray, *, label: str, first_row: int = 1, fast: bool = False) -> np.ndarray:
    """Return stripped strings as float64 (missing tokens as NaN), or raise DatasetError naming bad cells.

    Row numbers in messages count data rows from 1, as a spreadsheet user sees them below the header
    (``first_row`` is the number of ``values[0]``, for a file read in chunks). ``fast``: a column of
    plain decimal numbers is read by Python's float() (four times faster; values equal to
    pandas.to_numeric's but perhaps for the last bit of numbers of more than 17 digits, so the
    ingested data, whose text is compared across files, keeps pandas).
    """
    if fast:
        numbers = _plain_numbers(values)
        if numbers is not None and not np.isinf(numbers).any():
            return numbers
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    bad, infinite = _numeric_problems(values, numbers)
    if len(bad):
        raise DatasetError(_not_numbers_message(label, len(bad), bad + first_row, values[bad]))
    if len(infinite):
        raise DatasetError(_infinite_message(label, len(infinite), infinite + first_row, values[infinite]))
    return numbers


def _numeric_problems(values: np.ndarray, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the positions of the cells that are not numbers (nor missing), and of the infinite ones."""
    failed = np.flatnonzero(np.isnan(numbers))
    bad = failed[~_missing(values[failed])] if len(failed) else failed  # "nan" parses; "NA" and "" do not: both are missing
    return bad, np.flatnonzero(np.isinf(numbers))


def _not_numbers_message(label: str, count: int, rows: Iterable[int], values: Iterable[str]) -> str:
    return f"{label}: {count} value(s) are not numbers ({_examples(rows, values)})"


def _infinite_message(label: str, count: int, rows: Iterable[int], values: Iterable[str]) -> str:
    return f"{label}: {count} value(s) are infinite ({_examples(rows, values)})"


def parse_target(values: np.ndarray, *, label: str, positive: tuple[str, ...], negative: tuple[str, ...]) -> np.ndarray:
    """Return stripped target strings as 0/1 int64, or raise DatasetError naming cells that are not a class."""
    result, unknown = _target_classes(values, positive=positive, negative=negative)
    if len(unknown):
        bad = values[unknown]
        raise DatasetError(_target_message(label, len(unknown), unknown + 1, bad, all_blank=bool((bad == "").all()),
                                           distinct=sorted(set(bad.tolist()))[:5], positive=positive,
                                           negative=negative))
    return result


def _target_classes(values: np.ndarray, *, positive: tuple[str, ...],
                    negative: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Return stripped target strings as 0/1 int64 (-1 where neither class), and the positions of the -1s."""
    classes = {**{text: 0 for text in negative}, **{text: 1 for text in positive}}
    result = np.array([classes.get(value.lower(), -1) for value in values.tolist()], dtype=np.int64)
    unknown = np.flatnonzero(result < 0)
    if len(unknown):
        # "1.0" and "0.0" are the same classes as "1" and "0".
        numbers = pd.to_numeric(values[unknown], errors="coerce")
        result[unknown[numbers == 1.0]] = 1
        result[unknown[numbers == 0.0]] = 0
        unknown = np.flatnonzero(result < 0)
    return result, unknown


def _target_message(label: str, count: int, rows: Iterable[int], values: Iterable[str], *, all_blank: bool,
                    distinct: list[str], positive: tuple[str, ...], negative: tuple[str, ...]) -> str:
    if all_blank:
        return f"{label}: {count} row(s) have no label ({_examples(rows, values)})"
    expected = "/".join(positive[:1] + negative[:1])
    return (f"{label}: values that read as neither class ({expected}, yes/no, true/false): "
            f"{', '.join(repr(v) for v in distinct)} ({_examples(rows, values)})")


def _strings(values: np.ndarray) -> np.ndarray:
    """Return stripped text as an object array, blank cells as NaN (what scikit-learn's imputers expect)."""
    out = values.copy()
    out[values == ""] = np.nan
    return out


def _check_cell_lengths(cells: dict[str, np.ndarray], columns: Iterable[str], *, name: str, first_row: int) -> None:
    """Raise DatasetError for a cell of more than MAX_CELL_CHARS characters in one of ``columns``."""
    for column in columns:
        if column not in cells or len(cells[column]) == 0:
            continue
        lengths = np.fromiter(map(len, cells[column].tolist()), dtype=np.int64, count=len(cells[column]))
        if lengths.max() > MAX_CELL_CHARS:
            raise DatasetError(_long_cell_message(name, column, int(lengths.argmax()) + first_row, int(lengths.max())))


def _long_cell_message(name: str, column: str, row: int, length: int) -> str:
    return f"{name}: column {column!r} row {row}: a value of {length:,} characters (at most {MAX_CELL_CHARS:,} are read)"


def _typed_columns(cells: dict[str, np.ndarray], schema: FrozenSchema, *, name: str, rows: int,
                   first_row: int, fast: bool = False, numeric=None) -> dict[str, Any]:
    """Return the id and feature columns typed by the schema (ids and categories as text, blank as NaN).

    Numbers are parsed by ``parse_numeric``, which raises at the first bad value, or by
    ``numeric(column, values)`` when given (a chunked file collects its problems instead)."""
    typed: dict[str, Any] = {}
    for column in schema.id_columns:
        typed[column] = _strings(cells[column]) if column in cells else np.full(rows, np.nan, dtype=object)
    for column in schema.feature_columns:
        if column in schema.categorical_columns:
            typed[column] = _strings(cells[column])
        elif numeric is not None:
            typed[column] = numeric(column, cells[column])
        else:
            typed[column] = parse_numeric(cells[column], label=f"{name}: column {column!r}", first_row=first_row,
                                          fast=fast)
    return typed


def infer_schema(cells: dict[str, np.ndarray], settings: SchemaSettings) -> FrozenSchema:
    """Return the frozen schema for the first accepted file: configured columns, or all but target and ids."""
    names = list(cells)
    ids = tuple(c for c in settings.id_columns if c in names)
    if settings.feature_columns is not None:
        features = settings.feature_columns
    else:
        features = tuple(c for c in names if c != settings.target and c not in settings.id_columns)
    if settings.categorical_columns is not None:
        categorical = tuple(c for c in features if c in settings.categorical_columns)
    else:
        categorical = tuple(c for c in features if c in cells and not _looks_numeric(cells[c]))
    return FrozenSchema(settings.target, ids, tuple(features), categorical)


def _looks_numeric(values: np.ndarray) -> bool:
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    failed = np.isnan(numbers)
    return bool(_missing(values[failed]).all())


def parse_labelled_csv(data: bytes, *, name: str, settings: SchemaSettings, schema: FrozenSchema | None) -> ParsedFile:
    """Return the validated, typed rows of one labelled CSV file, or raise DatasetError with the reason.

    ``schema`` is the frozen schema of the data ingested so far (None for the first file, whose
    columns then define it).
    """
    text = decode_text(data, name)
    columns = _read_cells(text, name)
    if not columns or len(columns[0]) == 0:
        raise DatasetError(f"{name}: empty file")
    raw_names = [str(column[0]) for column in columns]
    names = _header(raw_names, name)
    cells = {column_name: column[1:] for column_name, column in zip(names, columns)}
    rows = len(columns[0]) - 1
    if rows == 0:
        raise DatasetError(f"{name}: header only, no data rows")
    target = settings.target
    if target not in cells:
        raise DatasetError(_missing_target_message(name, target, raw_names))
    if schema is None:
        schema = infer_schema(cells, settings)
    missing = [c for c in schema.feature_columns if c not in cells]
    if missing:
        raise DatasetError(f"{name}: feature column(s) missing: {', '.join(missing)}")
    ignored = [c for c in names if c not in set(schema.columns)]
    _check_cell_lengths(cells, schema.columns, name=name, first_row=1)
    typed = _typed_columns(cells, schema, name=name, rows=rows, first_row=1)
    typed[target] = parse_target(cells[target], label=f"{name}: target {target!r}",
                                 positive=settings.positive_labels, negative=settings.negative_labels)
    frame = pd.DataFrame(typed)
    notes = []
    classes = np.unique(typed[target]).tolist()
    if len(classes) == 1:
        notes.append(f"only class {classes[0]} present")
    return ParsedFile(frame=frame, schema=schema, rows_read=rows, ignored_columns=ignored, notes=notes)


# --- unlabelled files (customers to score), read in chunks -----------------------------------

READ_BLOCK_BYTES = 1 << 20
CELLS_PER_CHUNK = 2_000_000  # wide files are read in fewer rows at a time


class _SizedText(io.TextIOBase):
    """A text stream that hands out its text (decoded a block at a time by ``_next_text``) in the sizes asked for.

    pandas keeps what a read returns past the size it asked for and copies it again on each read:
    text handed out a whole block at a time piles up there, half a large file and more."""

    pending = ""  # text decoded, not read yet

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        """Return at most ``size`` characters (a block's when ``size`` is negative); "" at the end."""
        if not self.pending:
            self.pending = self._next_text()
        if size is None or size < 0 or size >= len(self.pending):
            text, self.pending = self.pending, ""
        else:
            text, self.pending = self.pending[:size], self.pending[size:]
        return text

    def _next_text(self) -> str:
        raise NotImplementedError


class _CheckedText(_SizedText):
    """The text of a binary file, decoded block by block, refusing what ``decode_text`` refuses:
    UTF-16/32, NUL bytes (binary data), bytes that are not UTF-8; each named with its line and offset."""

    def __init__(self, handle: Any, name: str, widths: RecordWidths | None = None):
        self.handle = handle
        self.name = name
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self.offset = 0
        self.line = 1
        self.widths = widths  # counts the fields of each record as the text goes by

    def _next_text(self) -> str:
        block = self.handle.read(READ_BLOCK_BYTES)
        if self.offset == 0:
            _refuse_other_encodings(block, self.name)
        nul = block.find(b"\x00")
        if nul >= 0:
            raise _binary(self.name, self.line + block.count(b"\n", 0, nul), self.offset + nul)
        try:
            text = self.decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            # The decoder may hold back up to 3 bytes of an unfinished character from the block before.
            start = max(0, exc.start - (len(exc.object) - len(block)))
            raise _not_utf8(self.name, exc.object[exc.start], self.line + block.count(b"\n", 0, start),
                            self.offset + start) from None
        self.line += block.count(b"\n")
        self.offset += len(block)
        if self.widths is not None:
            self.widths.feed(text)
        return text


@dataclass
class CustomerChunk:
    """Validated rows of an unlabelled file: ``frame`` holds its id columns (those in the file) and
    the features, typed by the schema; ``first_row`` is the data row number of its first row."""

    frame: pd.DataFrame
    first_row: int
    texts: dict[str, np.ndarray] = field(default_factory=dict)  # numeric column -> each cell's text, as in the file


@dataclass
class CustomerFile:
    """An unlabelled file being read: its header, and its rows chunk by chunk (``chunks``)."""

    name: str
    id_names: dict[str, str]  # id column -> the header's own spelling of it
    ignored_columns: list[str]
    chunks: Any  # an iterator of CustomerChunk; each validated as it is read


def read_customer_file(handle: Any, *, name: str, schema: FrozenSchema, target: str,
                       chunk_rows: int = 100_000) -> CustomerFile:
    """Return an unlabelled CSV file (an open binary ``handle``) ready to be read in chunks.

    Validated like a labelled file (``parse_labelled_csv``), minus the target: UTF-8 text, a header
    without duplicate names, every row as many fields as the header (a short row is refused, not
    padded with missing values), every feature column, numbers in numeric columns, cells of a readable
    size. A ``target`` column, if present, is ignored, as are columns the schema does not know. The
    header is checked here; each chunk as it is read, so a bad row far into a large file raises
    DatasetError (naming the file, column and row) only when its chunk is reached. Memory holds one
    chunk of at most ``chunk_rows`` rows (fewer for a wide file), whatever the file's size.
    """
    widths = RecordWidths(name)
    text = _CheckedText(handle, name, widths)
    first = text.read()
    width = _header_width(first)
    if width > MAX_COLUMNS:
        raise DatasetError(f"{name}: the header has {width:,} columns (at most {MAX_COLUMNS:,} are read)")
    rows_at_once = max(1, min(chunk_rows, CELLS_PER_CHUNK // max(width, 1)))
    stream = _Rewound(first, text)
    try:
        reader = pd.read_csv(stream, header=None, dtype=object, na_filter=False, skip_blank_lines=True, engine="c",
                             chunksize=rows_at_once)
        cells = next(reader)
    except (pd.errors.EmptyDataError, StopIteration):
        raise DatasetError(f"{name}: empty file") from None
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{name}: not a well-formed CSV file: {_parser_problem(exc, first)}") from None
    columns = _stripped_columns(cells)
    if not columns or len(columns[0]) == 0:
        raise DatasetError(f"{name}: empty file")
    raw_names = [str(column[0]) for column in columns]
    names = _header(raw_names, name)
    missing = [c for c in schema.feature_columns if c not in names]
    if missing:
        hint = _delimiter_hint(raw_names[0]) if len(raw_names) == 1 else None
        raise DatasetError(f"{name}: feature column(s) missing: {', '.join(missing)}"
                           + (f"; the header is one column, the file seems to use {hint} as delimiter "
                              "(only ',' is read)" if hint else ""))
    known = set(schema.id_columns) | set(schema.feature_columns)
    ignored = [c for c in names if c not in known]
    id_names = {normal: raw for normal, raw in zip(names, raw_names) if normal in schema.id_columns}
    first_rows = [column[1:] for column in columns]

    def rest():
        while True:
            try:
                frame = next(reader)
            except StopIteration:
                return
            except pd.errors.ParserError as exc:
                raise DatasetError(f"{name}: not a well-formed CSV file: {_parser_problem(exc, first)}") from None
            yield _stripped_columns(frame, keep_first=False)

    def chunks():
        next_row = 1
        for block in itertools.chain([first_rows], rest()):
            rows = len(block[0])
            if rows == 0:
                continue
            if len(block) != len(names):
                raise DatasetError(f"{name}: not a well-formed CSV file: row {next_row} onwards has {len(block)} "
                                   f"fields, the header has {len(names)}")
            widths.check()  # a short row is padded by pandas: refuse it
            cells = dict(zip(names, block))
            _check_cell_lengths(cells, known, name=name, first_row=next_row)
            typed = _typed_columns(cells, schema, name=name, rows=rows, first_row=next_row, fast=True)
            present = {c: typed[c] for c in schema.id_columns if c in id_names}
            present.update((c, typed[c]) for c in schema.feature_columns)
            yield CustomerChunk(frame=pd.DataFrame(present), first_row=next_row,
                                texts={c: cells[c] for c in schema.numeric_columns})
            next_row += rows
        widths.check()  # the end of the file has been read: the last rows are counted
        if next_row == 1:
            raise DatasetError(f"{name}: header only, no data rows")

    return CustomerFile(name=name, id_names=id_names, ignored_columns=ignored, chunks=chunks())


class _Rewound(io.TextIOBase):
    """A text stream whose first block, already read, is served again before the rest."""

    def __init__(self, first: str, rest: _CheckedText):
        self.first = first
        self.rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> str:
        if self.first:
            text, self.first = self.first, ""
            return text
        return self.rest.read(size)


def _stripped_columns(cells: pd.DataFrame, *, keep_first: bool = True) -> list[np.ndarray]:
    """Return a chunk's columns as arrays of stripped strings, rows of blank cells dropped (but the
    first row, the header, when ``keep_first``)."""
    columns = [np.array([value.strip() for value in column.tolist()], dtype=object) for _label, column in cells.items()]
    blank = np.logical_and.reduce([column == "" for column in columns]) if columns else np.zeros(0, dtype=bool)
    if keep_first and len(blank):
        blank[0] = False
    if blank.any():
        columns = [column[~blank] for column in columns]
    return columns


# --- the canonical text of a row: what finaldata.csv holds and what duplicates are judged on ---


def _format_numbers(values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), "", dtype=object)
    present = ~np.isnan(values)
    integral = present & (np.floor(values) == values) & (np.abs(values) < 2.0**53)
    out[integral] = values[integral].astype(np.int64).astype(str)
    other = present & ~integral
    # numpy's float-to-text is the shortest text that reads back as the same float.
    out[other] = values[other].astype(str)
    return out


def _format_strings(values: list[Any]) -> list[str]:
    """Return text cells as CSV fields: missing as empty, quoted where the text needs it."""
    texts = [value if isinstance(value, str) else "" for value in values]
    # One scan of all the text finds whether any cell needs quoting, which most columns never do.
    joined = "\x00".join(texts)
    if not any(special in joined for special in ',"\n\r'):
        return texts
    return ['"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text for text in texts]


def canonical_lines(frame: pd.DataFrame, schema: FrozenSchema) -> list[str]:
    """Return each row as one CSV record in canonical form (no line terminator).

    Numbers are written the same way whatever the source file's text was ("5", "5.0" and "5.00" are
    one value), so whole-row duplicates are found across files.
    """
    columns = []
    for column in schema.columns:
        if column == schema.target:
            columns.append(frame[column].astype(np.int64).astype(str).to_numpy())
        elif column in schema.numeric_columns:
            columns.append(_format_numbers(frame[column].to_numpy(dtype=float)))
        else:
            columns.append(_format_strings(frame[column].tolist()))
    return [",".join(parts) for parts in zip(*columns)]


def header_line(schema: FrozenSchema) -> str:
    """Return the CSV header of the ingested data."""
    return ",".join(schema.columns)


def _dtypes(schema: FrozenSchema) -> dict[str, Any]:
    dtypes: dict[str, Any] = {c: str for c in schema.id_columns + schema.categorical_columns}
    dtypes.update({c: np.float64 for c in schema.numeric_columns})
    dtypes[schema.target] = np.int64
    return dtypes


def read_canonical_csv(source: Path | io.IOBase, schema: FrozenSchema, *, has_header: bool = True) -> pd.DataFrame:
    """Return the rows of a file written by this package (finaldata.csv), typed by the schema."""
    frame = pd.read_csv(
        source,
        header=0 if has_header else None,
        names=list(schema.columns),
        dtype=_dtypes(schema),
        keep_default_na=False,
        na_values={c: [""] for c in schema.columns if c != schema.target},
        engine="c",
    )
    for column in schema.id_columns + schema.categorical_columns:
        frame[column] = frame[column].astype(object)
    return frame


def read_canonical_tail(path: Path, schema: FrozenSchema, *, start: int, end: int) -> pd.DataFrame:
    """Return the rows stored in bytes [start, end) of finaldata.csv (start is a row boundary).

    Byte 0 is the start of the header line, which is then read as the header, not as a row.
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    if not data.strip():
        return read_canonical_csv(io.StringIO(header_line(schema) + "\n"), schema)
    return read_canonical_csv(io.BytesIO(data), schema, has_header=start == 0)


def read_labelled_folder(folder: Path, *, settings: SchemaSettings, schema: FrozenSchema) -> pd.DataFrame:
    """Return the rows of every *.csv file in ``folder``, validated against ``schema``, in name order."""
    files = sorted(p for p in folder.glob("*.csv") if p.is_file())
    if not files:
        raise DatasetError(f"{folder}: no *.csv files")
    frames = []
    for path in files:
        parsed = parse_labelled_csv(path.read_bytes(), name=str(path), settings=settings, schema=schema)
        frames.append(parsed.frame)
    return pd.concat(frames, ignore_index=True)



# --- labelled files (new data to ingest), read in chunks -------------------------------------

LABELLED_CHUNK_ROWS = 100_000  # rows typed and handed over at a time (fewer for a wide file)


@dataclass
class LabelledChunk:
    """Validated rows of a labelled file: ``frame`` typed by the schema, in its column order;
    ``first_row`` is the data row number of its first row."""

    frame: pd.DataFrame
    first_row: int


class _LabelledText(_SizedText):
    """The text of a labelled file, block by block, hashing every byte and noting (not raising) what
    ``decode_text`` refuses, with the same precedence: the first problem stops the text, and the rest
    of the file is still read (hashed, and looked at for a NUL byte, which outranks bad UTF-8)."""

    def __init__(self, handle: Any, name: str, widths: RecordWidths):
        self.handle = handle
        self.name = name
        self.widths = widths
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self.digest = hashlib.sha256()
        self.offset = 0
        self.line_breaks = 0
        self.nonblank = False  # any byte that bytes.strip() keeps
        self.utf8_bom = False
        self.tail = b""  # the last bytes of the block before, for a message about a byte just before a block
        self.problem: tuple[int, str] | None = None  # (rank, message): 1 other encoding, 2 NUL, 3 not UTF-8
        self.ended = False

    def _note(self, rank: int, message: str) -> None:
        if self.problem is None or rank < self.problem[0]:
            self.problem = (rank, message)

    def _block(self) -> bytes:
        try:
            block = self.handle.read(READ_BLOCK_BYTES)
        except OSError as exc:
            raise SourceReadError(f"{self.name}: {exc.strerror or exc}") from exc
        self.digest.update(block)
        if self.offset == 0:
            self.utf8_bom = block.startswith(codecs.BOM_UTF8)
            try:
                _refuse_other_encodings(block, self.name)
            except DatasetError as exc:
                self._note(1, str(exc))
        if not self.nonblank and block.strip():
            self.nonblank = True
        if self.problem is None or self.problem[0] > 2:
            nul = block.find(b"\x00")
            if nul >= 0:
                self._note(2, str(_binary(self.name, self.line_breaks + block.count(b"\n", 0, nul) + 1, self.offset + nul)))
        return block

    def _advance(self, block: bytes) -> None:
        self.line_breaks += block.count(b"\n")
        self.offset += len(block)
        self.tail = (self.tail + block)[-8:]
        if not block:
            self.ended = True

    def _utf8_problem(self, exc: UnicodeDecodeError, block: bytes) -> None:
        held = len(exc.object) - len(block)  # bytes of an unfinished character held back from the block before
        offset = self.offset - held + exc.start
        if self.utf8_bom:
            offset -= 3  # decode_text names the byte 3 after the one at fault in a file with a BOM: say the same
        seen = self.tail + block
        base = self.offset - len(self.tail)
        byte = seen[offset - base] if 0 <= offset - base < len(seen) else exc.object[exc.start]
        line = self.line_breaks + 1 - self.tail.count(b"\n") + seen.count(b"\n", 0, max(0, offset - base))
        self._note(3, str(_not_utf8(self.name, byte, line, offset)))

    def _next_text(self) -> str:
        while not self.ended:
            block = self._block()
            if self.problem is not None:
                self._advance(block)
                continue  # no more text: read on, to hash the file and find a NUL
            try:
                text = self.decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                self._utf8_problem(exc, block)
                self._advance(block)
                continue
            self._advance(block)
            self.widths.feed(text)
            if text or not block:
                return text
        return ""

    def drain(self) -> None:
        """Read the rest of the file (its text unused)."""
        self.pending = ""
        while self._next_text():
            pass


class _TypedProblems:
    """What ``parse_labelled_csv`` checks once the cells are read (cell lengths, numbers, the target),
    gathered chunk by chunk, so that the reason for a file read in chunks names what the whole file's
    would: the first column at fault in schema order, its count of bad cells, its first examples."""

    def __init__(self, name: str, schema: FrozenSchema, settings: SchemaSettings):
        self.name = name
        self.schema = schema
        self.settings = settings
        self.longest: dict[str, tuple[int, int]] = {}  # column -> (length, row) of its longest cell past the limit
        self.numeric: dict[tuple[str, str], list] = {}  # (column, "bad"|"infinite") -> [count, rows, values]
        self.target: list | None = None  # [count, rows, values, all blank, smallest distinct values]
        self.classes: set[int] = set()
        self.rows = 0  # data rows in the whole file, once read

    def __bool__(self) -> bool:
        return bool(self.longest or self.numeric or self.target)

    @staticmethod
    def _gather(found: list | None, positions: np.ndarray, first_row: int, values: np.ndarray) -> list:
        found = found or [0, [], []]
        found[0] += len(positions)
        room = MAX_EXAMPLES - len(found[1])
        found[1] += (positions[:room] + first_row).tolist()
        found[2] += values[positions[:room]].tolist()
        return found

    def check(self, cells: dict[str, np.ndarray], *, rows: int, first_row: int) -> dict[str, Any] | None:
        """Check one chunk's cells; return its typed columns, or None once any problem was found."""
        schema = self.schema
        for column in schema.columns:
            if column not in cells or len(cells[column]) == 0:
                continue
            lengths = np.fromiter(map(len, cells[column].tolist()), dtype=np.int64, count=len(cells[column]))
            longest = int(lengths.max())
            if longest > MAX_CELL_CHARS and longest > self.longest.get(column, (0, 0))[0]:
                self.longest[column] = (longest, int(lengths.argmax()) + first_row)

        def numbers_of(column: str, values: np.ndarray) -> Any:  # the problems kept for message(), not raised
            numbers = pd.to_numeric(values, errors="coerce").astype(float)
            bad, infinite = _numeric_problems(values, numbers)
            for kind, positions in (("bad", bad), ("infinite", infinite)):
                if len(positions):
                    self.numeric[column, kind] = self._gather(self.numeric.get((column, kind)), positions,
                                                              first_row, values)
            return numbers

        typed = _typed_columns(cells, schema, name=self.name, rows=rows, first_row=first_row, numeric=numbers_of)
        values = cells[schema.target]
        result, unknown = _target_classes(values, positive=self.settings.positive_labels,
                                          negative=self.settings.negative_labels)
        if len(unknown):
            bad = values[unknown]
            found = self._gather(self.target[:3] if self.target else None, unknown, first_row, values)
            all_blank = bool((bad == "").all()) and (self.target is None or self.target[3])
            distinct = sorted(set(bad.tolist()) | set(self.target[4] if self.target else ()))[:5]
            self.target = found + [all_blank, distinct]
        self.classes.update(np.unique(result[result >= 0]).tolist())
        typed[schema.target] = result
        return None if self else typed

    def message(self) -> str | None:
        """Return the reason the whole file would be refused for, or None."""
        schema, name = self.schema, self.name
        for column in schema.columns:
            if column in self.longest:
                length, row = self.longest[column]
                return _long_cell_message(name, column, row, length)
        for column in schema.feature_columns:
            label = f"{name}: column {column!r}"
            if (column, "bad") in self.numeric:
                return _not_numbers_message(label, *self.numeric[column, "bad"])
            if (column, "infinite") in self.numeric:
                return _infinite_message(label, *self.numeric[column, "infinite"])
        if self.target is not None:
            count, rows, values, all_blank, distinct = self.target
            return _target_message(f"{name}: target {schema.target!r}", count, rows, values, all_blank=all_blank,
                                   distinct=distinct, positive=self.settings.positive_labels,
                                   negative=self.settings.negative_labels)
        return None


class SchemaGuessedWrong(Exception):
    """The first file's schema, judged on its first chunk, is not the whole file's: read it again with ``schema``."""

    def __init__(self, schema: FrozenSchema):
        super().__init__(schema.describe())
        self.schema = schema


class LabelledFile:
    """A labelled CSV file read in chunks (``chunks``), validated as ``parse_labelled_csv`` validates
    it whole, with the same outcome: the same rows, the same schema, the same reason for a refusal.

    Each chunk is yielded as soon as it is typed, while nothing is wrong so far; the file is read to
    its end in any case, and ``chunks`` then raises DatasetError with the reason the whole file would
    get (a bad row far into the file refuses the whole file: the caller undoes what it did with the
    chunks before). Memory holds one chunk of at most ``chunk_rows`` rows (fewer for a wide file),
    whatever the file's size. After the chunks: ``schema``, ``rows_read``, ``ignored_columns``,
    ``notes``, and ``sha256`` and ``size`` of the bytes read.

    The first file's categorical columns (those with text) are judged on its first chunk; when a
    column judged numeric holds text further on, ``chunks`` raises SchemaGuessedWrong at the end
    with the whole file's schema, to read it again with.
    """

    def __init__(self, handle: Any, *, name: str, settings: SchemaSettings, schema: FrozenSchema | None,
                 chunk_rows: int | None = None):
        self.handle = handle
        self.name = name
        self.settings = settings
        self.schema = schema
        self.chunk_rows = chunk_rows or LABELLED_CHUNK_ROWS
        self.rows_read = 0
        self.ignored_columns: list[str] = []
        self.notes: list[str] = []
        self.sha256: str | None = None
        self.size = 0

    def chunks(self):
        """Yield the typed chunks; raise DatasetError at the end when the whole file is refused."""
        guessing = self.schema is None and self.settings.categorical_columns is None
        problems: list[tuple[tuple, str]] = []  # (rank, message); the smallest rank is the whole file's reason
        typed_problems = yield from self._read(problems)
        if guessing and typed_problems is not None and all(rank[0] >= 8 for rank, _message in problems):
            # A column judged numeric on the first chunk with text further on is categorical, as
            # reading the whole file would have judged it.
            text_found = {column for column, kind in typed_problems.numeric if kind == "bad"}
            if text_found:
                schema = self.schema
                raise SchemaGuessedWrong(FrozenSchema(
                    schema.target, schema.id_columns, schema.feature_columns,
                    tuple(c for c in schema.feature_columns if c in schema.categorical_columns or c in text_found)))
        if problems:
            raise DatasetError(min(problems)[1])
        self.rows_read = typed_problems.rows
        classes = sorted(typed_problems.classes)
        if len(classes) == 1:
            self.notes = [f"only class {classes[0]} present"]

    def _read(self, problems: list[tuple[tuple, str]]):
        """Yield the typed chunks while nothing is wrong; note every problem in ``problems``; return the typed checks."""
        name = self.name
        widths = RecordWidths(name)
        text = _LabelledText(self.handle, name, widths)
        first = text.read()
        names: list[str] | None = None
        typed_problems: _TypedProblems | None = None
        rows = 0
        width = _header_width(first)
        reader: Any = iter(())
        if width > MAX_COLUMNS:
            problems.append(((4,), f"{name}: the header has {width:,} columns (at most {MAX_COLUMNS:,} are read)"))
        else:
            try:
                reader = pd.read_csv(_Rewound(first, text), header=None, dtype=object, na_filter=False,
                                     skip_blank_lines=True, engine="c",
                                     chunksize=max(1, min(self.chunk_rows, CELLS_PER_CHUNK // max(width, 1))))
            except pd.errors.EmptyDataError:
                problems.append(((5,), f"{name}: empty file"))
            except pd.errors.ParserError as exc:
                problems.append(((5,), f"{name}: not a well-formed CSV file: {_parser_problem(exc, first)}"))
        header_read = False
        while True:
            try:
                cells_frame = next(reader)
            except StopIteration:
                break
            except pd.errors.EmptyDataError:
                problems.append(((5,), f"{name}: empty file"))
                break
            except pd.errors.ParserError as exc:
                problems.append(((5,), f"{name}: not a well-formed CSV file: {_parser_problem(exc, first)}"))
                break
            columns = _stripped_columns(cells_frame, keep_first=not header_read)
            if not header_read:
                header_read = True
                if not columns or len(columns[0]) == 0:
                    problems.append(((7, 0), f"{name}: empty file"))
                    continue
                raw_names = [str(column[0]) for column in columns]
                try:
                    names = _header(raw_names, name)
                except DatasetError as exc:
                    problems.append(((7, 0), str(exc)))
                    continue
                columns = [column[1:] for column in columns]
                if self.settings.target not in names:
                    problems.append(((7, 2), _missing_target_message(name, self.settings.target, raw_names)))
            if names is None:
                continue
            if not any(rank[0] <= 6 for rank, _message in problems):
                try:
                    widths.check()  # a short row is padded by pandas: refuse it
                except DatasetError as exc:
                    problems.append(((6,), str(exc)))
            chunk_rows = len(columns[0]) if columns else 0
            if chunk_rows == 0:
                continue
            cells = dict(zip(names, columns))
            first_row = rows + 1
            rows += chunk_rows
            if typed_problems is None:  # the first rows: what the header says about the schema
                if self.schema is None:
                    self.schema = infer_schema(cells, self.settings)
                missing = [c for c in self.schema.feature_columns if c not in cells]
                if missing:
                    problems.append(((7, 3), f"{name}: feature column(s) missing: {', '.join(missing)}"))
                self.ignored_columns = [c for c in names if c not in set(self.schema.columns)]
                typed_problems = _TypedProblems(name, self.schema, self.settings)
            if any(rank[0] < 8 for rank, _message in problems):
                continue  # the file is refused for what comes before its values: read on, to the end
            typed = typed_problems.check(cells, rows=chunk_rows, first_row=first_row)
            if typed is not None and text.problem is None:
                yield LabelledChunk(frame=pd.DataFrame(typed), first_row=first_row)
        text.drain()  # the whole file is read, and hashed, whatever was found
        self.sha256, self.size = text.digest.hexdigest(), text.offset
        if text.problem is not None:
            problems.append(((text.problem[0],), text.problem[1]))
        if not text.nonblank:
            problems.append(((0,), f"{name}: empty file"))
        if names is not None and not any(rank[0] <= 6 for rank, _message in problems):
            try:
                widths.check()  # the end of the file has been read: the last rows are counted
            except DatasetError as exc:
                problems.append(((6,), str(exc)))
        if names is not None and rows == 0:
            problems.append(((7, 1), f"{name}: header only, no data rows"))
        if typed_problems is not None:
            typed_problems.rows = rows
            if typed_problems.message():
                problems.append(((8,), typed_problems.message()))
        return typed_problems
