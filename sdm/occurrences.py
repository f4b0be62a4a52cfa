"""Occurrence records: read CSV / TSV / GBIF downloads / Parquet, clean, put on the grid, and account for every row.

Every row read is either kept or dropped with exactly one reason, so that ``kept + sum(dropped) == read``.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import xarray as xr

from sdm.grid import points_to_cells
from sdm.names import canonical_names

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


def detect_encoding(path: Path, sample_bytes: int = 1 << 20) -> str:
    """UTF-8 when the start of the file decodes as UTF-8 (BOM allowed), else Latin-1 (old Excel exports)."""
    with open(path, "rb") as f:
        sample = f.read(sample_bytes)
    try:
        sample.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if error.start < len(sample) - 4:  # not just a multi-byte character cut at the end of the sample
            return "latin-1"
    return "utf-8-sig"


_SKIPPED_LINE = re.compile(r"Skipping line (\d+)")


def sniff_separator(path: Path) -> str:
    """Tab, comma or semicolon, from the header line (GBIF 'CSV' downloads are tab-separated)."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        header = f.readline()
    counts = {sep: header.count(sep) for sep in ("\t", ",", ";")}
    return max(counts, key=counts.get) if max(counts.values()) > 0 else ","


def read_chunks(path: str | Path, chunksize: int = 500_000, malformed: list | None = None):
    """Yield DataFrames of the raw table, all columns as strings, a chunk at a time (bounded memory).

    File line numbers of rows with the wrong number of fields are appended to ``malformed`` (they are skipped).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"occurrence file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the occurrence file is empty")
    if path.suffix.lower() in (".parquet", ".pq"):
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=chunksize):
            yield batch.to_pandas().astype("string")
        return
    sep = sniff_separator(path)
    # GBIF tab-separated downloads are unquoted: a field that starts with '"' is text, not the start of a quote
    # (with QUOTE_MINIMAL it swallows the following rows or fails with 'EOF inside string').
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    reader = pd.read_csv(
        path, sep=sep, dtype="string", chunksize=chunksize, encoding=detect_encoding(path),
        encoding_errors="replace", quoting=quoting, on_bad_lines="warn", keep_default_na=False, na_values=[""],
        skip_blank_lines=True,
    )
    while True:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            try:
                chunk = next(reader)
            except StopIteration:
                chunk = None
            except pd.errors.ParserError as error:
                raise ValueError(f"{path}: cannot parse the table: {error}") from None
        if malformed is not None:
            for w in caught:
                malformed.extend(int(n) for n in _SKIPPED_LINE.findall(str(w.message)))
        if chunk is None:
            return
        yield chunk


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
    lon = pd.to_numeric(lon_text, errors="coerce").astype("float64").to_numpy()
    lat = pd.to_numeric(lat_text, errors="coerce").astype("float64").to_numpy()

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
    ``line`` (1-based data row; for malformed rows the file line), ``species``, ``longitude``, ``latitude`` and
    ``reason``; report counts records read, kept and dropped per reason, and lists species with fewer than
    ``min_records`` occupied cells (kept, but not used to train the SDM).
    """
    paths = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    cleaning = {**CLEANING_DEFAULTS, **(cleaning or {})}
    kept_parts, rejected_parts = [], []
    read = 0
    resolved = {}
    for file in paths:
        malformed: list[int] = []
        read_in_file = 0
        for raw in read_chunks(file, chunksize, malformed):
            if file not in resolved:
                resolved[file] = find_columns(list(raw.columns), file, columns)
            parsed = _classify_chunk(raw, resolved[file], grid, valid, cleaning)
            parsed["line"] = np.arange(read_in_file + 1, read_in_file + len(parsed) + 1)
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
        raise ValueError(f"{report['file']}: no record left after cleaning; drops per reason: {json.dumps(dropped)}")
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
