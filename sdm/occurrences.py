"""Occurrence records: read CSV / TSV / GBIF downloads / Parquet, clean, put on the grid, and account for every row.

Every row read is either kept or dropped with exactly one reason, so that ``kept + sum(dropped) == read``.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import sys
import io
import json
import logging
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

from sdm.grid import points_to_cells
from sdm.names import canonical_names

log = logging.getLogger(__name__)

COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "species": ("species", "scientificname", "scientific_name", "taxon", "taxon_name", "species_name", "name"),
    "longitude": ("decimallongitude", "longitude", "lon", "long", "lng", "x"),
    "latitude": ("decimallatitude", "latitude", "lat", "y"),
}
"""Recognised column names (matched case-insensitively), in order of preference."""

OPTIONAL_COLUMNS: dict[str, str] = {
    "scientific_name": "scientificname",
    "occurrence_status": "occurrencestatus",
    "basis_of_record": "basisofrecord",
    "uncertainty_m": "coordinateuncertaintyinmeters",
    "year": "year",
}
"""Darwin Core columns used when present (GBIF downloads have them): role -> lower-case column name."""

CLEANING_DEFAULTS: dict = {
    "absent": True,
    "basis_of_record_excluded": ["FOSSIL_SPECIMEN", "LIVING_SPECIMEN"],
    "zero_zero": True,
    "equal_lon_lat": True,
    "max_uncertainty_m": 10000,
    "min_year": None,
    "max_year": None,
    "malformed_tolerance": 0.01,
}
"""Cleaning rules (config ``occurrences.cleaning``); each can be switched off (False / None / [])."""

DROP_REASONS: tuple[str, ...] = (
    "malformed_row",
    "missing_species",
    "not_identified_to_species",
    "absent_record",
    "excluded_basis_of_record",
    "missing_coordinates",
    "non_numeric_coordinates",
    "coordinates_out_of_range",
    "zero_zero_coordinates",
    "equal_longitude_latitude",
    "uncertainty_too_large",
    "year_out_of_range",
    "outside_grid",
    "nodata_cell",
    "duplicate_species_cell",
)
"""Why a record is dropped, in the order the checks are applied (a row gets the first reason that applies)."""


def find_columns(names: list[str], path: str | Path, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Map ``species`` / ``longitude`` / ``latitude`` to the file's own column names."""
    overrides = overrides or {}
    lower = {n.lower().strip().lstrip("\ufeff"): n for n in names}
    found = {}
    for role, aliases in COLUMN_ALIASES.items():
        if role in overrides and overrides[role]:
            if overrides[role] not in names:
                raise ValueError(
                    f"{path}: column '{overrides[role]}' (occurrences.columns.{role}) not found; columns are {names}"
                )
            found[role] = overrides[role]
            continue
        match = next((lower[a] for a in aliases if a in lower), None)
        if match is None:
            raise ValueError(
                f"{path}: no {role} column (looked for {', '.join(aliases)}); columns are {names}. "
                f"Set occurrences.columns.{role} in the config."
            )
        found[role] = match
    for role, name in OPTIONAL_COLUMNS.items():
        if name in lower and lower[name] not in found.values():
            found[role] = lower[name]
    return found


TABLE_SUFFIXES_PARQUET = (".parquet", ".pq")
_BLOCK_BYTES = 1 << 24


def zip_member(archive: zipfile.ZipFile, path: Path) -> str:
    """The table inside a zip: its only file (a GBIF simple download), or the core file that a Darwin Core
    Archive's ``meta.xml`` names (a GBIF DwC-A download: ``occurrence.txt``)."""
    names = [n for n in archive.namelist() if not n.endswith("/")]
    if "meta.xml" in names:
        try:
            core = ElementTree.fromstring(archive.read("meta.xml")).find("{*}core/{*}files/{*}location")
        except ElementTree.ParseError as error:
            raise ValueError(f"{path}: the Darwin Core Archive's meta.xml is not valid XML ({error})") from None
        if core is not None and core.text and core.text.strip() in names:
            return core.text.strip()
        raise ValueError(f"{path}: a Darwin Core Archive whose meta.xml names no core file in the archive")
    if len(names) == 1:
        return names[0]
    raise ValueError(f"{path}: the zip holds {len(names)} files ({', '.join(names[:5])}"
                     f"{', ...' if len(names) > 5 else ''}) and no meta.xml; unzip it and name the table")


