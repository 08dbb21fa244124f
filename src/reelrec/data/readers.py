"""Checked readers for the raw files: every error names the file, the line and the column.

The official files are read as text first (pandas' C parser, ``dtype=str``), then each column is
converted with :func:`to_numeric`, which reports the first bad value with its physical line
number. Physical line numbers are exact also for files with quoted multi-line fields (SegMM's
``label_1D``): on the error path the file is re-scanned with :mod:`csv` to map record -> line.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

#: Values that mean "missing" in the raw files (RecBole #2125, CASES.md C11): empty, em dash,
#: hyphen-minus, N/A. They become NaN in nullable columns and an error in required ones.
MISSING_MARKERS = ("", "\u2014", "-", "N/A", "NA", "nan", "NaN", "null", "None")


class DataFormatError(ValueError):
    """A raw data file is malformed; the message names file, line and column."""


class AmbiguousDataError(DataFormatError):
    """A dataset folder holds several candidate files for the same data; the message names the
    folder and every candidate, and says which to keep."""


def single_candidate(folder: Path, found: Sequence[Path], what: str, keep: str) -> Path | None:
    """The one candidate file in ``folder``: loaders never pick the first of several silently.

    Args:
        folder: the dataset folder (named in the error).
        found: the candidate files present in it (a glob's matches, or the known names found).
        what: what the files hold, e.g. ``"KuaiRand log"`` (for the error).
        keep: which file to keep and which to remove (the end of the error message).

    Returns:
        The only candidate, or ``None`` when there is none.

    Raises:
        AmbiguousDataError: more than one candidate; one line naming ``folder`` and each file.
    """
    files = sorted(Path(f) for f in found)
    if len(files) > 1:
        names = ", ".join(f.name for f in files)
        raise AmbiguousDataError(
            f"{folder}: {len(files)} candidate {what} files, the loader reads exactly one: "
            f"{names}; {keep}"
        )
    return files[0] if files else None


def _open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")  # noqa: SIM115


def physical_line(path: Path, record: int, sep: str, header: bool = True) -> int:
    """1-based physical line on which data record ``record`` (0-based) starts."""
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=sep)
        start, i = 1, 0
        for row in reader:
            if row:  # pyarrow skips empty lines: they are not records
                if i - (1 if header else 0) == record:
                    return start
                i += 1
            start = reader.line_num + 1
    return start


def read_table(
    path: Path,
    sep: str,
    columns: list[str] | None = None,
    required: list[str] | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read a delimited text file as strings, checking the header and the field count per row.

    Args:
        path: file to read (``.gz`` allowed).
        sep: field separator.
        columns: column names for a file with no header line; ``None`` means the file has one.
        required: columns that must be present in the header.
        encoding: text encoding (MovieLens 100K's ``u.item`` is latin-1).

    Returns:
        DataFrame of ``str`` columns, one row per record (quoted multi-line fields allowed).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: a row has too many or too few fields, or a required column is missing;
            the message names the file and the physical line.
    """
    import pyarrow.csv as pacsv

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with _open_text(path, encoding) as fh:
            first = next(csv.reader(fh, delimiter=sep), None)
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc})") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable gzip file ({exc})") from None
    if first is None:
        raise DataFormatError(f"{path}: file is empty")
    names = list(columns) if columns is not None else [c.strip().lstrip("\ufeff") for c in first]
    missing = [c for c in (required or []) if c not in names]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {missing}; found {names} (is the separator {sep!r} right?)"
        )
    invalid: list[object] = []

    def on_invalid(row: object) -> str:
        invalid.append(row)
        return "skip"

    import pyarrow as pa

    gz = path.suffix.lower() == ".gz"  # pyarrow guesses compression from a lower-case suffix
    try:
        table = pacsv.read_csv(
            pa.input_stream(str(path), compression="gzip" if gz else None),
            read_options=pacsv.ReadOptions(
                block_size=1 << 24,  # 16 MB: a row must fit in one block
                # threads off: pyarrow's invalid-row callback from worker threads can abort the
                # process once torch is loaded ("terminate called without an active exception")
                use_threads=False,
                column_names=names,
                skip_rows=0 if columns is not None else 1,
                encoding=encoding,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=sep, newlines_in_values=True, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, "string"), strings_can_be_null=False
            ),
        )
    except Exception as exc:  # pyarrow raises ArrowInvalid for encoding and quoting faults
        why = " ".join(str(exc).split())  # one line
        if "Could not skip initial" in why or "Empty CSV file" in why:
            raise DataFormatError(f"{path}: no data rows (only a header)") from None
        if "straddl" in why:
            why = "a row longer than 16 MB"
        raise DataFormatError(f"{path}: cannot parse: {why}") from None
    if invalid:
        line, found = _first_bad_line(path, sep, len(names), encoding)
        raise DataFormatError(f"{path}, line {line}: expected {len(names)} fields, found {found}")
    return table.to_pandas()