@contextmanager
def open_binary(path: Path) -> Iterator[BinaryIO]:
    """The raw bytes of a table: the file itself, the table inside a ``.zip`` (:func:`zip_member`), or a gzipped
    table (``.gz``) decompressed."""
    if path.suffix.lower() == ".gz":
        with gzip.open(path, "rb") as f:
            yield f
    elif path.suffix.lower() == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as error:
            raise ValueError(f"{path}: not a readable zip file ({error})") from None
        with archive, archive.open(zip_member(archive, path)) as member:
            yield member
    else:
        with open(path, "rb") as f:
            yield f


def detect_encoding(path: Path) -> str:
    """UTF-8 when the whole file decodes as UTF-8 (BOM allowed), else Latin-1 (old Excel exports), logged with the
    line of the first byte that is not UTF-8. The whole file is checked: a Latin-1 name deep in a large file read
    as UTF-8 would lose its accented letters."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    lines_before = 0
    with open_binary(path) as f:
        while True:
            block = f.read(_BLOCK_BYTES)
            try:
                decoder.decode(block, final=not block)  # at the end: a character cut short is no UTF-8 either
            except UnicodeDecodeError as error:
                at = min(error.start, len(block) - 1) if block else 0
                line = lines_before + block.count(b"\n", 0, error.start) + 1
                log.info("%s: read as Latin-1 (byte 0x%02x on line %d is not UTF-8)", path,
                         block[at] if block else 0, line)
                return "latin-1"
            if not block:
                return "utf-8-sig"
            lines_before += block.count(b"\n")


def sniff_separator(path: Path) -> str:
    """Tab, comma or semicolon, from the header line (GBIF 'CSV' downloads are tab-separated)."""
    with open_binary(path) as f:
        header = f.readline().decode("latin-1")
    counts = {sep: header.count(sep) for sep in ("\t", ",", ";")}
    return max(counts, key=counts.get) if max(counts.values()) > 0 else ","


def _unquoted_records(stream: BinaryIO, sep: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(file line, number of fields, empty fields at its end) of each non-blank line of an unquoted table, a block
    of lines at a time.

    Lines end at LF, CRLF or a lone CR, as for pandas' parser; a line of spaces is blank, as pandas skips it."""
    sep_byte, carry, lines_done = ord(sep), b"", 0
    while True:
        block = stream.read(_BLOCK_BYTES)
        at_end = not block
        data = carry + block
        # a CR at the end of a block may be the first half of a CRLF: its line is finished with the next block
        usable = len(data) - 1 if not at_end and data.endswith(b"\r") else len(data)
        a = np.frombuffer(data, dtype=np.uint8)[:usable]
        ends = (np.flatnonzero((a == 10) | ((a == 13) & np.r_[a[1:] != 10, True])) if data.find(b"\r", 0, usable) >= 0
                else np.flatnonzero(a == 10))
        if at_end and len(a) and (len(ends) == 0 or ends[-1] != len(a) - 1):
            ends = np.r_[ends, len(a)]  # the last line lacks its line end
        carry = data[ends[-1] + 1:] if len(ends) else data
        if len(ends):
            starts = np.r_[0, ends[:-1] + 1]
            separators = np.flatnonzero(a == sep_byte)
            fields = np.searchsorted(separators, ends) - np.searchsorted(separators, starts) + 1
            # blank: nothing but spaces (and the CR of a CRLF); only a line that starts so can be
            blank = ends == starts
            maybe = np.flatnonzero(~blank & ((a[np.minimum(starts, len(a) - 1)] == 32)
                                             | (a[np.minimum(starts, len(a) - 1)] == 13)))
            for i in maybe:
                blank[i] = not data[starts[i]:ends[i]].strip(b" \r")
            last = ends - 1 - ((ends > starts) & (a[np.maximum(ends - 1, 0)] == 13))  # the CR of a CRLF is no field
            trailing = np.zeros(len(ends), dtype=np.int64)
            open_ = last >= starts
            while open_.any():  # empty fields at the end: separators that end the line (few lines have any)
                open_ &= a[np.maximum(last, 0)] == sep_byte
                trailing += open_
                last -= 1
                open_ &= last >= starts
            lines = lines_done + 1 + np.arange(len(ends))
            lines_done += len(ends)
            yield lines[~blank], fields[~blank], trailing[~blank]
        if at_end:
            return


_BLANK = {",": " \t", ";": " \t", "\t": " "}
"""White space that makes a line blank for pandas (the separator itself never does)."""


def _quoted_records(stream: BinaryIO, sep: str, encoding: str,
                    path: Path) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(first file line, number of fields, empty fields at its end) of each record of a quoted CSV, with Python's
    csv reader, a block of records at a time. A quoted field that runs over several lines holding what look like
    rows (a stray opening quote, which swallows the rows up to the next quote) raises, naming its line."""
    text = io.TextIOWrapper(stream, encoding=encoding, newline="")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # pandas has no limit on a field (csv's default: 131,072)
    reader = csv.reader(text, delimiter=sep, quotechar='"', doublequote=True, strict=False)
    lines, fields, trailing, previous, header_fields = [], [], [], 0, None
    for record in reader:
        first = previous + 1
        spanned = reader.line_num - previous
        previous = reader.line_num
        if not record or (len(record) == 1 and record[0] and not record[0].strip(_BLANK[sep])):
            continue  # a blank line (or one of white space), as pandas skips it; a quoted empty field ("") is a row
        if header_fields is None:
            header_fields = len(record)
        elif spanned > 1 and header_fields > 1:
            for value in record:  # a swallowed row holds exactly the header's number of fields
                swallowed = [row for row in value.splitlines()[1:] if row.count(sep) == header_fields - 1]
                if swallowed:
                    raise ValueError(
                        f"{path}: line {first}: a quoted field runs over {spanned} lines and holds what look like "
                        f"rows (from line {first + 1}: {swallowed[0][:60]!r}); a stray '\"' opens it. Close or "
                        f"remove the quote")
        lines.append(first)
        fields.append(len(record))
        trailing.append(len(record) - len("\0".join(record).rstrip("\0").split("\0")) if any(record) else len(record))
        if len(lines) >= 100_000:
            yield np.array(lines), np.array(fields), np.array(trailing)
            lines, fields, trailing = [], [], []
    if lines:
        yield np.array(lines), np.array(fields), np.array(trailing)


class RecordLines:
    """The file line of each record of a delimited table, from a scan of its own beside pandas' parser.

    The first record is the header, of ``h`` fields. pandas skips a record with more fields than it expects: ``h``,
    or, when the first data record is longer (a separator at the end of every line, say), as many as that record
    has, reading only the first ``h`` fields of every record. A record that pandas skips, or one whose fields
    beyond the ``h``-th hold anything, is malformed: its line goes to :attr:`malformed`. :meth:`take` gives the
    lines of the next records pandas returns and which of them to drop as malformed."""

    def __init__(self, blocks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]):
        self._blocks = blocks
        self._lines = np.empty(0, dtype=np.int64)
        self._extra = np.empty(0, dtype=bool)  # returned by pandas, but with content beyond the header's fields
        self.malformed: list[int] = []
        self.header_fields: int | None = None
        self.expected_fields: int | None = None

    def _more(self) -> bool:
        for lines, fields, trailing in self._blocks:
            if self.header_fields is None and len(lines):
                self.header_fields = int(fields[0])
                lines, fields, trailing = lines[1:], fields[1:], trailing[1:]
            if self.expected_fields is None and len(lines):
                self.expected_fields = max(self.header_fields, int(fields[0]))
            skipped = fields > (self.expected_fields or 0)
            extra = fields - trailing > (self.header_fields or 0)
            self.malformed.extend(int(n) for n in lines[skipped])
            self._lines = np.r_[self._lines, lines[~skipped]]
            self._extra = np.r_[self._extra, extra[~skipped]]
            return True
        return False

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Lines of the next ``n`` records that pandas returns, and which of them are malformed (content beyond the
        header's fields, cut by pandas: drop them); None when the scan found fewer."""
        while len(self._lines) < n:
            if not self._more():
                return None
        lines, extra = self._lines[:n], self._extra[:n]
        self._lines, self._extra = self._lines[n:], self._extra[n:]
        self.malformed.extend(int(line) for line in lines[extra])
        return lines, extra

    def left(self) -> int:
        """Records the scan found beyond those taken."""
        while self._more():
            pass
        return len(self._lines)