def read_separated_lines(
    path: Path, sep: str, columns: list[str], encoding: str = "utf-8"
) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a header-less file whose separator is several characters (GroupLens ``::``).

    Fields cannot be quoted; blank lines are skipped; ``\\r\\n`` line ends are accepted.

    Args:
        path: file to read.
        sep: field separator (any length).
        columns: column names, one per field.
        encoding: text encoding (the GroupLens ML-1M files are latin-1).

    Returns:
        ``(table, lines)``: DataFrame of ``str`` columns, one row per non-blank line, and the
        1-based physical line number of each row (pass it to :func:`to_numeric` as ``lines``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: the file is not ``encoding`` text, has no data line, or a line has too
            many or too few fields; the message names the file and the physical line.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with open(path, encoding=encoding, newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not {encoding} text ({exc})") from None
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = pc.utf8_rtrim(pa.array(text.split("\n"), type=pa.large_string()), characters="\r")
    keep = pc.not_equal(pc.utf8_trim_whitespace(rows), "")
    lines = np.flatnonzero(keep.to_numpy(zero_copy_only=False)) + 1
    rows = rows.filter(keep)
    if len(rows) == 0:
        raise DataFormatError(f"{path}: no data lines")
    found = pc.count_substring(rows, sep).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    bad = found != len(columns)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{path}, line {lines[i]}: expected {len(columns)} fields separated by {sep!r}, "
            f"found {found[i]}"
        )
    fields = pc.list_flatten(pc.split_pattern(rows, sep))  # row-major, len(columns) per row
    n = len(columns)
    table = pd.DataFrame(
        {
            name: fields.take(pa.array(np.arange(k, len(fields), n))).to_pandas().astype(str)
            for k, name in enumerate(columns)
        }
    )
    return table, lines


def _first_bad_line(path: Path, sep: str, ncols: int, encoding: str) -> tuple[int, int]:
    with _open_text(path, encoding) as fh:
        reader = csv.reader(fh, delimiter=sep)
        start = 1
        for row in reader:
            if row and len(row) != ncols:
                return start, len(row)
            start = reader.line_num + 1
    return start, -1


#: an integer field: up to 18 digits (always fits int64 exactly), optionally written as "12.0"
_INT_PATTERN = r"[+-]?\d{1,18}(?:\.0*)?"

#: plausible ranges, used by loaders as ``bounds``
NON_NEGATIVE = (0, None)
#: Unix time in ms up to 2100-01-01 (catches seconds/ms mix-ups and overflowed values)
UNIX_MS = (0, 4_102_444_800_000)
#: Unix time in s up to 2100-01-01
UNIX_S = (0, 4_102_444_800)


def to_numeric(
    df: pd.DataFrame,
    column: str,
    path: Path,
    sep: str,
    *,
    dtype: str = "int64",
    nullable: bool = False,
    header: bool = True,
    bounds: tuple[float | None, float | None] = (None, None),
    lines: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Convert a text column to numbers exactly, naming the first bad value's file, line, column.

    Integers are parsed as integers (never through float64, so ids above 2**53 stay exact) and
    must have at most 18 digits; floats must be finite. Values outside ``bounds`` are errors.

    Args:
        df: table from :func:`read_table`.
        column: column to convert.
        path, sep, header: the file it came from (for error messages).
        dtype: ``"int64"`` or ``"float64"``.
        nullable: if true, :data:`MISSING_MARKERS` become NaN (float64 result) and are counted;
            otherwise they are an error.
        bounds: inclusive ``(low, high)``; ``None`` leaves a side open.
        lines: physical line number of each row, for tables :func:`physical_line` cannot
            re-scan (from :func:`read_separated_lines`); ``None`` re-scans ``path`` with ``sep``.

    Returns:
        ``(values, n_missing)``: numpy array of ``dtype`` (float64 when nullable) and the count of
        missing markers.

    Raises:
        DataFormatError: a value is not a number, not finite, out of bounds, or missing in a
            required column.
    """
    text = df[column].astype(str).str.strip()
    is_missing = text.isin(MISSING_MARKERS).to_numpy()
    if dtype == "int64":
        ok = text.str.fullmatch(_INT_PATTERN).to_numpy(dtype=bool) & ~is_missing
        ints = np.zeros(len(text), dtype=np.int64)
        if ok.any():
            ints[ok] = text[ok].str.replace(r"\.0*$", "", regex=True).astype(np.int64).to_numpy()
        values = ints.astype("float64") if nullable else ints
        if nullable:
            values[is_missing] = np.nan
        bad = ~ok & ~is_missing
        what = "an integer (at most 18 digits)"
    else:
        values = pd.to_numeric(text.where(~is_missing, None), errors="coerce").to_numpy(
            dtype="float64"
        )
        bad = ~np.isfinite(values) & ~is_missing
        what = "a finite number"
    if not nullable:
        bad |= is_missing
    lo, hi = bounds
    present = ~is_missing & ~bad
    out_of_range = np.zeros(len(text), dtype=bool)
    if lo is not None:
        out_of_range |= present & (values < lo)
    if hi is not None:
        out_of_range |= present & (values > hi)
    if (bad | out_of_range).any():
        rec = int(np.flatnonzero(bad | out_of_range)[0])
        if lines is not None:
            line = int(lines[rec])
        else:
            line = physical_line(path, rec, sep, header=header)
        if bad[rec]:
            problem = f"expected {what}"
        else:
            problem = (
                f"value outside [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            )
        raise DataFormatError(
            f"{path}, line {line}, column {column!r}: {problem}, got {df[column].iloc[rec]!r}"
        )
    return values, int(is_missing.sum()) if nullable else 0