def read_chunks(path: str | Path, chunksize: int = 500_000, malformed: list | None = None, what: str = "occurrence"):
    """Yield ``(rows, lines)``: DataFrames of the raw table (all columns as strings) a chunk at a time, bounded
    memory, with each row's file line (the header is line 1; for Parquet, the row number).

    Text tables (CSV, TSV, a GBIF download, plain or zipped) are parsed by pandas; a scan of their own numbers the
    lines (:class:`RecordLines`), so that a row's line is its line in the file whatever blank lines, quoted line
    breaks or malformed rows come before it. File lines of rows with more fields than the header (empty fields at
    the end of a line aside) are appended to ``malformed``; those rows are left out. Unreadable files raise a
    one-line error naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the {what} file is empty")
    if path.suffix.lower() in TABLE_SUFFIXES_PARQUET:
        yield from _parquet_chunks(path, chunksize)
        return
    sep, encoding = sniff_separator(path), detect_encoding(path)
    # GBIF tab-separated downloads are unquoted: a field that starts with '"' is text, not the start of a quote
    # (with QUOTE_MINIMAL it swallows the following rows or fails with 'EOF inside string').
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    with open_binary(path) as table, open_binary(path) as scan:
        records = RecordLines(_unquoted_records(scan, sep) if quoting == csv.QUOTE_NONE
                              else _quoted_records(scan, sep, encoding, path))
        try:
            with warnings.catch_warnings():  # rows longer than the first: RecordLines accounts for them
                warnings.filterwarnings("ignore", "Length of header or names does not match", pd.errors.ParserWarning)
                reader = pd.read_csv(
                    table if path.suffix.lower() in (".zip", ".gz") else path, sep=sep, dtype="string",
                    chunksize=chunksize, encoding=encoding, quoting=quoting,
                    on_bad_lines="skip", keep_default_na=False, na_values=[""], skip_blank_lines=True,
                    index_col=False)  # never the first column as the index when the first row is long
                for chunk in reader:
                    numbered = records.take(len(chunk))
                    if numbered is None:
                        raise ValueError(f"{path}: pandas read more rows than the file has lines of records; "
                                         f"check the file's quotes and line ends")
                    lines, extra = numbered
                    yield (chunk[~extra], lines[~extra]) if extra.any() else (chunk, lines)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError,
                zipfile.BadZipFile, csv.Error) as error:
            raise ValueError(f"{path}: cannot parse the table: {str(error).strip().splitlines()[0]}") from None
        if records.left():
            raise ValueError(f"{path}: {records.left()} row(s) of the file were not read as rows; check the file's "
                             f"quotes and line ends")
        if malformed is not None:
            malformed.extend(records.malformed)


def _parquet_chunks(path: Path, chunksize: int):
    try:
        parquet = pq.ParquetFile(path)
        done = 0
        for batch in parquet.iter_batches(batch_size=chunksize):
            chunk = batch.to_pandas().astype("string")
            yield chunk, np.arange(done + 1, done + len(chunk) + 1)
            done += len(chunk)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{path}: cannot read the Parquet file: {str(error).strip().splitlines()[0]}") from None


def _decimal_points(numbers: pd.Series) -> pd.Series:
    """Decimal commas as points (``-12,5`` -> ``-12.5``; European spreadsheets write coordinates so), leaving any
    other text as it is."""
    return numbers.str.replace(r"^([+-]?\d+),(\d+)$", r"\1.\2", regex=True)


def _classify_chunk(raw: pd.DataFrame, columns: dict[str, str], grid: xr.DataArray, valid: np.ndarray,
                    cleaning: dict) -> pd.DataFrame:
    """Parse one raw chunk: species, coordinates, grid cell and the first drop reason (or NA) of each row."""
    given = raw[columns["species"]].astype("string").str.strip()
    if "scientific_name" in columns:  # GBIF: 'species' is empty for records identified above species rank
        given = given.mask(given.fillna("") == "", raw[columns["scientific_name"]].astype("string").str.strip())
    given = given.mask(given.fillna("") == "")  # blank names are missing, not a species called ""
    species = canonical_names(given)

    def column(role):
        return raw[columns[role]].astype("string").str.strip() if role in columns else None

    lon_text = raw[columns["longitude"]].astype("string").str.strip()
    lat_text = raw[columns["latitude"]].astype("string").str.strip()
    lon = pd.to_numeric(_decimal_points(lon_text), errors="coerce").astype("float64").to_numpy()
    lat = pd.to_numeric(_decimal_points(lat_text), errors="coerce").astype("float64").to_numpy()

    reason = np.full(len(raw), None, dtype=object)

    def mark(condition, name):
        condition = np.asarray(condition, dtype=bool) & (reason == None)  # noqa: E711 (elementwise)
        reason[condition] = name

    mark(given.isna().to_numpy(), "missing_species")
    mark(species.isna().to_numpy(), "not_identified_to_species")
    status = column("occurrence_status")
    if status is not None and cleaning["absent"]:
        mark(status.str.upper().eq("ABSENT").fillna(False).to_numpy(), "absent_record")
    basis = column("basis_of_record")
    if basis is not None and cleaning["basis_of_record_excluded"]:
        excluded = [b.upper() for b in cleaning["basis_of_record_excluded"]]
        mark(basis.str.upper().isin(excluded).fillna(False).to_numpy(), "excluded_basis_of_record")
    mark(lon_text.isna().to_numpy() | lat_text.isna().to_numpy(), "missing_coordinates")
    mark(~np.isfinite(lon) | ~np.isfinite(lat), "non_numeric_coordinates")
    with np.errstate(invalid="ignore"):
        mark((np.abs(lon) > 180) | (np.abs(lat) > 90), "coordinates_out_of_range")
    if cleaning["zero_zero"]:
        mark((lon == 0) & (lat == 0), "zero_zero_coordinates")
    if cleaning["equal_lon_lat"]:
        mark(lon == lat, "equal_longitude_latitude")
    uncertainty = column("uncertainty_m")
    if uncertainty is not None and cleaning["max_uncertainty_m"] is not None:
        metres = pd.to_numeric(uncertainty, errors="coerce").astype("float64").to_numpy()
        with np.errstate(invalid="ignore"):
            mark(metres > cleaning["max_uncertainty_m"], "uncertainty_too_large")  # missing = not stated: kept
    year_text = column("year")
    if year_text is not None and (cleaning["min_year"] is not None or cleaning["max_year"] is not None):
        year = pd.to_numeric(year_text, errors="coerce").astype("float64").to_numpy()
        with np.errstate(invalid="ignore"):
            too_old = year < cleaning["min_year"] if cleaning["min_year"] is not None else False
            too_new = year > cleaning["max_year"] if cleaning["max_year"] is not None else False
        mark(np.asarray(too_old) | np.asarray(too_new), "year_out_of_range")

    ok = reason == None  # noqa: E711
    cells = points_to_cells(np.where(ok, lon, np.nan), np.where(ok, lat, np.nan), grid)
    inside = cells["row"].to_numpy() >= 0
    mark(ok & ~inside, "outside_grid")
    rows, cols = cells["row"].to_numpy(), cells["col"].to_numpy()
    on_data = np.zeros(len(raw), dtype=bool)
    on_data[inside] = valid[rows[inside], cols[inside]]
    mark(inside & ~on_data, "nodata_cell")

    return pd.DataFrame({
        "species": species.to_numpy(dtype=object),
        "name": given.to_numpy(dtype=object),
        "longitude": lon, "latitude": lat,
        "x": cells["x"].to_numpy(), "y": cells["y"].to_numpy(),
        "row": rows, "col": cols,
        "reason": reason,
    }, index=raw.index)


def lost_species_reasons(rejected: pd.DataFrame, lost: set[str]) -> dict[str, str]:
    """Why each species with no record left was lost: its records' drop reasons, most frequent first."""
    rows = rejected[rejected["species"].isin(lost)]
    reasons = rows.groupby("species")["reason"].agg(lambda r: ", ".join(f"{k} ({v})" for k, v in r.value_counts().items()))
    return {s: reasons.get(s, "") for s in sorted(lost)}


def ingest_occurrences(
    path: str | Path | list,
    grid: xr.DataArray,
    valid: np.ndarray,
    columns: dict[str, str] | None = None,
    chunksize: int = 500_000,
    cleaning: dict | None = None,
    min_records: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read and clean one or more occurrence tables onto ``grid``.

    ``valid`` is a bool array (y, x): cells with climate data; ``cleaning`` overrides :data:`CLEANING_DEFAULTS`.
    Returns ``(occurrences, rejected, report)``: occurrences has one row per species x cell with columns
    ``species`` (canonical ``Genus epithet``), ``longitude``, ``latitude`` (first record, WGS84 degrees), ``x``,
    ``y`` (cell centre, grid CRS), ``row``, ``col`` and ``n_records`` (records merged); rejected has ``file``,
    ``line`` (the row's line in the file, the header being line 1; for Parquet the row number), ``species``,
    ``longitude``, ``latitude`` and
    ``reason``; report counts records read, kept and dropped per reason, and lists species with fewer than
    ``min_records`` occupied cells (kept, but not used to train the SDM).
    """
    paths = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    same = [p for i, p in enumerate(paths) if any(p.resolve() == q.resolve() for q in paths[:i])]
    if same:
        raise ValueError(f"{same[0]}: listed twice in occurrences.path; its records would count twice")
    cleaning = {**CLEANING_DEFAULTS, **(cleaning or {})}
    kept_parts, rejected_parts = [], []
    read = 0
    resolved = {}
    for file in paths:
        malformed: list[int] = []
        read_in_file = 0
        for raw, lines in read_chunks(file, chunksize, malformed):
            if file not in resolved:
                resolved[file] = find_columns(list(raw.columns), file, columns)
            parsed = _classify_chunk(raw, resolved[file], grid, valid, cleaning)
            parsed["line"] = lines
            parsed["file"] = str(file)
            read_in_file += len(parsed)
            bad = parsed["reason"].notna()
            rejected_parts.append(parsed.loc[bad, ["file", "line", "name", "species", "longitude", "latitude",
                                                   "reason"]])
            kept_parts.append(parsed.loc[~bad].drop(columns="reason"))
        if malformed:
            rejected_parts.append(pd.DataFrame({"file": str(file), "line": malformed, "name": None, "species": None,
                                                "longitude": np.nan, "latitude": np.nan,
                                                "reason": "malformed_row"}))
            if len(malformed) > cleaning["malformed_tolerance"] * (read_in_file + len(malformed)):
                raise ValueError(
                    f"{file}: {len(malformed)} rows with the wrong number of fields (lines "
                    f"{', '.join(map(str, malformed[:5]))}{', ...' if len(malformed) > 5 else ''}), more than "
                    f"occurrences.cleaning.malformed_tolerance={cleaning['malformed_tolerance']} of the rows"
                )
        if file not in resolved or read_in_file == 0:
            raise ValueError(f"{file}: no rows (only a header or nothing)")
        read += read_in_file + len(malformed)

    kept = pd.concat(kept_parts, ignore_index=True)
    rejected = pd.concat(rejected_parts, ignore_index=True)

    # Keep one row per species x cell; the others are duplicates, counted in n_records and reported.
    duplicated = kept.duplicated(["species", "row", "col"], keep="first")
    duplicates = kept.loc[duplicated, ["file", "line", "name", "species", "longitude", "latitude"]].assign(
        reason="duplicate_species_cell"
    )
    n_records = kept.groupby(["species", "row", "col"], sort=False).size().rename("n_records")
    occurrences = (
        kept.loc[~duplicated]
        .drop(columns=["line", "file", "name"])
        .join(n_records, on=["species", "row", "col"])
        .sort_values(["species", "row", "col"], kind="stable")
        .reset_index(drop=True)
    )
    occurrences["row"] = occurrences["row"].astype("int32")
    occurrences["col"] = occurrences["col"].astype("int32")
    occurrences["n_records"] = occurrences["n_records"].astype("int64")
    rejected = pd.concat([rejected, duplicates], ignore_index=True).sort_values(["file", "line"], kind="stable")
    rejected = rejected.reset_index(drop=True)
    rejected["species"] = rejected["species"].astype("string")
    rejected["name"] = rejected["name"].astype("string")
    rejected["reason"] = rejected["reason"].astype("string")  # the same dtype whatever the chunking

    dropped = {reason: int((rejected["reason"] == reason).sum()) for reason in DROP_REASONS}
    species_read = set(pd.concat([kept["species"], rejected["species"].dropna()]).astype(str))
    species_kept = set(occurrences["species"])
    sites = occurrences.groupby("species").size()
    report = {
        "file": str(paths[0]) if len(paths) == 1 else [str(p) for p in paths],
        "columns": resolved[paths[0]] if len(paths) == 1 else {str(f): c for f, c in resolved.items()},
        "cleaning": cleaning,
        "records_read": int(read),
        "records_kept": int(len(occurrences)),
        "dropped": dropped,
        "species_read": len(species_read),
        "species_kept": len(species_kept),
        "species_lost": lost_species_reasons(rejected, species_read - species_kept),
        "species_below_min_records": {
            "min_records": min_records,
            "note": "kept for features and status; not used to train the SDM",
            "species": {s: int(n) for s, n in sites[sites < min_records].items()},
        },
    }
    if report["records_kept"] + sum(dropped.values()) != read:  # the accounting is the contract; never ship a gap
        raise AssertionError(f"{path}: kept + dropped != read in the ingest report: {report}")
    if occurrences.empty:
        raise ValueError(f"{report['file']}: no record left after cleaning; drops per reason: "
                         f"{json.dumps({reason: n for reason, n in dropped.items() if n})}")
    return occurrences, rejected, report


def cleaned_records(occurrences: pd.DataFrame, rejected: pd.DataFrame) -> pd.DataFrame:
    """Every record that passed cleaning (``species``, ``longitude``, ``latitude``): the kept row of each species x
    cell of ``occurrences`` plus the records merged into it (``rejected`` rows whose reason is
    ``duplicate_species_cell``). IUCN's AOO and EOO are measured on these, not on one point per grid cell."""
    columns = ["species", "longitude", "latitude"]
    duplicates = rejected.loc[rejected["reason"] == "duplicate_species_cell", columns]
    records = pd.concat([occurrences[columns], duplicates], ignore_index=True)
    records["species"] = records["species"].astype(str)
    expected = int(occurrences["n_records"].sum())
    if len(records) != expected:
        raise ValueError(f"the rejected table does not hold the records merged into the occurrence cells: "
                         f"{len(records)} records, but n_records sums to {expected}")
    return records
